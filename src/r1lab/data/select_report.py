"""How well a selection excluded a pool's noise (`r1lab data select-report`), from the labels file that
`r1lab data noisy-pool` kept aside: rows are matched by their `id`.

A selection excludes the rows it did not keep. Precision = noisy rows excluded / rows excluded; recall = noisy
rows excluded / noisy rows; recall is also given per noise kind. A random K of N excludes noise at the pool's
noise share (precision = share, recall = 1 - K/N in expectation): the figure any selector must beat.
"""

from __future__ import annotations

from typing import Any

from r1lab.data.readers import read_records
from r1lab.errors import UserError


def noise_report(labels_path: str, selections: list[str]) -> list[dict[str, Any]]:
    """One row per selection file: kept, excluded, precision, recall and recall per noise kind."""
    labels = {str(r["id"]): str(r["noise"]) for r in _with_ids(labels_path, read_records(labels_path))}
    noisy = {i for i, kind in labels.items() if kind != "clean"}
    kinds = sorted({labels[i] for i in noisy})
    rows = []
    for path in selections:
        kept = {str(r["id"]) for r in _with_ids(path, read_records(path))}
        stray = sorted(kept - set(labels))
        if stray:
            raise UserError(
                f"{path} keeps rows the labels file {labels_path} does not know, e.g. {stray[0]!r}",
                fix="report a selection made from the pool these labels belong to",
            )
        excluded = set(labels) - kept
        caught = excluded & noisy
        rows.append(
            {
                "selection": path,
                "kept": len(kept),
                "excluded": len(excluded),
                "precision": len(caught) / len(excluded) if excluded else None,
                "recall": len(caught) / len(noisy) if noisy else None,
                "recall_by_kind": {
                    k: len({i for i in caught if labels[i] == k}) / sum(labels[i] == k for i in noisy)
                    for k in kinds
                },
            }
        )
    return rows


def _with_ids(path: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for n, record in enumerate(records, 1):
        if "id" not in record:
            raise UserError(
                f"{path}, record {n} has no `id`",
                fix="report on a pool made by `r1lab data noisy-pool` (its rows and labels carry ids)",
            )
    return records
