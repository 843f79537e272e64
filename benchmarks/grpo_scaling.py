"""How a GRPO step's cost grows: s/step of r1lab and TRL over group sizes G and completion lengths.

    python benchmarks/grpo_scaling.py                          # G 4 8 16 x max_new_tokens 64 256, 2 prompts/step
    python benchmarks/grpo_scaling.py --G 4 8 --max-new-tokens 64 --rounds 1 --markdown table.md

Each cell is one GRPO step of each side (the settings of benchmarks/grpo_step.py: same model, prompts,
rewards, fp32, full fine-tuning), in a fresh trainer, so it includes that first step's warm-up on both sides
alike; `--rounds 2` runs the whole grid twice, the sides in turn within each cell, and the table shows the mean.
The ratio column is TRL s/step over r1lab's, so the table shows where r1lab's lead grows or shrinks.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grpo_step import add_common, make_prompts, run_side, setup, write_json


def table(cells: list[dict], sides: list[str]) -> str:
    """A markdown table: one row per (G, max_new_tokens), s/step of each side (and its generation share),
    and TRL's s/step over each r1lab side's."""
    ours = [s for s in sides if s.startswith("r1lab")]
    head = ["G", "max_new_tokens", *(f"{s} s/step (gen)" for s in sides)]
    head += [f"TRL / {s}" for s in ours if "trl" in sides]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for cell in cells:
        mean = {s: statistics.mean(r["step"] for r in cell[s]) for s in sides}
        gen = {s: statistics.mean(r["generation"] for r in cell[s]) for s in sides}
        row = [str(cell["G"]), str(cell["max_new_tokens"]), *(f"{mean[s]:.2f} ({gen[s]:.2f})" for s in sides)]
        row += [f"{mean['trl'] / mean[s]:.2f}x" for s in ours if "trl" in sides]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--G", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--max-new-tokens", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--markdown", default=None, help="write the table to this file")
    add_common(ap)
    ap.set_defaults(prompts=2, rounds=2)
    args = ap.parse_args()
    keep = tempfile.TemporaryDirectory()
    sides, model = setup(args, Path(keep.name))
    records = make_prompts(args.prompts, args.seed, args.digits)
    cells = [
        {"G": g, "max_new_tokens": t, **{s: [] for s in sides}} for t in args.max_new_tokens for g in args.G
    ]
    for rnd in range(args.rounds):
        for cell in cells:
            run = argparse.Namespace(**vars(args))
            run.G, run.max_new_tokens, run.steps = cell["G"], cell["max_new_tokens"], 1
            for side in sides:
                step = run_side(side, run, model, records)[0]
                cell[side].append(step)
                print(
                    f"round {rnd} G={run.G} max_new_tokens={run.max_new_tokens} {side}: {step['step']:.2f} s "
                    f"(generation {step['generation']:.2f}, reward {step['reward']:.2f}, update {step['update']:.2f})",
                    flush=True,
                )
    text = table(cells, sides)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    write_json(args, cells=cells)
    keep.cleanup()


if __name__ == "__main__":
    main()
