"""Math answers: `math` (symbolic equivalence through math-verify) and `numeric` (a number within a tolerance)."""

from __future__ import annotations

import logging
import re
import threading
from functools import lru_cache
from typing import Any

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from r1lab.errors import UserError
from r1lab.rewards.extract import (
    after_anchor,
    answer_region,
    final_answer,
    last_boxed,
    last_number,
    normalize,
    parse_number,
    stated_answer,
)
from r1lab.rewards.registry import answer_column, reward

_LATEX = (LatexExtractionConfig(),)
_EXPR = (ExprExtractionConfig(),)
_CONFIGS = _LATEX + _EXPR
# math-verify logs every timed-out input in full at WARNING; an answer it cannot settle in time just scores 0.
logging.getLogger("math_verify").setLevel(logging.ERROR)
_MATHY = re.compile(r"[\d\\^_{}()\[\]=+\-*/]")
_DELIMITED = re.compile(r"\$|\\\(|\\\[|\\boxed|\\fbox")
_NUMBER_THEN_WORDS = re.compile(r"(-?[\d.,]*\d)\s+([A-Za-z]{2,}\s*)+")
_SCIENTIFIC = re.compile(r"(-?\d+(?:\.\d+)?)[eE]([-+]?\d+)")


def _signal_timeout(seconds: int) -> int | None:
    # math-verify times out with SIGALRM, which only works in the main thread; elsewhere the runner's worker
    # process deadline is the only guard.
    return seconds if threading.current_thread() is threading.main_thread() else None


def gold_text(gold: Any) -> str | None:
    """The gold answer as text; for GSM8K-style solutions, the part after the last '####'."""
    if gold is None:
        return None
    text = str(gold).strip()
    if "####" in text:
        text = text.rsplit("####", 1)[1].strip()
    return text or None


@lru_cache(maxsize=4096)
def _parse_gold(text: str, timeout: int) -> list:
    """The gold as math-verify reads it, or [] when it is not math (then text equality decides)."""
    if _DELIMITED.search(text):  # already LaTeX with its delimiters: math-verify's own way
        parsed = parse(text, extraction_config=_LATEX, parsing_timeout=_signal_timeout(timeout))
        if parsed:
            return parsed
        text = text.replace("$", "")  # a currency sign ("$12"), not a delimiter
    # Not for plain words, which LaTeX would read as a product of symbols ("blue" -> b*l*u*e).
    return _parse_bare(text, timeout) if _MATHY.search(text) else []


def _parse_bare(text: str, timeout: int) -> list:
    """A bare expression ("2x", "\\frac12", "(1,2)") parsed whole, as LaTeX inside $...$.

    math-verify's plain-expression parser reads only a leading part of such text ("2x" -> 2, "1+2x" -> 1), which
    would reward the truncated answer and reject the right one, so it is only a fallback, kept when what it
    read is the whole text.
    """
    text = text.strip().rstrip(".").strip()
    # "12 dollars", "3 hours": the number (LaTeX would read d*o*l*l*a*r*s)
    unit = _NUMBER_THEN_WORDS.fullmatch(text)
    if unit:
        text = unit.group(1)
    scientific = _SCIENTIFIC.fullmatch(text)
    if scientific:
        text = f"{scientific.group(1)} \\times 10^{{{int(scientific.group(2))}}}"
    seconds = _signal_timeout(timeout)
    parsed = parse(f"${text}$", extraction_config=_LATEX, parsing_timeout=seconds)
    if parsed:
        return parsed
    parsed = parse(text, extraction_config=_EXPR, parsing_timeout=seconds)
    whole = bool(parsed) and "".join(str(parsed[-1]).split()) == "".join(text.split())
    return parsed if whole else []


def _check_timeout(kwargs: dict[str, Any]) -> None:
    value = kwargs.get("timeout", 3)
    if not isinstance(value, int) or value < 1:
        raise UserError(
            f"math reward: timeout must be a whole number of seconds >= 1, got {value!r}",
            where="rewards[].kwargs.timeout",
            fix="e.g. timeout: 3 (math-verify's own limit per parse/verify; the spec's timeout bounds the call)",
        )


