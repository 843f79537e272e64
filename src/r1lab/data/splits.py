"""Train / eval records for a DataConfig: a separate eval file, or a seeded fraction held out of the data."""

from __future__ import annotations

import random
from typing import Any

from r1lab.config import DataConfig
from r1lab.data.readers import read_records
from r1lab.errors import UserError

EVAL_SPLIT = "test"  # split read from data.eval_path when it is a folder or a hub dataset


def train_eval_records(
    cfg: DataConfig, seed: int = 0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """Records for training and for evaluation (None when neither eval_path nor eval_fraction is set).

    The held-out fraction is drawn with `random.Random(seed)`, so it is the same on every run and process;
    both parts keep the dataset's order (shuffling is the training loop's job).
    """
    records = read_records(cfg.path, split=cfg.split, subset=cfg.subset, limit=cfg.limit)
    if cfg.eval_path:
        return records, read_records(cfg.eval_path, split=EVAL_SPLIT, subset=cfg.subset)
    if cfg.eval_fraction <= 0:
        return records, None
    if max(1, round(len(records) * cfg.eval_fraction)) >= len(records):
        raise UserError(
            f"eval_fraction {cfg.eval_fraction} of {len(records)} examples leaves nothing to train on",
            where="data.eval_fraction",
            fix="lower eval_fraction or use more data",
        )
    held = held_out(len(records), cfg.eval_fraction, seed)
    train = [r for i, r in enumerate(records) if i not in held]
    return train, [r for i, r in enumerate(records) if i in held]


def held_out(n: int, fraction: float, seed: int) -> set[int]:
    """Indices of the records data.eval_fraction holds out of `n` (at least one)."""
    return set(random.Random(seed).sample(range(n), max(1, round(n * fraction))))


class SplitDataset(list):
    """Built examples in dataset order, with `stats` (counts of what happened to the records) and `eval`
    (the held-out part, built the same way, or None)."""

    def __init__(self, examples: list[Any], stats: dict[str, int], eval: SplitDataset | None = None):
        super().__init__(examples)
        self.stats = stats
        self.eval = eval
