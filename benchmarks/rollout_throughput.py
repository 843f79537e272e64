"""Rollout throughput: r1lab's HF engine vs transformers `model.generate`, same prompts and sampling settings.

    python benchmarks/rollout_throughput.py                # SmolLM2-135M-Instruct (r1lab models pull ...)
    python benchmarks/rollout_throughput.py --random       # a random model of the same shape (no download)

Default workload: 8 prompts x 8 samples x 64 new tokens, fp32, as in the GRPO step benchmark. `model.generate`
gets the prompts repeated n times (what TRL's GRPOTrainer does). EOS is disabled for both, so both generate
exactly the same number of tokens and tokens/s compares like with like.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from r1lab.rollout import HFEngine, SamplingParams

QUESTIONS = [
    "What is 17 * 23? Think step by step and put the final answer in \\boxed{}.",
    "A train travels 120 km in 1.5 hours. What is its average speed in km/h?",
    "Using the numbers 3, 7, 8 and 25 once each, reach the target 96 with + - * /.",
    "Sort these words alphabetically: pear, apple, fig, banana, cherry.",
    "If x + 2y = 10 and 3x - y = 2, what are x and y?",
    "How many prime numbers are there between 10 and 50? List them.",
    "Tom has 3 times as many marbles as Ann. Together they have 48. How many does Ann have?",
    "What is the remainder when 2^20 is divided by 7? Explain your reasoning briefly.",
]
SYSTEM = "You are a helpful assistant. Reason inside <think> </think>, then answer inside <answer> </answer>."


def load(spec: str | None, random: bool) -> tuple[torch.nn.Module, object]:
    """`spec`: an HF folder or a .gguf file; None: the default model from r1lab's cache."""
    if spec is None:
        from r1lab.models import pull

        spec = str(pull("smollm2-135m-instruct"))
    folder, gguf = (str(Path(spec).parent), Path(spec).name) if spec.endswith(".gguf") else (spec, None)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    if random:  # same shape, random weights: the speed of a fixed-length generation does not depend on them
        torch.manual_seed(0)
        return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder, gguf_file=gguf)), tokenizer
    return AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32), tokenizer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--model", default=None, help="HF folder or .gguf file (default: r1lab's smollm2-135m)")
    ap.add_argument("--random", action="store_true", help="random weights of the same shape")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model, tokenizer = load(args.model, args.random)
    model.to(args.device).eval()
    model.generation_config.eos_token_id = None  # fixed-length generation on both sides
    tokenizer.eos_token = tokenizer.pad_token or tokenizer.eos_token
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}],
            add_generation_prompt=True,
            tokenize=False,
        )
        for q in (QUESTIONS * 8)[: args.prompts]
    ]
    prompts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    print(f"device={args.device} threads={torch.get_num_threads()} prompt tokens={[len(p) for p in prompts]}")

    engine = HFEngine(model, tokenizer)
    engine.eos_token_ids = []  # no stopping: every row generates max_new_tokens
    sampling = SamplingParams(
        temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens
    )
    tokenizer.padding_side = "left"
    batch = tokenizer(
        [t for t in texts for _ in range(args.n)], return_tensors="pt", padding=True, add_special_tokens=False
    ).to(args.device)

    engine.generate(prompts[:1], 2, SamplingParams(max_new_tokens=4))  # warm-up
    for rep in range(args.repeats):
        sync(args.device)
        start = time.perf_counter()
        r = engine.generate(prompts, args.n, sampling)
        sync(args.device)
        ours = time.perf_counter() - start

        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                **batch,
                do_sample=True,
                temperature=args.temperature,
                top_p=args.top_p,
                top_k=0,
                max_new_tokens=args.max_new_tokens,
                min_new_tokens=args.max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
            )
        sync(args.device)
        theirs = time.perf_counter() - start
        n_ref = (out.shape[1] - batch["input_ids"].shape[1]) * out.shape[0]
        print(
            f"run {rep}: r1lab hf engine {r.num_tokens} tokens in {ours:.2f}s = {r.num_tokens / ours:.0f} tok/s | "
            f"model.generate {n_ref} tokens in {theirs:.2f}s = {n_ref / theirs:.0f} tok/s | "
            f"speed-up x{theirs / ours:.2f}"
        )


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
