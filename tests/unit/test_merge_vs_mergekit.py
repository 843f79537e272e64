"""r1lab's merge operators against mergekit's own on the same tiny models (the cases of
benchmarks/merge_vs_mergekit.py): every tensor within 1e-6 for each deterministic method both implement."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("mergekit")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from merge_vs_mergekit import LINEAR_TOLERANCE, build_models, cases, compare, merge_mergekit, merge_r1lab


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return build_models(tmp_path_factory.mktemp("mergekit-models"))


@pytest.mark.parametrize(
    "name", ["linear", "task_arithmetic", "ties", "slerp", "wise_ft", "transfer", "lines", "dare (density 1)"]
)
def test_r1lab_matches_mergekit(paths, tmp_path, name):
    (case,) = [c for c in cases(paths) if c["name"] == name]
    ours = merge_r1lab(case["ours"], tmp_path / "ours")
    theirs = merge_mergekit(case["theirs"], tmp_path / "theirs", None)
    diff, count = compare(ours, theirs, case.get("compare", "all"))
    assert count >= 36 and diff <= LINEAR_TOLERANCE, (name, diff)
