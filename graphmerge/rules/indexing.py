"""Indexing rules: constant indices (select, unbind, slice, narrow), tensor indices (index_select,
gather, advanced indexing, embedding lookups), writes at indices (index_put, scatter,
select_scatter, slice_scatter), sorted-position lookups, and `getitem` on tuple outputs.

An axis indexed by a constant is pinned, unless it is a block axis (`Blk`) made by a stack or a
block-splitting reshape: then each index gets its block's own layouts back. An axis indexed by a
tensor is pinned, and so are the index tensor's axes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from graphmerge.layout import Alt, Blk
from graphmerge.rules.dims import dim_index

if TYPE_CHECKING:
    from graphmerge.rule_context import RuleContext

__all__ = [
    "embedding",
    "embedding_bag",
    "gather",
    "getitem",
    "index",
    "index_put",
    "index_select",
    "narrow",
    "one_hot",
    "scatter",
    "searchsorted",
    "select",
    "select_scatter",
    "slice_",
    "slice_scatter",
    "unbind",
]


def _pick(lay, key: int, idx: int):
    """The option `idx` of an `Alt` of block `key`; other layouts unchanged."""
    if isinstance(lay, Alt) and lay.key == key:
        return lay.options[idx]
    return lay


def select(cx: RuleContext):
    """x.select(dim, index): the axis is removed (block axes give that block's layouts)."""
    x = cx.axes(0)
    d = dim_index(cx.arg("dim"), len(x))
    idx = cx.arg("index")
    if isinstance(x[d], Blk):
        key = x[d].key
        idx = dim_index(idx, x[d].size)
        return tuple(_pick(lay, key, idx) for i, lay in enumerate(x) if i != d)
    x = cx.collapse(x)
    cx.freeze(x[d], f"constant index on this axis ({cx.where()})")
    return tuple(lay for i, lay in enumerate(x) if i != d)


def unbind(cx: RuleContext):
    """One output per index along `dim` (block axes give each block's layouts)."""
    x = cx.axes(0)
    d = dim_index(cx.arg("dim", default=0), len(x))
    n = cx.shape(0)[d]
    if isinstance(x[d], Blk):
        key = x[d].key
        return [tuple(_pick(lay, key, i) for j, lay in enumerate(x) if j != d) for i in range(n)]
    x = cx.collapse(x)
    cx.freeze(x[d], f"unbind along this axis ({cx.where()})")
    return [tuple(lay for j, lay in enumerate(x) if j != d) for _ in range(n)]


def slice_(cx: RuleContext):
    """x[start:end:step] along `dim`: a unit step cuts the space, another step pins it."""
    x = list(cx.axes(0))
    d = dim_index(cx.arg("dim", default=0), len(x))
    size = cx.shape(0)[d]
    start, end = cx.arg("start"), cx.arg("end")
    step = cx.arg("step", default=1)
    # Python's clamping: x[-512:] of 8 rows is all 8
    start = 0 if start is None else (max(start + size, 0) if start < 0 else min(start, size))
    end = size if end is None else (max(end + size, 0) if end < 0 else min(end, size))
    if step != 1:
        cx.freeze(x[d], f"strided slice ({cx.where()})")
        x[d] = cx.new(cx.out_shape()[d], "pinned", frozen="strided slice")
    else:
        x[d] = cx.store.cut(x[d], start, end, f"slice ({cx.where()})")
    return tuple(x)


def narrow(cx: RuleContext):
    """x.narrow(dim, start, length): the space is cut (a tensor start: None, the caller freezes)."""
    x = list(cx.axes(0))
    d = dim_index(cx.arg("dim"), len(x))
    start, length = cx.arg("start"), cx.arg("length")
    if not isinstance(start, int):
        return None
    x[d] = cx.store.cut(x[d], start, start + length, f"narrow ({cx.where()})")
    return tuple(x)


def index_select(cx: RuleContext):
    """Positions along `dim` chosen by a tensor: the axis is pinned, the output's is new."""
    x = list(cx.axes(0))
    d = dim_index(cx.arg("dim"), len(x))
    cx.freeze(x[d], f"index_select reads positions along this axis ({cx.where()})")
    x[d] = cx.new(cx.out_shape()[d], "indexed", frozen="index_select output")
    return tuple(x)


def gather(cx: RuleContext):
    """out[i][j] = x[i][index[i][j]] along `dim`: the output has the index's layouts; other axes
    of full size unify with the input's, partial ones are pinned."""
    x, idx = cx.axes(0), cx.axes("index")
    d = dim_index(cx.arg("dim"), len(x))
    cx.freeze(x[d], f"gather reads positions along this axis ({cx.where()})")
    cx.freeze(idx[d], "gather index")
    for i in range(len(x)):
        if i != d and cx.shape(0)[i] == cx.shape("index")[i]:
            cx.unify(x[i], idx[i], "gather")
        elif i != d:
            cx.freeze(x[i], "gather over a partial axis")
            cx.freeze(idx[i], "gather over a partial axis")
    return idx


def _index_axes(cx: RuleContext, x: tuple, indices: list) -> tuple[list, int, list]:
    """How x[indices] (tensor indices, None for whole axes) is laid out: (x's axes before the
    indexed block, the rank of the block, x's axes after it). The indexed axes are pinned and
    the index tensors frozen; a boolean mask indexes as many axes as it has."""
    spans, axis = [], 0
    for t in indices:
        n = 1
        if t is not None:
            val = t.meta["val"]
            n = val.dim() if val.dtype in (torch.bool, torch.uint8) else 1
            spans.append((axis, n, val.dim() if n == 1 else 1))
            cx.freeze_all(cx.axes_of(t), "index tensor")
        axis += n
    used = [a for first, n, _ in spans for a in range(first, first + n)]
    for a in used:
        cx.freeze(x[a], f"indexed by a tensor ({cx.where()})")
    rank = max((r for *_, r in spans), default=0)
    contiguous = used == list(range(used[0], used[-1] + 1)) if used else True
    if contiguous:
        before = [x[i] for i in range(used[0] if used else 0)]
        after = [x[i] for i in range(used[-1] + 1 if used else 0, len(x))]
    else:  # separated index tensors: the indexed block goes first
        before, after = [], [x[i] for i in range(len(x)) if i not in used]
    return before, rank, after


def index(cx: RuleContext):
    """x[idx] with tensor indices on some axes: those axes are pinned; the rest pass through."""
    before, rank, after = _index_axes(cx, cx.axes(0), list(cx.arg("indices")))
    out_shape = cx.out_shape()
    if len(before) + rank + len(after) != len(out_shape):
        return None
    mid = tuple(
        cx.new(s, "indexed", frozen="advanced indexing output")
        for s in out_shape[len(before) : len(before) + rank]
    )
    return tuple(before) + mid + tuple(after)


def embedding(cx: RuleContext):
    """weight[indices]: the rows are pinned (token ids), the embedding axis passes through."""
    w = cx.axes("weight")
    cx.freeze(w[0], f"embedding rows indexed by token ids ({cx.where()})")
    return tuple(cx.axes("indices")) + (w[1],)


def getitem(cx: RuleContext):
    """`operator.getitem(node, i)` on a multi-output node: the i-th output's layouts."""
    return cx.item(cx.args[1])


def index_put(cx: RuleContext):
    """x[indices] = values (index_put, index_put_, _unsafe_index_put, ...): the indexed axes are
    pinned; `values` broadcasts against x[indices]; the output has x's layouts. A boolean mask
    with a single value is a masked fill (elementwise): the mask's axes unify with x's."""
    x = cx.axes(0)
    indices = list(cx.arg("indices"))
    if _is_masked_fill(cx, indices):
        first = next(i for i, t in enumerate(indices) if t is not None)
        for a, b in zip(x[first:], cx.axes_of(indices[first])):
            cx.unify(a, b, f"{cx.op_name()} mask")
        return x
    before, rank, after = _index_axes(cx, x, indices)
    target = [*before, *([None] * rank), *after]
    values = cx.axes("values")
    for lay, t in zip(reversed(values), reversed(target)):
        if cx.store.size(lay) == 1:
            continue  # broadcast
        if t is None:
            cx.freeze(lay, f"{cx.op_name()} values at indexed positions")
        else:
            cx.unify(t, lay, f"{cx.op_name()} values")
    cx.freeze_all(values[: max(0, len(values) - len(target))], f"{cx.op_name()} values")
    return x


def _is_masked_fill(cx: RuleContext, indices: list) -> bool:
    """x[mask] = value: one boolean index tensor (Nones before it) and a one-element value."""
    used = [t for t in indices if t is not None]
    one_value = math.prod(cx.shape("values")) == 1
    return len(used) == 1 and one_value and used[0].meta["val"].dtype == torch.bool


def scatter(cx: RuleContext):
    """x.scatter(dim, index, src) and its add / reduce forms: positions along `dim` come from the
    index (pinned); other axes of the index and the source run alongside x's (full-size axes
    unify, partial ones are pinned); the output has x's layouts."""
    x, idx = cx.axes(0), cx.axes("index")
    d = dim_index(cx.arg("dim"), len(x))
    cx.freeze(x[d], f"{cx.op_name()} writes positions along this axis ({cx.where()})")
    cx.freeze(idx[d], f"{cx.op_name()} index")
    others = [(idx, cx.shape("index"))]
    if cx.is_tensor("src"):
        cx.freeze(cx.axes("src")[d], f"{cx.op_name()} source")
        others.append((cx.axes("src"), cx.shape("src")))
    for lays, shape in others:
        for i in range(len(x)):
            if i == d:
                continue
            if shape[i] == cx.shape(0)[i]:
                cx.unify(x[i], lays[i], cx.op_name())
            else:
                cx.freeze_all((x[i], lays[i]), f"{cx.op_name()} over a partial axis")
    return x


def select_scatter(cx: RuleContext):
    """x with x.select(dim, index) replaced by src: that axis is pinned, the rest unify."""
    x = cx.axes(0)
    d = dim_index(cx.arg("dim"), len(x))
    cx.freeze(x[d], f"select_scatter writes one position ({cx.where()})")
    rest = [lay for i, lay in enumerate(x) if i != d]
    for a, b in zip(rest, cx.axes("src")):
        cx.unify(a, b, "select_scatter")
    return x


def slice_scatter(cx: RuleContext):
    """x with x[start:end:step] along `dim` replaced by src: the slice is cut out of x's space
    (a step pins it), src unifies with it."""
    piece = slice_(cx)
    for a, b in zip(piece, cx.axes("src")):
        cx.unify(a, b, "slice_scatter")
    return cx.axes(0)


def embedding_bag(cx: RuleContext):
    """Sums / means / maxima of embedding rows per bag: rows are pinned, the embedding axis
    passes to the output (bags x dim); the bookkeeping outputs are positional."""
    w = cx.axes("weight")
    cx.freeze(w[0], f"embedding rows indexed by token ids ({cx.where()})")
    cx.freeze_all(cx.axes("indices"), "embedding_bag indices")
    shapes = cx.out_shapes()
    out = (cx.new(shapes[0][0], "bags", frozen="embedding bags"), w[1])
    rest = [
        tuple(cx.new(s, "aux", frozen="embedding_bag bookkeeping") for s in shp)
        for shp in shapes[1:]
    ]
    return [out, *rest] if len(shapes) > 1 else out


def searchsorted(cx: RuleContext):
    """searchsorted / bucketize: positions in a sorted sequence, elementwise in the values; the
    sequence's last axis is positional, its leading axes run alongside the values'."""
    seq_name = "sorted_sequence" if cx.is_tensor("sorted_sequence") else "boundaries"
    seq = cx.axes(seq_name)
    cx.freeze(seq[-1], f"{cx.op_name()} reads sorted positions ({cx.where()})")
    values = (
        cx.axes("self")
        if cx.is_tensor("self")
        else tuple(cx.new(s, "scalar") for s in cx.out_shape())
    )
    for a, b in zip(seq[:-1], values[: len(seq) - 1]):
        cx.unify(a, b, cx.op_name())
    return values


def one_hot(cx: RuleContext):
    """one_hot(indices, num_classes): the index axes pass through; the class axis is
    positional (each class is a position)."""
    classes = cx.out_shape()[-1]
    return tuple(cx.axes(0)) + (cx.new(classes, "classes", frozen="one_hot classes"),)
