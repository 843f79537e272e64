"""Test-time selection over n samples of one problem: majority vote, ORM best-of-n, ORM-weighted majority, and
PRM selection (prm_min, prm_last).

Pure functions of the samples' extracted answers (None: no answer), their correctness and their ORM scores
(the reward model's raw output, a logit). Each returns the chance that the selected completion is correct.

- `majority`: the most frequent answer; None answers do not vote (as eval's maj@k, metrics.maj_at_k).
- `best_of_n`: the completion with the highest ORM score.
- `weighted_majority`: each answer's weight is the sum over its completions of sigmoid(score), the ORM's
  probability that the completion is correct (verifier-weighted voting, as in DIVERSE, Li et al. 2023);
  None answers do not vote.
- `prm_min` / `prm_last`: the completion whose process-reward-model step scores aggregate highest: by their
  minimum (a chain is as good as its weakest step) or by the last step's score (`prm_aggregate`); then the
  best-of-n pick (and closed form) on that one scalar per completion.

Ties are broken by a uniform random choice among the tied leaders and counted as its expected value (the share
of tied leaders that are correct), so every result is deterministic.

The `*_at_k` forms are the unbiased estimators of a method's accuracy with k samples given n >= k drawn: the
mean over k-subsets drawn without replacement: all of them when there are at most metrics.MAJ_EXACT_LIMIT
(majority then equals eval's maj@k exactly), else that many seeded random ones, the same draws for every
problem with the same n (a Monte-Carlo estimate; maj@k draws its own); best-of-n, and so prm_min and prm_last,
has an exact closed form.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Hashable, Sequence
from itertools import groupby

import numpy as np

from r1lab.eval.metrics import MAJ_EXACT_LIMIT, k_subsets

Answers = Sequence[Hashable | None]
METHODS_NEEDING_SCORES = ("best_of_n", "weighted_majority")  # an outcome reward model's
METHODS_NEEDING_PRM = ("prm_min", "prm_last")  # a process reward model's step scores


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _leaders_correct(values: dict, right: set) -> float:
    """Expected correctness of a uniform pick among the keys with the largest value."""
    if not values:
        return 0.0
    top = max(values.values())
    leaders = [a for a, v in values.items() if v == top]
    return sum(a in right for a in leaders) / len(leaders)


def prm_aggregate(step_scores: Sequence[float], method: str) -> float:
    """One completion's PRM score from its step scores: the minimum (prm_min) or the last step's (prm_last).

    A completion with no step separator is one step (its one score is both). No score at all (blank text, or
    every step cut off by the PRM's max_length) gives -inf: never picked over a scored completion."""
    if method not in METHODS_NEEDING_PRM:
        raise ValueError(f"unknown PRM aggregation {method!r}; one of {METHODS_NEEDING_PRM}")
    if not step_scores:
        return -math.inf
    return float(min(step_scores)) if method == "prm_min" else float(step_scores[-1])


def best_of_n_correct(scores: Sequence[float], correct: Sequence[bool]) -> float:
    """Whether the highest-scored completion is right (a tie: the share of tied completions that are right)."""
    if len(scores) != len(correct) or not scores:
        raise ValueError(f"best-of-n needs one score per completion, got {len(scores)} and {len(correct)}")
    top = max(scores)
    tied = [ok for s, ok in zip(scores, correct, strict=True) if s == top]
    return sum(tied) / len(tied)


def weighted_majority_correct(answers: Answers, scores: Sequence[float], correct: Sequence[bool]) -> float:
    """Whether the answer with the largest summed sigmoid(score) is right; None answers do not vote."""
    return _weighted_vote(answers, [sigmoid(s) for s in scores], correct)


def _weighted_vote(answers: Answers, weights: Sequence[float], correct: Sequence[bool]) -> float:
    votes: dict = {}
    for a, w in zip(answers, weights, strict=True):
        if a is not None:
            votes[a] = votes.get(a, 0.0) + w
    right = {a for a, ok in zip(answers, correct, strict=True) if ok and a is not None}
    return _leaders_correct(votes, right)


def best_of_n_at_k(scores: Sequence[float], correct: Sequence[bool], k: int) -> float:
    """Expected best-of-k accuracy over the k-subsets of the n samples, exactly.

    Group the samples by score, highest first; with A samples scored above a group of m (c of them right), the
    subset's best lies in that group with probability [C(n-A, k) - C(n-A-m, k)] / C(n, k), and a uniform tie-break
    inside the group is right with probability c/m (whichever of its members the subset holds).
    """
    n = len(scores)
    if len(correct) != n or not 1 <= k <= n:
        raise ValueError(f"best-of-k needs 1 <= k <= n and one score per sample, got n={n}, k={k}")
    ranked = sorted(zip(scores, correct, strict=True), key=lambda sc: -sc[0])
    total, above = 0.0, 0
    for _, group in groupby(ranked, key=lambda sc: sc[0]):
        flags = [ok for _, ok in group]
        m = len(flags)
        p_best = math.comb(n - above, k) - math.comb(n - above - m, k)
        total += p_best * sum(flags) / m
        above += m
    return total / math.comb(n, k)


def weighted_majority_at_k(
    answers: Answers, scores: Sequence[float], correct: Sequence[bool], k: int, seed: int = 0
) -> float:
    """Expected weighted-majority accuracy over k-subsets of the n samples (see the module docstring)."""
    if len(scores) != len(answers):
        raise ValueError(
            f"weighted majority@k needs one score per sample, got {len(scores)} and {len(answers)}"
        )
    return vote_at_k(answers, [sigmoid(s) for s in scores], correct, k, seed)


def vote_at_k(
    answers: Answers, weights: Sequence[float], correct: Sequence[bool], k: int, seed: int = 0
) -> float:
    """Expected accuracy of a (weighted) vote over k-subsets of the n samples, vectorised: all C(n, k) subsets up
    to metrics.MAJ_EXACT_LIMIT (then equal to maj@k with unit weights), else that many seeded random ones."""
    n = len(answers)
    if len(weights) != n or len(correct) != n or not 1 <= k <= n:
        raise ValueError(f"a vote@k needs 1 <= k <= n and one weight per sample, got n={n}, k={k}")
    codes: dict = {}
    ids = np.array([-1 if a is None else codes.setdefault(a, len(codes)) for a in answers], dtype=np.int64)
    if not codes:
        return 0.0
    w = np.where(ids >= 0, np.asarray(weights, dtype=np.float64), 0.0)  # None does not vote
    right = np.zeros(len(codes), dtype=bool)
    right[ids[(ids >= 0) & np.asarray(correct, dtype=bool)]] = True
    subsets = _subset_matrix(n, k, seed)
    rows = np.repeat(np.arange(len(subsets)), k)
    flat = rows * len(codes) + np.maximum(ids[subsets], 0).ravel()
    votes = np.bincount(flat, weights=w[subsets].ravel(), minlength=len(subsets) * len(codes))
    votes = votes.reshape(len(subsets), len(codes))
    top = votes.max(axis=1)
    leaders = votes == top[:, None]
    value = (leaders & right).sum(axis=1) / leaders.sum(axis=1)
    return float(np.where(top > 0, value, 0.0).mean())


@functools.lru_cache(maxsize=32)
def _subset_matrix(n: int, k: int, seed: int) -> np.ndarray:
    """[subsets, k] sample indices: every k-subset up to MAJ_EXACT_LIMIT, else that many uniform random ones
    (the same draws for every problem with n samples: cached, as drawing them costs more than the vote)."""
    if math.comb(n, k) <= MAJ_EXACT_LIMIT:
        return np.array(k_subsets(n, k), dtype=np.int64).reshape(-1, k)
    draws = np.random.default_rng(seed).random((MAJ_EXACT_LIMIT, n))
    out = np.argpartition(draws, k - 1, axis=1)[:, :k]  # the k smallest of n uniforms: a uniform k-subset
    out.setflags(write=False)  # shared through the cache
    return out


def _majority_at_k(
    answers: Answers, scores: Sequence[float] | None, correct: Sequence[bool], k: int
) -> float:
    return vote_at_k(answers, [1.0] * len(answers), correct, k)


def _best_of_n_at_k(
    answers: Answers, scores: Sequence[float] | None, correct: Sequence[bool], k: int
) -> float:
    assert scores is not None
    return best_of_n_at_k(scores, correct, k)


def _weighted_at_k(
    answers: Answers, scores: Sequence[float] | None, correct: Sequence[bool], k: int
) -> float:
    assert scores is not None
    return weighted_majority_at_k(answers, scores, correct, k)


AT_K: dict[str, Callable[[Answers, Sequence[float] | None, Sequence[bool], int], float]] = {
    "majority": _majority_at_k,
    "best_of_n": _best_of_n_at_k,
    "weighted_majority": _weighted_at_k,
    # the scores given are already prm_aggregate's, one per completion: best-of-n on them
    "prm_min": _best_of_n_at_k,
    "prm_last": _best_of_n_at_k,
}
