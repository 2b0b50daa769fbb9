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
_SPARSE = (
    "_indices",
    "_values",
    "indices",
    "values",
    "crow_indices",
    "col_indices",
    "ccol_indices",
    "row_indices",
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
            "aten._grad_sum_to_size",
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
        ("aten.resize_", "aten.resize_as_", "aten.resize_as", "aten.set_"),
        "replaces a tensor's storage or shape in place",
    ),
    **dict.fromkeys(
        (
            "aten._nested_view_from_buffer",
            "aten._nested_view_from_buffer_copy",
            "aten._nested_view_from_jagged",
            "aten._nested_view_from_jagged_copy",
            "aten._nested_get_values",
            "aten._nested_get_values_copy",
        ),
        "builds a nested (ragged) tensor from a flat buffer and per-row offsets, so the rows "
        "of the result are not positions of any input axis",
    ),
    **dict.fromkeys(
        (
            *(f"aten.{n}{c}" for n in _SPARSE for c in ("", "_copy")),
            "aten.coalesce",
            "aten._sparse_broadcast_to",
            "aten._sparse_broadcast_to_copy",
        ),
        "reads or reshapes the index and value arrays of a sparse tensor, whose positions are "
        "stored as values rather than laid out along axes",
    ),
    **dict.fromkeys(
        (
            "aten._fw_primal",
            "aten._fw_primal_copy",
            "aten._make_dual",
            "aten._make_dual_copy",
            "aten._unpack_dual",
        ),
        "a forward-mode autodiff op on dual tensors: it appears only under "
        "torch.autograd.forward_ad, not in an exported inference graph",
    ),
    **dict.fromkeys(
        (
            "aten._test_autograd_multiple_dispatch_view",
            "aten._test_autograd_multiple_dispatch_view_copy",
        ),
        "an op of PyTorch's own test suite, never produced by a model",
    ),
    "aten.slice_inverse": (
        "functionalization's replay of a slice into its base tensor: it appears in functionalized "
        "graphs, not in an export of a module, and its output is laid out like `src`"
    ),
}


def frozen_reason(name: str) -> str | None:
    """The documented reason an op (`aten.nonzero`) has no rule, or None."""
    return FROZEN.get(name)
