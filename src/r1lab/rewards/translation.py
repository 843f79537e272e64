"""`translation`: MT-R1-Zero's rule-metric reward, r = r_format + r_metric.

A completion in the required format earns r_format = +1 plus the metric of its translation against the
reference(s), scaled to [0, 1] (sentence BLEU / 100 or chrF / 100, computed by sacrebleu); so a valid answer
scores in [1, 2]. A completion not in the format earns −2 (r_format = −1 and no metric, as in the paper).

Formats (kwarg `format`):
- `think_translate` (MT-R1-Zero's template, the default): the whole completion is
  `<think>…</think>` then `<translate>…</translate>`, each tag exactly once, the translation not empty.
- `answer` (the r1lab built-in tasks' format): the last non-empty line is `Answer: <translation>`.

Needs `pip install r1lab[translation]` (sacrebleu).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from r1lab.errors import UserError
from r1lab.rewards.registry import answer_column, reward
from r1lab.tasks.base import extract_answer, has_answer_line

FORMATS = ("think_translate", "answer")
METRICS = ("bleu", "chrf")
INVALID_FORMAT = -2.0
_THINK_TRANSLATE = re.compile(r"\s*<think>(.*?)</think>\s*<translate>(.*?)</translate>\s*", re.DOTALL)
_TAGS = ("<think>", "</think>", "<translate>", "</translate>")


def extract_translation(completion: str, fmt: str = "think_translate") -> str | None:
    """The translation a completion gives in format `fmt`, or None when it is not in that format."""
    if fmt == "answer":
        return extract_answer(completion) if has_answer_line(completion) else None
    match = _THINK_TRANSLATE.fullmatch(completion)
    if match is None or any(completion.count(tag) != 1 for tag in _TAGS):
        return None
    return match.group(2).strip() or None


@lru_cache(maxsize=16)
def _metric(metric: str, tokenize: str) -> Any:
    try:
        from sacrebleu.metrics import BLEU, CHRF
    except ImportError:
        raise UserError(
            "the translation reward needs sacrebleu, which is not installed",
            fix="pip install 'r1lab[translation]'",
        ) from None
    # sentence-level BLEU with effective order, as sacrebleu.sentence_bleu computes it
    return BLEU(effective_order=True, tokenize=tokenize) if metric == "bleu" else CHRF()


def _check(kwargs: dict[str, Any]) -> None:
    where = "rewards: name='translation', kwargs"
    fmt, metric = kwargs.get("format", "think_translate"), kwargs.get("metric", "bleu")
    if fmt not in FORMATS:
        raise UserError(
            f"translation reward: format {fmt!r} is not known", where=where, fix=f"use one of {FORMATS}"
        )
    if metric not in METRICS:
        raise UserError(
            f"translation reward: metric {metric!r} is not known", where=where, fix=f"use one of {METRICS}"
        )
    tokenize = kwargs.get("tokenize")
    if tokenize is not None:
        from sacrebleu.metrics import BLEU

        if metric != "bleu" or tokenize not in BLEU.TOKENIZERS:
            raise UserError(
                f"translation reward: tokenize={tokenize!r} with metric={metric!r}",
                where=where,
                fix=f"tokenize is BLEU's tokenizer, one of {sorted(BLEU.TOKENIZERS)} (e.g. 'zh' for Chinese)",
            )


def _in_format(completion: str, *, format: str = "think_translate", **_: Any) -> bool:
    return extract_translation(completion, format) is not None


@reward("translation", columns=answer_column, check=_check, parses=_in_format)
def translation_reward(
    completion: str,
    *,
    answer_key: str = "answer",
    metric: str = "bleu",
    format: str = "think_translate",
    tokenize: str | None = None,
    **columns: Any,
) -> float | None:
    """1 + metric/100 for a translation in the format (metric: sentence BLEU or chrF against the gold
    reference, or a list of references), −2 for a completion not in the format, None without a reference."""
    gold = columns.get(answer_key)
    references = (
        [str(g) for g in gold] if isinstance(gold, list | tuple) else [] if gold is None else [str(gold)]
    )
    if not references:
        return None
    hypothesis = extract_translation(completion, format)
    if hypothesis is None:
        return INVALID_FORMAT
    score = _metric(metric, tokenize or "13a").sentence_score(hypothesis, references).score
    return 1.0 + score / 100.0
