"""Text answers: `exact` (normalised string), `choice` (option letter), `classification` (CLS-RL class name)
and `format` (the completion matches a regex, by default <think>…</think><answer>…</answer>)."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from r1lab.errors import UserError
from r1lab.rewards.extract import (
    answer_region,
    final_answer,
    last_boxed,
    normalize,
    parse_number,
    stated_answer,
)
from r1lab.rewards.registry import answer_column, reward

THINK_ANSWER = r"\s*<think>.*?</think>\s*<answer>.*?</answer>\s*"


def _golds(gold: Any) -> list[str]:
    """A gold column may hold one answer or a list of accepted ones."""
    if gold is None:
        return []
    return [str(g) for g in gold] if isinstance(gold, list | tuple) else [str(gold)]


def _states_answer(completion: str, **_: Any) -> bool:
    return stated_answer(completion) is not None


@reward("exact", columns=answer_column, correctness=True, parses=_states_answer)
def exact_reward(
    completion: str, *, answer_key: str = "answer", case_sensitive: bool = False, **columns: Any
) -> float | None:
    """1.0 if the final answer equals a gold answer after normalisation (spaces, $, \\text{}, final period)."""
    golds = _golds(columns.get(answer_key))
    if not golds:
        return None
    answer = normalize(final_answer(completion), case_sensitive=case_sensitive)
    return float(any(answer == normalize(g, case_sensitive=case_sensitive) for g in golds))


def _check_options(kwargs: dict[str, Any]) -> None:
    options = kwargs.get("options", "ABCDE")
    if not isinstance(options, str) or not options.isalpha() or not options.isupper():
        raise UserError(
            f"choice reward: options must be a string of capital letters, got {options!r}",
            where="rewards[].kwargs.options",
            fix='e.g. options: "ABCD"',
        )


@lru_cache(maxsize=64)
def _choice_patterns(options: str) -> tuple[re.Pattern[str], ...]:
    letter = f"[{options}]"
    # a lowercase option only when no word follows: "answer: b" yes, "the answer is a bit off" no
    either = f"{letter}\\b|[{options.lower()}]\\b(?! [a-z])"
    return (
        # "the answer is (B)", "Answer: b", "answer: **C**"
        re.compile(rf"(?i:answer)\s*(?:(?i:is)|:)?\s*:?\s*[(*\s]*({either})"),
        # the whole region is an option: "B", "(B)", "B.", "B) 42"
        re.compile(rf"^\W*({letter})(?:[).:].*|\W*)$", re.IGNORECASE | re.DOTALL),
        re.compile(rf"\(({letter})\)"),
        # a standalone capital; "A" followed by a lowercase word is the article, not an option
        re.compile(rf"\b({letter})\b(?! [a-z])"),
    )


def extract_choice(completion: str, options: str = "ABCDE") -> str | None:
    """The option letter the completion picks, or None."""
    region = answer_region(completion).strip()
    boxed = last_boxed(region)
    if boxed is not None:
        region = normalize(boxed, case_sensitive=True)
    for pattern in _choice_patterns(options):
        matches = pattern.findall(region)
        if matches:
            return matches[-1].upper()
    return None


def _picks_option(completion: str, *, options: str = "ABCDE", **_: Any) -> bool:
    return extract_choice(completion, options) is not None


@reward("choice", columns=answer_column, correctness=True, check=_check_options, parses=_picks_option)
def choice_reward(
    completion: str, *, answer_key: str = "answer", options: str = "ABCDE", **columns: Any
) -> float | None:
    """1.0 if the chosen option letter equals the gold letter ("B", "(B)") or 0-based index (1 -> "B")."""
    gold = columns.get(answer_key)
    if gold is None:
        return None
    if isinstance(gold, int) and not isinstance(gold, bool):
        if not 0 <= gold < len(options):
            raise ValueError(f"gold index {gold} is outside the options {options!r}")
        gold_letter = options[gold]
    else:
        gold_letter = normalize(str(gold), case_sensitive=True).strip("()").upper()
        if gold_letter not in options or len(gold_letter) != 1:
            raise ValueError(f"gold answer {gold!r} is not one of the options {options!r}")
    return float(extract_choice(completion, options) == gold_letter)


def _names_class(completion: str, *, require_tags: bool = False, **_: Any) -> bool:
    if require_tags and "<answer>" not in completion.lower():
        return False
    return bool(answer_region(completion).strip())


@reward("classification", columns=answer_column, correctness=True, parses=_names_class)
def classification_reward(
    completion: str, *, answer_key: str = "answer", require_tags: bool = False, **columns: Any
) -> float | None:
    """CLS-RL: 1.0 if the answer equals the class name (case-insensitive) or the same number, else 0.0.

    The answer is the last <answer> block; with no block it is the whole completion (the "no-think" variant),
    unless require_tags is set, in which case a completion without <answer> scores 0.
    """
    golds = _golds(columns.get(answer_key))
    if not golds:
        return None
    has_tag = "<answer>" in completion.lower()
    if require_tags and not has_tag:
        return 0.0
    answer = normalize(answer_region(completion))
    for gold in golds:
        if answer == normalize(gold):
            return 1.0
        gold_number, number = parse_number(gold), parse_number(answer)
        if gold_number is not None and number is not None and abs(gold_number - number) < 1e-9:
            return 1.0
    return 0.0


def _check_pattern(kwargs: dict[str, Any]) -> None:
    pattern, mode = kwargs.get("pattern", THINK_ANSWER), kwargs.get("mode", "fullmatch")
    if mode not in ("fullmatch", "search"):
        raise UserError(
            f"format reward: mode must be 'fullmatch' or 'search', got {mode!r}",
            where="rewards[].kwargs.mode",
        )
    try:
        re.compile(pattern)
    except (re.error, TypeError) as e:
        raise UserError(
            f"format reward: pattern {pattern!r} is not a valid regular expression ({e})",
            where="rewards[].kwargs.pattern",
            fix="fix the regex; in YAML, single-quote it so backslashes stay literal",
        ) from None


@lru_cache(maxsize=64)
def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.DOTALL)


@reward("format", check=_check_pattern)
def format_reward(
    completion: str, *, pattern: str = THINK_ANSWER, mode: str = "fullmatch", **_: Any
) -> float:
    """1.0 if the completion matches `pattern` (whole completion for mode=fullmatch, anywhere for search).

    `.` matches newlines. The default wants exactly <think>…</think> then <answer>…</answer>.
    """
    regex = _compile(pattern)
    found = regex.fullmatch(completion) if mode == "fullmatch" else regex.search(completion)
    return float(found is not None)
