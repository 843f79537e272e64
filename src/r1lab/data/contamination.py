"""Contamination check: which held-out prompts are also in the training data, exactly or nearly.

Both files are read as RL prompts are (`read_prompt_data`: every format, `data.columns` mappings), and the text
compared is a record's user messages before the trained turn. Text is normalised first: Unicode NFKC, case folded,
every run of punctuation or whitespace one space; digits are kept (``"What is 2+3?"`` and ``"what is 2 + 3"`` are
the same question, ``2+4`` is not).

- exact: a test prompt whose normalised text equals a training prompt's.
- near: a test prompt with at least `n` words whose word n-grams are found in the training prompts' n-grams for at
  least `threshold` of its own n-grams (containment, as GPT-3's 13-gram and Llama 2's 8-gram decontamination
  measure it, here on words after normalisation, as lm-eval's decontamination janitor does).
- template n-grams: an n-gram found in more than `max_gram_prompts` training prompts is the data's boilerplate
  (an instruction every prompt repeats: "show your steps, then write the final line as ...") and is ignored, or
  every prompt of a templated task would be a near duplicate of every other.
A test prompt under `n` words, or with template n-grams only, is checked for exact duplicates only and counted as
`unchecked`.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from r1lab.config import DataConfig
from r1lab.data.prompts import read_prompt_data
from r1lab.data.splits import EVAL_SPLIT
from r1lab.errors import UserError

_SEPARATORS = re.compile(r"[\W_]+", re.UNICODE)


def normalise_text(text: str) -> str:
    """Case-folded NFKC text with punctuation and whitespace runs as single spaces; digits kept."""
    return _SEPARATORS.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


@dataclass
class Match:
    test: int  # 1-based record number in the test file
    train: int  # 1-based record number of the training prompt it matches best
    score: (
        float  # 1.0 for an exact duplicate; else the fraction of the test prompt's n-grams found in training
    )
    test_text: str
    train_text: str


@dataclass
class ContaminationReport:
    train_path: str
    test_path: str
    train_count: int
    test_count: int
    n: int
    threshold: float
    max_gram_prompts: int = 10
    exact: list[Match] = field(default_factory=list)
    near: list[Match] = field(default_factory=list)  # not counted in exact
    unchecked: int = (
        0  # test prompts under n words or of template n-grams only: checked for exact duplicates only
    )
    template_ngrams: int = 0  # training n-grams in more than max_gram_prompts prompts, ignored

    @property
    def contaminated(self) -> int:
        return len(self.exact) + len(self.near)

    @property
    def fraction(self) -> float:
        return self.contaminated / self.test_count if self.test_count else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "contaminated": self.contaminated, "fraction": self.fraction}

    def summary(self) -> str:
        return (
            f"{self.contaminated} of {self.test_count} test prompts ({self.fraction:.1%}) are in the "
            f"{self.train_count} training prompts: {len(self.exact)} exact, {len(self.near)} near "
            f"(>= {self.threshold:.0%} of their {self.n}-grams); {self.unchecked} test prompts under {self.n} "
            f"words or of template {self.n}-grams only (the {self.template_ngrams} found in more than "
            f"{self.max_gram_prompts} training prompts) were checked for exact duplicates only"
        )


def prompt_texts(path: str, columns: dict[str, str], split: str, role: str = "train") -> list[str]:
    """The user text of each record's prompt, through the RL prompt reader (same formats, same column mapping).
    A UserError says which of the two data sets (`role`) it is about."""
    cfg = DataConfig(path=path, split=split, columns=columns)
    try:
        read = read_prompt_data(cfg)
    except UserError as e:
        where = (e.where or "").replace("data.path", path).replace("data.columns", "--columns")
        raise UserError(e.what, where=f"{role} data: {where}", fix=e.fix) from None
    return ["\n".join(m["content"] for m in p.messages if m["role"] == "user") for p in read.prompts]


def check_contamination(
    train_path: str,
    test_path: str,
    *,
    n: int = 8,
    threshold: float = 0.8,
    max_gram_prompts: int = 10,
    columns: dict[str, str] | None = None,
    train_split: str = "train",
    test_split: str = EVAL_SPLIT,
) -> ContaminationReport:
    """Compare the prompts of `test_path` with those of `train_path` (files, folders or hub datasets)."""
    train = prompt_texts(train_path, columns or {}, train_split, "train")
    test = prompt_texts(test_path, columns or {}, test_split, "test")
    return compare_texts(
        train,
        test,
        n=n,
        threshold=threshold,
        max_gram_prompts=max_gram_prompts,
        train_path=train_path,
        test_path=test_path,
    )


def compare_texts(
    train: list[str],
    test: list[str],
    *,
    n: int = 8,
    threshold: float = 0.8,
    max_gram_prompts: int = 10,
    train_path: str = "",
    test_path: str = "",
) -> ContaminationReport:
    """The check on two lists of prompt texts (record i is number i + 1 in the report)."""
    if n < 1 or not 0 < threshold <= 1 or max_gram_prompts < 1:
        raise ValueError(
            f"need n >= 1, 0 < threshold <= 1, max_gram_prompts >= 1; got {n}, {threshold}, {max_gram_prompts}"
        )
    report = ContaminationReport(train_path, test_path, len(train), len(test), n, threshold, max_gram_prompts)
    exact_index: dict[str, int] = {}
    gram_index: dict[tuple[str, ...], int] = {}  # n-gram -> first training prompt that has it
    prompts_with: Counter[tuple[str, ...]] = Counter()  # n-gram -> how many training prompts have it
    for i, text in enumerate(train):
        norm = normalise_text(text)
        exact_index.setdefault(norm, i)
        grams = set(ngrams(norm.split(), n))
        prompts_with.update(grams)
        for gram in grams:
            gram_index.setdefault(gram, i)
    template = {g for g, count in prompts_with.items() if count > max_gram_prompts}
    report.template_ngrams = len(template)
    for j, text in enumerate(test):
        norm = normalise_text(text)
        if norm in exact_index:
            i = exact_index[norm]
            report.exact.append(Match(j + 1, i + 1, 1.0, text, train[i]))
            continue
        grams = set(ngrams(norm.split(), n)) - template
        if not grams:
            report.unchecked += 1
            continue
        owners = Counter(gram_index[g] for g in grams if g in gram_index)
        score = sum(owners.values()) / len(grams)
        if owners and score >= threshold:
            i = owners.most_common(1)[0][0]
            report.near.append(Match(j + 1, i + 1, score, text, train[i]))
    return report


def report_text(report: ContaminationReport, examples: int = 3) -> str:
    """The summary and the first `examples` exact and near matches, for the terminal."""
    lines = [f"train: {report.train_path}", f"test:  {report.test_path}", report.summary()]
    for kind, matches in (("exact", report.exact), ("near", report.near)):
        for m in matches[:examples]:
            lines.append(f"  {kind} ({m.score:.0%}): test #{m.test} {_short(m.test_text)!r}")
            lines.append(f"      train #{m.train} {_short(m.train_text)!r}")
    return "\n".join(lines)


def _short(text: str, width: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def write_report_json(report: ContaminationReport, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")
