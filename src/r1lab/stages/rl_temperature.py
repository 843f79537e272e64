"""AceReason 1.1's temperature rule: sample RL rollouts at the temperature whose temperature-adjusted entropy
is about a target (0.3 in the paper), measured on a probe batch before training (`target_entropy`).

For each candidate temperature T (ascending, TEMPERATURES) the first `prompts_per_step` prompts get rollout.n
completions sampled at T, and the entropy of softmax(logits / T) is averaged over their completion tokens (the
entropy the update logs). Entropy grows with T, so the search stops at the first T whose entropy reaches the
target and keeps whichever of it and the one before is closer. The choice and every probe are written to
`temperature.json` in the run folder; a resumed run reads the choice from there instead of probing again (the
model has changed since).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from r1lab.config import RLConfig
from r1lab.rollout.types import SamplingParams
from r1lab.stages.rl_batch import generation_seed
from r1lab.stages.rl_forward import completion_logprobs
from r1lab.training.distributed import gather_objects

TEMPERATURES = tuple(round(0.3 + 0.1 * i, 1) for i in range(13))  # 0.3 ... 1.5
FILE = "temperature.json"


def probe_entropy(
    engine: Any, model: Any, prompts: list[Any], cfg: RLConfig, temperature: float, device: Any
) -> float:
    """Mean token entropy at `temperature` of rollout.n completions per prompt sampled at it."""
    sampling = replace(SamplingParams.from_config(cfg.rollout), temperature=temperature)
    sampling = replace(sampling, seed=generation_seed(cfg.train.seed, -1))  # not a training prompt's seed
    rows = engine.generate([p.prompt_ids for p in prompts], cfg.rollout.n, sampling)
    with torch.no_grad():
        _, entropy = completion_logprobs(model, model, rows, device, temperature)
    tokens = rows.loss_mask.to(entropy.device).float()  # the model's own tokens
    return float((entropy * tokens).sum() / tokens.sum().clamp(min=1))


def pick_temperature(
    probe: Any, target: float, candidates: tuple[float, ...] = TEMPERATURES
) -> dict[str, Any]:
    """The candidate whose probed entropy is closest to `target`, probing in ascending order until the entropy
    reaches it. `probe(T)` -> entropy. Returns {"temperature", "target_entropy", "probes": {T: entropy}}."""
    probes: dict[float, float] = {}
    for t in candidates:
        probes[t] = probe(t)
        if probes[t] >= target:
            break
    best = min(probes, key=lambda t: (abs(probes[t] - target), t))
    return {"temperature": best, "target_entropy": target, "probes": probes}


def with_probed_temperature(
    cfg: RLConfig, engine: Any, model: Any, prompts: Any, out: Path, device: Any, *, resumed: bool, main: bool
) -> RLConfig:
    """`cfg` with rollout.temperature set by the rule (from `temperature.json` when resuming)."""
    from r1lab.training.tracking import console

    path = out / FILE
    if resumed and path.is_file():
        choice = json.loads(path.read_text())
    else:
        probe_prompts = [prompts[i] for i in range(min(len(prompts), cfg.prompts_per_step))]
        choice = pick_temperature(
            lambda t: probe_entropy(engine, model, probe_prompts, cfg, t, device), cfg.target_entropy
        )
        choice = gather_objects(choice)[0]  # every rank samples with rank 0's choice
        if main:
            out.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(choice, indent=2) + "\n")
    if main:
        probed = ", ".join(f"{float(t)}: {h:.3f}" for t, h in choice["probes"].items())
        console.print(
            f"rl: rollout.temperature {choice['temperature']} for target entropy {choice['target_entropy']} "
            f"(entropy at each probed temperature: {probed})"
        )
    return cfg.model_copy(
        update={"rollout": cfg.rollout.model_copy(update={"temperature": choice["temperature"]})}
    )
