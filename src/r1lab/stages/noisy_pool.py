"""A noisy SFT pool from a built-in task (`r1lab data noisy-pool`): the task's written solutions, with a controlled
share of the rows corrupted, so that a data selector can be measured at finding the noise.

Noise kinds (each a disjoint, seeded set of rows; the rest stay clean):
- `wrong`: the answer line is replaced by another answer (a neighbour's gold answer, else the gold with a digit
  changed) that the task's verifier fails;
- `truncated`: the solution is cut at a random point between 20% and 80% of its characters, before its answer line;
- `near_duplicate`: a light copy (one word of the prompt doubled, a space in the solution) of a clean row,
  replacing this row's problem;
- `off_format`: the right answer, but not on the `Answer:` line the task asks for (so the verifier fails it).

Every row gets an `id`; the noise labels (`id`, `noise`, and for a near-duplicate the `of` id it copies) go to a
separate file, kept aside for evaluation (`r1lab data select-report`). Every wrong, truncated and off-format row
is checked to fail the verifier and every clean one to pass it; the counts are returned.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from r1lab.data.jsonl import write_jsonl
from r1lab.errors import UserError
from r1lab.rewards import REWARDS
from r1lab.tasks import ANSWER_PREFIX, get_task
from r1lab.tasks.visual.base import write_task_file

KINDS = ("wrong", "truncated", "near_duplicate", "off_format")
FLAGS = {
    "wrong": "wrong",
    "truncated": "truncated",
    "near_duplicate": "near-duplicates",
    "off_format": "off-format",
}
OFF_FORMATS = ("So the result is {}.", "The final answer is **{}**", "\\boxed{{{}}}", "=> {}")


def build_noisy_pool(
    task_name: str,
    size: int,
    shares: dict[str, float],
    out: Path,
    labels_out: Path,
    *,
    seed: int = 0,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write `size` rows of `task_name`'s train split to `out`, a share `shares[kind]` of them corrupted, and the
    noise labels to `labels_out`; returns the counts per kind."""
    unknown = sorted(set(shares) - set(KINDS))
    if unknown or any(not 0 <= s <= 1 for s in shares.values()) or sum(shares.values()) > 1:
        raise UserError(
            f"noise shares {shares} are not shares of one pool",
            where="--wrong / --truncated / --near-duplicates / --off-format",
            fix="give each between 0 and 1, summing to at most 1",
        )
    if Path(out).resolve() == Path(labels_out).resolve():
        raise UserError(
            "the pool and its labels would be the same file", where="--labels", fix="name another"
        )
    task = get_task(task_name)
    verify = REWARDS.get(task.reward)
    rows = task.generate(size, seed=seed, split="train", **(options or {}))
    rng = random.Random(f"noisy-pool:{seed}")
    order = rng.sample(range(size), size)
    kinds = ["clean"] * size
    start = 0
    for kind in KINDS:
        count = round(shares.get(kind, 0.0) * size)
        for i in order[start : start + count]:
            kinds[i] = kind
        start += count
    clean = [i for i in range(size) if kinds[i] == "clean"]
    if any(k == "near_duplicate" for k in kinds) and not clean:
        raise UserError("near-duplicates copy clean rows, but the shares leave none", fix="lower a share")
    pool, labels = [], []
    for i, row in enumerate(rows):
        label: dict[str, Any] = {"id": f"row-{i:05d}", "noise": kinds[i]}
        if kinds[i] == "wrong":
            row = {
                **row,
                "completion": _with_answer(row["completion"], _wrong_answer(row, rows, verify, rng)),
            }
        elif kinds[i] == "truncated":
            row = {**row, "completion": _truncate(row["completion"], rng)}
        elif kinds[i] == "near_duplicate":
            source = rng.choice(clean)
            label["of"] = f"row-{source:05d}"
            row = _near_copy(rows[source], rng)
        elif kinds[i] == "off_format":
            lines = row["completion"].rstrip().splitlines()
            answer = lines[-1].removeprefix(ANSWER_PREFIX).strip()
            row = {**row, "completion": "\n".join([*lines[:-1], rng.choice(OFF_FORMATS).format(answer)])}
        pool.append({"id": label["id"], **row})
        labels.append(label)
    _check(pool, labels, verify, task_name)
    write_task_file(out, pool)
    write_jsonl(labels_out, labels)
    counts = {kind: kinds.count(kind) for kind in ("clean", *KINDS)}
    return {"task": task_name, "size": size, "counts": counts, "out": str(out), "labels": str(labels_out)}


