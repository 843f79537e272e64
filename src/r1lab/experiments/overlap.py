"""The contamination check of every arm's training data against its eval set, for the experiment report.

Read from the run folder alone, as the rest of the report is: each trained stage's `config.yaml` (data.path,
data.columns) and each evaluation's `results.json` (`source`, the eval data file). An evaluation of a built-in
task's generated split (no file) or a stage whose config is missing is left out; one pair of files is checked
once however many arms and seeds share it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from r1lab.data.contamination import ContaminationReport, check_contamination
from r1lab.errors import UserError


def contamination_table(exp: dict[str, Any]) -> str | None:
    """A markdown table: arm, stage, training data, eval set, exact / near / contaminated counts; None when no
    arm has a trained stage whose data and eval set are files."""
    checked: dict[tuple[str, str], ContaminationReport | str] = {}
    rows: list[list[str]] = []
    for arm in exp["arms"]:
        seen: set[tuple[str, str, str]] = set()
        for run in arm["runs"]:
            test = _eval_source(Path(run["eval_dir"]) / "results.json")
            for folder in run["chain"]:
                data = _stage_data(Path(folder) / "config.yaml")
                if test is None or data is None:
                    continue
                stage = Path(folder).name.rsplit("-", 1)[0]
                key = (stage, data["path"], test)
                if key in seen:  # another seed of the same arm on the same data
                    continue
                seen.add(key)
                pair = (data["path"], test)
                if pair not in checked:
                    checked[pair] = _check(data, test)
                rows.append([arm["label"], stage, data["path"], test, *_counts(checked[pair])])
    if not rows:
        return None
    head = ["arm", "stage", "training data", "eval set", "exact", "near", "contaminated"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])


def _eval_source(path: Path) -> str | None:
    source = _load(path).get("source")
    return source if isinstance(source, str) and Path(source).exists() else None


def _stage_data(path: Path) -> dict[str, Any] | None:
    data = _load(path).get("data")
    return data if isinstance(data, dict) and isinstance(data.get("path"), str) else None


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    loaded = yaml.safe_load(path.read_text())  # JSON is YAML
    return loaded if isinstance(loaded, dict) else {}


def _check(data: dict[str, Any], test: str) -> ContaminationReport | str:
    try:
        return check_contamination(
            data["path"], test, columns=data.get("columns") or {}, train_split=data.get("split") or "train"
        )
    except UserError as e:  # the report still renders; the row says why this pair was not checked
        return e.what


def _counts(result: ContaminationReport | str) -> list[str]:
    if isinstance(result, str):
        return ["–", "–", f"not checked: {result}"]
    share = f"{result.contaminated} of {result.test_count} ({100 * result.fraction:.1f}%)"
    return [str(len(result.exact)), str(len(result.near)), share]
