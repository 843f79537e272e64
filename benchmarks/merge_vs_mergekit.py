"""r1lab's merge operators vs mergekit's on the same tiny models: the max abs difference of every tensor, per method.

    python benchmarks/merge_vs_mergekit.py                       # mergekit in-process if importable, else
    python benchmarks/merge_vs_mergekit.py --mergekit /work/venvs/mergekit/bin/mergekit-yaml   # its own venv
    python benchmarks/merge_vs_mergekit.py --memory --hidden 1024     # peak RSS of each tool, bigger models

Models: a random 4-block Llama (hidden 64, vocab 512, untied head) as the base, and two "fine-tunes" = base +
noise of 0.1 x the base's spread per tensor (so the SLERP angle is well inside its slerp branch, not the lerp
fallback), saved as float32 safetensors. Both tools write float32. Each case is one merge spelled for each
tool; methods mergekit lacks are spelled as their mergekit equivalent:
    wise_ft(α)        = mergekit linear of [base, ft] with weights [1 − α, α]
    transfer          = mergekit task_arithmetic on the old base of [ft (1), new base (1)]
    lines(α, β)       = mergekit task_arithmetic with the weight gradient [α, α + β] over the blocks
                        (compared on the block tensors only: mergekit gives the embeddings and final norm
                        the gradient's ends, LiNeS gives them α)
    dare, density 1   = no drop: must equal mergekit's dare_linear exactly
    dare, density 0.5 = stochastic: the two tools draw different masks (r1lab: one torch generator per tensor
                        seeded by name; mergekit: torch.bernoulli on the global RNG) and rescale differently
                        (r1lab: survivors × 1/density, the paper; mergekit's default `rescale`: match each
                        delta's L1 norm). Reported as the kept fraction and the mean of merged − base against
                        task arithmetic's, not as a max difference.

Measured 2026-12-01 on the 2-core CPU, mergekit 0.1.5 in-process: max |r1lab − mergekit| linear 1.2e-7,
task_arithmetic 0, ties 0, slerp 1.5e-8, wise_ft 1.2e-7, transfer 1.5e-8, lines 0 (block tensors), dare at
density 1 0; dare at density 0.5 kept 0.501 vs 0.498 of the entries, |Δ|₁ ratio 1.011 vs 1.000.
`--memory --hidden 1024` (3 models of 394 MiB, task_arithmetic): peak RSS +25.5 MiB (r1lab) vs +1619.5 MiB.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file

from r1lab.config import MergeConfig, validate
from r1lab.stages.merge import run_merge

LINEAR_TOLERANCE = 1e-6


def build_models(root: Path, hidden: int = 64, vocab: int = 512) -> dict[str, Path]:
    """base, ft1, ft2 (base + noise) and base2 (another base of the same shape) as HF folders."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_config(config)
    paths = {"base": root / "base"}
    base.save_pretrained(paths["base"])
    state = base.state_dict()
    for name, seed in (("ft1", 1), ("ft2", 2), ("base2", 3)):
        g = torch.Generator().manual_seed(seed)
        spread = 0.1 if name != "base2" else 1.0
        noisy = {
            k: v
            + spread * (v.std() if v.numel() > 1 and v.std() > 0 else 1.0) * torch.randn(v.shape, generator=g)
            for k, v in state.items()
        }
        base.load_state_dict(noisy)
        paths[name] = root / name
        base.save_pretrained(paths[name])
    return paths