def _score(verify: Any, row: dict[str, Any], completion: str) -> float:
    columns = {k: v for k, v in row.items() if k not in ("prompt", "completion", "id")}
    return float(verify(completion, prompt=row["prompt"], **columns) or 0.0)


def _truncate(text: str, rng: random.Random) -> str:
    """The first 20-80% of the characters, less any part of the answer line; a solution that is its answer line
    alone keeps half of the `Answer:` word."""
    cut = text[: int(len(text) * rng.uniform(0.2, 0.8))]
    cut = cut[: cut.rfind(ANSWER_PREFIX)] if ANSWER_PREFIX in cut else cut
    return cut if cut.strip() else ANSWER_PREFIX[: len(ANSWER_PREFIX) // 2]


def _with_answer(completion: str, answer: str) -> str:
    lines = completion.rstrip().splitlines()
    return "\n".join([*lines[:-1], f"{ANSWER_PREFIX} {answer}"])


def _wrong_answer(row: dict[str, Any], rows: list[dict[str, Any]], verify: Any, rng: random.Random) -> str:
    """A neighbour's gold answer, or the gold with one digit changed, that the verifier fails on this row."""
    gold = str(row["answer"])
    digits = [m.start() for m in re.finditer(r"\d", gold)]
    candidates = [str(r["answer"]) for r in rng.sample(rows, min(len(rows), 8)) if str(r["answer"]) != gold]
    for _ in range(8):
        if digits:
            at = rng.choice(digits)
            candidates.append(gold[:at] + str((int(gold[at]) + rng.randint(1, 9)) % 10) + gold[at + 1 :])
    for answer in candidates:
        if _score(verify, row, _with_answer(row["completion"], answer)) < 1:
            return answer
    raise UserError(
        f"no wrong answer found for the problem {row['prompt'][:60]!r}: every candidate verified",
        fix="use a task with a checkable answer (e.g. countdown, addition), or --wrong 0",
    )


def _near_copy(row: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """The row with one word of its prompt doubled and one space of its solution doubled: the same example to a
    reader, a different string to an exact-match dedup."""
    words = row["prompt"].split(" ")
    at = rng.randrange(len(words))
    prompt = " ".join([*words[: at + 1], words[at], *words[at + 1 :]])
    text = row["completion"]
    spaces = [m.start() for m in re.finditer(" ", text)]
    if spaces:
        at = rng.choice(spaces)
        text = text[:at] + " " + text[at:]
    return {**row, "prompt": prompt, "completion": text}


def _check(pool: list[dict[str, Any]], labels: list[dict[str, Any]], verify: Any, task: str) -> None:
    """Wrong, truncated and off-format rows must fail the verifier; clean rows must pass it."""
    for row, label in zip(pool, labels, strict=True):
        passed = _score(verify, row, row["completion"]) >= 1
        if passed != (label["noise"] in ("clean", "near_duplicate")):
            raise UserError(
                f"noisy pool of {task!r}: row {label['id']} ({label['noise']}) "
                f"{'passes' if passed else 'fails'} the verifier",
                fix=f"this task's verifier does not tell {label['noise']} rows apart: set that share to 0 "
                f"(--{FLAGS[label['noise']]} 0), or use a task such as countdown",
            )
