"""Recognise the shape of a dataset and normalise each record into a conversation (or a preference pair).

Formats, by the columns they need (r1lab names; `data.columns` maps them onto the dataset's own column names):
  messages           `messages` (a list of {role, content}; ShareGPT {from, value} and `conversations` accepted)
  prompt_completion  `prompt` + `completion` (each a string or a list of messages)
  prompt             `prompt` only (RL prompts; the other columns go to the reward functions)
  preference         `chosen` + `rejected` (+ optional `prompt`), kept for preference optimisation
An optional `system` column (or `data.system_prompt`) becomes a leading system message when there is none.
Mapping keys that are not one of these names rename any other column, e.g. `{answer: solution}`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from r1lab.config import DataConfig
from r1lab.errors import UserError

FORMATS: dict[str, tuple[str, ...]] = {
    "messages": ("messages",),
    "preference": ("chosen", "rejected"),
    "prompt_completion": ("prompt", "completion"),
    "prompt": ("prompt",),
}
STRUCTURE = ("messages", "prompt", "completion", "chosen", "rejected", "system")
ROLE_ALIASES = {"human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant"}


@dataclass
class Conversation:
    """A normalised example: assistant turns at index `first_target` or later are what the model learns."""

    messages: list[dict[str, Any]]
    first_target: int = 0
    columns: dict[str, Any] = field(default_factory=dict)  # every other column, renamed by data.columns

    def has_target(self) -> bool:
        return any(m["role"] == "assistant" for m in self.messages[self.first_target :])


@dataclass
class Preference:
    prompt: list[dict[str, Any]]
    chosen: list[dict[str, Any]]
    rejected: list[dict[str, Any]]
    columns: dict[str, Any] = field(default_factory=dict)


@dataclass
class Schema:
    """The resolved format of a dataset and where each r1lab name lives in it."""

    format: str
    columns: dict[str, str]  # r1lab structural name -> dataset column, for those present
    renames: dict[str, str]  # dataset column -> r1lab name, for the other mapped columns


def resolve_schema(found: set[str], cfg: DataConfig, source: str) -> Schema:
    """Pick the format (cfg.format or detected) from the column names found; fail naming found and expected."""
    listed = ", ".join(sorted(found)) or "(none)"
    unknown = {k: v for k, v in cfg.columns.items() if v not in found}
    if unknown:
        pairs = ", ".join(f"{k}: {v}" for k, v in unknown.items())
        raise UserError(
            f"data.columns names columns that are not in the data ({pairs}); found columns: {listed}",
            where=f"data.columns ({source})",
            fix="map each r1lab name to one of the found columns",
        )
    mapping = {name: cfg.columns.get(name, name) for name in STRUCTURE}
    if "messages" not in cfg.columns and "messages" not in found and "conversations" in found:
        mapping["messages"] = "conversations"
    present = {name: col for name, col in mapping.items() if col in found}
    fmt = cfg.format
    if fmt == "auto":
        fmt = next((f for f, need in FORMATS.items() if all(n in present for n in need)), "")
        if not fmt:
            raise UserError(
                f"cannot tell the data format of {source}: found columns {listed}",
                where="data.path",
                fix="expected `messages`, or `prompt` + `completion`, or `prompt`, or `chosen` + `rejected`; "
                "map yours with data.columns, e.g. columns: {prompt: question, completion: solution}",
            )
    missing = [n for n in FORMATS[fmt] if n not in present]
    if missing:
        raise UserError(
            f"format {fmt!r} needs the column(s) {', '.join(FORMATS[fmt])}; missing: {', '.join(missing)}; "
            f"found columns: {listed}",
            where=f"data.format / data.columns ({source})",
            fix="rename the columns in the data or map them, e.g. data.columns: {"
            + ", ".join(f"{n}: <your column>" for n in missing)
            + "}",
        )
    renames = {v: k for k, v in cfg.columns.items() if k not in STRUCTURE}
    return Schema(fmt, present, renames)


def normalise(
    record: dict[str, Any], schema: Schema, cfg: DataConfig, where: str
) -> Conversation | Preference:
    """One record in the schema's format -> a Conversation (or Preference)."""
    cols = schema.columns
    absent = [cols[n] for n in FORMATS[schema.format] if cols[n] not in record]
    if absent:
        raise UserError(
            f"a record has no column {', '.join(absent)} (format {schema.format!r}); "
            f"its columns: {', '.join(sorted(record)) or '(none)'}",
            where=where,
            fix="give every record the same columns (one format per file)",
        )
    used = {cols[n] for n in (*FORMATS[schema.format], "system") if n in cols}
    if schema.format == "preference" and "prompt" in cols:
        used.add(cols["prompt"])
    other = {schema.renames.get(k, k): v for k, v in record.items() if k not in used}
    system = record.get(cols["system"]) if "system" in cols else None
    system = system if isinstance(system, str) and system else cfg.system_prompt

    def get(name: str, role: str | None) -> list[dict[str, Any]]:
        return to_messages(
            record.get(cols[name]) if name in cols else None,
            role,
            f"{where}, column {cols.get(name, name)!r}",
        )

    if schema.format == "preference":
        prompt = _with_system(get("prompt", "user"), system)
        return Preference(prompt, get("chosen", "assistant"), get("rejected", "assistant"), other)
    if schema.format == "messages":
        return Conversation(_with_system(get("messages", None), system), 0, other)
    prompt = _with_system(get("prompt", "user"), system)
    if schema.format == "prompt":
        return Conversation(prompt, len(prompt), other)
    return Conversation(prompt + get("completion", "assistant"), len(prompt), other)


def to_messages(value: Any, role: str | None, where: str) -> list[dict[str, Any]]:
    """A cell -> a list of messages. A string is one message of `role`; with role None it must be JSON messages."""
    if value is None:
        return []
    if isinstance(value, str):
        if role is not None:
            return [{"role": role, "content": value}]
        try:
            value = json.loads(value)  # e.g. a CSV cell holding the messages as JSON
        except json.JSONDecodeError:
            raise UserError(
                "messages must be a list of {role, content} objects, got a plain string",
                where=where,
                fix="store the messages as a list (JSON in a CSV cell)",
            ) from None
    if not isinstance(value, list | tuple):
        raise UserError(f"expected a string or a list of messages, got {type(value).__name__}", where=where)
    return [_message(m, where) for m in value]


def _message(m: Any, where: str) -> dict[str, Any]:
    if not isinstance(m, dict):
        raise UserError(f"a message must be an object with role and content, got {m!r:.80}", where=where)
    role = m.get("role", m.get("from"))
    content = m.get("content", m.get("value"))
    if not isinstance(role, str):
        raise UserError(
            f"a message has no role: {m!r:.80}",
            where=where,
            fix="give every message a `role` (system/user/assistant) and a `content`",
        )
    if isinstance(content, list):  # multimodal-style parts: keep the text
        content = "".join(p.get("text") or "" for p in content if isinstance(p, dict))
    out = {k: v for k, v in m.items() if k not in ("from", "value") and v is not None}
    out["role"] = ROLE_ALIASES.get(role, role)
    out["content"] = "" if content is None else str(content)
    return out


def _with_system(messages: list[dict[str, Any]], system: str | None) -> list[dict[str, Any]]:
    if system and not (messages and messages[0]["role"] == "system"):
        return [{"role": "system", "content": system}, *messages]
    return messages
