"""Indexing rules: constant indices (select, unbind, slice, narrow), tensor indices (index_select,
gather, advanced indexing, embedding lookups), and `getitem` on tuple outputs.

An axis indexed by a constant is pinned, unless it is a block axis (`Blk`) made by a stack or a
block-splitting reshape: then each index gets its block's own layouts back. An axis indexed by a
tensor is pinned, and so are the index tensor's axes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from graphmerge.layout import Alt, Blk
from graphmerge.rules.dims import dim_index

if TYPE_CHECKING:
    from graphmerge.rule_context import RuleContext

__all__ = [
    "embedding",
    "gather",
    "getitem",
    "index",
    "index_select",
    "narrow",
    "select",
    "slice_",
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
    start = 0 if start is None else (start + size if start < 0 else min(start, size))
    end = size if end is None else (end + size if end < 0 else min(end, size))
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


def index(cx: RuleContext):
    """x[idx] with tensor indices on some axes: those axes are pinned; the rest pass through."""
    x = cx.axes(0)
    indices = list(cx.arg("indices"))
    used = [i for i, t in enumerate(indices) if t is not None]
    for i in used:
        cx.freeze(x[i], f"indexed by a tensor ({cx.where()})")
        cx.freeze_all(cx.axes_of(indices[i]), "index tensor")
    out_shape = cx.out_shape()
    contiguous = used == list(range(used[0], used[-1] + 1)) if used else True
    rest_before = [x[i] for i in range(len(x)) if i < (used[0] if used else 0)]
    rest_after = [x[i] for i in range(len(x)) if used and i > used[-1]]
    if not contiguous:
        rest_before, rest_after = [], [x[i] for i in range(len(x)) if i not in used]
    n_idx = len(out_shape) - len(rest_before) - len(rest_after)
    if n_idx < 0:
        return None
    mid = tuple(
        cx.new(s, "indexed", frozen="advanced indexing output")
        for s in (out_shape[len(rest_before) : len(rest_before) + n_idx])
    )
    if contiguous:
        return tuple(rest_before) + mid + tuple(rest_after)
    return mid + tuple(rest_after)


def embedding(cx: RuleContext):
    """weight[indices]: the rows are pinned (token ids), the embedding axis passes through."""
    w = cx.axes("weight")
    cx.freeze(w[0], f"embedding rows indexed by token ids ({cx.where()})")
    return tuple(cx.axes("indices")) + (w[1],)


def getitem(cx: RuleContext):
    """`operator.getitem(node, i)` on a multi-output node: the i-th output's layouts."""
    return cx.item(cx.args[1])
