"""`eval.suites`: more held-out sets, evaluated with the main eval set at every eval point (what a fine-tune
costs elsewhere: forgetting).

A suite is a built-in task (its test file written once into the run's data folder, so every eval point and arm
sees the same problems), a user prompt file with rewards (as `eval.data`), or `perplexity`: the mean NLL of the
assistant tokens of a held-out chat/SFT file (token-weighted over its documents) and ppl = exp(mean NLL).
Accuracy suites generate with the main eval's settings (max_new_tokens, n, k, batch size, engine). Each suite
writes `suites/<name>/results.json`, `results.md` and `samples.jsonl` (one row per problem or document) beside
the main eval's files; the main results.json carries every suite's metrics under `suites`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from r1lab.config import DataConfig, EvalConfig, EvalSuiteConfig
from r1lab.errors import UserError

SUITES_DIR = "suites"


def resolve_suites(cfg: EvalConfig, data_dir: Path, where: str = "eval.suites") -> EvalConfig:
    """Check every suite before anything trains (the task exists and takes its options, the file exists and reads
    as its kind of data) and write each task suite's test file once into `data_dir`; returns `cfg` with those
    files filled in as the suites' `data`."""
    suites = []
    for i, suite in enumerate(cfg.suites):
        at = f"{where}[{i}] ({suite.name})"
        if suite.task:
            task = _located(_get_task, at, suite.task)
            if not suite.data:
                suite = suite.model_copy(update={"data": str(_write_task_suite(task, suite, data_dir, at))})
        path = suite.perplexity or suite.data
        if not Path(path).is_file():
            key = "perplexity" if suite.perplexity else "data"
            raise UserError(
                f"suite {suite.name!r}: no file {path!r}",
                where=f"{at}: {key}",
                fix="give the path of a local file",
            )
        if suite.perplexity:
            from r1lab.data import read_sft_data

            _located(read_sft_data, at, perplexity_data(suite))
        else:
            from r1lab.data import read_prompt_data

            _located(read_prompt_data, at, _prompt_data(suite))
        suites.append(suite)
    return cfg.model_copy(update={"suites": suites})


def _get_task(name: str) -> Any:
    from r1lab.tasks import get_task

    return get_task(name)


def _located(fn: Any, where: str, *args: Any) -> Any:
    """Call fn; its UserError names the suite it came from."""
    try:
        return fn(*args)
    except UserError as e:
        raise UserError(e.what, where=where + (f": {e.where}" if e.where else ""), fix=e.fix) from None


def _write_task_suite(task: Any, suite: EvalSuiteConfig, data_dir: Path, where: str) -> Path:
    """`suite-<name>-<key8>.jsonl`: keyed by what generates it, so a changed option is a new file, never a stale one."""
    from r1lab.tasks.visual import write_task_file

    spec = {"task": suite.task, "options": suite.options, "n": suite.test_size, "seed": suite.seed}
    key = hashlib.sha256(json.dumps({**spec, "split": suite.split}, sort_keys=True).encode()).hexdigest()[:8]
    path = data_dir / f"suite-{suite.name}-{key}.jsonl"
    if not path.is_file():
        generate = functools.partial(task.generate, suite.test_size, suite.seed, suite.split, **suite.options)
        records = _located(generate, where)
        write_task_file(path, records)
    return path


def _prompt_data(suite: EvalSuiteConfig) -> DataConfig:
    return DataConfig(
        path=suite.data, split=suite.split, columns=suite.columns, system_prompt=suite.system_prompt,
        limit=suite.limit, shuffle=False, max_length=1 << 20,
    )  # fmt: skip


def perplexity_data(suite: EvalSuiteConfig) -> DataConfig:
    return DataConfig(
        path=suite.perplexity, split=suite.split, columns=suite.columns, system_prompt=suite.system_prompt,
        limit=suite.limit, shuffle=False, max_length=suite.max_length,
    )  # fmt: skip


def suite_eval_config(suite: EvalSuiteConfig, cfg: EvalConfig) -> EvalConfig:
    """An accuracy suite as an EvalConfig: its own set, reward and prompt; the main eval's generation settings."""
    own = ("task", "data", "rewards", "system_prompt", "columns", "split", "limit")
    return cfg.model_copy(update={**{key: getattr(suite, key) for key in own}, "suites": []})


