"""Finding the answer inside a completion: <answer> tags, \\boxed{}, "Answer:" lines, the last number."""

from __future__ import annotations

import re
from fractions import Fraction

_ANSWER_TAG = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.DOTALL | re.IGNORECASE)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANCHOR = re.compile(r"(?:final answer|answer)\s*(?:is|:|=)\s*:?", re.IGNORECASE)
_TEXT_WRAP = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\{([^{}]*)\}")
_NUMBER = re.compile(
    r"-?\s*(?:\\frac\{\s*-?\d+\s*\}\{\s*\d+\s*\}|\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
    r"(?:\s*/\s*\d+(?:\.\d+)?)?|\.\d+)"
)


def answer_region(completion: str) -> str:
    """The text of the last <answer>…</answer> block (an unclosed last block runs to the end), else all."""
    matches = _ANSWER_TAG.findall(completion)
    return matches[-1].strip() if matches else completion


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} (nested braces balanced), or None."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    if not starts:
        return None
    start = starts[-1]
    depth = 1
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i].strip()
    return None  # unbalanced: the completion was cut off inside the box


def after_anchor(text: str) -> str | None:
    """What follows the last "Answer:" / "the answer is" / "final answer is", up to the end of that line."""
    matches = list(_ANCHOR.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end() :].strip()
    return rest.splitlines()[0].strip() if rest else None


def stated_answer(completion: str) -> str | None:
    """The answer the completion states explicitly: the <answer> block's \\boxed{} or "Answer:" line, else the
    block itself; without a block, the last \\boxed{} or "Answer:" line. None when it states none (a format
    error for the rewards that read answers this way)."""
    region = answer_region(completion)
    for found in (last_boxed(region), after_anchor(region)):
        if found:
            return found
    return region.strip() or None if _ANSWER_TAG.search(completion) else None


def final_answer(completion: str) -> str:
    """The answer string: <answer> block, then \\boxed{}, then the "Answer:" line, else the last line."""
    region = answer_region(completion)
    for found in (last_boxed(region), after_anchor(region)):
        if found:
            return found
    lines = [line for line in region.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def normalize(text: str, *, case_sensitive: bool = False) -> str:
    """Compare-friendly form: no $ or \\text{}, collapsed spaces, no surrounding quotes or final period."""
    text = _TEXT_WRAP.sub(r"\1", text.strip().strip("$"))
    text = " ".join(text.split()).strip("\"'`*").rstrip(".").strip()
    return text if case_sensitive else text.lower()


def parse_number(text: str) -> float | None:
    """A number written as 1,234.5 / -3 / 3/4 / \\frac{3}{4} / 1e-3 / 45% / $12 -> float; None if absent."""
    text = text.replace("$", "").replace("\\%", "%").replace("\\!", "")
    match = _NUMBER.fullmatch(text.strip().rstrip("%.").strip())
    return _to_float(match.group(0)) if match else None


def last_number(text: str) -> float | None:
    """The last number anywhere in the text."""
    matches = _NUMBER.findall(text.replace("$", ""))
    return _to_float(matches[-1]) if matches else None


def _to_float(raw: str) -> float | None:
    raw = raw.replace(" ", "").replace(",", "")
    frac = re.fullmatch(r"(-?)\\frac\{(-?\d+)\}\{(\d+)\}", raw)
    try:
        if frac:
            value = Fraction(int(frac.group(2)), int(frac.group(3)))
            return float(-value if frac.group(1) else value)
        if "/" in raw:
            num, den = raw.split("/")
            return float(num) / float(den)
        return float(raw)
    except (ValueError, ZeroDivisionError):
        return None
