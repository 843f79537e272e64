"""DPO throughput: r1lab's DPO stage vs TRL's DPOTrainer, same model, pairs, batch, precision, loss and beta.

    python benchmarks/dpo_throughput.py [--steps 6] [--batch-size 4] [--rounds 2] [--precision fp32]

Both sides get the very same token ids (prompt, chosen, rejected; built once by r1lab.data.preference and
handed to TRL already tokenised, so no template or EOS difference can creep in), see the pairs in the same
order (no shuffling: r1lab `data.shuffle: false`, TRL `train_sampling_strategy: sequential`), with no dropout
(SmolLM2 has none; TRL disables it anyway), the sigmoid loss at the same beta, AdamW with the same lr,
cosine schedule, no warmup and clipping at 1.0, one micro-batch per step and no gradient checkpointing.
Reference log-probs: both precompute them in one no-grad pass over the pairs before the first step (r1lab
`reference: precompute`, TRL `precompute_ref_log_probs=True`), so neither keeps a second model and neither
runs a reference forward inside a step; the precompute time is reported apart from the step time.
So the per-step losses must agree closely (step 1 is ln 2 on both: policy = reference), and the timing
compares the training steps alone.

Throughput = pairs of steps 2..N / time from the end of step 1 to the end of step N (step 1 pays one-off
warm-up costs), as wall time and as this process's CPU time (on a shared machine the steadier measure).
`--rounds 2` runs r1lab, TRL, then TRL, r1lab, so a change in machine load hits both sides; the figures are
summed over the rounds. Needs TRL: `pip install -e ".[bench]"`.

Measured 2026-12-01 on the 2-core AMD EPYC (AVX2) with `--steps 6 --batch-size 4 --rounds 2 --precision fp32
--threads 1` (docs/results/dpo-throughput/): r1lab 0.453, TRL 0.259 pairs per CPU-s (1.75x; wall 1.78x),
per-step losses within 4e-6.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from trl_side import StepClock, clocks, spent, trainer_args


def write_pairs(path: Path, n: int, seed: int) -> None:
    """Addition word problems: chosen adds up step by step to the right total, rejected makes one slip
    (varied lengths, prompt + one response ~60-200 tokens)."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(n):
            nums = [rng.randint(2, 99) for _ in range(rng.randint(2, 6))]
            question = (
                f"A shop sold {', '.join(map(str, nums))} apples on consecutive days. How many in total?"
            )
            slip = rng.randrange(1, len(nums))
            sides = []
            for wrong in (False, True):
                steps, total = [], nums[0]
                for i, x in enumerate(nums[1:], start=1):
                    prev, total = (
                        total,
                        total + x + (rng.choice([-10, -1, 1, 10]) if wrong and i == slip else 0),
                    )
                    steps.append(f"{prev} + {x} = {total}.")
                sides.append(
                    "Let us add them one day at a time. " + " ".join(steps) + f" The answer is {total}."
                )
            f.write(json.dumps({"prompt": question, "chosen": sides[0], "rejected": sides[1]}) + "\n")


def build_pairs(model_dir: str, data: Path, max_length: int) -> list[dict[str, list[int]]]:
    """The tokenised pairs both sides train on; every response token is scored (one assistant turn)."""
    from r1lab.config import DataConfig, ModelConfig
    from r1lab.data.preference import build_preference_dataset, read_preference_data
    from r1lab.models import load_tokenizer

    cfg = DataConfig(path=str(data), max_length=max_length, shuffle=False)
    dataset = build_preference_dataset(
        cfg, load_tokenizer(ModelConfig(path=model_dir)), read_preference_data(cfg)
    )
    for ex in dataset:  # TRL scores every completion token: the same only if r1lab's masks are all 1
        assert all(ex["chosen_mask"]) and all(ex["rejected_mask"]), "a response has unscored template tokens"
    return list(dataset)


