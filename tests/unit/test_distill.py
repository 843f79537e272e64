"""`r1lab data distill`: verified samples only, deduplicated, at most m per prompt, provenance; nothing verified
is an error with no file written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rl_testkit import single_thread

import r1lab.stages.distill as distill_module
from r1lab.data.jsonl import write_jsonl
from r1lab.errors import UserError
from r1lab.stages.distill import DistillOptions, distill, normalised


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


def rewards_file(tmp_path: Path) -> Path:
    file = tmp_path / "checks.py"
    file.write_text(
        "def even(completion, **columns):\n    return 1.0 if len(completion) % 2 == 0 else 0.0\n\n"
        "def never(completion, **columns):\n    return 0.0\n"
    )
    return file


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_distill_keeps_verified_distinct_samples_with_provenance(tmp_path, tiny_model_dir) -> None:
    prompts = write_jsonl(
        tmp_path / "p.jsonl", [{"prompt": f"Write about {w}.", "answer": w} for w in "abcdef"]
    )
    opts = DistillOptions(model=str(tiny_model_dir), out=tmp_path / "sft.jsonl", data=str(prompts),
                          rewards=[f"{rewards_file(tmp_path)}:even"], k=4, m=2, max_new_tokens=6)  # fmt: skip
    counts = distill(opts)
    kept = read(tmp_path / "sft.jsonl")
    assert counts["kept"] == len(kept) > 0 and counts["samples"] == 6 * 5  # 4 samples + 1 greedy per prompt
    assert all(len(r["completion"]) % 2 == 0 for r in kept)  # verified only
    by_prompt: dict[str, list[str]] = {}
    for r in kept:
        by_prompt.setdefault(r["prompt"], []).append(normalised(r["completion"]))
        assert r["answer"] == r["prompt"][len("Write about ")]  # the record's own columns come along
        p = r["provenance"]
        assert (
            p["model"] == str(tiny_model_dir)
            and p["k"] == 4
            and p["rewards"] == [f"{rewards_file(tmp_path)}:even"]
        )
        assert p["temperature"] == 0.7 and p["sample"] in ("greedy", "sample") and p["source"] == str(prompts)
    assert all(len(v) <= 2 and len(set(v)) == len(v) for v in by_prompt.values())


def test_duplicates_and_the_per_prompt_cap(tmp_path, tiny_model_dir, monkeypatch) -> None:
    rows = [  # prompt 0: a duplicate up to case and spaces, then a third distinct one past m = 2
        {"problem": 0, "kind": "greedy", "prompt": "q0", "completion": "The answer is 4", "correct": True},
        {"problem": 0, "kind": "sample", "prompt": "q0", "completion": "the  answer is 4 ", "correct": True},
        {"problem": 0, "kind": "sample", "prompt": "q0", "completion": "2 + 2 = 4", "correct": True},
        {"problem": 0, "kind": "sample", "prompt": "q0", "completion": "4, surely", "correct": True},
        {"problem": 1, "kind": "sample", "prompt": "q1", "completion": "wrong", "correct": False},
    ]
    monkeypatch.setattr(distill_module, "generate_and_score", lambda *args: rows)
    prompts = write_jsonl(
        tmp_path / "p.jsonl", [{"prompt": "q0", "answer": "4"}, {"prompt": "q1", "answer": "5"}]
    )
    opts = DistillOptions(model=str(tiny_model_dir), out=tmp_path / "o.jsonl", data=str(prompts),
                          rewards=["math"], k=2, m=2)  # fmt: skip
    counts = distill(opts)
    assert [r["completion"] for r in read(tmp_path / "o.jsonl")] == ["The answer is 4", "2 + 2 = 4"]
    assert counts == {"prompts": 2, "samples": 5, "correct": 4, "kept": 2, "prompts_kept": 1}


def test_nothing_verified_is_an_error_and_no_file(tmp_path, tiny_model_dir) -> None:
    opts = DistillOptions(model=str(tiny_model_dir), out=tmp_path / "o.jsonl", task="addition", n=3, k=2,
                          rewards=[f"{rewards_file(tmp_path)}:never"], max_new_tokens=4)  # fmt: skip
    with pytest.raises(UserError, match=r"no sample of .* verified: 0 of 9 were correct"):
        distill(opts)
    assert not (tmp_path / "o.jsonl").exists()
    with pytest.raises(UserError, match="needs the column 'answer'"):
        prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "What is 1 + 1?"}])
        distill(DistillOptions(model=str(tiny_model_dir), out=tmp_path / "o.jsonl", data=str(prompts),
                               rewards=["math"]))  # fmt: skip
