"""`run_eval`: generate on an eval set (greedy, and n samples per problem when n > 1), score with the rewards,
and write `results.json`, `results.md` and `samples.jsonl`.

A completion is correct when the accuracy reward (`rewards.runner.accuracy_index`: the first reward registered
with correctness=True, else the first reward) gives it >= 1, and well formatted when that reward could read an
answer in it (its `parses` check; no format-error rate when it has none). Majority voting (maj@k) groups samples
by their final answer. Failed reward calls are counted in results.json (`reward_failures`) and written with
their inputs to `reward_errors.jsonl`.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from r1lab.config import DataConfig, EvalConfig, ModelConfig, RewardSpec
from r1lab.data.jsonl import write_jsonl
from r1lab.errors import UserError
from r1lab.eval.metrics import maj_at_k, pass_at_k, wilson_interval
from r1lab.eval.tables import results_markdown

ERRORS_FILE = "reward_errors.jsonl"
TASK_EVAL_SIZE = 500  # problems generated for `task` without `data` or `limit`
TASK_EVAL_SEED = 0


def run_eval(
    model_path: str,
    cfg: EvalConfig,
    out_dir: Path | None = None,
    extra: Callable[[Any, Any, list, Any], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Evaluate the model at `model_path` as `cfg` says; returns the metrics (also written to `out_dir`).
    `extra(model, tokenizer, prompts, rewards)`: more measurements on the same model, prompts and rewards (eval
    --search beam), merged into the metrics. `cfg.suites` are evaluated on the same loaded model
    (r1lab.eval.suites), their metrics under `suites`."""
    from r1lab.models import load_model, load_tokenizer, resolve_model_path

    started = time.monotonic()
    model_cfg = ModelConfig(path=model_path, dtype=cfg.dtype)
    tokenizer = load_tokenizer(model_cfg, path=resolve_model_path(model_path))
    specs, prompts = eval_prompts(cfg, tokenizer)
    with _reward_runner(specs, prompts, out_dir) as rewards:
        model, tokenizer = load_model(model_cfg, trainable=False)
        rows = generate_and_score(model, tokenizer, prompts, cfg, rewards)
        more = {} if extra is None else extra(model, tokenizer, prompts, rewards)
    if cfg.suites:
        from r1lab.eval.suites import run_suites

        more["suites"] = run_suites(model, tokenizer, cfg, model_path, out_dir)
    return _finish(rows, cfg, prompts, specs, model_path, started, out_dir, more)


def score_set(
    model: Any, tokenizer: Any, cfg: EvalConfig, model_path: str, out_dir: Path | None
) -> dict[str, Any]:
    """run_eval's measurement on a model already loaded (an eval suite): its metrics, written to `out_dir`."""
    started = time.monotonic()
    specs, prompts = eval_prompts(cfg, tokenizer)
    with _reward_runner(specs, prompts, out_dir) as rewards:
        rows = generate_and_score(model, tokenizer, prompts, cfg, rewards)
    return _finish(rows, cfg, prompts, specs, model_path, started, out_dir, {})


def eval_prompts(cfg: EvalConfig, tokenizer: Any) -> tuple[list[RewardSpec], list]:
    """The rewards that score `cfg`'s eval set and its prompts, templated (the task's when `cfg.task`)."""
    from r1lab.data import build_prompt_dataset
    from r1lab.tasks import get_task

    task = get_task(cfg.task) if cfg.task else None
    specs = list(cfg.rewards) or ([RewardSpec(name=task.reward)] if task else [])
    if not specs:
        raise UserError(
            "an eval on a data file needs a reward to score it",
            where="eval.rewards",
            fix="name one, e.g. `--reward math` (or `--task T` to use that task's reward)",
        )
    system_prompt = cfg.system_prompt if cfg.system_prompt is not None else (task and task.system_prompt)
    with tempfile.TemporaryDirectory() as tmp:
        data_path = cfg.data or _write_task_set(task, cfg, Path(tmp))
        data_cfg = DataConfig(
            path=data_path, split=cfg.split, system_prompt=system_prompt, limit=cfg.limit, shuffle=False,
            columns=cfg.columns, max_length=1 << 20,  # never drop an eval prompt for its length
        )  # fmt: skip
        prompts = _eval_errors(build_prompt_dataset, data_cfg, tokenizer)
    return specs, prompts


