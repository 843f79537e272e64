"""Paired statistics for arms evaluated on the same held-out problems (pure numpy; see ALGORITHMS.md).

Inputs are correctness matrices: `x[s, p]` is 1 when the arm's model trained with seed s solves problem p
(greedy). Every arm is evaluated on the same problems; seeds are paired by position (seed s of an arm against
seed s of the baseline); an untrained arm (base) has one row, broadcast against every seed.

- accuracy per arm: the mean over seeds of the per-seed accuracy; spread: the sample sd of the per-seed
  accuracies (0 with one seed).
- interval (arm and paired difference): a hierarchical bootstrap: resample seeds with replacement, then problems
  with replacement (the same problem draw for every drawn seed, since every seed is evaluated on the same test
  set); the 2.5/97.5 percentiles of the resampled mean. It accounts for both the test-set sampling and the seed
  variation; with one seed it is the plain (paired) bootstrap over problems. 10,000 resamples, seeded.
- p per seed: exact McNemar (a two-sided binomial test on the discordant pairs).
- p per arm: the exact McNemar p with one seed; with several, the two-sided hierarchical-bootstrap p
  2·min(P*[Δ ≤ 0], P*[Δ ≥ 0]), at least 1/resamples (consistent with the interval: p < 0.05 when the 95% interval excludes 0).
- Holm's step-down correction across the arms compared with the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from math import comb
from typing import Any

import numpy as np

RESAMPLES = 10_000
SEED = 0


def as_matrix(x: np.ndarray | list) -> np.ndarray:
    m = np.asarray(x, dtype=float)
    if m.ndim == 1:
        m = m[None, :]
    if m.ndim != 2 or m.shape[1] == 0:
        raise ValueError(f"expected a [seeds, problems] matrix, got shape {m.shape}")
    return m


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Broadcast a one-row (untrained) arm against the other's seeds; otherwise seeds must match."""
    a, b = as_matrix(a), as_matrix(b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"arms were evaluated on different numbers of problems: {a.shape[1]} vs {b.shape[1]}"
        )
    if a.shape[0] != b.shape[0]:
        if 1 not in (a.shape[0], b.shape[0]):
            raise ValueError(f"cannot pair {a.shape[0]} seeds with {b.shape[0]}")
        rows = max(a.shape[0], b.shape[0])
        a, b = np.broadcast_to(a, (rows, a.shape[1])), np.broadcast_to(b, (rows, b.shape[1]))
    return a, b


