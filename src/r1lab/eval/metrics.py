"""Evaluation statistics: unbiased pass@k, majority-vote maj@k, Wilson score intervals."""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from collections.abc import Hashable, Sequence

MAJ_EXACT_LIMIT = 5000  # enumerate every k-subset up to this many; above, average this many random subsets


def pass_at_k(n: int, c: int, k: int) -> float:
    """Chance that at least one of k samples drawn without replacement from n (c correct) is correct.

    The unbiased estimator of Chen et al. (2021): 1 - C(n-c, k) / C(n, k), computed as a stable product.
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def majority_correct(answers: Sequence[Hashable | None], correct: Sequence[bool]) -> float:
    """Whether the most common answer is right; None answers (no answer given) do not vote.

    A tie between several answers counts as the expected value of breaking it at random
    (e.g. 0.5 when a right and a wrong answer tie).
    """
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return 0.0
    top = max(votes.values())
    leaders = [a for a, count in votes.items() if count == top]
    right = {a for a, ok in zip(answers, correct, strict=True) if ok and a is not None}
    return sum(a in right for a in leaders) / len(leaders)


def maj_at_k(answers: Sequence[Hashable | None], correct: Sequence[bool], k: int, seed: int = 0) -> float:
    """Expected majority-vote accuracy of k samples drawn without replacement from the n given.

    Exact (all C(n, k) subsets) when there are at most MAJ_EXACT_LIMIT subsets, else a seeded
    Monte-Carlo average over that many random subsets.
    """
    n = len(answers)
    if len(correct) != n or not 1 <= k <= n:
        raise ValueError(f"maj@k needs 1 <= k <= n and one correctness flag per answer, got n={n}, k={k}")
    subsets = k_subsets(n, k, seed)
    total = sum(majority_correct([answers[i] for i in s], [correct[i] for i in s]) for s in subsets)
    return total / len(subsets)


def k_subsets(n: int, k: int, seed: int = 0) -> list[Sequence[int]]:
    """The k-subsets of range(n) an expectation over subsets averages: all C(n, k) of them when there are at
    most MAJ_EXACT_LIMIT, else that many drawn uniformly at random (each without replacement), seeded."""
    if math.comb(n, k) <= MAJ_EXACT_LIMIT:
        return list(itertools.combinations(range(n), k))
    rng = random.Random(seed)
    return [rng.sample(range(n), k) for _ in range(MAJ_EXACT_LIMIT)]


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion (95% for z=1.96). `successes` may be fractional (a mean of
    per-problem scores times n); n=0 gives (0, 1)."""
    if n <= 0:
        return (0.0, 1.0)
    p = min(max(successes / n, 0.0), 1.0)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))
