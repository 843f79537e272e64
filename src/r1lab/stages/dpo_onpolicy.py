"""On-policy pairs inside a DPO stage (a `pairs:` section): before training, the stage samples its pairs from its
own input model on data.path's prompts (r1lab.stages.dpo_pairs.make_pairs), writes them to `pairs.jsonl` in its
folder (with `pairs.json`: the settings and counts), and trains on that file.

A re-run or resumed stage whose recorded settings match (same input model, prompts file content, data section
and pairs section, seed) reuses the file instead of sampling again. So a recipe `sft -> dpo1 -> dpo2` with
`pairs:` in both DPO stages is iterative (on-policy) DPO: each round samples from the previous round's model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from r1lab.config import DataConfig, DPOConfig
from r1lab.errors import UserError
from r1lab.stages.dpo_pairs import PairSampling, make_pairs
from r1lab.training.tracking import console

PAIRS_FILE = "pairs.jsonl"
RECORD_FILE = "pairs.json"


def onpolicy_data(cfg: DPOConfig, out: Path, accelerator: Any) -> DataConfig:
    """The data section to train on: `out/pairs.jsonl`, sampled now from cfg.model unless a matching file is
    there. Only the main process samples; the others wait for the file."""
    assert cfg.pairs is not None
    settings = pair_settings(cfg)
    path = out / PAIRS_FILE
    if accelerator.is_main_process and recorded_settings(out) != settings:
        pairs = cfg.pairs
        sampling = PairSampling(
            n=pairs.n,
            temperature=pairs.temperature,
            max_new_tokens=pairs.max_new_tokens,
            batch_size=pairs.batch_size,
            seed=cfg.train.seed,
            pairs_per_prompt=pairs.pairs_per_prompt,
        )
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / f".{PAIRS_FILE}.tmp"
        counts = make_pairs(
            cfg.model, tmp, data=cfg.data.path, rewards=pairs.rewards, sampling=sampling,
            prompts_config=cfg.data, offset=pairs.offset, max_pairs=pairs.limit, chosen=pairs.chosen,
        )  # fmt: skip
        if counts["pairs"] == 0:
            tmp.unlink(missing_ok=True)
            raise UserError(
                f"no pair from {counts['prompts']} prompts of {cfg.data.path}: {counts['no_correct']} had no "
                f"correct sample ({'written solution that verifies' if pairs.chosen == 'solution' else 'chosen'})"
                f", {counts['no_incorrect']} no incorrect one",
                where="pairs",
                fix="raise pairs.n or pairs.temperature; for a model that solves nothing use chosen: solution",
            )
        tmp.replace(path)
        (out / RECORD_FILE).write_text(json.dumps({"settings": settings, "counts": counts}, indent=2))
        console.print(
            f"on-policy pairs: {counts['pairs']} from {counts['prompts']} prompts sampled from {cfg.model.path} "
            f"({counts['no_correct']} without a correct side, {counts['no_incorrect']} without an incorrect one)"
        )
    elif accelerator.is_main_process:
        console.print(f"on-policy pairs: reusing {path} (same model, prompts and settings)")
    accelerator.wait_for_everyone()
    update = {"path": str(path), "format": "preference", "columns": {}, "split": "train", "subset": None}
    return cfg.data.model_copy(update=update)


def pair_settings(cfg: DPOConfig) -> dict[str, Any]:
    """What decides the pairs: the input model, the prompts (a file by its content), the data and pairs
    sections, and the sampling seed (train.seed)."""
    source = Path(cfg.data.path)
    content = hashlib.sha256(source.read_bytes()).hexdigest() if source.is_file() else None
    return {
        "model": cfg.model.model_dump(mode="json", exclude={"lora", "gradient_checkpointing"}),
        "prompts": content or cfg.data.path,
        "data": cfg.data.model_dump(mode="json", exclude={"path", "shuffle", "overlong", "max_length"}),
        "pairs": cfg.pairs.model_dump(mode="json") if cfg.pairs else None,
        "seed": cfg.train.seed,
    }


def recorded_settings(out: Path) -> dict[str, Any] | None:
    """The settings `pairs.json` records, or None when there is no complete pairs file."""
    record = out / RECORD_FILE
    if not (record.is_file() and (out / PAIRS_FILE).is_file()):
        return None
    return json.loads(record.read_text()).get("settings")
