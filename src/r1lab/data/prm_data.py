"""Process reward model (PRM) data: rows {prompt, steps: [text, ...], labels: [0/1, ...]} -> token ids and,
per step, the position of the token its score is read at.

The completion is the steps, each followed by the step separator (`step_sep`, default a newline; a step may
already end with it, as `r1lab data prm-labels` writes them, and then it is not doubled), as the assistant turn
of the chat-templated conversation. The score of step k is read at the token holding the last character of
the separator after it, so that position has seen the prompt and steps 1..k only. A separator the tokenizer
merges with the following step's text into one token is an error (the score would see the next step).
A sequence over data.max_length keeps its last tokens (steps cut off lose their labels; a row left with no
step is dropped and counted) or, with data.overlong: drop, is dropped. Bad rows name `file:line`.
"""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedTokenizerBase

from r1lab.config import DataConfig
from r1lab.data.formats import Conversation, normalise, resolve_schema
from r1lab.data.reward_data import LABELS, RewardDataset, RewardRecords, placed_splits
from r1lab.data.splits import train_eval_records
from r1lab.data.tokenize import render
from r1lab.errors import UserError


def step_texts(steps: list[str], sep: str) -> list[str]:
    """Each step ending with the separator exactly once."""
    return [s if s.endswith(sep) else s + sep for s in steps]


def step_ids(
    tokenizer: PreTrainedTokenizerBase, prompt: list[dict[str, Any]], steps: list[str], sep: str
) -> tuple[list[int], list[int]]:
    """Token ids of the templated (prompt messages, steps as the assistant turn) and, per step, the index of
    the token holding its separator's last character. ValueError when that cannot be found cleanly."""
    texts = step_texts(steps, sep)
    completion = "".join(texts)
    text = render(tokenizer, [*prompt, {"role": "assistant", "content": completion}], generation_prompt=False)
    start = text.rfind(completion)
    if start < 0:
        raise ValueError("the chat template changes the completion text, so the step ends cannot be found")
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    positions, t, end = [], 0, start
    for k, step in enumerate(texts):
        end += len(step)  # the character after this step's separator
        while t < len(offsets) and offsets[t][1] < end:
            t += 1
        if t == len(offsets) or offsets[t][0] >= end or text[end : offsets[t][1]].strip():
            raise ValueError(
                f"the separator {sep!r} after step {k + 1} is not the end of a token of its own (it is merged "
                "with the next step's text)"
            )
        positions.append(t)
    return ids, positions


def read_step_data(cfg: DataConfig, seed: int = 0) -> RewardRecords:
    """Read and check the PRM rows (training and held out) before any model loads."""
    records, held = train_eval_records(cfg, seed)
    train, held_placed = placed_splits(cfg, records, held, seed)
    held_set = None if held_placed is None else _read(held_placed, cfg, cfg.eval_path or cfg.path, False)
    return _read(train, cfg, cfg.path, True, held_set)


def _read(
    placed: list[tuple[str, dict[str, Any]]],
    cfg: DataConfig,
    source: str,
    training: bool,
    held: RewardRecords | None = None,
) -> RewardRecords:
    """Rows (place, [prompt messages], (steps, labels))."""
    key = "data.path" if training or not cfg.eval_path else "data.eval_path"
    schema = resolve_schema(set().union(*(r for _, r in placed)), cfg, source)
    if schema.format != "prompt":
        raise UserError(
            f"loss prm_bce trains on rows {{prompt, steps, labels}}, but {source} is in format {schema.format!r}",
            where=key,
            fix="give rows a prompt, a list of steps and one 0/1 label per step (r1lab data prm-labels writes "
            "them), or use loss: bce for (prompt, completion, label) rows",
        )
    names = {n: cfg.columns.get(n, n) for n in ("steps", "labels")}
    fix = "give every row `steps` (a list of texts) and `labels` (one 0 or 1 per step), or map yours with "
    fix += "data.columns: {steps: ..., labels: ...}"
    rows: list[tuple[str, list[list[dict[str, Any]]], Any]] = []
    for place, record in placed:
        conv = normalise(record, schema, cfg, place)
        assert isinstance(conv, Conversation)
        steps, labels = conv.columns.get("steps"), conv.columns.get("labels")
        if steps is None or labels is None:
            missing = " and ".join(repr(names[n]) for n in ("steps", "labels") if conv.columns.get(n) is None)
            raise UserError(f"a PRM row has no {missing} column; its columns: {', '.join(sorted(record))}",
                            where=place, fix=fix)  # fmt: skip
        if not isinstance(steps, list) or not steps or not all(isinstance(s, str) and s for s in steps):
            raise UserError("steps is not a non-empty list of non-empty texts", where=f"{place}, column "
                            f"{names['steps']!r}", fix=fix)  # fmt: skip
        if not isinstance(labels, list) or len(labels) != len(steps):
            got = len(labels) if isinstance(labels, list) else type(labels).__name__
            raise UserError(f"{len(steps)} steps but {got} labels", where=f"{place}, column {names['labels']!r}",
                            fix="give one label (0 or 1) per step")  # fmt: skip
        bad = [v for v in labels if not (isinstance(v, (bool, int, float)) and v in LABELS)]
        if bad:
            raise UserError(f"step label {bad[0]!r} is not 0 or 1", where=f"{place}, column {names['labels']!r}",
                            fix="step labels are 0 (a bad step) or 1 (a good one)")  # fmt: skip
        rows.append((place, [conv.messages], (list(steps), [LABELS[v] for v in labels])))
    classes = {y for *_, (_, labels) in rows for y in labels}
    if training and len(classes) < 2:
        raise UserError(
            f"every step label of the {len(rows)} training rows of {source} is {classes.pop()}: a process "
            "reward model needs good and bad steps",
            where=key,
            fix="add rows with steps of the other label (more samples or continuations in r1lab data prm-labels)",
        )
    return RewardRecords(rows, source, held)


def build_step_dataset(
    cfg: DataConfig, tokenizer: PreTrainedTokenizerBase, read: RewardRecords, sep: str
) -> RewardDataset:
    """Examples {"ids": [ids], "label": [0/1 per kept step], "positions": [token index per kept step]}."""
    held = None if read.eval is None else build_step_dataset(cfg, tokenizer, read.eval, sep)
    stats = {"total": len(read.rows), "truncated": 0, "dropped": 0, "kept": 0}
    examples = []
    for place, (prompt,), (steps, labels) in read.rows:
        try:
            ids, positions = step_ids(tokenizer, prompt, steps, sep)
        except ValueError as e:
            raise UserError(str(e), where=place, fix="choose a step_sep the tokenizer keeps as a token of its own, "
                            "e.g. step_sep: \"\\n\"") from None  # fmt: skip
        except UserError as e:
            raise UserError(e.what, where=place + (f", {e.where}" if e.where else ""), fix=e.fix) from None
        if len(ids) > cfg.max_length:
            cut = len(ids) - cfg.max_length
            kept = [(p - cut, y) for p, y in zip(positions, labels, strict=True) if p >= cut]
            if cfg.overlong == "drop" or not kept:
                stats["dropped"] += 1
                continue
            ids, positions, labels = ids[cut:], [p for p, _ in kept], [y for _, y in kept]
            stats["truncated"] += 1
        examples.append({"ids": [ids], "label": labels, "positions": positions})
    stats["kept"] = len(examples)
    if not examples:
        raise UserError(
            f"no row left in {read.source}: all {stats['dropped']} were longer than max_length {cfg.max_length}",
            where="data.max_length",
            fix="raise data.max_length, or use data.overlong: truncate",
        )
    return RewardDataset(examples, stats, held)