def run_suites(
    model: Any, tokenizer: Any, cfg: EvalConfig, model_path: str, out_dir: Path | None
) -> dict[str, dict[str, Any]]:
    """Every suite of `cfg` on the loaded model: {name: its metrics}, each written to out_dir/suites/<name>/."""
    from r1lab.eval.runner import score_set

    if any(s.task and not s.data for s in cfg.suites):  # called without a run folder (the Python API)
        with tempfile.TemporaryDirectory() as tmp:
            return run_suites(model, tokenizer, resolve_suites(cfg, Path(tmp)), model_path, out_dir)
    out = {}
    for suite in cfg.suites:
        folder = None if out_dir is None else Path(out_dir) / SUITES_DIR / suite.name
        if suite.perplexity:
            out[suite.name] = perplexity_suite(model, tokenizer, suite, cfg.batch_size, model_path, folder)
        else:
            out[suite.name] = score_set(model, tokenizer, suite_eval_config(suite, cfg), model_path, folder)
    return out


def perplexity_suite(
    model: Any, tokenizer: Any, suite: EvalSuiteConfig, batch_size: int, model_path: str, folder: Path | None
) -> dict[str, Any]:
    from r1lab.data import build_sft_dataset

    started = time.monotonic()
    examples = build_sft_dataset(perplexity_data(suite), tokenizer)
    rows = document_nll(model, examples, tokenizer.pad_token_id or 0, batch_size)
    nll, tokens = sum(r["nll"] for r in rows), sum(r["tokens"] for r in rows)
    results = {
        "kind": "perplexity",
        "num_documents": len(rows),
        "tokens": tokens,
        "mean_nll": nll / tokens,
        "ppl": math.exp(nll / tokens),
        "model": model_path,
        "source": suite.perplexity,
        "seconds": round(time.monotonic() - started, 1),
    }
    if folder is not None:
        from r1lab.eval.runner import write_results

        write_results(results, rows, folder, markdown=perplexity_markdown(results))
    return results


def document_nll(model: Any, examples: list[dict], pad_id: int, batch_size: int) -> list[dict[str, Any]]:
    """Per document: the summed NLL (nats) of its target tokens and their number, teacher-forced, right-padded."""
    import torch
    import torch.nn.functional as F

    from r1lab.data import IGNORE, collate

    device = next(model.parameters()).device
    rows: list[dict[str, Any]] = []
    model.eval()
    with torch.no_grad():
        for first in range(0, len(examples), batch_size):
            chunk = examples[first : first + batch_size]
            width = max(len(e["input_ids"]) for e in chunk)
            batch = collate(chunk, pad_id, packing=False, max_length=width)
            logits = (
                model(
                    input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
                )
                .logits[:, :-1]
                .float()
            )
            targets = batch["labels"][:, 1:].to(device)
            nll = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE, reduction="none")
            counts = (targets != IGNORE).sum(dim=1)
            for i, (total, n) in enumerate(zip(nll.sum(dim=1).tolist(), counts.tolist(), strict=True)):
                rows.append({"problem": first + i, "nll": total, "tokens": n, "mean_nll": total / max(n, 1)})
    return rows


def perplexity_markdown(results: dict[str, Any]) -> str:
    return "\n\n".join(
        [f"# Perplexity of `{results['model']}` on {results['source']}", perplexity_table({"model": results})]
    )


def perplexity_table(results: dict[str, dict[str, Any]]) -> str:
    lines = ["| model | documents | target tokens | mean NLL (nats/token) | ppl |", "|---|---|---|---|---|"]
    for label, r in results.items():
        lines.append(
            f"| {label} | {r['num_documents']} | {r['tokens']} | {r['mean_nll']:.4f} | {r['ppl']:.3f} |"
        )
    return "\n".join(lines)


def suites_markdown(evals: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown sections, one per suite: every eval point (label -> results.json with `suites`) on it."""
    from r1lab.eval.tables import results_table

    names = list(dict.fromkeys(n for r in evals.values() for n in r.get("suites", {})))
    out = []
    for name in names:
        per_label = {label: r["suites"][name] for label, r in evals.items() if name in r.get("suites", {})}
        first = next(iter(per_label.values()))
        table = perplexity_table(per_label) if first.get("kind") == "perplexity" else results_table(per_label)
        out += [f"## Suite `{name}` ({first.get('source', '?')})", table]
    return out
