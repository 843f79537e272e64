"""`r1lab data pairs` and `r1lab data distill` with `--engine vllm`: the same kind of rows as with the HF engine,
and, where the two engines must agree (greedy decoding; sampled streams differ by design), the same text.

Greedy agreement is checked on what each command builds on: the step-prefix continuations of `--per-step`
(`prefix_success`, M = 1 greedy, both engines) and distill's greedy demonstrations (with a reward that
accepts every sample, distill keeps each prompt's first candidate: its greedy completion).
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from r1lab.cli import app
from r1lab.config import RewardSpec, RolloutConfig
from r1lab.rewards import RewardRunner
from r1lab.rollout import HFEngine, SamplingParams
from r1lab.rollout.step_values import Prefix, prefix_success, split_steps
from r1lab.rollout.vllm import VLLMEngine
from r1lab.stages.dpo_steps import collapse_step

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

REWARDS = (
    "def even(completion, **columns):\n    return float(len(completion) % 2 == 0)\n\n"
    "def anything(completion, **columns):\n    return 1.0\n"
)


def inputs(tmp_path):
    (tmp_path / "rewards.py").write_text(REWARDS)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Say {i} and more."}) + "\n" for i in range(6)))
    return prompts, tmp_path / "rewards.py"


def test_per_step_pairs_with_the_vllm_engine(tmp_path, vllm_model_dir) -> None:
    prompts, rewards = inputs(tmp_path)
    rows = {}
    for engine in ("hf", "vllm"):
        out = tmp_path / f"{engine}.jsonl"
        args = ["data", "pairs", str(vllm_model_dir), "--out", str(out), "--data", str(prompts)]
        args += ["-r", f"{rewards}:even", "--n", "4", "--max-new-tokens", "10", "--engine", engine]
        result = CliRunner().invoke(app, [*args, "--per-step", "--mc", "3", "--step-sep", " "])
        assert result.exit_code == 0, (result.output, result.exception)
        rows[engine] = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows["vllm"], "the vllm engine made no pair"
    assert {frozenset(r) for r in rows["vllm"]} == {frozenset(r) for r in rows["hf"]}  # the same columns
    for row in rows["vllm"]:
        assert row["sampling"]["engine"] == "vllm" and row["sampling"]["per_step"]["mc"] == 3
        assert len(row["chosen"]) % 2 == 0 and len(row["rejected_full"]) % 2 == 1
        parts = split_steps(row["rejected_full"], " ") or [row["rejected_full"]]
        assert row["rejected"] == "".join(parts[: row["cut_step"]])
        if len(parts) > 1:
            k = collapse_step(row["step_success"][:-1], 0.5)
            assert row["cut_step"] == (k or len(parts)) and row["collapsed"] is (k is not None)


def test_greedy_step_continuations_agree_with_the_hf_engine(tmp_path, model, tokenizer) -> None:
    # its own engine, not the session's: an in-process LLM torn down by an earlier test (the CLI runs above)
    # takes vLLM's process-wide parallel groups with it, which a longer-lived engine still needs
    _, rewards = inputs(tmp_path)
    engine = VLLMEngine(RolloutConfig(engine="vllm"), model, tokenizer)
    messages = [{"role": "user", "content": "Say 3."}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    prefixes = [Prefix(ids, "Say 3.", text) for text in ("", "Well ", "Well one ", "7 ")]
    greedy = SamplingParams.greedy(9)
    hf = HFEngine(model, tokenizer)
    full = [p.prompt_ids + tokenizer(p.text, add_special_tokens=False)["input_ids"] for p in prefixes]
    hf_texts, v_texts = (e.generate(full, 1, greedy).texts for e in (hf, engine))
    assert v_texts == hf_texts and any(hf_texts)
    with RewardRunner([RewardSpec(name=f"{rewards}:even")], isolated=False) as runner:
        got = {e.name: prefix_success(e, tokenizer, prefixes, 1, greedy, runner) for e in (hf, engine)}
    assert (
        got["vllm"]
        == got["hf"]
        == [float(len(p.text + t) % 2 == 0) for p, t in zip(prefixes, hf_texts, strict=True)]
    )


def test_distill_with_the_vllm_engine_keeps_the_hf_engines_greedy_demonstrations(
    tmp_path, vllm_model_dir
) -> None:
    prompts, rewards = inputs(tmp_path)
    kept = {}
    for engine in ("hf", "vllm"):
        out = tmp_path / f"distill-{engine}.jsonl"
        args = ["data", "distill", str(vllm_model_dir), "--out", str(out), "--data", str(prompts)]
        args += ["-r", f"{rewards}:anything", "--k", "2", "--max-new-tokens", "8", "--engine", engine]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, (result.output, result.exception)
        kept[engine] = [json.loads(line) for line in out.read_text().splitlines()]
    greedy = {e: [(r["provenance"]["problem"], r["completion"]) for r in rows if r["provenance"]["sample"] == "greedy"]
              for e, rows in kept.items()}  # fmt: skip
    # every sample verifies, so each prompt's first candidate, its greedy completion, is the one kept
    assert greedy["vllm"] == greedy["hf"] and len(greedy["hf"]) == 6 and any(t for _, t in greedy["hf"])
    assert all(r["provenance"]["engine"] == "vllm" for r in kept["vllm"])
