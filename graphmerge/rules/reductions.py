"""Reduction rules: sums and means, variance, vector norms, reductions that return positions
(max with indices, sort, top-k), scans (cumsum), histograms and pairwise distances.

A reduced axis disappears (or becomes a unit axis with keepdim); the other axes pass through.
An op whose result depends on the order along an axis (indices, sorting, running sums) pins it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from graphmerge.layout import UNIT
from graphmerge.rules.dims import dim_index, dim_list
from graphmerge.rules.elementwise import broadcast

if TYPE_CHECKING:
    from graphmerge.rule_context import RuleContext

__all__ = ["cdist", "histogram", "index_reduce", "pdist", "reduce", "scan", "var"]


def _reduce_dims(dims, rank: int) -> list[int]:
    """Sorted axes reduced by `dims` (None or an empty list: all of them)."""
    if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        return list(range(rank))
    return sorted(set(dim_list(dims, rank)))


def _reduced(x: tuple, dims: list[int], keepdim: bool) -> tuple:
    """Layouts after reducing `dims`: dropped, or UNIT with keepdim."""
    out = []
    for i, lay in enumerate(x):
        if i in dims:
            if keepdim:
                out.append(UNIT)
        else:
            out.append(lay)
    return tuple(out)


def reduce(cx: RuleContext):
    """sum, mean, amax, logsumexp, vector norms, ...: over `dim` (all axes if none).

    If the output rank disagrees with `keepdim`, the other reading is taken.
    """
    x = cx.axes(0)
    keep = bool(cx.arg("keepdim", default=False))
    d = _reduce_dims(cx.arg("dim"), len(x))
    out = _reduced(x, d, keep)
    if len(cx.out_shape()) != len(out):
        out = _reduced(x, d, not keep)
    return out


def var(cx: RuleContext):
    """var / std (and their _mean forms, whose two outputs share the layouts)."""
    x = cx.axes(0)
    d = _reduce_dims(cx.arg("dim"), len(x))
    out = _reduced(x, d, bool(cx.arg("keepdim", default=False)))
    if len(cx.out_shapes()) > 1:
        return [out for _ in cx.out_shapes()]
    return out


def _frozen_outputs(cx: RuleContext, why: str):
    """Every output axis a new frozen space (one tuple, or a list for several outputs)."""
    shapes = cx.out_shapes()
    outs = [tuple(cx.new(s, "idx", frozen=why) for s in shp) for shp in shapes]
    return outs if len(shapes) > 1 else outs[0]


def index_reduce(cx: RuleContext):
    """Reductions whose result carries indices (or order) along the reduced axis: it is pinned.

    max / min also have a global form (a scalar, permutation invariant) and an elementwise form
    against a second tensor (`other`).
    """
    x = cx.axes(0)
    name = cx.op_name()
    if name in ("max", "min"):
        if cx.is_tensor("other"):
            return broadcast(cx, [x, cx.axes("other")], cx.out_shape())
        if cx.arg("dim") is None:
            return tuple(cx.new(s, "scalar") for s in cx.out_shape())
    dim = cx.arg("dim")
    if dim is None:
        cx.freeze_all(x, f"{name} over all axes ({cx.where()})")
        return _frozen_outputs(cx, name)
    d = dim_index(dim, len(x))
    cx.freeze(x[d], f"{name} returns positions along this axis ({cx.where()})")
    outs = []
    shapes = cx.out_shapes()
    for shp in shapes:
        if len(shp) == len(x):
            outs.append(
                tuple(x[i] if i != d else cx.new(shp[d], "idx", frozen=name) for i in range(len(x)))
            )
        else:
            outs.append(tuple(x[i] for i in range(len(x)) if i != d))
    return outs if len(shapes) > 1 else outs[0]


def scan(cx: RuleContext):
    """Running sums/products: the scanned axis is pinned (order matters), others pass through."""
    x = cx.axes(0)
    d = dim_index(cx.arg("dim"), len(x))
    cx.freeze(x[d], f"{cx.op_name()} accumulates along this axis ({cx.where()})")
    shapes = cx.out_shapes()
    return [x for _ in shapes] if len(shapes) > 1 else x


def histogram(cx: RuleContext):
    """histc / bincount: counts over every element (weights unify with the input), invariant
    under any permutation of the input; the bins axis is positional."""
    if cx.is_tensor("weights"):
        for a, b in zip(cx.axes(0), cx.axes("weights")):
            cx.unify(a, b, f"{cx.op_name()} weights")
    return tuple(cx.new(s, "bins", frozen=f"{cx.op_name()} bins") for s in cx.out_shape())


def cdist(cx: RuleContext):
    """Distances between the rows of x1 (..., P, M) and x2 (..., R, M): the feature axes unify
    (a distance is a symmetric function of them), batch axes broadcast; out (..., P, R)."""
    a, b = cx.axes(0), cx.axes(1)
    cx.unify(a[-1], b[-1], f"{cx.op_name()} features")
    out_shape = cx.out_shape()
    batch = broadcast(cx, [a[:-2], b[:-2]], out_shape[:-2]) if len(out_shape) > 2 else ()
    return batch + (a[-2], b[-2])


def pdist(cx: RuleContext):
    """Distances between all pairs of rows of x (N, M): rows are positional (the output lists
    pairs i < j), features are summed symmetrically."""
    x = cx.axes(0)
    cx.freeze(x[0], f"pdist pairs rows by position ({cx.where()})")
    return tuple(cx.new(s, "pairs", frozen="pdist pairs") for s in cx.out_shape())