def cases(p: dict[str, Path]) -> list[dict[str, Any]]:
    """Each: name, r1lab config, mergekit config, tensors compared ('all' or 'blocks'), stochastic flag."""
    s = {k: str(v) for k, v in p.items()}

    def models(*entries: tuple[str, float | list[float]]) -> list[dict[str, Any]]:
        return [{"model": s[m], "parameters": {"weight": w}} for m, w in entries]

    two = models(("ft1", 1.0), ("ft2", 3.0))
    return [
        dict(
            name="linear",
            ours=dict(merge_method="linear", models=two),
            theirs=dict(merge_method="linear", models=two),
        ),
        dict(
            name="task_arithmetic",
            ours=dict(
                merge_method="task_arithmetic",
                base_model=s["base"],
                models=models(("ft1", 0.7), ("ft2", 0.4)),
            ),
            theirs=dict(
                merge_method="task_arithmetic",
                base_model=s["base"],
                models=models(("ft1", 0.7), ("ft2", 0.4)),
            ),
        ),
        dict(
            name="ties",
            ours=dict(
                merge_method="ties",
                base_model=s["base"],
                models=models(("ft1", 1.0), ("ft2", 0.5)),
                parameters={"density": 0.5, "lambda": 1.5},
            ),
            theirs=dict(
                merge_method="ties",
                base_model=s["base"],
                models=[
                    {"model": s[m], "parameters": {"weight": w, "density": 0.5}}
                    for m, w in (("ft1", 1.0), ("ft2", 0.5))
                ],
                parameters={"lambda": 1.5},
            ),
        ),
        dict(
            name="slerp",
            ours=dict(
                merge_method="slerp", models=[{"model": s["ft1"]}, {"model": s["ft2"]}], parameters={"t": 0.3}
            ),
            theirs=dict(
                merge_method="slerp",
                base_model=s["ft1"],
                models=[{"model": s["ft1"]}, {"model": s["ft2"]}],
                parameters={"t": 0.3},
            ),
        ),
        dict(
            name="wise_ft",
            ours=dict(
                merge_method="wise_ft",
                base_model=s["base"],
                models=[{"model": s["ft1"]}],
                parameters={"alpha": 0.3},
            ),
            theirs=dict(merge_method="linear", models=models(("base", 0.7), ("ft1", 0.3))),
        ),
        dict(
            name="transfer",
            ours=dict(
                merge_method="transfer",
                base_model=s["base"],
                target_model=s["base2"],
                models=[{"model": s["ft1"]}],
            ),
            theirs=dict(
                merge_method="task_arithmetic",
                base_model=s["base"],
                models=models(("ft1", 1.0), ("base2", 1.0)),
            ),
        ),
        dict(
            name="lines",
            compare="blocks",
            ours=dict(
                merge_method="lines",
                base_model=s["base"],
                models=[{"model": s["ft1"]}],
                parameters={"alpha": 0.2, "beta": 0.6},
            ),
            theirs=dict(
                merge_method="task_arithmetic", base_model=s["base"], models=models(("ft1", [0.2, 0.8]))
            ),
        ),
        dict(
            name="dare (density 1)",
            ours=dict(
                merge_method="dare",
                base_model=s["base"],
                models=models(("ft1", 0.7), ("ft2", 0.4)),
                parameters={"density": 1.0},
            ),
            theirs=dict(
                merge_method="dare_linear",
                base_model=s["base"],
                models=[
                    {"model": s[m], "parameters": {"weight": w, "density": 1.0}}
                    for m, w in (("ft1", 0.7), ("ft2", 0.4))
                ],
            ),
        ),
        dict(
            name="dare (density 0.5)",
            stochastic=True,
            ours=dict(
                merge_method="dare",
                base_model=s["base"],
                models=models(("ft1", 1.0)),
                parameters={"density": 0.5},
            ),
            theirs=dict(
                merge_method="dare_linear",
                base_model=s["base"],
                models=[{"model": s["ft1"], "parameters": {"weight": 1.0, "density": 0.5}}],
            ),
        ),
    ]


def read(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        out.update(load_file(file))
    return out


def merge_r1lab(config: dict[str, Any], out: Path) -> dict[str, torch.Tensor]:
    run_merge(validate(MergeConfig, {**config, "output": str(out), "overwrite": True}, "benchmark"))
    return read(out)


def merge_mergekit(config: dict[str, Any], out: Path, command: str | None) -> dict[str, torch.Tensor]:
    """mergekit on `config` (+ dtype float32), in this process when importable, else its `mergekit-yaml`."""
    config = {**config, "dtype": "float32"}
    shutil.rmtree(out, ignore_errors=True)
    if command is None:
        from mergekit.config import MergeConfiguration
        from mergekit.merge import MergeOptions
        from mergekit.merge import run_merge as mergekit_run

        mergekit_run(
            MergeConfiguration.model_validate(config),
            str(out),
            MergeOptions(random_seed=0, quiet=True, copy_tokenizer=False),
        )
    else:
        file = out.parent / f"{out.name}.yaml"
        file.write_text(yaml.safe_dump(config))
        run = subprocess.run(
            [command, str(file), str(out), "--random-seed", "0", "--quiet", "--no-copy-tokenizer"],
            capture_output=True,
            text=True,
        )
        if run.returncode != 0:
            raise RuntimeError(f"mergekit failed on {file}:\n{run.stderr[-3000:]}")
    return read(out)


def compare(
    ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor], which: str = "all"
) -> tuple[float, int]:
    """(max abs difference over the compared tensors, how many tensors were compared)."""
    names = sorted(set(ours) & set(theirs))
    if which == "blocks":
        names = [n for n in names if ".layers." in n]
    if set(ours) != set(theirs):
        raise RuntimeError(f"the tools wrote different tensors: {sorted(set(ours) ^ set(theirs))[:5]}")
    return max(float((ours[n].double() - theirs[n].double()).abs().max()) for n in names), len(names)


