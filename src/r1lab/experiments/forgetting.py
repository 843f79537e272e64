"""The experiment report's `eval.suites` part (forgetting): every arm on every other held-out set, and its change
there vs the baseline arm next to its gain on the target task.

Every arm is evaluated on the same suite problems (a task suite's file is written once into the run's data
folder), so the statistics are the report's paired ones: for an accuracy suite the paired hierarchical bootstrap
and McNemar of the main table; for a perplexity suite the paired difference of the per-document mean NLLs over
the same documents, token-weighted (Δ = the arm's mean NLL − the baseline's, nats per target token), its
interval from the same bootstrap and its p the two-sided bootstrap p.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from r1lab.experiments.report import ArmData, _p
from r1lab.experiments.stats import ArmStats, PairedStats, arm_stats, compare_to_baseline

SUITES_NOTE = (
    "Suites: every arm on the same problems (documents) of each `eval.suites` set. Accuracy Δ in points with the "
    "paired hierarchical bootstrap interval and McNemar / bootstrap p, as above; perplexity Δ is the arm's mean "
    "NLL minus the baseline's (nats per target token; < 0: the arm fits the text better), paired over the same "
    "documents, token-weighted, with its bootstrap interval and p; ppl × = exp(Δ)."
)


@dataclass
class SuiteData:
    name: str
    kind: str  # "accuracy" | "perplexity"
    source: str
    values: dict[str, dict[Any, np.ndarray]] = field(default_factory=dict)  # arm -> seed -> per problem
    weights: np.ndarray | None = None  # perplexity: target tokens per document (the same for every arm)


def load_suites(arms: list[ArmData]) -> list[SuiteData]:
    """Each suite's per-problem values (correctness, or per-document mean NLL) per arm and seed, read from the
    evaluations' suites/<name>/samples.jsonl."""
    suites: dict[str, SuiteData] = {}
    for arm in arms:
        for seed, eval_dir in zip(arm.seeds, arm.eval_dirs, strict=True):
            results = _read(Path(eval_dir) / "results.json").get("suites", {})
            for name, metrics in results.items():
                kind = "perplexity" if metrics.get("kind") == "perplexity" else "accuracy"
                suite = suites.setdefault(name, SuiteData(name, kind, str(metrics.get("source", "?"))))
                rows = _rows(Path(eval_dir) / "suites" / name / "samples.jsonl", kind)
                if not rows:
                    continue
                order = sorted(rows)
                if kind == "perplexity":
                    tokens = np.array([rows[p]["tokens"] for p in order], dtype=float)
                    if suite.weights is not None and not np.array_equal(tokens, suite.weights):
                        continue  # another tokenisation of the documents: not paired (left out)
                    suite.weights = tokens
                    vector = np.array([rows[p]["nll"] / max(rows[p]["tokens"], 1) for p in order])
                else:
                    vector = np.array([float(rows[p]["correct"]) for p in order])
                suite.values.setdefault(arm.label, {})[seed if arm.stages else None] = vector
    return list(suites.values())


def _rows(path: Path, kind: str) -> dict[int, dict]:
    if not path.is_file():
        return {}
    rows = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return {r["problem"]: r for r in rows if kind == "perplexity" or r.get("kind") == "greedy"}


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def suite_sections(
    arms: list[ArmData], baseline: str | None, target: dict[str, PairedStats]
) -> list[tuple[str, str]]:
    """(heading, markdown table): the Δ summary (target gain next to every suite's change), then one per suite."""
    suites = load_suites(arms)
    if not suites:
        return []
    labels = [a.label for a in arms]
    computed = [(s, *_suite_stats(s, baseline)) for s in suites]
    summary = _delta_table(labels, computed, target, baseline)
    out = [(f"Target gain and change on the other suites (Δ vs {baseline})", summary)]
    for suite, stats, paired in computed:
        table = _suite_table(suite, labels, stats, paired, baseline)
        out.append((f"Suite `{suite.name}` ({suite.kind}: {suite.source})", table))
    return out


def _suite_stats(
    suite: SuiteData, baseline: str | None
) -> tuple[dict[str, ArmStats], dict[str, PairedStats]]:
    stats = {
        label: arm_stats(np.array(list(by_seed.values())), weights=suite.weights)
        for label, by_seed in suite.values.items()
    }
    if baseline not in suite.values:
        return stats, {}
    return stats, compare_to_baseline(suite.values, baseline, weights=suite.weights)


def _cell(suite_kind: str, d: PairedStats | None, label: str, baseline: str | None) -> list[str]:
    if d is None:
        return ["(baseline)" if label == baseline else "–", "–"]
    if suite_kind == "perplexity":
        return [f"{d.diff:+.4f}", f"[{d.interval[0]:+.4f}, {d.interval[1]:+.4f}]"]
    return [f"{100 * d.diff:+.1f}", f"[{100 * d.interval[0]:+.1f}, {100 * d.interval[1]:+.1f}]"]


def _delta_table(
    labels: list[str], computed: list, target: dict[str, PairedStats], baseline: str | None
) -> str:
    head = ["arm", "target Δ (pts)", "target Δ 95%"]
    for suite, _, _ in computed:
        unit = "Δ NLL" if suite.kind == "perplexity" else "Δ (pts)"
        head += [f"{suite.name} {unit}", f"{suite.name} Δ 95%"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label in labels:
        cells = [label, *_cell("accuracy", target.get(label), label, baseline)]
        for suite, _, paired in computed:
            cells += _cell(suite.kind, paired.get(label), label, baseline)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _suite_table(
    suite: SuiteData,
    labels: list[str],
    stats: dict[str, ArmStats],
    paired: dict[str, PairedStats],
    baseline: str | None,
) -> str:
    nll = suite.kind == "perplexity"
    head = ["arm", "seeds", *(["mean NLL", "ppl", "NLL 95%"] if nll else ["accuracy %", "95% interval"])]
    head += [f"Δ vs {baseline}", "Δ 95% interval", *(["ppl ×"] if nll else []), "p", "p (Holm)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label in (x for x in labels if x in stats):
        s, d = stats[label], paired.get(label)
        seeds = [k for k in suite.values[label] if k is not None]
        cells = [label, str(len(seeds)) if seeds else "–"]
        if nll:
            cells += [f"{s.mean:.4f}", f"{np.exp(s.mean):.3f}", f"[{s.interval[0]:.4f}, {s.interval[1]:.4f}]"]
        else:
            cells += [f"{100 * s.mean:.1f}", f"[{100 * s.interval[0]:.1f}, {100 * s.interval[1]:.1f}]"]
        cells += _cell(suite.kind, d, label, baseline)
        if nll:
            cells.append("–" if d is None else f"{np.exp(d.diff):.3f}")
        cells += ["–", "–"] if d is None else [_p(d.p), _p(d.p_holm)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