def states_answer(completion: str, **_: Any) -> bool:
    """Whether the completion states an answer: a \\boxed{}, an "Answer:" line or an <answer> block."""
    return stated_answer(completion) is not None


def _has_number(completion: str, **_: Any) -> bool:
    return (
        parse_number(final_answer(completion)) is not None
        or last_number(answer_region(completion)) is not None
    )


@reward("math", columns=answer_column, correctness=True, check=_check_timeout, parses=states_answer)
def math_reward(
    completion: str, *, answer_key: str = "answer", timeout: int = 3, **columns: Any
) -> float | None:
    """1.0 if the completion's final answer is mathematically equal to the gold answer, else 0.0.

    The answer is the last \\boxed{} (inside the last <answer> block when there is one); without a box,
    math-verify looks for "final answer is" / "Answer:" and then the last expression. None when there is no gold.
    """
    gold_column = columns.get(answer_key)
    if isinstance(gold_column, list | tuple):  # several accepted answers: any one will do
        scores = [_math_score(completion, gold_text(g), timeout) for g in gold_column]
        return max((x for x in scores if x is not None), default=None)
    return _math_score(completion, gold_text(gold_column), timeout)


def _math_score(completion: str, gold: str | None, timeout: int) -> float | None:
    if gold is None:
        return None
    gold_parsed = _parse_gold(gold, timeout)
    if not gold_parsed:  # not math (e.g. a word): fall back to normalised text equality
        return float(normalize(final_answer(completion)) == normalize(gold))
    pred = _parse_prediction(answer_region(completion), timeout)
    if not pred:
        return 0.0
    return float(verify(gold_parsed, pred, timeout_seconds=_signal_timeout(timeout)))


def _parse_prediction(region: str, timeout: int) -> list:
    """The last \\boxed{}; else an "Answer: ..." line read whole like a gold; else math-verify's own search
    (LaTeX, then the last plain expression)."""
    seconds = _signal_timeout(timeout)
    boxed = last_boxed(region)
    if boxed is not None:
        return parse(f"\\boxed{{{boxed}}}", extraction_config=_CONFIGS, parsing_timeout=seconds)
    anchored = after_anchor(region)
    parsed = _parse_gold(anchored, timeout) if anchored else []
    return parsed or parse(region, extraction_config=_CONFIGS, parsing_timeout=seconds)


def _check_tolerance(kwargs: dict[str, Any]) -> None:
    for key in ("tol", "rel_tol"):
        value = kwargs.get(key, 0.0)
        if not isinstance(value, int | float) or value < 0:
            raise UserError(
                f"numeric reward: {key} must be a number >= 0, got {value!r}",
                where=f"rewards[].kwargs.{key}",
                fix=f"e.g. {key}: 1e-6",
            )


@reward("numeric", columns=answer_column, correctness=True, check=_check_tolerance, parses=_has_number)
def numeric_reward(
    completion: str, *, answer_key: str = "answer", tol: float = 1e-6, rel_tol: float = 0.0, **columns: Any
) -> float | None:
    """1.0 if |answer - gold| <= max(tol, rel_tol * |gold|), else 0.0.

    The answer is the boxed / "Answer:" / <answer> value when it is a number, else the last number in the
    answer region. None when there is no gold; a gold that is not a number raises (counted as a failure).
    """
    text = gold_text(columns.get(answer_key))
    if text is None:
        return None
    gold = parse_number(text)
    if gold is None:
        raise ValueError(f"gold answer {text!r} in column {answer_key!r} is not a number")
    pred = parse_number(final_answer(completion))
    if pred is None:
        pred = last_number(answer_region(completion))
    if pred is None:
        return 0.0
    return float(abs(pred - gold) <= max(tol, rel_tol * abs(gold)))
