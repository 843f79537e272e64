"""lm-eval cross-check: EleutherAI's harness, given r1lab's rendered prompts as a local generate_until task and
scored with r1lab's reward, generates the same greedy completions and so gets the same accuracy as `run_eval`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from r1lab.config import EvalConfig
from r1lab.errors import UserError
from r1lab.eval import run_eval

lm_eval = pytest.importorskip("lm_eval")

from r1lab.eval.lm_eval_backend import run_lm_eval  # noqa: E402

SCALE = 6.0

# correct when the completion holds the problem's answer character: the tiny random model writes it in some
# completions and not in others, so both verdicts occur
REWARD = """
def has_answer(completion, *, answer, **columns):
    return float(answer in completion)
"""


def sharpened(tiny_model_dir: Path, out: Path) -> str:
    """The tiny model with its weights scaled up, so its greedy completions differ from prompt to prompt (the
    random init writes only newlines)."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(SCALE)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return str(out)


def test_r1lab_and_lm_eval_agree_problem_by_problem(tmp_path, tiny_model_dir):
    (tmp_path / "reward.py").write_text(REWARD)
    tiny_model_dir = sharpened(tiny_model_dir, tmp_path / "model")
    words = ["fox", "dog", "sea", "sky", "tree", "number", "answer", "step", "colour", "box", "true", "yes"]
    rows = [{"prompt": f"Write about the {w} {i}.", "answer": a} for i, w in enumerate(words) for a in ("e",)]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = EvalConfig(data=str(tmp_path / "test.jsonl"), rewards=[{"name": f"{tmp_path / 'reward.py'}:has_answer"}],
                     max_new_tokens=12, batch_size=4)  # fmt: skip
    ours = run_eval(str(tiny_model_dir), cfg, tmp_path / "ours")
    theirs = run_lm_eval(str(tiny_model_dir), cfg, tmp_path / "theirs")
    greedy = [json.loads(line) for line in (tmp_path / "ours" / "samples.jsonl").read_text().splitlines()]
    greedy = {r["problem"]: r for r in greedy if r["kind"] == "greedy"}
    pairs = [(greedy[s["problem"]], s) for s in theirs["samples"]]
    print([(a["completion"], b["completion"]) for a, b in pairs])
    assert len(pairs) == len(rows)
    assert [a["completion"] for a, _ in pairs] == [b["completion"] for _, b in pairs]
    assert [a["correct"] for a, _ in pairs] == [b["correct"] for _, b in pairs]
    assert 0 < ours["accuracy"] < 1 and theirs["accuracy"] == pytest.approx(ours["accuracy"])


def test_lm_eval_needs_a_data_file_and_a_reward(tiny_model_dir):
    with pytest.raises(UserError, match="evaluates a data file with a reward"):
        run_lm_eval(str(tiny_model_dir), EvalConfig(task="addition"))


def test_without_lm_eval_installed_the_error_says_how_to_install_it(monkeypatch, tiny_model_dir):
    import importlib.util

    from r1lab.eval import lm_eval_backend

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "lm_eval" else real(name, *a)
    )
    cfg = EvalConfig(data="x.jsonl", rewards=[{"name": "math"}])
    with pytest.raises(UserError, match="lm-eval, which is not installed") as e:
        lm_eval_backend.run_backend("lm_eval", str(tiny_model_dir), cfg, Path("out"))
    assert "pip install 'r1lab[lm_eval]'" in e.value.fix
    with pytest.raises(UserError, match="unknown eval backend 'lmeval'"):
        lm_eval_backend.run_backend("lmeval", str(tiny_model_dir), cfg, Path("out"))