def bootstrap_means(
    x: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED, weights: np.ndarray | None = None
) -> np.ndarray:
    """Hierarchical bootstrap of the grand mean of `x[s, p]`: seeds drawn with replacement, then problems.
    `weights[p]` (a perplexity suite: each document's target tokens): the drawn problems' weighted mean, so a
    resample of per-document mean NLLs is the token-weighted mean NLL of the drawn documents."""
    x = as_matrix(x)
    w = None if weights is None else np.asarray(weights, dtype=float)
    rng = np.random.default_rng(seed)
    seeds, problems = x.shape
    out = np.empty(resamples)
    chunk = max(1, 2_000_000 // (seeds * problems))  # bounded memory for large test sets
    for start in range(0, resamples, chunk):
        n = min(chunk, resamples - start)
        s = rng.integers(0, seeds, size=(n, seeds))
        p = rng.integers(0, problems, size=(n, problems))
        # mean over drawn seeds of the mean over drawn problems: x[s][:, p] per resample
        drawn = x[s[:, :, None], p[:, None, :]]
        if w is None:
            per_problem_mean = drawn.mean(axis=2)
        else:
            per_problem_mean = (drawn * w[p][:, None, :]).sum(axis=2) / w[p].sum(axis=1)[:, None]
        out[start : start + n] = per_problem_mean.mean(axis=1)
    return out


def percentile_interval(draws: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def mcnemar_exact(arm: np.ndarray | list, baseline: np.ndarray | list) -> tuple[int, int, float]:
    """(b, c, p): b = solved by the arm only, c = by the baseline only, p = min(1, 2·P[Bin(b+c, ½) ≤ min(b, c)])."""
    a = np.asarray(arm, dtype=bool)
    z = np.asarray(baseline, dtype=bool)
    if a.shape != z.shape or a.ndim != 1:
        raise ValueError("McNemar needs two correctness vectors over the same problems")
    b, c = int((a & ~z).sum()), int((~a & z).sum())
    n, k = b + c, min(b, c)
    if n == 0:
        return b, c, 1.0
    tail = Fraction(sum(comb(n, i) for i in range(k + 1)), 2**n)  # exact, no float underflow in the sum
    return b, c, float(min(Fraction(1), 2 * tail))


def holm(pvalues: list[float]) -> list[float]:
    """Holm-adjusted p-values: sorted ascending, p_(i)·(m − i + 1), made monotone, capped at 1."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


@dataclass
class ArmStats:
    mean: float  # mean over seeds of the per-seed accuracy
    spread: float  # sd of the per-seed accuracies (ddof=1; 0 with one seed)
    interval: tuple[float, float]  # hierarchical bootstrap, 95%
    per_seed: list[float]


def arm_stats(
    x: np.ndarray | list, resamples: int = RESAMPLES, seed: int = SEED, weights: np.ndarray | None = None
) -> ArmStats:
    x = as_matrix(x)
    per_seed = x.mean(axis=1) if weights is None else x @ (np.asarray(weights, float) / np.sum(weights))
    spread = float(per_seed.std(ddof=1)) if len(per_seed) > 1 else 0.0
    interval = percentile_interval(bootstrap_means(x, resamples, seed, weights))
    return ArmStats(float(per_seed.mean()), spread, interval, [float(v) for v in per_seed])


@dataclass
class PairedStats:
    diff: float  # mean over seeds of (arm accuracy − baseline accuracy)
    interval: tuple[float, float]  # paired hierarchical bootstrap, 95%
    p: float  # exact McNemar with one seed, else the two-sided bootstrap p
    per_seed: list[tuple[float, int, int, float]]  # (difference, b, c, McNemar p) per seed
    p_holm: float | None = None
    seeds: list[Any] | None = None  # the seeds paired, in the order of per_seed


def paired_stats(
    arm: np.ndarray | list,
    baseline: np.ndarray | list,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    weights: np.ndarray | None = None,
) -> PairedStats:
    """Correctness matrices (McNemar per seed); with `weights`, per-document values (mean NLL) whose Δ is their
    weighted mean difference, p always the bootstrap p (per seed: the difference, the documents the arm is
    lower / higher on, no p)."""
    a, z = _pair(np.asarray(arm), np.asarray(baseline))
    d = a - z
    draws = bootstrap_means(d, resamples, seed, weights)
    if weights is None:
        per_seed = [(float(d[s].mean()), *mcnemar_exact(a[s], z[s])) for s in range(d.shape[0])]
    else:
        w = np.asarray(weights, dtype=float) / np.sum(weights)
        per_seed = [
            (float(d[s] @ w), int((d[s] < 0).sum()), int((d[s] > 0).sum()), np.nan) for s in range(len(d))
        ]
    if d.shape[0] == 1 and weights is None:
        p = per_seed[0][3]
    else:
        tail = min((draws <= 0).mean(), (draws >= 0).mean())
        p = float(min(1.0, max(2 * tail, 1 / len(draws))))  # never 0: at best "below 1 in `resamples`"
    diff = float(d.mean()) if weights is None else float(np.mean([v[0] for v in per_seed]))
    return PairedStats(diff, percentile_interval(draws), p, per_seed)


def align(arm: dict[Any, np.ndarray], baseline: dict[Any, np.ndarray]) -> tuple[np.ndarray, np.ndarray, list]:
    """Two arms' per-seed correctness vectors as paired matrices: seeds both have (in the arm's order), or every
    seed against the one evaluation of an untrained arm (keyed None). Returns (arm, baseline, seeds)."""
    if None in arm or None in baseline:
        seeds = [s for s in (baseline if None in arm else arm) if s is not None] or [None]
        return as_matrix(list(arm.values())), as_matrix(list(baseline.values())), seeds
    seeds = [s for s in arm if s in baseline]
    if not seeds:
        raise ValueError(f"no seed in common: {list(arm)} vs {list(baseline)}")
    return as_matrix([arm[s] for s in seeds]), as_matrix([baseline[s] for s in seeds]), seeds


def compare_to_baseline(
    arms: dict[str, dict[Any, np.ndarray]],
    baseline: str,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    weights: np.ndarray | None = None,
) -> dict[str, PairedStats]:
    """Paired statistics of every other arm against `baseline` (arms: label -> {seed: correctness vector}, an
    untrained arm as {None: vector}; with `weights`, per-document values), on the seeds both have;
    Holm-adjusted across those arms."""
    out = {}
    for label, by_seed in arms.items():
        if label != baseline:
            a, z, seeds = align(by_seed, arms[baseline])
            out[label] = paired_stats(a, z, resamples, seed, weights)
            out[label].seeds = seeds
    for label, adjusted in zip(out, holm([s.p for s in out.values()]), strict=True):
        out[label].p_holm = adjusted
    return out