def stochastic_summary(ours, theirs, base, full) -> str:
    """Kept fraction of Δ entries and mean(merged − base) / mean(full Δ) for each tool."""
    parts = []
    for label, merged in (("r1lab", ours), ("mergekit", theirs)):
        delta = torch.cat([(merged[n] - base[n]).flatten() for n in base])
        target = torch.cat([(full[n] - base[n]).flatten() for n in base])
        kept = float((delta != 0).float().mean())
        ratio = float(delta.abs().sum() / target.abs().sum())
        parts.append(f"{label}: kept {kept:.3f}, |Δ|₁ ratio {ratio:.3f}")
    return "; ".join(parts)


PEAK_SCRIPT = """
import json, re, sys
def kib(key):
    return int(re.search(key + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1))
tool, config, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
if tool == "r1lab":
    from r1lab.config import MergeConfig
    from r1lab.stages.merge import run_merge
    go = lambda: run_merge(MergeConfig(**config, output=out))
else:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge
    go = lambda: run_merge(MergeConfiguration.model_validate({**config, "dtype": "float32"}), out,
                           MergeOptions(quiet=True, copy_tokenizer=False))
before = kib("VmRSS")
open("/proc/self/clear_refs", "w").write("5")
go()
print((kib("VmHWM") - before) * 1024)
"""


def peak_memory(hidden: int, vocab: int) -> None:
    """Peak RSS increase of one task_arithmetic merge of base + 2 fine-tunes, each tool in a fresh process
    (after its imports), against the size of one input model."""
    with tempfile.TemporaryDirectory(prefix="merge-mem-") as tmp:
        paths = build_models(Path(tmp) / "models", hidden, vocab)
        size = sum(f.stat().st_size for f in paths["base"].glob("*.safetensors"))
        config = {
            "merge_method": "task_arithmetic",
            "base_model": str(paths["base"]),
            "models": [
                {"model": str(paths["ft1"]), "parameters": {"weight": 0.5}},
                {"model": str(paths["ft2"]), "parameters": {"weight": 0.5}},
            ],
        }
        print(f"task_arithmetic of 3 models of {size / 2**20:.0f} MiB each (hidden {hidden}, vocab {vocab})")
        for tool in ("r1lab", "mergekit"):
            run = subprocess.run(
                [sys.executable, "-c", PEAK_SCRIPT, tool, json.dumps(config), str(Path(tmp) / tool)],
                capture_output=True,
                text=True,
            )
            if run.returncode != 0:
                print(f"{tool}: failed\n{run.stderr[-2000:]}")
                continue
            peak = int(run.stdout.split()[-1])
            print(
                f"{tool:<9} peak RSS increase {peak / 2**20:8.1f} MiB = {peak / size:.2f} x one input model"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mergekit", help="a mergekit-yaml executable (default: mergekit in this Python)")
    parser.add_argument("--memory", action="store_true", help="peak memory of each tool instead (Linux)")
    parser.add_argument("--hidden", type=int, default=1024, help="--memory: the models' hidden size")
    parser.add_argument("--vocab", type=int, default=32000, help="--memory: the models' vocabulary")
    args = parser.parse_args()
    if args.memory:
        return peak_memory(args.hidden, args.vocab)
    with tempfile.TemporaryDirectory(prefix="merge-bench-") as tmp:
        root = Path(tmp)
        paths = build_models(root / "models")
        base = read(paths["base"])
        print(f"{'method':<20} {'max |r1lab − mergekit|':>24} {'tensors':>8}  verdict")
        results = {}
        for case in cases(paths):
            ours = merge_r1lab(case["ours"], root / "ours")
            theirs = merge_mergekit(case["theirs"], root / "theirs", args.mergekit)
            if case.get("stochastic"):
                full = merge_r1lab({**case["ours"], "parameters": {"density": 1.0}}, root / "full")
                print(
                    f"{case['name']:<20} {'(stochastic)':>24} {len(ours):>8}  {stochastic_summary(ours, theirs, base, full)}"
                )
                continue
            diff, count = compare(ours, theirs, case.get("compare", "all"))
            results[case["name"]] = diff
            verdict = "ok" if diff <= LINEAR_TOLERANCE else f"DIFFERS (> {LINEAR_TOLERANCE:g})"
            print(f"{case['name']:<20} {diff:>24.3g} {count:>8}  {verdict}")
        print(json.dumps(results))


if __name__ == "__main__":
    sys.exit(main())