def positions(pairs: list[dict[str, list[int]]], batch: int) -> str:
    """Token positions each side runs: r1lab each prompt once, TRL each prompt twice (one row per side),
    padded to the longest row of its batch."""
    ours = sum(len(p["prompt_ids"]) + len(p["chosen_ids"]) + len(p["rejected_ids"]) for p in pairs)
    theirs = ours + sum(len(p["prompt_ids"]) for p in pairs)
    rows = [len(p["prompt_ids"]) + max(len(p["chosen_ids"]), len(p["rejected_ids"])) for p in pairs]
    padded = sum(2 * len(rows[i : i + batch]) * max(rows[i : i + batch]) for i in range(0, len(rows), batch))
    return f"tokens run: r1lab {ours} (each prompt once), TRL {theirs} (each prompt twice), {padded} padded"


def run_r1lab(args: argparse.Namespace, model_dir: str, data: Path, out: Path) -> dict[str, Any]:
    import r1lab.stages.dpo as dpo_stage
    from r1lab.config import DPOConfig, validate
    from r1lab.training.tracking import Tracker

    cfg = validate(
        DPOConfig,
        {
            "model": {"path": model_dir},
            "data": {"path": str(data), "max_length": args.max_length, "shuffle": False},
            "optim": {"lr": args.lr, "scheduler": "cosine", "max_grad_norm": 1.0},
            "train": {
                "output_dir": str(out),
                "batch_size": args.batch_size,
                "max_steps": args.steps,
                "precision": args.precision,
                "seed": args.seed,
            },
            "loss": "sigmoid",
            "beta": args.beta,
            "reference": "precompute",
        },
    )
    ends: list[tuple[float, float]] = []
    precompute_times: list[float] = []
    advance, precompute = Tracker.advance, dpo_stage.reference_logps

    def timed_precompute(*a: Any, **k: Any) -> Any:
        began = time.perf_counter()
        table = precompute(*a, **k)
        precompute_times.append(time.perf_counter() - began)
        return table

    Tracker.advance = lambda self, step: (ends.append(clocks()), advance(self, step))[1]  # step-end hook
    dpo_stage.reference_logps = timed_precompute
    try:
        dpo_stage.run_dpo(cfg)
    finally:
        Tracker.advance, dpo_stage.reference_logps = advance, precompute
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {
        "losses": [r["loss"] for r in rows if "loss" in r],
        "pairs": args.batch_size * (len(ends) - 1),
        **spent(ends),
        "precompute_s": sum(precompute_times),
    }


