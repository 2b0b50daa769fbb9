"""Smoke subset of the architecture coverage benchmark (`python -m benchmarks.coverage`).

Five Hugging Face architectures built from tiny configs (no download): each must trace, keep its
function after a shuffle, have no group frozen by the self-check or by an op without a rule, and
have at least the measured share of its parameter tensors moved by the shuffle (minus a margin).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

_ROOT = str(Path(__file__).resolve().parents[1])  # `benchmarks` lives at the repository root
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

pytest.importorskip("transformers")

from benchmarks import coverage

# Share of parameter tensors a shuffle changes, measured with torch 2.13 / transformers 5.23
# (bert-cls 0.98, gpt2-cls 1.00, llama-cls 1.00, vit-cls 0.98, resnet-cls 0.96), minus a margin.
# Not 1.0 where a tensor only has frozen axes: token/position embeddings' rows and the
# classifier's output rows stay, but their columns move, so most of them still change.
MIN_CHANGED = {
    "bert-cls": 0.90,
    "gpt2-cls": 0.90,
    "llama-cls": 0.90,
    "vit-cls": 0.90,
    "resnet-cls": 0.85,
}
# Share of hidden units that may be permuted (Analysis.permutable_share), measured minus a margin
# (bert 0.99, gpt2 0.99, llama 0.97, vit 0.98, resnet 0.92).
MIN_UNITS = {
    "bert-cls": 0.90,
    "gpt2-cls": 0.90,
    "llama-cls": 0.90,
    "vit-cls": 0.90,
    "resnet-cls": 0.85,
}


def test_smoke_subset_is_the_benchmark_one():
    assert set(MIN_CHANGED) == set(coverage.SMOKE)
    assert all(name in coverage.ARCH_BY_NAME for name in coverage.SMOKE)
    assert len(coverage.ARCHS) >= 40


@pytest.mark.parametrize("name", coverage.SMOKE)
def test_architecture_shuffles_and_keeps_function(name):
    result = coverage.measure(coverage.ARCH_BY_NAME[name], timeout=0)
    assert result.traced, result.error
    assert not result.error, result.error
    assert result.function_kept, f"{name}: max relative output diff {result.max_rel_diff}"
    assert not result.selfcheck_frozen, f"{name}: self-check froze {result.selfcheck_frozen}"
    assert not result.unruled_frozen, f"{name}: ops without rules froze {result.unruled_frozen}"
    assert result.status == "✓"
    assert result.free_groups > 0
    assert result.changed_share >= MIN_CHANGED[name], (
        f"{name}: shuffle changed {result.changed_tensors}/{result.total_tensors} tensors"
    )
    assert result.permutable_share >= MIN_UNITS[name], (
        f"{name}: permutable share {result.permutable_share:.2f}"
    )


def test_reports_render():
    """The tables render for a traced, a failed and an unruled result."""
    ok = coverage.Result(
        "a",
        "encoder",
        "A",
        traced=True,
        function_kept=True,
        max_rel_diff=0.0,
        total_tensors=2,
        changed_tensors=1,
        changed_share=0.5,
    )
    bad = coverage.Result("b", "decoder", "B", error="TraceError: no | pipe")
    part = coverage.Result(
        "c",
        "ssm",
        "C",
        traced=True,
        function_kept=True,
        max_rel_diff=1e-7,
        unruled={"aten.cumsum": 2},
        unruled_frozen={"aten.cumsum": 1},
    )
    assert [r.status for r in (ok, bad, part)] == ["✓", "✗", "partial"]
    md = coverage.markdown([ok, bad, part], "python -m benchmarks.coverage", 1.0)
    assert "| a | A | ✓ |" in md and "no: TraceError: no \\| pipe" in md
    rows = coverage.unruled_summary([ok, bad, part])
    assert rows[0]["op"] == "aten.cumsum" and rows[0]["blocks"] == ["c"]
    assert coverage.unruled_op_of("no rule for aten.cumsum at x.py:3") == "aten.cumsum"
    assert coverage.unruled_op_of("model output") is None
