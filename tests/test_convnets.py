"""The conv-net zoo of the coverage table (benchmarks/convnets.py) and the table's bookkeeping.

Every classic conv net shuffles with its function kept and has the measured share of permutable
hidden units (all of them, except ShuffleNetV2 whose channel shuffle ties both branches to one
permutation and pins the branch index). The architecture list covers 90+ architectures across
the families the table promises, and rows under 90% say why.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

_ROOT = str(Path(__file__).resolve().parents[1])  # `benchmarks` lives at the repository root
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import graphmerge as gm
from benchmarks import coverage
from benchmarks.convnets import CONVNETS

SHARE = {"shufflenet_v2": 0.6}  # measured; 1.0 for the others


@pytest.mark.parametrize("name", sorted(CONVNETS))
def test_convnet_shuffles_and_keeps_its_function(name):
    torch.manual_seed(0)
    model = CONVNETS[name]().eval()
    example, fresh = torch.randn(2, 3, 32, 32), torch.randn(3, 3, 32, 32)
    twin = gm.shuffle(model, example, seed=1, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(twin(fresh), model(fresh), rtol=1e-4, atol=1e-5)
    analysis = gm.analyze(model, example, strict=True)
    assert analysis.unruled == []
    assert analysis.permutable_share == pytest.approx(SHARE.get(name, 1.0))


def test_the_table_covers_ninety_architectures_in_every_family():
    names = [a.name for a in coverage.ARCHS]
    assert len(names) >= 90 and len(set(names)) == len(names)
    families = {a.family for a in coverage.ARCHS}
    assert {"encoder", "decoder", "enc-dec", "moe", "ssm", "recurrent", "vision"} <= families
    assert {"segmentation", "detection", "audio", "time series", "convnet zoo"} <= families
    assert {a.model_cls for a in coverage.ARCHS if a.source == "convnets"} == set(CONVNETS)
    for arch in coverage.ARCHS:
        assert arch.inputs in coverage.INPUTS, arch.name


def test_rows_under_ninety_percent_name_what_freezes_them():
    r = coverage.Result("m", "moe", "M", traced=True, function_kept=True, permutable_share=0.8)
    groups = [
        gm.PermutationGroup("a:out", 8, True, "strided slice (slice_4 at m.py:454)"),
        gm.PermutationGroup("b:out", 4, True, "strided slice (slice_9 at m.py:454)"),
        gm.PermutationGroup(
            "c:out", 4, True, "topk returns positions along this axis (topk at m.py:1)"
        ),
        gm.PermutationGroup("d:out", 6, True, "model output"),
        gm.PermutationGroup("e:out", 16, False, None),
    ]
    r.frozen_by = coverage.frozen_reasons(groups)
    assert r.frozen_by == {"strided slice": 12, "topk returns positions along this axis": 4}
    table = coverage.readme_table([r])
    assert "| m (M) | moe | ✓ | 80% | — | strided slice (12); topk returns positions" in table
    r.permutable_share = 0.95
    assert coverage.readme_table([r]).rstrip().endswith("| — |")
