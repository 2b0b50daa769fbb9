"""Shape rules: axis permutations, unit axes, broadcasting views, repeats, concatenation, stacking
and splitting.

Most of these are structural: they move stacked layouts (`Blk`/`Alt`, see graphmerge/layout.py)
without resolving them. Reshapes are in reshape.py, constant indexing in indexing.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from graphmerge.layout import UNIT, Alt, Blk, Cat, Prod
from graphmerge.rules.dims import dim_index, dim_list

if TYPE_CHECKING:
    from graphmerge.rule_context import RuleContext

__all__ = [
    "cat",
    "diagonal",
    "dsplit",
    "expand",
    "hsplit",
    "meshgrid",
    "movedim",
    "movedim_order",
    "permute",
    "repeat",
    "repeat_interleave",
    "reverse",
    "split",
    "split_at",
    "squeeze",
    "stack",
    "swap_last",
    "tile",
    "transpose",
    "unsqueeze",
    "view_as_complex",
    "view_as_real",
    "vsplit",
]


def permute(cx: RuleContext):
    """Output axis i is input axis dims[i]."""
    x = cx.axes(0)
    return tuple(x[d] for d in dim_list(cx.arg("dims"), len(x)))


def transpose(cx: RuleContext):
    """transpose / swapaxes / swapdims: two axes trade places."""
    x = list(cx.axes(0))
    a = dim_index(cx.arg("dim0", "axis0"), len(x))
    b = dim_index(cx.arg("dim1", "axis1"), len(x))
    x[a], x[b] = x[b], x[a]
    return tuple(x)


def swap_last(cx: RuleContext):
    """t / mT / adjoint: the last two axes trade places (t of a 1-d tensor is the identity)."""
    x = list(cx.axes(0))
    if len(x) >= 2:
        x[-1], x[-2] = x[-2], x[-1]
    return tuple(x)


def reverse(cx: RuleContext):
    """numpy_T (`x.T`): the axes in reverse order, for any rank."""
    return tuple(reversed(cx.axes(0)))


def movedim_order(source, destination, rank: int) -> list[int]:
    """For movedim: output axis i is input axis order[i]."""
    src, dst = dim_list(source, rank), dim_list(destination, rank)
    order: list[int | None] = [None] * rank
    for s, d in zip(src, dst):
        order[d] = s
    rest = iter(i for i in range(rank) if i not in src)
    return [o if o is not None else next(rest) for o in order]


def movedim(cx: RuleContext):
    """The source axes move to the destination positions; the others keep their order."""
    x = cx.axes(0)
    return tuple(x[i] for i in movedim_order(cx.arg("source"), cx.arg("destination"), len(x)))


def unsqueeze(cx: RuleContext):
    """A unit axis is inserted at `dim` (of the output's rank)."""
    x = list(cx.axes(0))
    d = dim_index(cx.arg("dim"), len(x) + 1)
    return tuple(x[:d] + [UNIT] + x[d:])


def squeeze(cx: RuleContext):
    """Size-1 axes among `dim` (all size-1 axes without it) are dropped."""
    x = cx.axes(0)
    shape = cx.shape(0)
    dims = cx.arg("dim")
    if dims is None:
        drop = {i for i, s in enumerate(shape) if s == 1}
    else:
        drop = {d for d in dim_list(dims, len(x)) if shape[d] == 1}
    return tuple(lay for i, lay in enumerate(x) if i not in drop)


def expand(cx: RuleContext):
    """expand / expand_as / broadcast_to: kept axes pass through, expanded ones are new."""
    x = cx.axes(0)
    out_shape = cx.out_shape()
    lead = len(out_shape) - len(x)
    out = [cx.new(s, "expanded") for s in out_shape[:lead]]
    for i, lay in enumerate(x):
        size = out_shape[lead + i]
        out.append(lay if cx.shape(0)[i] == size else cx.new(size, "expanded"))
    return tuple(out)


def _tiled(cx: RuleContext, reps: list[int]):
    """Tiling: a repeated axis becomes (copy, original); extra leading repeats are new axes."""
    x = cx.axes(0)
    lead = len(reps) - len(x)
    out = [cx.new(r, "repeated") for r in reps[:lead]]
    for i, lay in enumerate(x):
        r = reps[lead + i]
        out.append(lay if r == 1 else Prod((cx.new(r, "repeated"), lay)))
    return tuple(out)


def repeat(cx: RuleContext):
    """x.repeat(repeats): tiling, `repeats` at least as long as x's rank."""
    return _tiled(cx, list(cx.arg("repeats")))


def tile(cx: RuleContext):
    """x.tile(dims): tiling, `dims` padded with ones in front to x's rank."""
    dims = list(cx.arg("dims"))
    return _tiled(cx, [1] * (len(cx.shape(0)) - len(dims)) + dims)


def repeat_interleave(cx: RuleContext):
    """An int repeat along `dim`: the axis becomes (original, copy). Tensor repeats and the
    flattening form without `dim` are not handled (None: the caller freezes)."""
    repeats = cx.arg("repeats")
    dim = cx.arg("dim")
    if not cx.is_tensor("self") or not isinstance(repeats, int) or dim is None:
        return None
    x = list(cx.axes(0))
    d = dim_index(dim, len(x))
    x[d] = Prod((x[d], cx.new(repeats, "repeated")))
    return tuple(x)


def cat(cx: RuleContext):
    """cat / concat / concatenate: the other axes unify, the cat axis is a `Cat` of the parts
    (empty parts, which torch skips, are left out)."""
    tensors = list(cx.arg("tensors"))
    rank = len(cx.out_shape())
    d = dim_index(cx.arg("dim", default=0), rank)
    kept = [t for t in tensors if cx.shape_of(t) != (0,) and cx.shape_of(t)[d] != 0]
    lays = [cx.axes_of(t) for t in (kept or tensors[:1])]
    out = list(lays[0])
    for other in lays[1:]:
        for i in range(rank):
            if i != d:
                cx.unify(out[i], other[i], "cat")
    out[d] = lays[0][d] if len(lays) == 1 else Cat(tuple(lay[d] for lay in lays))
    return tuple(out)


def stack(cx: RuleContext):
    """A new block axis (`Blk`) at `dim`; axes that differ between the parts become `Alt`s, so
    that a later select / unbind gets each part's own layouts back."""
    tensors = list(cx.arg("tensors"))
    lays = [cx.collapse(cx.axes_of(t)) for t in tensors]
    rank = len(cx.out_shape())
    d = dim_index(cx.arg("dim", default=0), rank)
    key = cx.store.new_key()
    out = []
    for i in range(len(lays[0])):
        opts = tuple(lay[i] for lay in lays)
        out.append(opts[0] if all(o == opts[0] for o in opts) else Alt(key, opts))
    return tuple(out[:d]) + (Blk(key, len(tensors)),) + tuple(out[d:])


def split(cx: RuleContext):
    """split / split_with_sizes / chunk / tensor_split / ...: the split axis is cut at the
    boundaries the output shapes give; each output gets its piece."""
    return _split_along(cx, dim_index(cx.arg("dim", default=0), len(cx.shape(0))))


def diagonal(cx: RuleContext):
    """diagonal(offset, dim1, dim2): both axes are removed and their diagonal appended. The main
    diagonal of a matrix whose two axes are permuted alike is permuted the same way, so the two
    axes unify and the new axis is their space; an offset diagonal pins them."""
    x = cx.axes(0)
    rank = len(x)
    a = dim_index(cx.arg("dim1", default=0), rank)
    b = dim_index(cx.arg("dim2", default=1), rank)
    rest = tuple(lay for i, lay in enumerate(x) if i not in (a, b))
    if cx.arg("offset", default=0) == 0 and cx.shape(0)[a] == cx.shape(0)[b]:
        cx.unify(x[a], x[b], f"diagonal ({cx.where()})")
        return rest + (x[a],)
    cx.freeze_all((x[a], x[b]), f"off-diagonal positions ({cx.where()})")
    return rest + (cx.new(cx.out_shape()[-1], "diagonal", frozen="off-diagonal positions"),)


def view_as_real(cx: RuleContext):
    """A complex tensor viewed as (..., 2): the real/imaginary axis is new and frozen."""
    return tuple(cx.axes(0)) + (cx.new(2, "complex parts", frozen="real and imaginary parts"),)


def view_as_complex(cx: RuleContext):
    """(..., 2) viewed as complex: the last (real/imaginary) axis is consumed and frozen."""
    x = cx.axes(0)
    cx.freeze(x[-1], f"real and imaginary parts ({cx.where()})")
    return tuple(x[:-1])


def meshgrid(cx: RuleContext):
    """Grids of the 1-d inputs: axis j of every output is input j's axis (an output is constant
    along the axes it does not vary on, so any layout serves there); `indexing="xy"` swaps the
    first two."""
    tensors = list(cx.arg("tensors"))
    lays = [cx.axes_of(t)[0] if cx.shape_of(t) else cx.new(1) for t in tensors]
    if cx.arg("indexing") == "xy" and len(lays) >= 2:
        lays[0], lays[1] = lays[1], lays[0]
    return [tuple(lays) for _ in cx.out_shapes()]


def split_at(dim_of: Callable[[int], int]) -> Callable:
    """A split rule along a fixed axis (`dim_of(rank)`): hsplit, vsplit, dsplit."""

    def rule(cx: RuleContext):
        return _split_along(cx, dim_of(len(cx.shape(0))))

    return rule


def _split_along(cx: RuleContext, d: int):
    x = list(cx.axes(0))
    bounds, off = [0], 0
    for shp in cx.out_shapes():
        off += shp[d]
        bounds.append(off)
    pieces = iter(cx.store.cut_many(x[d], bounds, f"{cx.op_name()} ({cx.where()})"))
    return [
        tuple(x[:d]) + ((next(pieces) if shp[d] > 0 else UNIT),) + tuple(x[d + 1 :])
        for shp in cx.out_shapes()
    ]


hsplit = split_at(lambda rank: 1 if rank > 1 else 0)
vsplit = split_at(lambda rank: 0)
dsplit = split_at(lambda rank: 2)
