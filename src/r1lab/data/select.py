"""Data selection (`r1lab data select IN --method M --k K`): a registry of selectors, each picking K records of a
pool file. The pure ones live here (`random`); the ones that need the target model, a rollout or a reward
(`fit`, `pass_rate`, `diversity`; `curation`, `indicators`) are registered by `r1lab.stages.select`, which the
CLI imports.

A selector gets the pool's records (in file order) and the options, and returns (record index, record) pairs
of what it keeps; a record may gain fields saying why (`pass_rate`, `fit_logprob`). The output keeps file order.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r1lab.data.jsonl import write_jsonl
from r1lab.data.readers import read_records
from r1lab.errors import UserError
from r1lab.registry import Registry

Picked = list[tuple[int, dict[str, Any]]]


@dataclass
class SelectOptions:
    """What `r1lab data select` passes a selector: K, the seed and, for the model-based ones, the target model,
    the rewards (or a task whose reward to use) and the sampling settings."""

    k: int
    source: str  # the pool file, as given
    seed: int = 0
    model: str | None = None
    task: str | None = None
    rewards: list[str] = field(default_factory=list)
    n: int = 8  # samples per prompt (pass_rate)
    temperature: float = 1.0
    max_new_tokens: int = 256
    batch_size: int = 8
    probe: str | None = None  # indicators: the held-out SFT file whose loss the indicators are fitted to
    probe_size: int = 32  # indicators: pool records whose one-step effect on the probe loss is measured
    probe_lr: float = 1e-3  # indicators: the SGD step size of that measurement
    neighbours: int = 5  # indicators: k of the kNN-distance indicator


Selector = Callable[[list[dict[str, Any]], SelectOptions], Picked]
SELECTORS: Registry[Selector] = Registry("selection method")


def select_file(source: str, method: str, options: SelectOptions, out: Path) -> dict[str, Any]:
    """Select `options.k` records of `source` with `method` and write them to `out` (JSONL, in file order);
    returns a summary (method, pool size, kept)."""
    selector = SELECTORS.get(method)  # an unknown method is refused before the pool is read
    records = read_records(source)
    if options.k > len(records):
        raise UserError(
            f"--k {options.k} is more than the pool holds: {source} has {len(records)} records",
            where="--k",
            fix=f"ask for at most {len(records)}, or select from a larger pool",
        )
    picked = sorted(selector(records, options), key=lambda pair: pair[0])
    if not picked:
        raise UserError(
            f"selection {method!r} kept nothing of the {len(records)} records of {source}",
            fix="see the counts above; a file with no examples is not written",
        )
    write_jsonl(out, [record for _, record in picked])
    return {"method": method, "pool": len(records), "kept": len(picked), "out": str(out)}


def need_model(options: SelectOptions, method: str) -> str:
    if not options.model:
        raise UserError(
            f"selection {method!r} scores the pool with the target model",
            where="--model",
            fix="name it: --model PATH (a named default, HF folder or hub id)",
        )
    return options.model


@SELECTORS.register("random")
def select_random(records: list[dict[str, Any]], options: SelectOptions) -> Picked:
    """K records drawn uniformly without replacement, seeded: the baseline every selector must beat."""
    chosen = random.Random(options.seed).sample(range(len(records)), options.k)
    return [(i, records[i]) for i in chosen]
