"""Per-step negatives (`r1lab data pairs --per-step`): the step split, the Monte-Carlo success estimate of a step
prefix, the collapse rule, the rows and counts, and the bad-input errors.

The estimate and the collapse rule are checked on a hand-made Countdown case whose answers are known: an engine
scripted per prefix (a table of continuations, so every success rate is known by construction) and the real
`countdown` reward. The whole `make_pairs(per_step=...)` path runs on the tiny model with the HF engine.
"""

from __future__ import annotations

import json

import pytest
import torch
from rl_testkit import single_thread
from typer.testing import CliRunner

from r1lab.cli import app
from r1lab.config import RewardSpec
from r1lab.errors import UserError
from r1lab.rewards import RewardRunner
from r1lab.rollout import Rollouts, SamplingParams
from r1lab.rollout.step_values import Prefix, prefix_success, split_steps
from r1lab.stages.dpo_pairs import PairSampling, make_pairs
from r1lab.stages.dpo_steps import StepOptions, collapse_step, cut_rows, prompt_key
from r1lab.tasks import get_task

PARITY = "def even(completion, **columns):\n    return float(len(completion) % 2 == 0)\n"

# Countdown: make 14 from 3, 4, 2. The wrong sample's first step (3 * 2 = 6) leaves 6 and 4, which cannot
# make 14; the scripted model still finds the right answer from the prompt alone 3 times in 4.
COLUMNS = {"numbers": [3, 4, 2], "target": 14}
PROMPT = "Using the numbers 3, 4, 2, make 14 with + - * /."
RIGHT = "Answer: (3 + 4) * 2"
WRONG = "3 * 2 = 6\n6 + 4 = 10\nAnswer: 3 * 2 + 4"


class ScriptedEngine:
    """Continues a prefix with the m texts its table gives it (keyed by the prefix text after the prompt)."""

    name = "scripted"

    def __init__(self, tokenizer, prompt: str, table: dict[str, list[str]]) -> None:
        self.tokenizer, self.prompt, self.table, self.calls = tokenizer, prompt, table, []

    def generate(self, prompt_ids: list[list[int]], n: int, sampling: SamplingParams) -> Rollouts:
        texts = []
        for ids in prompt_ids:
            seen = self.tokenizer.decode(ids)
            assert seen.startswith(self.prompt)
            prefix = seen[len(self.prompt) :]
            self.calls.append(prefix)
            assert len(self.table[prefix]) == n
            texts += self.table[prefix]
        rows = len(texts)
        return Rollouts(
            prompt_index=[i for i in range(len(prompt_ids)) for _ in range(n)],
            prompt_ids=[list(p) for p in prompt_ids for _ in range(n)],
            completion_ids=torch.zeros((rows, 1), dtype=torch.long),
            completion_mask=torch.ones((rows, 1), dtype=torch.long),
            logprobs=torch.zeros((rows, 1)),
            finish_reasons=["stop"] * rows,
            texts=texts,
        )

    def update_weights(self, model: torch.nn.Module) -> None:
        raise NotImplementedError


def table(right_of_four: list[int]) -> dict[str, list[str]]:
    """Per prefix of WRONG (0, 1, 2 steps): 4 continuations, the first `right_of_four[k]` of them correct."""
    prefixes = ["", "3 * 2 = 6\n", "3 * 2 = 6\n6 + 4 = 10\n"]
    return {
        p: [RIGHT] * r + ["Answer: 3 * 2 + 4"] * (4 - r) for p, r in zip(prefixes, right_of_four, strict=True)
    }


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


@pytest.fixture(scope="module")
def countdown():
    with RewardRunner([RewardSpec(name="countdown")], isolated=False) as runner:
        yield runner


