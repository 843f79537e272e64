"""SFT throughput: r1lab's SFT loop vs TRL's SFTTrainer, same model, tokens, batches, precision and packing.

    python benchmarks/sft_throughput.py [--steps 12] [--batch-size 4] [--precision bf16] [--packing]

Both trainers get the very same token ids and loss masks (built once by r1lab.data), see the examples in the
same order (no shuffling), use AdamW (fused), the same lr schedule, gradient clipping at 1.0 and no gradient
checkpointing (pass --gradient-checkpointing to turn it on for both). So their per-step losses must agree
closely, and the timing compares the loops alone. TRL's SFTConfig turns gradient checkpointing on by default,
so unless --gradient-checkpointing or --skip-trl-default is given, TRL also runs a second time with its default
("trl-default-gc"), which is what a TRL user gets out of the box.

Throughput = non-pad input tokens of steps 2..N / time from the end of step 1 to the end of step N (step 1
pays one-off warm-up costs), both as wall time and as this process's CPU time: on a machine shared with other
work, wall time swings wildly (idle threads spin at every parallel region), CPU time much less. On a CPU
shared with other jobs use --threads 1: with 2 threads each parallel region waits for a descheduled thread and
both loops slow down several-fold, by amounts that change from run to run. Needs TRL: `pip install -e ".[bench]"`.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path
from typing import Any

import torch

from trl_side import StepClock, clocks, spent, trainer_args


def write_chats(path: Path, n: int, seed: int) -> None:
    """Arithmetic word problems with step-by-step answers (varied lengths, prompt + reply ~60-250 tokens)."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(n):
            nums = [rng.randint(2, 99) for _ in range(rng.randint(2, 6))]
            steps, total = [], nums[0]
            for x in nums[1:]:
                steps.append(f"{total} + {x} = {total + x}.")
                total += x
            question = (
                f"A shop sold {', '.join(map(str, nums))} apples on consecutive days. How many in total?"
            )
            answer = "Let us add them one day at a time. " + " ".join(steps) + f" The answer is {total}."
            chat = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
            f.write(json.dumps({"messages": chat}) + "\n")


def run_r1lab(args: argparse.Namespace, model_dir: str, data: Path, out: Path) -> dict[str, Any]:
    from r1lab.config import SFTConfig, validate
    from r1lab.stages.sft import run_sft

    cfg = validate(
        SFTConfig,
        {
            "model": {"path": model_dir, "gradient_checkpointing": args.gradient_checkpointing},
            "data": {"path": str(data), "max_length": args.max_length, "shuffle": False},
            "optim": {"lr": args.lr, "scheduler": "cosine", "max_grad_norm": 1.0},
            "train": {
                "output_dir": str(out),
                "batch_size": args.batch_size,
                "max_steps": args.steps,
                "precision": args.precision,
                "seed": args.seed,
            },
            "packing": args.packing,
        },
    )
    from r1lab.training.tracking import Tracker

    ends: list[tuple[float, float]] = []
    advance = Tracker.advance
    Tracker.advance = lambda self, step: (ends.append(clocks()), advance(self, step))[1]  # step-end hook
    try:
        run_sft(cfg)
    finally:
        Tracker.advance = advance
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss" in r]
    return {
        "losses": [r["loss"] for r in rows],
        "tokens": sum(r["tokens"] for r in rows[1:]),
        **spent(ends),
    }


def run_trl(
    args: argparse.Namespace, model_dir: str, data: Path, out: Path, gradient_checkpointing: bool
) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from r1lab.config import DataConfig, ModelConfig
    from r1lab.data import build_sft_dataset
    from r1lab.models import load_tokenizer

    tokenizer = load_tokenizer(ModelConfig(path=model_dir))
    examples = build_sft_dataset(DataConfig(path=str(data), max_length=args.max_length), tokenizer)
    dataset = Dataset.from_list(
        [
            {"input_ids": e["input_ids"], "labels": e["labels"]}  # TRL keeps a given labels column as is
            for e in examples
        ]
    )

    clock = StepClock()
    config = SFTConfig(
        **trainer_args(args, out), gradient_checkpointing=gradient_checkpointing, packing=args.packing
    )
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    trainer = SFTTrainer(
        model=model, args=config, train_dataset=dataset, processing_class=tokenizer, callbacks=[clock]
    )
    trainer.train()
    cumulative = [log["num_tokens"] for log in clock.logs]
    return {
        "losses": [log["loss"] for log in clock.logs],
        "tokens": cumulative[-1] - cumulative[0],
        **spent(clock.ends),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m-instruct", help="named default or HF folder")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    parser.add_argument("--packing", action="store_true")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--only", choices=["r1lab", "trl"], help="run one side only")
    parser.add_argument(
        "--skip-trl-default",
        action="store_true",
        help="skip the extra TRL run with its default checkpointing on",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from r1lab.models import pull, resolve_model_path

    model_dir = str(pull(args.model)) if "/" not in args.model else resolve_model_path(args.model)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; model {model_dir}")
    print(
        f"steps {args.steps}, batch {args.batch_size}, max_length {args.max_length}, precision {args.precision}, "
        f"packing {args.packing}, gradient checkpointing {args.gradient_checkpointing}"
    )
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "chats.jsonl"
        write_chats(data, args.steps * args.batch_size, args.seed)
        if args.only in (None, "r1lab"):
            results["r1lab"] = run_r1lab(args, model_dir, data, Path(tmp) / "r1lab")
        if args.only in (None, "trl"):
            gc = args.gradient_checkpointing
            results["trl"] = run_trl(args, model_dir, data, Path(tmp) / "trl", gc)
            if not gc and not args.skip_trl_default:  # TRL's own default turns checkpointing on
                results["trl-default-gc"] = run_trl(args, model_dir, data, Path(tmp) / "trl-gc", True)
    for name, r in results.items():
        r["tokens_per_s"] = r["tokens"] / r["seconds"]
        r["tokens_per_cpu_s"] = r["tokens"] / r["cpu_seconds"]
        losses = ", ".join(f"{x:.3f}" for x in r["losses"])
        print(
            f"{name:>14}: {r['tokens_per_s']:8.1f} tokens/s wall, {r['tokens_per_cpu_s']:8.1f} tokens per CPU-s "
            f"({r['tokens']:.0f} tokens in {r['seconds']:.1f} s wall, {r['cpu_seconds']:.1f} s CPU)"
        )
        print(f"{'':>16}losses per step: {losses}")
    ours = results.get("r1lab")
    for name in ("trl", "trl-default-gc"):
        if ours and name in results:
            theirs = results[name]
            diff = max(abs(a - b) for a, b in zip(ours["losses"], theirs["losses"], strict=False))
            print(
                f"r1lab / {name}: {ours['tokens_per_s'] / theirs['tokens_per_s']:.2f}x tokens/s wall, "
                f"{ours['tokens_per_cpu_s'] / theirs['tokens_per_cpu_s']:.2f}x per CPU-s; final loss "
                f"r1lab {ours['losses'][-1]:.4f}, {name} {theirs['losses'][-1]:.4f}; max per-step |diff| {diff:.4f}"
            )


if __name__ == "__main__":
    main()
