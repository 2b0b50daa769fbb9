"""The benchmark's "beyond MuDSC" table (benchmarks/refine_table.py) from raw per-pair scores."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[1])  # `benchmarks` lives at the repository root
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from benchmarks.refine_table import BASE, NEW, refine_summary


def _pairs(*joints):
    return [{"joint": j, "per_task": j} for j in joints]


def test_refine_summary_means_differences_and_the_std_check():
    scores = {
        "a": {BASE: _pairs(0.40, 0.50), **{r: _pairs(0.70, 0.80) for r in NEW}},
        "b": {BASE: _pairs(0.20, 0.20), **{r: _pairs(0.10, 0.10) for r in NEW}},
    }
    lines = refine_summary({arch: {"scores": s} for arch, s in scores.items()})
    assert len(lines) == 3 + len(NEW)
    base = [c.strip() for c in lines[2].strip("|").split("|")]
    assert base[1:4] == ["45.0 ± 5.0", "20.0 ± 0.0", "32.5"]
    row = [c.strip() for c in lines[3].strip("|").split("|")]
    # mean (75 + 10) / 2 = 42.5, +10.0 over MuDSC zip; arch b is 10 points below (std 0): ✗
    assert row[3:] == ["42.5", "+10.0", "✗"]


def test_refine_summary_is_empty_without_the_new_rows():
    assert refine_summary({"a": {"scores": {BASE: _pairs(0.5)}}}) == []
