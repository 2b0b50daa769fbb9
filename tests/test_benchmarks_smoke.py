"""Smoke runs of the speed benchmarks (`benchmarks/merge_speed.py`, `benchmarks/analysis_speed.py`)
on tiny settings: one small zoo model, one method, one batch, one repeat; no subprocesses (the
per-case RSS measurement is switched off, tracemalloc runs in-process)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

_ROOT = str(Path(__file__).resolve().parents[1])  # `benchmarks` lives at the repository root
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

pytest.importorskip("transformers")  # benchmarks.trace_depth builds BERT from a config

from benchmarks import analysis_speed, merge_speed

pytestmark = pytest.mark.filterwarnings("ignore")


def _table(out: str) -> tuple[list[str], list[list[str]]]:
    """Header cells and data rows of the one Markdown table in `out`."""
    lines = [ln for ln in out.splitlines() if ln.startswith("|")]
    assert len(lines) >= 3, out
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    assert all(set(c) <= set(":-") for c in cells[1]), lines[1]  # alignment row
    return cells[0], cells[2:]


def _positive(value: str) -> float:
    number = float(value.rstrip("%"))
    assert number > 0, value
    return number


def test_merge_speed_smoke(capsys):
    assert (
        merge_speed.main(
            [
                "--models",
                "mlp",
                "--methods",
                "mudsc",
                "--batches",
                "1",
                "--iters",
                "2",
                "--patience",
                "1",
                "--memory",
                "inprocess",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "machine:" in out and "date:" in out and "command:" in out
    header, rows = _table(out)
    assert header == merge_speed.COLUMNS
    assert len(rows) == 1
    row = dict(zip(header, rows[0]))
    assert row["model"] == "mlp" and row["method"] == "mudsc"
    for col in ("trace s", "total s", "floor s", "total / floor", "py peak MiB"):
        _positive(row[col])
    for col in ("verify s", "collect s", "solve s", "rewrite s"):
        assert float(row[col]) >= 0
    assert row["RSS delta MiB"] == "-"  # off in-process
    stages = sum(
        float(row[c]) for c in ("trace s", "verify s", "collect s", "solve s", "rewrite s")
    )
    assert stages <= float(row["total s"]) + 2e-3


def test_analysis_speed_smoke(capsys):
    assert analysis_speed.main(["--models", "mlp", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "machine:" in out and "date:" in out
    header, rows = _table(out)
    assert header == analysis_speed.COLUMNS
    assert len(rows) == 1
    row = dict(zip(header, rows[0]))
    assert row["model"] == "mlp"
    for col in ("trace s", "verify s", "total s", "verify / (trace + infer)", "groups"):
        _positive(row[col])
    assert float(row["infer s"]) >= 0
