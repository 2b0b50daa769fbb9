"""Ops that deliberately have no rule, and why: every space they touch is frozen.

`FROZEN` maps an op name (ATen unless qualified) to the reason, which the frozen groups quote
(`no rule for aten.nonzero at model.py:41: returns positions ...`). The op table
(benchmarks/op_table.md) lists these beside the ops with rules; tests/test_op_table.py checks
that every op of PyTorch's core ATen opset and every op a `transformers` export produced
(benchmarks/results/hf_survey.json) has either a rule or an entry here.
"""

from __future__ import annotations

__all__ = ["FROZEN", "frozen_reason"]

_BACKWARD = (
    "a gradient op: it appears in training graphs, and graphmerge analyses the forward "
    "(inference) graph of a model"
)
_POSITIONS = "returns the positions of elements as values, so any permutation changes them"

FROZEN: dict[str, str] = {
    **dict.fromkeys(
        (
            "aten._adaptive_avg_pool2d_backward",
            "aten.avg_pool2d_backward",
            "aten.convolution_backward",
            "aten.embedding_dense_backward",
            "aten.max_pool2d_with_indices_backward",
            "aten.native_group_norm_backward",
            "aten.native_layer_norm_backward",
        ),
        _BACKWARD,
    ),
    **dict.fromkeys(("aten.nonzero", "aten.nonzero_static", "aten.argwhere"), _POSITIONS),
    **dict.fromkeys(
        ("aten.as_strided", "aten.as_strided_", "aten.as_strided_copy"),
        "reads memory through explicit strides and an offset, so an output position is not tied "
        "to one position of each input axis",
    ),
    **dict.fromkeys(
        ("aten.masked_scatter", "aten.masked_scatter_"),
        "fills the masked positions from the source in row-major order, so which source element "
        "lands where depends on the positions along every axis",
    ),
    **dict.fromkeys(
        ("aten.resize_", "aten.resize_as_", "aten.set_"),
        "replaces a tensor's storage or shape in place",
    ),
}


def frozen_reason(name: str) -> str | None:
    """The documented reason an op (`aten.nonzero`) has no rule, or None."""
    return FROZEN.get(name)
