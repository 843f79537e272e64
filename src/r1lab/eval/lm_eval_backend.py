"""`r1lab eval --backend lm_eval`: the same eval set scored by EleutherAI's lm-evaluation-harness.

The task is built locally (no hub): each problem's prompt is rendered exactly as r1lab renders it (chat template
and generation prompt, `build_prompt_dataset`), written to a JSON-lines file that lm-eval loads with its `json`
dataset path, and given to lm-eval's `hf` model as a `generate_until` request: greedy (`do_sample: false`),
`max_gen_toks` = max_new_tokens, stopping at the model's EOS. lm-eval's own generation, tokenisation of the
context and stop handling produce the completion; its `process_results` scores it with r1lab's accuracy reward
(same answer extraction), so a difference between the two accuracies is a difference in generation.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from r1lab.config import DataConfig, EvalConfig, ModelConfig, RewardSpec
from r1lab.data.jsonl import write_jsonl
from r1lab.errors import UserError

TASK_NAME = "r1lab_local"


def require_lm_eval() -> None:
    if importlib.util.find_spec("lm_eval") is None:
        raise UserError(
            "--backend lm_eval needs EleutherAI's lm-eval, which is not installed",
            where="r1lab eval --backend",
            fix="pip install 'r1lab[lm_eval]' (or: pip install lm-eval==0.4.13)",
        )


BACKENDS = ("r1lab", "lm_eval")


def run_backend(backend: str, model_path: str, cfg: EvalConfig, out_dir: Path) -> str:
    """`r1lab eval --backend NAME` for a backend other than r1lab's own: the line to print."""
    if backend != "lm_eval":
        raise UserError(
            f"unknown eval backend {backend!r}", where="--backend", fix=f"use one of: {', '.join(BACKENDS)}"
        )
    results = run_lm_eval(model_path, cfg, out_dir)
    return (
        f"lm-eval {results['lm_eval_version']}: greedy accuracy {results['accuracy']:.4f} on "
        f"{results['num_problems']} problems ({out_dir}/results.json, samples.jsonl)"
    )


def run_lm_eval(model_path: str, cfg: EvalConfig, out_dir: Path | None = None) -> dict[str, Any]:
    """Greedy accuracy of `model_path` on `cfg`'s eval set (a data file), by lm-eval; per-problem completions
    and verdicts in `samples`."""
    require_lm_eval()
    import lm_eval
    from lm_eval.tasks import TaskManager

    from r1lab.data import build_prompt_dataset
    from r1lab.models import load_tokenizer, resolve_model_path
    from r1lab.rewards import RewardRunner

    if not cfg.data or not cfg.rewards:
        raise UserError(
            "--backend lm_eval evaluates a data file with a reward",
            where="r1lab eval",
            fix="give --data FILE and --reward NAME (`r1lab data make TASK --split test` writes a task's file)",
        )
    started = time.monotonic()
    folder = resolve_model_path(model_path)
    tokenizer = load_tokenizer(ModelConfig(path=model_path), path=folder)
    data_cfg = DataConfig(path=cfg.data, split=cfg.split, system_prompt=cfg.system_prompt, limit=cfg.limit,
                          shuffle=False, columns=cfg.columns, max_length=1 << 20)  # fmt: skip
    prompts = build_prompt_dataset(data_cfg, tokenizer)
    specs: list[RewardSpec] = list(cfg.rewards)
    with (
        tempfile.TemporaryDirectory(prefix="r1lab-lm-eval-") as tmp,
        RewardRunner(specs, isolated=False) as rewards,
    ):
        docs = Path(tmp) / "test.jsonl"
        rows = [{"index": i, "context": tokenizer.decode(p.prompt_ids, skip_special_tokens=False),
                 "prompt_text": p.prompt_text, "columns": json.dumps(p.columns)} for i, p in enumerate(prompts)]  # fmt: skip
        write_jsonl(docs, rows)

        def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
            columns = json.loads(doc["columns"])
            batch = rewards.score([results[0]], [doc["prompt_text"]], [columns])
            return {
                "acc": float(batch.accuracy[0]) if batch.accuracy is not None else float(batch.total[0] >= 1)
            }

        task = {
            "task": TASK_NAME,
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(docs)}},
            "test_split": "test",
            "output_type": "generate_until",
            "doc_to_text": "{{context}}",
            "doc_to_target": "{{index}}",
            "target_delimiter": "",
            "generation_kwargs": {
                "until": [tokenizer.eos_token],
                "do_sample": False,
                "max_gen_toks": cfg.max_new_tokens,
            },
            "process_results": process_results,
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        }
        out = lm_eval.simple_evaluate(
            model="hf",
            model_args={"pretrained": str(folder), "dtype": "float32", "device": "cpu"},
            tasks=[task],
            batch_size=cfg.batch_size,
            log_samples=True,
            task_manager=TaskManager(include_defaults=False),
            bootstrap_iters=0,
        )
    samples = sorted(out["samples"][TASK_NAME], key=lambda s: s["doc"]["index"])
    results = {
        "backend": "lm_eval",
        "lm_eval_version": importlib.metadata.version("lm_eval"),
        "num_problems": len(samples),
        "accuracy": out["results"][TASK_NAME]["acc,none"],
        "model": model_path,
        "source": cfg.data,
        "rewards": [s.name for s in specs],
        "seconds": round(time.monotonic() - started, 1),
    }
    rows_out = [{"problem": s["doc"]["index"], "completion": s["filtered_resps"][0], "correct": bool(s["acc"])}
                for s in samples]  # fmt: skip
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        write_jsonl(out_dir / "samples.jsonl", rows_out)
    return {**results, "samples": rows_out}
