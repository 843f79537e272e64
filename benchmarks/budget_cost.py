"""What one item of recipes/budget-study.yaml costs on this machine: on SmolLM2-135M-Instruct from base, the time to
sample N on-policy pairs (chosen: solution, n 2, 64 new tokens, 16 prompts a batch, as the recipe), a DPO stage on
them (load, reference log-probs, steps of 8 pairs, save), and a greedy evaluation of 100 Countdown test problems.

    ../shared/bin/heavy .venv/bin/python benchmarks/budget_cost.py [--pairs 32] [--out /tmp/budget-cost]

Prints one JSON line of seconds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from r1lab.config import DataConfig, DPOConfig, EvalConfig, validate
from r1lab.data.jsonl import write_jsonl
from r1lab.eval import run_eval
from r1lab.models import pull
from r1lab.stages.dpo import run_dpo
from r1lab.stages.dpo_pairs import PairSampling, make_pairs
from r1lab.tasks import get_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--eval-problems", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("/tmp/budget-cost"))
    args = parser.parse_args()
    root, model, task = args.out, str(pull("smollm2-135m-instruct")), get_task("countdown")
    write_jsonl(root / "train.jsonl", task.generate(2 * args.pairs, seed=0, split="train"))
    write_jsonl(root / "test.jsonl", task.generate(args.eval_problems, seed=0, split="test"))

    began = time.monotonic()
    counts = make_pairs(
        model, root / "pairs.jsonl", data=str(root / "train.jsonl"), rewards=["countdown"],
        sampling=PairSampling(n=2, max_new_tokens=64, batch_size=16), max_pairs=args.pairs, chosen="solution",
        prompts_config=DataConfig(path=str(root / "train.jsonl")),
    )  # fmt: skip
    sampling_s = time.monotonic() - began
    cfg = validate(
        DPOConfig,
        {
            "model": {"path": model},
            "data": {"path": str(root / "pairs.jsonl"), "max_length": 192},
            "optim": {"lr": 5e-6},
            "train": {"output_dir": str(root / "dpo"), "epochs": 1, "batch_size": 8, "precision": "auto"},
        },
    )
    began = time.monotonic()
    run_dpo(cfg)
    stage_s = time.monotonic() - began
    metrics = [json.loads(line) for line in (root / "dpo" / "metrics.jsonl").read_text().splitlines()]
    evaluation = validate(
        EvalConfig,
        {
            "data": str(root / "test.jsonl"),
            "rewards": [{"name": "countdown"}],
            "max_new_tokens": 64,
            "batch_size": 100,
        },
    )
    began = time.monotonic()
    run_eval(model, evaluation, root / "eval")
    eval_s = time.monotonic() - began
    result = {
        "pairs": counts,
        "sampling_s": round(sampling_s, 1),
        "dpo_stage_s": round(stage_s, 1),
        "dpo_loop_s": round(metrics[-1]["elapsed"], 1),
        "dpo_step_s": [round(8 / row["pairs_per_s"], 1) for row in metrics],
        f"eval_{args.eval_problems}_s": round(eval_s, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