def test_split_steps() -> None:
    assert split_steps(WRONG) == ["3 * 2 = 6\n", "6 + 4 = 10\n", "Answer: 3 * 2 + 4"]
    assert split_steps("a\n\n b\nc\n\n") == ["a\n", "\n b\n", "c\n\n"]  # blank lines join the next step
    assert split_steps("\n\nx") == ["\n\nx"] and split_steps("one step") == ["one step"]
    assert split_steps("") == [] and split_steps(" \n \n") == []
    assert split_steps("a. b. c", ". ") == ["a. ", "b. ", "c"]
    text = get_task("countdown").generate(1, seed=0, count=3)[0]["completion"]  # the written solution
    lines = text.split("\n")  # 3 numbers: 2 combining steps, then the answer line
    assert len(lines) == 3 and lines[-1].startswith("Answer:")
    assert split_steps(text) == [lines[0] + "\n", lines[1] + "\n", lines[2]]
    with pytest.raises(ValueError, match="non-empty"):
        split_steps("a", "")


def test_collapse_rule() -> None:
    assert collapse_step([0.75, 0.25, 0.0], 0.5) == 1  # fell by 0.5
    assert collapse_step([0.75, 0.5, 0.0], 0.5) == 2  # fell by 0.25, then to zero
    assert collapse_step([0.6, 0.1], 0.5) == 1  # 0.6 - 0.1 is 0.4999... in floats: still a drop of 0.5
    assert collapse_step([1.0, 0.75, 0.5], 0.5) is None
    assert collapse_step([1.0, 0.125, 0.0], 2.0) == 2  # drop > 1: only the drop to zero counts
    assert collapse_step([0.5], 0.5) is None
    assert collapse_step([0.0, 0.0, 0.0], 0.5) is None  # zero after zero: no fall to see
    assert collapse_step([0.0, 0.5, 0.0], 2.0) == 2  # the scan starts at the first positive estimate


def test_prefix_success_on_known_continuations(tiny_tokenizer, countdown) -> None:
    engine = ScriptedEngine(tiny_tokenizer, PROMPT, table([3, 1, 0]))
    ids = tiny_tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    prefixes = [Prefix(ids, PROMPT, "".join(split_steps(WRONG)[:k]), COLUMNS) for k in range(3)]
    assert prefix_success(engine, tiny_tokenizer, prefixes, 4, SamplingParams(), countdown) == [
        0.75,
        0.25,
        0.0,
    ]
    assert engine.calls == ["", "3 * 2 = 6\n", "3 * 2 = 6\n6 + 4 = 10\n"]  # prompt tokens, then the prefix
    with pytest.raises(ValueError, match="at least 1"):
        prefix_success(engine, tiny_tokenizer, prefixes, 0, SamplingParams(), countdown)


@pytest.mark.parametrize(
    ("right", "drop", "cut", "collapsed"),
    [
        ([3, 1, 0], 0.5, 1, True),
        ([3, 1, 0], 0.6, 2, True),
        ([4, 3, 2], 0.5, 3, False),
        ([4, 1, 1], 2.0, 3, False),
        ([0, 2, 0], 2.0, 2, True),  # none of the prompt's 4 continuations right: the fall from step 1 counts
        ([0, 0, 0], 0.5, 3, False),
    ],
)
def test_cut_rows_at_the_collapse_step(tiny_tokenizer, countdown, right, drop, cut, collapsed) -> None:
    engine = ScriptedEngine(tiny_tokenizer, PROMPT, table(right))
    messages = [{"role": "user", "content": PROMPT}]
    prompts = {prompt_key(messages): Prefix(tiny_tokenizer(PROMPT)["input_ids"], PROMPT, "", COLUMNS)}
    single = {
        "prompt": messages,
        "chosen": RIGHT,
        "rejected": "Answer: 3 + 4 + 2",
    }  # one step: nothing to cut
    rows = [{"prompt": messages, "chosen": RIGHT, "rejected": WRONG}, single]
    counts = cut_rows(
        engine, tiny_tokenizer, countdown, rows, prompts, StepOptions(4, "\n", drop), SamplingParams()
    )
    assert rows[0]["step_success"] == [r / 4 for r in right] + [0.0]
    assert rows[0]["cut_step"] == cut and rows[0]["collapsed"] is collapsed and rows[0]["steps"] == 3
    assert rows[0]["rejected"] == "".join(split_steps(WRONG)[:cut]) and rows[0]["rejected_full"] == WRONG
    assert rows[1] | {"step_success": [None, 0.0], "cut_step": 1, "steps": 1} == rows[1]
    assert rows[1]["rejected"] == rows[1]["rejected_full"] == "Answer: 3 + 4 + 2"
    assert counts == {"collapsed": int(collapsed), "no_collapse": int(not collapsed), "single_step": 1}
    assert engine.calls == ["", "3 * 2 = 6\n", "3 * 2 = 6\n6 + 4 = 10\n"]  # the single step cost nothing


