"""Elementwise rules: unary ops, broadcasting binary ops, creation ops, scalars.

`broadcast` is the alignment every rule with broadcasting semantics shares (matmul batch axes,
attention masks, reductions with a second tensor).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from graphmerge.layout import UNIT, Layout
from graphmerge.rules.dims import dim_index

if TYPE_CHECKING:
    from graphmerge.rule_context import RuleContext

__all__ = [
    "binary",
    "broadcast",
    "clamp",
    "glu",
    "item",
    "no_tensor",
    "unary",
    "uniform_new",
    "varying_new",
    "with_mask",
]


def unary(cx: RuleContext):
    """The output has the layouts of the first input (activations, copies, dtype casts)."""
    return cx.axes(0)


def broadcast(cx: RuleContext, layouts: list[tuple], out_shape) -> tuple:
    """Align layouts from the right; every non-1 axis of the same output position unifies.

    Returns the output layouts: the shared layout per position, UNIT for size-1 positions, a new
    space where no input has the output's size.
    """
    rank = len(out_shape)
    out = []
    for pos in range(rank):
        size = out_shape[pos]
        if size == 1:
            out.append(UNIT)
            continue
        found: Layout | None = None
        for lays in layouts:
            k = pos - (rank - len(lays))
            if k < 0 or cx.store.size(lays[k]) != size:
                continue
            if found is None:
                found = lays[k]
            else:
                cx.unify(found, lays[k], "broadcast")
        out.append(found if found is not None else cx.new(size, "broadcast"))
    return tuple(out)


def binary(cx: RuleContext):
    """Every tensor argument broadcasts against the others (add, mul, where, masked_fill, ...)."""
    lays = [cx.axes(i) for i in range(len(cx.args)) if cx.is_tensor(i)]
    return broadcast(cx, lays, cx.out_shape())


def clamp(cx: RuleContext):
    """clamp / clamp_min / clamp_max: unary with scalar bounds; tensor bounds broadcast."""
    if cx.is_tensor("min") or cx.is_tensor("max"):
        return binary(cx)
    return unary(cx)


def uniform_new(cx: RuleContext):
    """Tensors whose values are the same along every axis: any permutation keeps them."""
    return tuple(cx.new(s, "uniform") for s in cx.out_shape())


def varying_new(cx: RuleContext):
    """Tensors whose values vary along their axes (arange, random): every axis is frozen."""
    name = cx.op_name()
    return tuple(
        cx.new(s, "constant", frozen=f"{name} values vary along the axis ({cx.where()})")
        for s in cx.out_shape()
    )


def no_tensor(cx: RuleContext):
    """Asserts and symbolic-size queries: no tensor output, nothing to relate (None)."""


def item(cx: RuleContext):
    """A tensor read as a Python scalar: its axes (all of size 1) are frozen."""
    cx.freeze_all(cx.axes(0), f"value read by .item() ({cx.where()})")


def with_mask(cx: RuleContext):
    """native_dropout: the output and its keep-mask, both with the input's layouts."""
    x = cx.axes(0)
    return [x for _ in cx.out_shapes()]


def glu(cx: RuleContext):
    """glu(x, dim) = a * sigmoid(b) with (a, b) the two halves along `dim`: the halves are one
    space (elementwise product), the output's axis is that space."""
    x = list(cx.axes(0))
    d = dim_index(cx.arg("dim", default=-1), len(x))
    half = cx.shape(0)[d] // 2
    a, b = cx.store.cut_many(x[d], [0, half, 2 * half], f"glu halves ({cx.where()})")
    cx.unify(a, b, "glu product")
    x[d] = a
    return tuple(x)