def run_trl(
    args: argparse.Namespace, model_dir: str, pairs: list[dict[str, list[int]]], out: Path
) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, PrinterCallback
    from trl import DPOConfig, DPOTrainer

    from r1lab.config import ModelConfig
    from r1lab.models import load_tokenizer

    losses: list[float] = []

    class Given(DPOTrainer):
        """TRL's trainer on r1lab's token ids: the dataset is already in TRL's tokenised form
        (prompt_ids, chosen_ids, rejected_ids); each step's loss is recorded unrounded."""

        def _prepare_dataset(self, dataset: Any, *_: Any, **__: Any) -> Any:
            return dataset

        def compute_loss(self, model: Any, inputs: Any, *a: Any, **k: Any) -> Any:
            loss = super().compute_loss(model, inputs, *a, **k)
            if self.model.training:
                losses.append(float((loss[0] if isinstance(loss, tuple) else loss).detach()))
            return loss

    keys = ("prompt_ids", "chosen_ids", "rejected_ids")
    dataset = Dataset.from_list([{k: ex[k] for k in keys} for ex in pairs])
    clock = StepClock()
    config = DPOConfig(
        **trainer_args(args, out),
        weight_decay=0.0,
        gradient_checkpointing=False,
        loss_type=["sigmoid"],
        beta=args.beta,
        precompute_ref_log_probs=True,
    )
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    began = time.perf_counter()  # the trainer precomputes the reference log-probs while it is built
    trainer = Given(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=load_tokenizer(ModelConfig(path=model_dir)),
        callbacks=[clock],
    )
    precompute_s = time.perf_counter() - began
    trainer.remove_callback(PrinterCallback)  # each step's log dict on stdout
    trainer.train()
    return {
        "losses": losses,
        "pairs": args.batch_size * (len(clock.ends) - 1),
        **spent(clock.ends),
        "precompute_s": precompute_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m-instruct", help="named default or HF folder")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=4, help="pairs per step")
    parser.add_argument("--rounds", type=int, default=2, help="r1lab,TRL then TRL,r1lab, ...")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")  # TRL's reference precompute bar
    if args.threads:
        torch.set_num_threads(args.threads)

    from r1lab.models import pull, resolve_model_path

    model_dir = str(pull(args.model)) if "/" not in args.model else resolve_model_path(args.model)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; model {model_dir}")
    print(
        f"steps {args.steps} x {args.rounds} rounds, batch {args.batch_size} pairs, max_length {args.max_length}, "
        f"precision {args.precision}, loss sigmoid, beta {args.beta}, lr {args.lr}; reference log-probs "
        "precomputed by both (r1lab reference: precompute, TRL precompute_ref_log_probs=True)"
    )
    runs: dict[str, list[dict[str, Any]]] = {"r1lab": [], "trl": []}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "pairs.jsonl"
        write_pairs(data, args.steps * args.batch_size, args.seed)
        pairs = build_pairs(model_dir, data, args.max_length)
        tokens = [len(p["prompt_ids"]) + len(p["chosen_ids"]) + len(p["rejected_ids"]) for p in pairs]
        print(f"{len(pairs)} pairs, prompt+chosen+rejected {min(tokens)}-{max(tokens)} tokens")
        print(positions(pairs, args.batch_size))
        for r in range(args.rounds):
            for side in ("r1lab", "trl") if r % 2 == 0 else ("trl", "r1lab"):
                where = Path(tmp) / f"{side}-{r}"
                result = (
                    run_r1lab(args, model_dir, data, where)
                    if side == "r1lab"
                    else run_trl(args, model_dir, pairs, where)
                )
                runs[side].append(result)
                print(
                    f"round {r + 1} {side:>5}: {result['pairs'] / result['seconds']:.3f} pairs/s wall, "
                    f"{result['pairs'] / result['cpu_seconds']:.3f} per CPU-s, reference precompute "
                    f"{result['precompute_s']:.1f} s; losses {', '.join(f'{x:.6f}' for x in result['losses'])}",
                    flush=True,
                )
    total = {
        side: {k: sum(r[k] for r in rs) for k in ("pairs", "seconds", "cpu_seconds")}
        for side, rs in runs.items()
    }
    for side, t in total.items():
        print(
            f"{side:>5}: {t['pairs'] / t['seconds']:.3f} pairs/s wall, {t['pairs'] / t['cpu_seconds']:.3f} pairs per "
            f"CPU-s ({t['pairs']} pairs in {t['seconds']:.1f} s wall, {t['cpu_seconds']:.1f} s CPU)"
        )
    ours, theirs = total["r1lab"], total["trl"]
    diff = max(
        abs(a - b)
        for mine, peer in zip(runs["r1lab"], runs["trl"], strict=True)
        for a, b in zip(mine["losses"], peer["losses"], strict=True)
    )
    print(
        f"r1lab / trl: {(ours['pairs'] / ours['seconds']) / (theirs['pairs'] / theirs['seconds']):.2f}x pairs/s wall, "
        f"{(ours['pairs'] / ours['cpu_seconds']) / (theirs['pairs'] / theirs['cpu_seconds']):.2f}x per CPU-s; "
        f"max per-step |loss diff| {diff:.2e}"
    )


if __name__ == "__main__":
    main()
