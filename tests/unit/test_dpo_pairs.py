"""`r1lab data pairs` on the tiny model: (correct, incorrect) pairs from sampled completions, the counts of
prompts without a pair, and the file read back as DPO data and trained on."""

from __future__ import annotations

import json

import pytest
from rl_testkit import single_thread

from r1lab.config import DataConfig, DPOConfig, validate
from r1lab.data.preference import read_preference_data
from r1lab.errors import UserError
from r1lab.stages.dpo import run_dpo
from r1lab.stages.dpo_pairs import PairSampling, make_pairs

# "correct" = an even number of characters: about half of the random model's samples, known per completion
PARITY = "def even(completion, **columns):\n    return float(len(completion) % 2 == 0)\n"


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


def test_pairs_from_a_verifier_train_a_dpo_stage(tmp_path, tiny_model_dir) -> None:
    (tmp_path / "parity.py").write_text(PARITY)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": f"What is {i} + {i}?", "answer": 2 * i}) + "\n" for i in range(12))
    )
    out = tmp_path / "pairs.jsonl"
    sampling = PairSampling(n=4, max_new_tokens=8, batch_size=6, seed=3)
    counts = make_pairs(
        str(tiny_model_dir), out, data=str(prompts), rewards=[f"{tmp_path}/parity.py:even"], sampling=sampling
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert counts["prompts"] == 12 and counts["pairs"] == len(rows) > 0
    assert (
        counts["pairs"] + counts["no_correct"] + counts["no_incorrect"] == 12
    )  # one pair per prompt at most
    for row in rows:
        assert len(row["chosen"]) % 2 == 0 and len(row["rejected"]) % 2 == 1
        assert (row["chosen_reward"], row["rejected_reward"]) == (1.0, 0.0)
        assert row["prompt"][-1]["role"] == "user" and row["answer"] == 2 * int(
            row["prompt"][-1]["content"].split()[2]
        )
        assert row["sampling"]["n"] == 4 and row["sampling"]["model"] == str(tiny_model_dir)
    assert len(read_preference_data(DataConfig(path=str(out))).pairs) == len(rows)
    cfg = validate(
        DPOConfig,
        {
            "model": {"path": str(tiny_model_dir)},
            "data": {"path": str(out), "max_length": 96},
            "train": {"output_dir": str(tmp_path / "dpo"), "batch_size": 1, "max_steps": 1},
        },
    )
    assert (run_dpo(cfg) / "model.safetensors").is_file()


def test_pairs_input_mistakes(tmp_path, tiny_model_dir) -> None:
    with pytest.raises(UserError, match="either --task"):
        make_pairs(str(tiny_model_dir), tmp_path / "p.jsonl")
    with pytest.raises(UserError, match="needs a reward"):
        make_pairs(str(tiny_model_dir), tmp_path / "p.jsonl", data="x.jsonl")
    with pytest.raises(UserError, match="at least 2"):
        make_pairs(str(tiny_model_dir), tmp_path / "p.jsonl", task="addition", sampling=PairSampling(n=1))
