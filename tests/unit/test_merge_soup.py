"""Greedy soup: the order and the keep/drop decisions on a score whose answer is known, the real eval wiring
on the tiny model, and its bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from r1lab.config import MergeConfig, validate
from r1lab.errors import UserError
from r1lab.stages.merge import run_merge
from r1lab.stages.merge_soup import greedy_soup
from tiny import build_model


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_tokenizer) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("soup-inputs")
    for name, seed in (("base", 0), ("a", 1), ("b", 2)):
        build_model(root / name, tiny_tokenizer, seed=seed)
    return {name: root / name for name in ("base", "a", "b")}


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(Path(folder) / "model.safetensors")


def config(paths, tmp_path, **kw) -> MergeConfig:
    kw.setdefault("models", [{"model": str(paths[n])} for n in ("base", "b", "a")])
    kw.setdefault("validation", {"task": "addition", "limit": 2, "max_new_tokens": 2})
    return validate(
        MergeConfig, {"merge_method": "greedy_soup", "output": str(tmp_path / "soup"), **kw}, "test"
    )


def test_greedy_soup_adds_in_score_order_and_keeps_only_what_does_not_hurt(models, tmp_path):
    a, b = weights(models["a"]), weights(models["b"])
    target = {k: 0.6 * a[k] + 0.4 * b[k] for k in a}

    def score(path, evaluation):  # closer to the target is better: a > b > base, (a+b)/2 > a, +base worse
        w = weights(path)
        return -sum(float(((w[k] - target[k]) ** 2).sum()) for k in target)

    out = greedy_soup(config(models, tmp_path), run_merge, score)
    record = json.loads((out / "greedy_soup.json").read_text())
    assert record["order"] == [str(models[n]) for n in ("a", "b", "base")]
    assert [s["kept"] for s in record["steps"]] == [True, False]
    assert record["soup"] == [str(models["a"]), str(models["b"])]
    merged = weights(out)
    for k in a:
        torch.testing.assert_close(merged[k], (a[k] + b[k]) / 2, rtol=0, atol=1e-6)
    assert not (tmp_path / ".soup.soup-candidate").exists()


def test_greedy_soup_scores_with_the_eval_runner(models, tmp_path):
    out = run_merge(
        config(models, tmp_path, models=[{"model": str(models["a"])}, {"model": str(models["b"])}])
    )
    record = json.loads((out / "greedy_soup.json").read_text())
    assert set(record["ingredients"]) == {str(models["a"]), str(models["b"])}
    assert all(0.0 <= v <= 1.0 for v in record["ingredients"].values()) and len(record["steps"]) == 1
    AutoModelForCausalLM.from_pretrained(out)


def test_greedy_soup_without_a_validation_set_is_refused(models, tmp_path):
    with pytest.raises(UserError, match="greedy_soup needs a validation set") as err:
        run_merge(config(models, tmp_path, validation=None))
    assert "validation: {task: addition" in str(err.value)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"base_model": "B"}, "does not use base_model"),
        ({"parameters": {"normalize": False}}, "does not use parameters.normalize"),
        ({"validation": {"task": "addition"}, "merge_method": "linear"}, "validation is for greedy_soup"),
    ],
)
def test_greedy_soup_settings_it_does_not_read_are_refused(models, tmp_path, kw, message):
    kw = {**kw, "base_model": str(models["base"])} if kw.get("base_model") else kw
    with pytest.raises(UserError, match=message):
        run_merge(config(models, tmp_path, **kw))
