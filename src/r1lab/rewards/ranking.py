"""`ranking`: NDCG@k of a listwise ranking (RankGPT / ReasonRank style) against graded relevance.

The model ranks candidate passages by id: `[3] > [1] > [2]`. The answer is read from the last <answer> block,
else the `Answer:` line, else the last line (`rewards.extract.final_answer`); bracketed ids are taken in order,
and an answer without brackets may list bare ids separated by `>` (`3 > 1 > 2`).

Gold relevance (column `relevance`, kwarg `relevance_key`): a list of grades, `relevance[i - 1]` being the grade
of passage `[i]` (ids 1..N, RankGPT's numbering), or a mapping id -> grade that lists every candidate (0 for
the non-relevant ones; JSON object keys may be strings).

How a bad ranking is scored (stated, so the reward cannot be gamed):
- an id that is not a candidate is dropped (it takes no position);
- a repeated id counts at its first position only (RankGPT's post-processing does the same);
- candidates the ranking leaves out are NOT appended (RankGPT appends them in input order, which would give
  credit for copying the input order): they simply earn nothing;
- an answer with no candidate id scores 0.0 and counts as a format error.

NDCG@k = DCG@k / IDCG@k, DCG@k = sum over the first k ranked ids of gain(grade) / log2(position + 1), with
gain = grade (`gain: linear`, trec_eval's ndcg_cut as ReasonRank reports it) or 2^grade − 1 (`exponential`).
None when no candidate is relevant (IDCG = 0).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from r1lab.errors import UserError
from r1lab.rewards.extract import final_answer
from r1lab.rewards.registry import reward

GAINS = ("linear", "exponential")
_BRACKETED = re.compile(r"\[\s*(\d+)\s*\]")
_BARE = re.compile(r"\s*\d+\s*(?:>\s*\d+\s*)*")


def parse_ranking(completion: str) -> list[int]:
    """The ids a completion ranks, in order, as written (duplicates and unknown ids kept)."""
    answer = final_answer(completion)
    ids = _BRACKETED.findall(answer)
    if not ids and _BARE.fullmatch(answer):
        ids = answer.split(">")
    return [int(i) for i in ids]


def grades(relevance: Any) -> dict[int, float]:
    """The gold relevance as {candidate id: grade}."""
    if isinstance(relevance, Mapping):
        return {int(k): float(v) for k, v in relevance.items()}
    if isinstance(relevance, list | tuple):
        return {i + 1: float(g) for i, g in enumerate(relevance)}
    raise ValueError(f"relevance must be a list of grades or a mapping id -> grade, got {relevance!r}")


def ndcg_at_k(
    ranked: list[int], relevance: Mapping[int, float], k: int, gain: str = "linear"
) -> float | None:
    """NDCG@k of `ranked` ids against `relevance` (unknown ids dropped, duplicates at first position only)."""
    g = (lambda r: r) if gain == "linear" else (lambda r: 2.0**r - 1.0)
    seen: list[int] = []
    for i in ranked:
        if i in relevance and i not in seen:
            seen.append(i)
    ideal = sorted(relevance.values(), reverse=True)[:k]
    idcg = sum(g(r) / math.log2(pos + 2) for pos, r in enumerate(ideal))
    if idcg <= 0:
        return None
    dcg = sum(g(relevance[i]) / math.log2(pos + 2) for pos, i in enumerate(seen[:k]))
    return dcg / idcg


def _check(kwargs: dict[str, Any]) -> None:
    k, gain = kwargs.get("k", 10), kwargs.get("gain", "linear")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise UserError(
            f"ranking reward: k must be a positive integer, got {k!r}",
            where="rewards: name='ranking', kwargs.k",
            fix="e.g. k: 10 (NDCG@10)",
        )
    if gain not in GAINS:
        raise UserError(
            f"ranking reward: gain {gain!r} is not known",
            where="rewards: name='ranking', kwargs.gain",
            fix=f"use one of {GAINS}",
        )


def _names_ids(completion: str, **_: Any) -> bool:
    return bool(parse_ranking(completion))


@reward("ranking", columns=lambda kw: [kw.get("relevance_key", "relevance")], check=_check, parses=_names_ids)
def ranking_reward(
    completion: str,
    *,
    relevance_key: str = "relevance",
    k: int = 10,
    gain: str = "linear",
    **columns: Any,
) -> float | None:
    """NDCG@k in [0, 1] of the ranked id list; 0.0 without a candidate id; None when nothing is relevant."""
    relevance = columns.get(relevance_key)
    if relevance is None:
        return None
    gold = grades(relevance)
    ranked = [i for i in parse_ranking(completion) if i in gold]
    if not ranked:
        return 0.0 if any(r > 0 for r in gold.values()) else None
    return ndcg_at_k(ranked, gold, k, gain)