@contextmanager
def _reward_runner(specs: list[RewardSpec], prompts: list, out_dir: Path | None) -> Iterator[Any]:
    """The rewards' runner, failures logged to out_dir/reward_errors.jsonl, the prompts' columns checked."""
    from r1lab.rewards import RewardRunner

    errors_path = None if out_dir is None else Path(out_dir) / ERRORS_FILE
    if errors_path is not None:
        errors_path.unlink(missing_ok=True)  # an earlier eval's failures into the same folder
    with RewardRunner(specs, errors_path=errors_path) as rewards:
        _eval_errors(rewards.check_columns, set.intersection(*(set(p.columns) for p in prompts)))
        yield rewards


def _finish(
    rows: list[dict],
    cfg: EvalConfig,
    prompts: list,
    specs: list[RewardSpec],
    model_path: str,
    started: float,
    out_dir: Path | None,
    more: dict[str, Any],
) -> dict[str, Any]:
    results = summarize(rows, cfg, len(prompts))
    results.update(
        model=model_path,
        source=cfg.data or f"task {cfg.task} ({cfg.split})",
        rewards=[s.name for s in specs],
        seconds=round(time.monotonic() - started, 1),
        **more,
    )
    markdown = None
    if results.get("suites"):
        from r1lab.eval.suites import suites_markdown

        markdown = "\n\n".join([results_markdown(results), *suites_markdown({"model": results})])
    if out_dir is not None:
        write_results(results, rows, Path(out_dir), markdown)
    return results


def parse_columns(items: list[str]) -> dict[str, str]:
    """`--columns prompt=question --columns answer=solution` (or `prompt=question,answer=solution`) -> the mapping
    of data.columns: r1lab name -> column in the data."""
    out: dict[str, str] = {}
    for item in (part.strip() for text in items for part in text.split(",")):
        name, sep, column = (x.strip() for x in item.partition("="))
        if not (sep and name and column):
            raise UserError(
                f"--columns {item!r} is not NAME=COLUMN",
                where="r1lab eval --columns",
                fix="e.g. --columns prompt=question --columns answer=solution (r1lab name = your column)",
            )
        if name in out and out[name] != column:
            raise UserError(
                f"--columns maps {name!r} twice ({out[name]!r} and {column!r})", where="r1lab eval --columns"
            )
        out[name] = column
    return out


def _eval_errors(fn: Any, *args: Any) -> Any:
    """Call fn; a data or column error names eval's own keys (--columns / eval.columns), not data.columns."""
    try:
        return fn(*args)
    except UserError as e:
        key = "--columns (eval.columns in a recipe)"
        what, where, fix = (
            None if t is None else t.replace("data.columns", key) for t in (e.what, e.where, e.fix)
        )
        raise UserError(what or "", where=where, fix=fix) from None


def _write_task_set(task: Any, cfg: EvalConfig, folder: Path) -> str:
    records = task.generate(cfg.limit or TASK_EVAL_SIZE, seed=TASK_EVAL_SEED, split=cfg.split)
    path = folder / f"{task.name}-{cfg.split}.jsonl"
    return str(write_jsonl(path, records))


