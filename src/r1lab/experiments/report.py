"""The report of an experiment, rendered from its run folder alone (`pipeline.json`, each evaluation's
samples.jsonl, each stage's stage.json and metrics.jsonl): `results.md`, `plots/*.png` and `report.html`.
`r1lab report RUN_DIR` calls this again without re-running anything.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from r1lab.errors import UserError
from r1lab.eval.tables import _duration, results_table
from r1lab.experiments.overlap import contamination_table
from r1lab.experiments.stats import ArmStats, PairedStats, arm_stats, compare_to_baseline
from r1lab.report.html import image_tag, markdown_table_to_html, page, samples_html, side_by_side
from r1lab.report.plots import curve_plot, interval_bars, read_metrics, sweep_plot

STATS_NOTE = (
    "Accuracy is greedy, on the same held-out problems for every arm. Interval: 95% hierarchical bootstrap "
    "(10,000 seeded resamples: seeds with replacement, then problems with replacement), so it covers both the "
    "test-set sampling and the seed variation; seed sd is the spread of the per-seed accuracies. Δ is paired "
    "(seed s of an arm against seed s of the baseline, on the same problems), its interval from the same paired "
    "bootstrap. p: exact McNemar (binomial test on the discordant problems) with one seed; with several seeds the "
    "two-sided paired-bootstrap p (per-seed McNemar p in the per-seed table). p (Holm): Holm's step-down "
    "correction across the arms compared with the baseline."
)


@dataclass
class ArmData:
    label: str
    stages: list[str]
    sweep: dict[str, Any] | None
    seeds: list[Any] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)  # results.json per seed
    eval_dirs: list[str] = field(default_factory=list)  # the evaluation folder per seed (its suites/ inside)
    rows: list[dict[int, dict]] = field(default_factory=list)  # greedy sample row per problem, per seed
    train_seconds: list[float | None] = field(default_factory=list)
    tokens_trained: list[float | None] = field(default_factory=list)
    tokens_generated: list[float | None] = field(default_factory=list)
    curves: dict[str, list[dict]] = field(
        default_factory=dict
    )  # "<arm> s<seed>" -> metrics of its last stage

    def by_seed(self) -> dict[Any, np.ndarray]:
        """Correctness per problem, per seed; the base arm (one evaluation, shared by every seed) as {None: ...}."""
        if not self.stages:
            return {None: _correct(self.rows[0])}
        return {seed: _correct(rows) for seed, rows in zip(self.seeds, self.rows, strict=True)}

    def matrix(self) -> np.ndarray:
        return np.array(list(self.by_seed().values()))


def _correct(rows: dict[int, dict]) -> np.ndarray:
    return np.array([float(rows[p]["correct"]) for p in sorted(rows)])


def write_experiment_report(root: Path, baseline: str | None = None, out: Path | None = None) -> Path:
    """results.md, plots/ and report.html of the experiment in `root`, into `out` (default: `root`); every arm is
    compared with `baseline` (default: the experiment's own)."""
    root = Path(root)
    out = root if out is None else Path(out)
    state_path = root / "pipeline.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    exp = state.get("experiment")
    if not exp:
        raise UserError(
            f"{root} holds no experiment (no `experiment` in pipeline.json)",
            where=str(state_path),
            fix="run `r1lab compare RECIPE` or `r1lab run` on a recipe with an `experiment:` section first",
        )
    arms = [a for a in (_load_arm(raw) for raw in exp["arms"]) if a.rows]
    if not arms:
        raise UserError(f"no arm of {root} has finished its evaluation yet", where=str(state_path))
    if baseline is not None and baseline not in (labels := [raw["label"] for raw in exp["arms"]]):
        raise UserError(
            f"no arm {baseline!r} to compare with",
            where=str(state_path),
            fix=f"name one of: {', '.join(labels)}",
        )
    if baseline is not None and not any(a.label == baseline for a in arms):
        raise UserError(f"arm {baseline!r} has no finished evaluation yet", where=str(state_path))
    baseline = baseline or exp["baseline"]
    baseline = baseline if any(a.label == baseline for a in arms) else None
    stats = {a.label: arm_stats(a.matrix()) for a in arms}
    paired = compare_to_baseline({a.label: a.by_seed() for a in arms}, baseline) if baseline else {}

    plots_dir = out / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    plots = [
        interval_bars(
            [a.label for a in arms],
            [stats[a.label].mean for a in arms],
            [stats[a.label].interval for a in arms],
            [stats[a.label].per_seed for a in arms],
            plots_dir / "accuracy.png",
        )
    ]
    sweeps = _sweeps(arms, stats)
    for i, (key, points) in enumerate(sweeps.items()):
        plots.append(sweep_plot(key, points, plots_dir / f"sweep-{i}.png"))
    curves = {name: rows for a in arms for name, rows in a.curves.items()}
    rl = {k: v for k, v in curves.items() if any("reward/mean" in r for r in v)}
    sft = {k: v for k, v in curves.items() if k not in rl}
    plots += [
        curve_plot(rl, ["reward/mean"], "RL reward (train batch)", plots_dir / "reward.png"),
        curve_plot(rl, ["accuracy"], "RL accuracy (train batch)", plots_dir / "train_accuracy.png"),
        curve_plot(rl, ["completion_length/mean"], "completion length (tokens)", plots_dir / "length.png"),
        curve_plot(sft, ["loss"], "SFT loss", plots_dir / "sft_loss.png"),
    ]
    plots = [p for p in plots if p]

    title = f"{exp['name']}: {' vs '.join(a.label for a in arms)}"
    tables = {
        "arms": arms_table(arms, stats, paired, baseline),
        "seeds": seeds_table(arms, paired, baseline),
        "metrics": results_table(
            {_run_label(a, s): r for a in arms for s, r in zip(a.seeds, a.results, strict=True)}
        ),
    }
    sweep_md = {key: sweep_table(key, points) for key, points in sweeps.items()}
    differ = differ_table(arms, baseline)
    md = [f"# {title}", _summary_line(arms, exp, baseline), tables["arms"], STATS_NOTE]
    md += ["## Per seed", tables["seeds"]]
    for key, table in sweep_md.items():
        md += [f"## Sweep over `{key}`", table]
    if differ:
        md += [f"## Where they differ (vs {baseline}, first seed)", differ]
    from r1lab.experiments.forgetting import SUITES_NOTE, suite_sections

    suites = suite_sections(arms, baseline, paired)  # eval.suites: the change on every other held-out set
    for heading, table in suites:
        md += [f"## {heading}", table]
    md += [SUITES_NOTE] if suites else []
    md += ["## Eval metrics per arm and seed", tables["metrics"]]
    contamination = contamination_table(exp)  # None when no stage's data and eval set are files
    if contamination:
        md += ["## Training data vs eval set (`r1lab data check`)", contamination]
    (out / "results.md").write_text("\n\n".join(md) + "\n")

    parts = [
        f"<p>{html.escape(_summary_line(arms, exp, baseline))}</p>",
        markdown_table_to_html(tables["arms"]),
    ]
    parts += [f"<p class=meta>{html.escape(STATS_NOTE)}</p>", "<h2>Plots</h2><div class=plots>"]
    parts += [image_tag(p) for p in plots] + ["</div>"]
    parts += ["<details><summary>Per seed</summary>", markdown_table_to_html(tables["seeds"]), "</details>"]
    for key, table in sweep_md.items():
        parts += [f"<h2>Sweep over {html.escape(key)}</h2>", markdown_table_to_html(table)]
    if differ:
        parts += [f"<h2>Where they differ (vs {html.escape(baseline)}, first seed)</h2>"]
        parts += [markdown_table_to_html(differ), *_differ_examples(arms, baseline)]
    for heading, table in suites:
        parts += [f"<h2>{html.escape(heading)}</h2>", markdown_table_to_html(table)]
    parts += [f"<p class=meta>{html.escape(SUITES_NOTE)}</p>"] if suites else []
    parts += ["<h2>Eval metrics per arm and seed</h2>", markdown_table_to_html(tables["metrics"])]
    if contamination:
        parts += ["<h2>Training data vs eval set (`r1lab data check`)</h2>"]
        parts += [markdown_table_to_html(contamination)]
    parts.append("<h2>Sample completions</h2>")
    for a in arms:
        eval_dir = Path(exp_run(exp, a.label)["eval_dir"])
        parts += [f"<h3>{html.escape(a.label)}</h3>", samples_html(eval_dir / "samples.jsonl")]
    (out / "report.html").write_text(page(title, parts))
    return out / "results.md"


def exp_run(exp: dict[str, Any], label: str) -> dict[str, Any]:
    return next(a for a in exp["arms"] if a["label"] == label)["runs"][0]


def _load_arm(raw: dict[str, Any]) -> ArmData:
    arm = ArmData(raw["label"], raw["stages"], raw.get("sweep"))
    shared: dict[str, dict[int, dict]] = {}
    for run in raw["runs"]:
        results_path = Path(run["eval_dir"]) / "results.json"
        samples = Path(run["eval_dir"]) / "samples.jsonl"
        if not results_path.is_file() or not samples.is_file():
            continue  # not evaluated yet (an interrupted experiment): reported without this seed
        if run["eval_dir"] not in shared:
            rows = (json.loads(line) for line in samples.read_text().splitlines() if line.strip())
            shared[run["eval_dir"]] = {r["problem"]: r for r in rows if r["kind"] == "greedy"}
        arm.seeds.append(run["seed"])
        arm.results.append(json.loads(results_path.read_text()))
        arm.eval_dirs.append(run["eval_dir"])
        arm.rows.append(shared[run["eval_dir"]])
        seconds, trained, generated = _cost(run["chain"])
        arm.train_seconds.append(seconds)
        arm.tokens_trained.append(trained)
        arm.tokens_generated.append(generated)
        if run["chain"]:
            name = arm.label if run["seed"] is None else f"{arm.label} s{run['seed']}"
            arm.curves[name] = read_metrics(Path(run["chain"][-1]) / "metrics.jsonl")
    return arm


def _cost(chain: list[str]) -> tuple[float | None, float | None, float | None]:
    """Training wall time of the stages that made the model, tokens trained on, tokens generated in RL rollouts
    (from the logged steps); None where unknown."""
    if not chain:
        return None, None, None
    seconds = trained = generated = 0.0
    rollouts = False
    for folder in map(Path, chain):
        entry = _read(folder / "stage.json")
        if entry.get("seconds") is None:
            return None, None, None
        seconds += entry["seconds"]
        for row in read_metrics(folder / "metrics.jsonl"):
            trained += row.get("tokens_trained", row.get("tokens", 0)) or 0
            if "time/generation" in row and "tokens_per_s" in row:
                generated += row["tokens_per_s"] * row["time/generation"]
                rollouts = True
    return seconds, trained, generated if rollouts else None


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known and len(known) == len(values) else None


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _interval(iv: tuple[float, float], signed: bool = False) -> str:
    fmt = "{:+.1f}" if signed else "{:.1f}"
    return f"[{fmt.format(100 * iv[0])}, {fmt.format(100 * iv[1])}]"


def _p(p: float | None) -> str:
    if p is None:
        return "–"
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


def _tokens(value: float | None) -> str:
    if value is None:
        return "–"
    return (
        f"{value / 1e6:.2f}M" if value >= 1e5 else f"{value / 1e3:.1f}k" if value >= 1e3 else f"{value:.0f}"
    )


def _run_label(arm: ArmData, seed: Any) -> str:
    return arm.label if seed is None or not arm.stages else f"{arm.label} (seed {seed})"


def _summary_line(arms: list[ArmData], exp: dict[str, Any], baseline: str | None) -> str:
    problems = arms[0].matrix().shape[1]
    seeds = ", ".join(str(s) for s in exp["seeds"]) if exp["seeds"] != [None] else "the stages' own"
    line = f"{problems} held-out problems; training seeds: {seeds}; baseline: {baseline or '(not evaluated yet)'}."
    train, evaluate = _compute(exp)
    return f"{line} Compute: {_duration(train)} training (each shared stage once) + {_duration(evaluate)} evaluation."


def _compute(exp: dict[str, Any]) -> tuple[float, float]:
    """Seconds of every distinct stage and evaluation of the experiment that finished."""
    stages = {d for a in exp["arms"] for r in a["runs"] for d in r["chain"]}
    evals = {r["eval_dir"] for a in exp["arms"] for r in a["runs"]}
    train = sum(_read(Path(d) / "stage.json").get("seconds") or 0.0 for d in stages)
    evaluate = sum(_read(Path(d) / "results.json").get("seconds") or 0.0 for d in evals)
    return train, evaluate


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def arms_table(
    arms: list[ArmData], stats: dict[str, ArmStats], paired: dict[str, PairedStats], baseline: str | None
) -> str:
    head = ["arm", "stages", "seeds", "accuracy %", "95% interval", "seed sd", f"Δ vs {baseline} (pts)"]
    head += ["Δ 95% interval", "p", "p (Holm)", "train time", "tokens trained", "tokens generated"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for a in arms:
        s, d = stats[a.label], paired.get(a.label)
        seeds = len(a.seeds) if a.stages else "–"
        cells = [
            a.label,
            " → ".join(a.stages) or "(base model)",
            str(seeds),
            _pct(s.mean),
            _interval(s.interval),
        ]
        cells.append(_pct(s.spread) if len(a.seeds) > 1 and a.stages else "–")
        if d is None:
            cells += ["(baseline)" if a.label == baseline else "–", "–", "–", "–"]
        else:
            cells += [f"{100 * d.diff:+.1f}", _interval(d.interval, True), _p(d.p), _p(d.p_holm)]
        cells += [
            _duration(_mean(a.train_seconds)),
            _tokens(_mean(a.tokens_trained)),
            _tokens(_mean(a.tokens_generated)),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seeds_table(arms: list[ArmData], paired: dict[str, PairedStats], baseline: str | None) -> str:
    head = ["arm", "seed", "accuracy %", "Wilson 95%", f"Δ vs {baseline} (pts)", "arm only / baseline only"]
    head += ["McNemar p (exact)", "train time"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for a in arms:
        d = paired.get(a.label)
        for i, (seed, results) in enumerate(zip(a.seeds, a.results, strict=True)):
            pair = d.seeds.index(seed) if d is not None and seed in (d.seeds or []) else None
            shown = "–" if seed is None else str(seed) if a.stages else f"(vs seed {seed})"  # base: one eval
            cells = [a.label, shown, _pct(results["accuracy"])]
            cells.append(_interval(tuple(results["accuracy_ci95"])))
            if d is not None and pair is not None:
                diff, b, c, p = d.per_seed[pair]
                cells += [f"{100 * diff:+.1f}", f"{b} / {c}", _p(p)]
            else:
                cells += ["–", "–", "–"]
            cells.append(_duration(a.train_seconds[i]))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _sweeps(
    arms: list[ArmData], stats: dict[str, ArmStats]
) -> dict[str, list[tuple[Any, float, float, float]]]:
    out: dict[str, list] = {}
    for a in arms:
        if a.sweep:
            s = stats[a.label]
            out.setdefault(a.sweep["key"], []).append((_number(a.sweep["value"]), s.mean, *s.interval))
    return out


def _number(value: Any) -> Any:
    try:
        return float(value) if not isinstance(value, bool) else value
    except (TypeError, ValueError):
        return value


def sweep_table(key: str, points: list[tuple[Any, float, float, float]]) -> str:
    lines = [f"| {key} | accuracy % | 95% interval |", "|---|---|---|"]
    lines += [f"| {v} | {_pct(m)} | {_interval((lo, hi))} |" for v, m, lo, hi in points]
    return "\n".join(lines)


def _first_seed_rows(arms: list[ArmData], baseline: str | None) -> tuple[dict[int, dict], list[ArmData]]:
    base = next((a for a in arms if a.label == baseline), None)
    if base is None:
        return {}, []
    return base.rows[0], [a for a in arms if a.label != baseline]


def differ_table(arms: list[ArmData], baseline: str | None) -> str:
    base_rows, others = _first_seed_rows(arms, baseline)
    if not others:
        return ""
    lines = [
        "| arm | solves, baseline does not | baseline solves, arm does not | first of those problems (#) |"
    ]
    lines.append("|---|---|---|---|")
    for a in others:
        wins, losses = _differ(a.rows[0], base_rows)
        sample = ", ".join(map(str, wins[:5])) + (" / " + ", ".join(map(str, losses[:5])) if losses else "")
        lines.append(f"| {a.label} | {len(wins)} | {len(losses)} | {sample or '–'} |")
    return "\n".join(lines)


def _differ(rows: dict[int, dict], base: dict[int, dict]) -> tuple[list[int], list[int]]:
    wins = [p for p in sorted(rows) if rows[p]["correct"] and not base[p]["correct"]]
    losses = [p for p in sorted(rows) if base[p]["correct"] and not rows[p]["correct"]]
    return wins, losses


def _differ_examples(arms: list[ArmData], baseline: str | None, limit: int = 2) -> list[str]:
    base_rows, others = _first_seed_rows(arms, baseline)
    parts = []
    for a in others:
        wins, losses = _differ(a.rows[0], base_rows)
        for kind, problems in (
            (f"{a.label} solves, {baseline} does not", wins),
            (f"{baseline} solves, {a.label} does not", losses),
        ):
            if problems:
                parts.append(f"<h3>{html.escape(kind)} ({len(problems)})</h3>")
            for p in problems[:limit]:
                columns = {a.label: a.rows[0][p]["completion"], baseline: base_rows[p]["completion"]}
                parts.append(side_by_side(a.rows[0][p]["prompt"], columns))
    return parts
