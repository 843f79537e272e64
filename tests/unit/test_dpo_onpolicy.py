"""On-policy pairs inside a DPO stage (`pairs:`): sampled from the stage's input model before training, written to
the stage folder and reused on resume; `chosen: solution` pairs the written solution; offset and limit; iterative
DPO in a recipe (each round samples from the previous round's model)."""

from __future__ import annotations

import json

import pytest
import yaml
from rl_testkit import single_thread

from r1lab.config import DPOConfig, validate
from r1lab.errors import UserError
from r1lab.pipeline import run_recipe
from r1lab.stages import dpo_onpolicy
from r1lab.stages.dpo import run_dpo

# "correct" = an even number of characters: about half of the random model's samples, known per completion
PARITY = "def even(completion, **columns):\n    return float(len(completion) % 2 == 0)\n"


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


def prompts_file(tmp_path, solutions: list[str]):
    (tmp_path / "parity.py").write_text(PARITY)
    path = tmp_path / "prompts.jsonl"
    rows = [{"prompt": f"What is {i} + {i}?", "completion": s} for i, s in enumerate(solutions)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def dpo_config(tmp_path, model_dir, prompts, **pairs) -> DPOConfig:
    pairs = {"n": 4, "max_new_tokens": 8, "batch_size": 4, "rewards": [f"{tmp_path}/parity.py:even"]} | pairs
    return validate(
        DPOConfig,
        {
            "model": {"path": str(model_dir)},
            "data": {"path": str(prompts), "max_length": 96},
            "train": {"output_dir": str(tmp_path / "dpo"), "batch_size": 1, "max_steps": 1, "seed": 5},
            "pairs": pairs,
        },
    )


def rows_of(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_verified_pairs_from_the_input_model_offset_limit_and_reuse(tmp_path, tiny_model_dir, monkeypatch):
    prompts = prompts_file(tmp_path, ["ab"] * 12)
    cfg = dpo_config(tmp_path, tiny_model_dir, prompts, offset=2, limit=3)
    run_dpo(cfg)
    out = tmp_path / "dpo"
    rows = rows_of(out / "pairs.jsonl")
    record = json.loads((out / "pairs.json").read_text())
    assert len(rows) == 3 == record["counts"]["pairs"]  # limit: 3 pairs
    numbers = [int(r["prompt"][-1]["content"].split()[2]) for r in rows]
    assert min(numbers) >= 2 and numbers == sorted(set(numbers))  # offset 2: prompts 0 and 1 are never used
    # whole generate batches of 4, stopped once 3 pairs were made
    assert record["counts"]["prompts"] in (4, 8)
    for row in rows:
        assert len(row["chosen"]) % 2 == 0 and len(row["rejected"]) % 2 == 1  # sampled and verified
        assert row["sampling"]["model"] == str(tiny_model_dir) and row["sampling"]["seed"] == 5
    trained = yaml.safe_load((out / "config.yaml").read_text())
    assert trained["data"]["path"] == str(prompts) and trained["pairs"]["limit"] == 3  # the config as given

    before = (out / "pairs.jsonl").read_bytes()
    monkeypatch.setattr(dpo_onpolicy, "make_pairs", lambda *a, **k: pytest.fail("pairs sampled again"))
    run_dpo(cfg.model_copy(update={"train": cfg.train.model_copy(update={"resume": "auto"})}))
    assert (out / "pairs.jsonl").read_bytes() == before  # reused on resume
    changed = cfg.model_copy(update={"pairs": cfg.pairs.model_copy(update={"n": 3})})
    assert dpo_onpolicy.pair_settings(changed) != dpo_onpolicy.recorded_settings(out)  # would sample anew


def test_chosen_solution_pairs_the_written_solution_with_an_incorrect_sample(tmp_path, tiny_model_dir):
    solutions = ["abc"] + [f"{i:02d}" + "ab" * i for i in range(1, 8)]  # even lengths, but the first: wrong
    prompts = prompts_file(tmp_path, solutions)
    run_dpo(dpo_config(tmp_path, tiny_model_dir, prompts, chosen="solution", n=3, pairs_per_prompt=2))
    out = tmp_path / "dpo"
    rows, counts = rows_of(out / "pairs.jsonl"), json.loads((out / "pairs.json").read_text())["counts"]
    assert counts["prompts"] == 8 and counts["no_correct"] == 1  # only the odd (unverified) solution
    assert counts["pairs"] == len(rows) > 0
    by_prompt: dict[int, list] = {}
    for row in rows:
        i = int(row["prompt"][-1]["content"].split()[2])
        by_prompt.setdefault(i, []).append(row)
        assert row["chosen"] == solutions[i] and row["chosen_reward"] == 1.0
        assert len(row["rejected"]) % 2 == 1 and row["rejected_reward"] == 0.0
    assert 0 not in by_prompt
    assert all(len(group) <= 2 for group in by_prompt.values())  # pairs_per_prompt, one solution reused
    assert len({r["rejected"] for r in by_prompt.get(max(by_prompt), [])}) == len(by_prompt[max(by_prompt)])
    assert counts["pairs"] >= len(by_prompt) == 7 - counts["no_incorrect"]


def test_pairs_mistakes(tmp_path, tiny_model_dir):
    prompts = prompts_file(tmp_path, ["ab"] * 4)
    with pytest.raises(UserError, match="at least 2"):
        dpo_config(tmp_path, tiny_model_dir, prompts, n=1)
    with pytest.raises(UserError, match=r"pairs\.rewards"):
        dpo_config(tmp_path, tiny_model_dir, prompts, rewards=[])
    with pytest.raises(UserError, match="skips every one of the 4 prompts"):
        run_dpo(dpo_config(tmp_path, tiny_model_dir, prompts, offset=4))
    (tmp_path / "bare.jsonl").write_text('{"prompt": "What is 1 + 1?"}\n')
    with pytest.raises(UserError, match="written solution"):
        run_dpo(dpo_config(tmp_path, tiny_model_dir, tmp_path / "bare.jsonl", chosen="solution"))


def test_iterative_dpo_recipe_samples_each_round_from_the_previous_model(tmp_path, tiny_model_dir):
    dpo = {"kind": "dpo", "pairs": {"chosen": "solution", "n": 1, "max_new_tokens": 8, "limit": 3},
           "data": {"max_length": 400}, "train": {"max_steps": 1, "batch_size": 1}}  # fmt: skip
    recipe = {
        "name": "iterative",
        "output_dir": str(tmp_path / "run"),
        "model": {"path": str(tiny_model_dir)},
        "task": {"name": "countdown", "train_size": 12, "test_size": 4},
        "stages": [
            {"name": "sft", "kind": "sft", "data": {"limit": 4}, "train": {"max_steps": 1, "batch_size": 2}},
            {"name": "dpo1", **dpo, "pairs": {**dpo["pairs"], "offset": 4}},
            {"name": "dpo2", **dpo, "pairs": {**dpo["pairs"], "offset": 7}},
        ],
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    root = run_recipe(path)
    state = json.loads((root / "pipeline.json").read_text())["stages"]
    task_rows = rows_of(root / "data" / "train.jsonl")
    for stage, source, offset in (("dpo1", "sft", 4), ("dpo2", "dpo1", 7)):
        rows = rows_of(root / stage / "pairs.jsonl")
        assert len(rows) == 3  # the tiny model solves no countdown problem: every prompt gives a pair
        assert {r["sampling"]["model"] for r in rows} == {state[source]["model"]} == {state[stage]["input"]}
        assert [r["chosen"] for r in rows] == [t["completion"] for t in task_rows[offset : offset + 3]]