def test_per_step_pairs_on_the_tiny_model(tmp_path, tiny_model_dir) -> None:
    (tmp_path / "parity.py").write_text(PARITY)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Say {i} and more."}) + "\n" for i in range(6)))
    out = tmp_path / "pairs.jsonl"
    steps = StepOptions(mc=3, sep=" ", drop=0.5)
    sampling = PairSampling(n=4, max_new_tokens=10, batch_size=6, seed=1, per_step=steps)
    counts = make_pairs(
        str(tiny_model_dir), out, data=str(prompts), rewards=[f"{tmp_path}/parity.py:even"], sampling=sampling
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert counts["pairs"] == len(rows) > 0
    assert counts["collapsed"] + counts["no_collapse"] + counts["single_step"] == len(rows)
    assert counts["single_step"] < len(rows)
    for row in rows:
        full, v = row["rejected_full"], row["step_success"]
        assert len(row["chosen"]) % 2 == 0 and len(full) % 2 == 1  # correct vs incorrect under the reward
        parts = split_steps(full, " ") or [full]
        assert row["steps"] == len(parts) and len(v) == len(parts) + 1 and v[-1] == 0.0
        assert row["rejected"] == "".join(parts[: row["cut_step"]])
        if len(parts) > 1:
            assert all(x * 3 == round(x * 3) and 0 <= x <= 1 for x in v)  # shares of M = 3 continuations
            k = collapse_step(v[:-1], 0.5)
            assert row["collapsed"] is (k is not None) and row["cut_step"] == (k or len(parts))
        assert row["sampling"]["per_step"] == {"mc": 3, "sep": " ", "drop": 0.5}
        assert row["sampling"]["engine"] == "hf"


def test_per_step_input_mistakes(tmp_path, tiny_model_dir) -> None:
    def pairs(**step):
        make_pairs(str(tiny_model_dir), tmp_path / "p.jsonl", task="addition",
                   sampling=PairSampling(n=2, per_step=StepOptions(**step)))  # fmt: skip

    with pytest.raises(UserError, match="--mc must be at least 1"):
        pairs(mc=0)
    with pytest.raises(UserError, match="--step-sep is empty"):
        pairs(sep="")
    with pytest.raises(UserError, match="--collapse-drop must be above 0"):
        pairs(drop=0.0)
    with pytest.raises(UserError, match="unknown engine 'fast'"):
        make_pairs(
            str(tiny_model_dir), tmp_path / "p.jsonl", task="addition", sampling=PairSampling(engine="fast")
        )
    args = ["data", "pairs", str(tiny_model_dir), "--out", "p.jsonl", "--task", "addition"]
    result = CliRunner().invoke(app, [*args, "--per-step", "--mc", "0"])
    assert isinstance(result.exception, UserError) and "--mc must be at least 1" in str(result.exception)


def test_per_step_with_no_step_separator_in_the_samples(tmp_path, tiny_model_dir) -> None:
    (tmp_path / "parity.py").write_text(PARITY)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Say {i}."}) + "\n" for i in range(4)))
    sampling = PairSampling(n=4, max_new_tokens=6, seed=1, per_step=StepOptions(mc=2, sep="@@@@"))
    with pytest.raises(UserError, match="no incorrect sample with more than one step"):
        make_pairs(str(tiny_model_dir), tmp_path / "p.jsonl", data=str(prompts),
                   rewards=[f"{tmp_path}/parity.py:even"], sampling=sampling)  # fmt: skip
    assert not (tmp_path / "p.jsonl").exists()
