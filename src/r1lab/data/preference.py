"""Preference pairs: records -> (prompt, chosen, rejected) messages -> token ids, within max_length.

A record holds `chosen` and `rejected` (strings or message lists) and optionally `prompt` (a string or
messages); `data.columns` maps other column names onto these. Without a prompt column, the prompt is the
shared leading messages of the two lists (the conversational format: both lists repeat the prompt).
Bad input, with its place (`file:line` for a JSONL file, else `file, record N`):
  no rejected (or chosen) side            error
  the two sides' prompts differ           error (what is left after the shared prefix must be the answers)
  chosen identical to rejected            counted (skipped_identical) and skipped: nothing to learn
  prompt + longer response > max_length   data.overlong: truncate cuts both responses (never the prompt;
                                          a prompt that leaves no room is dropped), drop drops the pair;
                                          counted (truncated, dropped)
Held-out pairs (data.eval_path, or a seeded data.eval_fraction of the records) are read and built the same way
and hang off the result as `.eval`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from r1lab.config import DataConfig
from r1lab.data.formats import Preference, normalise, resolve_schema
from r1lab.data.splits import SplitDataset, held_out, train_eval_records
from r1lab.data.tokenize import IGNORE, tokenize_conversation, tokenize_prompt
from r1lab.errors import UserError


@dataclass
class PreferenceRecords:
    """The pairs read and checked without a tokenizer: (place, pair) per kept record, and the counts."""

    pairs: list[tuple[str, Preference]]
    total: int
    skipped_identical: int
    source: str
    eval: PreferenceRecords | None = None


class PreferenceDataset(SplitDataset):
    """Examples {prompt_ids, chosen_ids, rejected_ids, chosen_mask, rejected_mask} (masks: 1 on the response
    tokens that are scored, 0 on template tokens between turns), with `stats` counting what happened and
    `eval` the held-out PreferenceDataset or None."""


def read_preference_data(cfg: DataConfig, *, seed: int = 0) -> PreferenceRecords:
    """Read and check the pairs (format, sides, prompts) before any model loads; `seed` draws the
    data.eval_fraction split (a place in a held-out part names the file it came from)."""
    records, held = train_eval_records(cfg, seed)
    if held is None:
        return _read(records, cfg, cfg.path, _places(cfg.path, len(records)))
    if cfg.eval_path:
        held_set = _read(held, cfg, cfg.eval_path, _places(cfg.eval_path, len(held)))
        return _read(records, cfg, cfg.path, _places(cfg.path, len(records)), held_set)
    every, out = (
        _places(cfg.path, len(records) + len(held)),
        held_out(len(records) + len(held), cfg.eval_fraction, seed),
    )
    held_set = _read(held, cfg, cfg.path, [p for i, p in enumerate(every) if i in out])
    return _read(records, cfg, cfg.path, [p for i, p in enumerate(every) if i not in out], held_set)


def _read(
    records: list[dict[str, Any]],
    cfg: DataConfig,
    source: str,
    places: list[str],
    eval_set: PreferenceRecords | None = None,
) -> PreferenceRecords:
    schema = resolve_schema(set().union(*records), cfg, source)
    if schema.format != "preference":
        raise UserError(
            f"DPO trains on preference pairs, but {source} is in format {schema.format!r}",
            where="data.format",
            fix="give the data `chosen` and `rejected` columns (and optionally `prompt`), or map yours "
            "with data.columns, e.g. {chosen: good, rejected: bad}",
        )
    pairs, identical = [], 0
    for record, place in zip(records, places, strict=True):
        pair = split_prompt(normalise(record, schema, cfg, place), place)
        if pair.chosen == pair.rejected:
            identical += 1
            continue
        pairs.append((place, pair))
    if not pairs:
        raise UserError(
            f"no preference pair left in {source}: {len(records)} records, {identical} with chosen "
            "identical to rejected",
            where="data.eval_path" if source == cfg.eval_path else "data.path",
            fix="give each record a chosen and a different rejected response",
        )
    return PreferenceRecords(pairs, len(records), identical, source, eval_set)


def split_prompt(pair: Preference, place: str) -> Preference:
    """Move the messages both sides start with into the prompt; what remains must be the two answers."""
    for side in ("chosen", "rejected"):
        if not getattr(pair, side):
            raise UserError(
                f"a preference record has no {side} response",
                where=place,
                fix=f"give every record a non-empty `{side}` (a string or a list of messages)",
            )
    prompt, chosen, rejected = list(pair.prompt), list(pair.chosen), list(pair.rejected)
    # sides that repeat the prompt (without the system message data.system_prompt added to it, maybe)
    repeated = prompt[1:] if prompt and prompt[0]["role"] == "system" else prompt
    for head in (prompt, repeated):
        if head and chosen[: len(head)] == head and rejected[: len(head)] == head:
            chosen, rejected = chosen[len(head) :], rejected[len(head) :]
            break
    shared = 0
    while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
        shared += 1
    prompt, chosen, rejected = prompt + chosen[:shared], chosen[shared:], rejected[shared:]
    if chosen[0]["role"] != "assistant" or rejected[0]["role"] != "assistant":
        raise UserError(
            "the chosen and rejected sides have different prompts (after their shared messages, "
            f"chosen goes on with a {chosen[0]['role']!r} message and rejected with a {rejected[0]['role']!r} "
            "one)",
            where=place,
            fix="both sides must answer the same prompt: give a `prompt` column, or message lists that "
            "start with the same messages and differ only in the assistant answer",
        )
    if not prompt:
        raise UserError(
            "a preference record has no prompt",
            where=place,
            fix="give a `prompt` column, or chosen/rejected message lists that start with the prompt",
        )
    return Preference(prompt, chosen, rejected, pair.columns)


def build_preference_dataset(
    cfg: DataConfig, tokenizer: PreTrainedTokenizerBase, read: PreferenceRecords
) -> PreferenceDataset:
    """Template and tokenise the pairs (and the held-out ones); truncate or drop those longer than max_length
    (counted)."""
    held = None if read.eval is None else build_preference_dataset(cfg, tokenizer, read.eval)
    stats = dict(total=read.total, skipped_identical=read.skipped_identical, truncated=0, dropped=0, kept=0)
    examples = []
    for place, pair in read.pairs:
        try:
            example = tokenize_pair(tokenizer, pair)
        except UserError as e:
            raise UserError(e.what, where=place + (f", {e.where}" if e.where else ""), fix=e.fix) from None
        room = cfg.max_length - len(example["prompt_ids"])
        longest = max(len(example["chosen_ids"]), len(example["rejected_ids"]))
        if longest > room:
            if cfg.overlong == "drop" or room < 1:
                stats["dropped"] += 1
                continue
            example = {k: v if k == "prompt_ids" else v[:room] for k, v in example.items()}
            stats["truncated"] += 1
        examples.append(example)
    stats["kept"] = len(examples)
    if not examples:
        raise UserError(
            f"no preference pair left in {read.source}: all {stats['dropped']} were longer than "
            f"max_length {cfg.max_length} (data.overlong: {cfg.overlong})",
            where="data.max_length",
            fix="raise data.max_length, or use data.overlong: truncate",
        )
    return PreferenceDataset(examples, stats, held)


def tokenize_pair(tokenizer: PreTrainedTokenizerBase, pair: Preference) -> dict[str, list[int]]:
    """Token ids of the prompt (with the generation prompt) and of each response, which continues the
    prompt exactly: prompt_ids + chosen_ids is the tokenised chosen conversation (up to its last target)."""
    prompt_ids = tokenize_prompt(tokenizer, pair.prompt)
    out = {"prompt_ids": prompt_ids}
    for side in ("chosen", "rejected"):
        ids, labels = tokenize_conversation(tokenizer, pair.prompt + getattr(pair, side), len(pair.prompt))
        if ids[: len(prompt_ids)] != prompt_ids:
            raise UserError(
                "the chat template's tokens for the prompt change when a response follows it",
                fix="set model.chat_template to a template that renders the prompt the same way",
            )
        last = max((i for i, label in enumerate(labels) if label != IGNORE), default=-1)
        if last < len(prompt_ids):
            raise UserError(f"the {side} response has no tokens after templating", fix="check the data")
        out[f"{side}_ids"] = ids[len(prompt_ids) : last + 1]
        out[f"{side}_mask"] = [int(label != IGNORE) for label in labels[len(prompt_ids) : last + 1]]
    return out


def _places(path: str, n: int) -> list[str]:
    """Where each record is: `file:line` for one JSONL file (blank lines are skipped by the reader)."""
    local = Path(path).expanduser()
    if local.is_file() and local.name.lower().endswith((".jsonl", ".ndjson")):
        with local.open(encoding="utf-8") as f:
            lines = [number for number, line in enumerate(f, start=1) if line.strip()]
        return [f"{path}:{line}" for line in lines[:n]]
    return [f"{path}, record {i + 1}" for i in range(n)]


def pair_length(example: dict[str, Any]) -> int:
    """Tokens of the prompt plus both responses (what a shared-prompt forward runs)."""
    return len(example["prompt_ids"]) + len(example["chosen_ids"]) + len(example["rejected_ids"])
