"""Half Fine-Tuning (HFT, "HFT: Half Fine-Tuning for Large Language Models"): a stage trains a random half of
the parameters and freezes the rest, which keeps more of what the model knew.

The scheme (per decoder layer): 2 of the 4 attention matrices (q, k, v, o) are frozen; of the 3 FFN matrices
(gate, up, down), 2 are frozen in a random half of the layers and 1 in the other half. A bias goes with its
matrix. Generally: half of a layer's attention matrices, and ceil / floor of half its FFN matrices. Embeddings,
norms and the LM head are not in the published scheme: `hft.others` trains (default) or freezes them.

The draw is seeded by train.seed and written to `hft.json` in the run folder; a resumed run reads the set from
there, so it keeps the frozen half whatever the code or seed would draw now.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from r1lab.config import HFTConfig
from r1lab.errors import UserError

HFT_FILE = "hft.json"
_LINEAR_IN_LAYER = re.compile(
    r"^(?P<layer>.*\.(?:layers|h|blocks)\.\d+)\.(?P<part>self_attn|attn|attention|mlp|feed_forward)\..+$"
)


def layer_matrices(model: torch.nn.Module) -> dict[str, dict[str, list[str]]]:
    """{layer module name: {"attention": [...], "ffn": [...]}}: the names of each decoder layer's Linear
    modules, in module order."""
    layers: dict[str, dict[str, list[str]]] = defaultdict(lambda: {"attention": [], "ffn": []})
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and (m := _LINEAR_IN_LAYER.match(name)):
            part = "ffn" if m["part"] in ("mlp", "feed_forward") else "attention"
            layers[m["layer"]][part].append(name)
    return dict(layers)


def plan_frozen(model: torch.nn.Module, cfg: HFTConfig, seed: int) -> list[str]:
    """The parameter names HFT freezes in `model` (sorted), drawn with `seed`."""
    layers = layer_matrices(model)
    if not layers or any(len(g["attention"]) < 2 or not g["ffn"] for g in layers.values()):
        raise UserError(
            "hft needs decoder layers with separate attention matrices (q/k/v/o) and FFN matrices under "
            "`...layers.N.self_attn` / `...layers.N.mlp`; this model's layout is not recognised",
            where="hft",
            fix="remove hft for this model (Llama, Qwen2, Mistral, Gemma and SmolLM layouts work)",
        )
    rng = random.Random(seed)
    names = sorted(layers)
    heavy = set(rng.sample(names, math.ceil(len(names) / 2)))  # these layers freeze ceil(half) of the FFN
    frozen_modules: list[str] = []
    for layer in names:
        attention, ffn = layers[layer]["attention"], layers[layer]["ffn"]
        frozen_modules += rng.sample(attention, len(attention) // 2)
        n_ffn = math.ceil(len(ffn) / 2) if layer in heavy else len(ffn) // 2
        frozen_modules += rng.sample(ffn, n_ffn)
    prefixes = tuple(f"{m}." for m in frozen_modules)
    in_layers = tuple(f"{m}." for g in layers.values() for m in g["attention"] + g["ffn"])
    frozen = []
    for name, _ in model.named_parameters():
        if name.startswith(prefixes) or (cfg.others == "freeze" and not name.startswith(in_layers)):
            frozen.append(name)
    return sorted(frozen)


def apply_hft(
    model: torch.nn.Module, cfg: HFTConfig, seed: int, run_dir: Path, *, resuming: bool
) -> dict[str, Any]:
    """Freeze HFT's half of `model` in place and return the record to write as `hft.json`: the set recorded in
    `run_dir` when resuming (and one is there), else a fresh seeded draw."""
    recorded = run_dir / HFT_FILE
    if resuming and recorded.is_file():
        record = json.loads(recorded.read_text())
    else:
        record = {"seed": seed, "others": cfg.others, "frozen": plan_frozen(model, cfg, seed)}
    params = dict(model.named_parameters())
    missing = [n for n in record["frozen"] if n not in params]
    if missing:
        raise UserError(
            f"{recorded} freezes parameters this model lacks: {missing[:3]}",
            where="hft",
            fix="resume with the model that started this run, or start a new train.output_dir",
        )
    for name in record["frozen"]:
        params[name].requires_grad_(False)
    total = sum(p.numel() for p in params.values())
    record["frozen_fraction"] = sum(params[n].numel() for n in record["frozen"]) / total
    return record


def write_hft_record(run_dir: Path, record: dict[str, Any]) -> None:
    (run_dir / HFT_FILE).write_text(json.dumps(record, indent=2))