def generate_and_score(
    model: Any, tokenizer: Any, prompts: list, cfg: EvalConfig, rewards: Any
) -> list[dict]:
    """One row per completion: problem index, kind (greedy|sample), text, answer, rewards, correctness."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from r1lab.config import RolloutConfig
    from r1lab.rewards.extract import final_answer, normalize
    from r1lab.rollout import SamplingParams, make_engine

    rollout_cfg = RolloutConfig(
        engine=cfg.engine, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size
    )
    engine = make_engine(rollout_cfg, model, tokenizer, seed=0)
    modes = [("greedy", 1, SamplingParams.greedy(cfg.max_new_tokens))]
    if cfg.n > 1:
        modes.append(
            ("sample", cfg.n, SamplingParams(temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens))
        )
    rows: list[dict] = []
    columns = [
        TextColumn("eval"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, TextColumn("greedy acc {task.fields[acc]}"), transient=True) as progress:
        bar = progress.add_task("eval", total=len(prompts), acc="-")
        for first in range(0, len(prompts), cfg.batch_size):
            chunk = prompts[first : first + cfg.batch_size]
            for kind, n, sampling in modes:
                out = engine.generate([p.prompt_ids for p in chunk], n, sampling)
                lengths = out.completion_lengths
                batch_cols = [
                    {
                        **chunk[i].columns,
                        "completion_length": length,
                        "max_completion_length": cfg.max_new_tokens,
                    }
                    for i, length in zip(out.prompt_index, lengths, strict=True)
                ]
                scored = rewards.score(
                    out.texts, [chunk[i].prompt_text for i in out.prompt_index], batch_cols
                )
                failed: dict[int, list[str]] = {}
                for e in scored.errors:
                    failed.setdefault(e["index"], []).append(e["reward"])
                for row, i in enumerate(out.prompt_index):
                    text = out.texts[row]
                    rows.append(
                        {
                            "problem": first + i,
                            "kind": kind,
                            "prompt": chunk[i].prompt_text,
                            "completion": text,
                            "answer": normalize(final_answer(text)) if text.strip() else None,
                            "gold": chunk[i].columns.get("answer"),
                            "reward": _number(scored.total[row].item()),
                            "rewards": {k: v[row] for k, v in scored.per_function.items()},
                            "correct": bool(scored.accuracy[row].item() == 1.0),
                            "format_ok": None if scored.answer_found is None else scored.answer_found[row],
                            "reward_failures": failed.get(row, []),
                            "length": lengths[row],
                            "finish_reason": out.finish_reasons[row],
                        }
                    )
            progress.update(
                bar,
                advance=len(chunk),
                acc=f"{_mean([r['correct'] for r in rows if r['kind'] == 'greedy']):.3f}",
            )
    return rows


def summarize(rows: list[dict], cfg: EvalConfig, num_problems: int) -> dict[str, Any]:
    """Metrics from the scored rows: greedy accuracy (+95% Wilson interval), format-error and truncation
    rates, mean length and mean rewards; with n > 1 also pass@k and maj@k per k (+ intervals)."""
    greedy = [r for r in rows if r["kind"] == "greedy"]
    acc = _mean([r["correct"] for r in greedy])
    out: dict[str, Any] = {
        "num_problems": num_problems,
        "split": cfg.split,
        "accuracy": acc,
        "accuracy_ci95": list(wilson_interval(acc * len(greedy), len(greedy))),
        "format_error_rate": _format_errors(greedy),
        "truncated_rate": _mean([r["finish_reason"] == "length" for r in greedy]),
        "mean_length": _mean([r["length"] for r in greedy]),
        "mean_reward": _mean([r["reward"] for r in greedy if r["reward"] is not None]),
    }
    for label in greedy[0]["rewards"] if greedy else []:
        values = [r["rewards"][label] for r in greedy if r["rewards"][label] is not None]
        out[f"reward/{label}"] = _mean(values)
    failures = {label: 0 for label in (rows[0]["rewards"] if rows else [])}
    for r in rows:  # greedy and sampled: every call that failed
        for label in r.get("reward_failures", []):
            failures[label] = failures.get(label, 0) + 1
    out["reward_failures"] = failures
    sampled = [r for r in rows if r["kind"] == "sample"]
    if not sampled:
        return out
    by_problem: dict[int, list[dict]] = {}
    for r in sampled:
        by_problem.setdefault(r["problem"], []).append(r)
    out.update(
        n=cfg.n,
        temperature=cfg.temperature,
        sample_accuracy=_mean([r["correct"] for r in sampled]),
        sample_format_error_rate=_format_errors(sampled),
        sample_mean_length=_mean([r["length"] for r in sampled]),
    )
    for k in cfg.k:
        passes = [pass_at_k(len(g), sum(r["correct"] for r in g), k) for g in by_problem.values()]
        majs = [maj_at_k([r["answer"] for r in g], [r["correct"] for r in g], k) for g in by_problem.values()]
        for name, values in ((f"pass@{k}", passes), (f"maj@{k}", majs)):
            out[name] = _mean(values)
            out[f"{name}_ci95"] = list(wilson_interval(out[name] * len(values), len(values)))
    return out


def write_results(
    results: dict[str, Any], rows: list[dict], out_dir: Path, markdown: str | None = None
) -> None:
    """results.json, results.md (`markdown`, else the metrics table) and samples.jsonl, each written to a temp
    file and renamed into place."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "results.json": json.dumps(results, indent=2) + "\n",
        "results.md": (markdown or results_markdown(results)) + "\n",
    }
    write_jsonl(out_dir / "samples.jsonl", rows)
    for name, text in files.items():
        tmp = out_dir / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out_dir / name)


def _format_errors(rows: list[dict]) -> float | None:
    """Share of rows whose answer the accuracy reward could not read; None when it cannot tell."""
    known = [r["format_ok"] for r in rows if r["format_ok"] is not None]
    return _mean([not ok for ok in known]) if known else None


def _mean(values: list) -> float:
    return float(sum(values) / len(values)) if values else math.nan


def _number(value: float) -> float | None:
    return None if math.isnan(value) else value
