"""Reshape rules: view, reshape, flatten, unflatten and their copies.

A reshape maps runs of input axes to runs of output axes with the same product; a run that is
regrouped becomes a product of factors (`Prod`) that the space store refines, so that
`(B, C) -> (B, H, D)` splits the channel space into heads and head dims. A reshape that carves a
leading factor which is only ever indexed downstream (fused qkv: `reshape(B, T, 3, H, D)` then
`unbind`) gives each block its own spaces instead.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from graphmerge.layout import UNIT, Alt, Blk, Cat, Layout, Prod

if TYPE_CHECKING:
    from graphmerge.rule_context import RuleContext

__all__ = ["reshape", "reshape_layouts"]


def reshape_layouts(cx: RuleContext, x: tuple, in_shape, out_shape) -> tuple:
    """Map input layouts to output layouts through a reshape, refining spaces as needed."""
    store = cx.store
    in_dims = [i for i, s in enumerate(in_shape) if s != 1]
    out_dims = [i for i, s in enumerate(out_shape) if s != 1]
    out: list[Layout] = [UNIT] * len(out_shape)
    i = j = 0
    while i < len(in_dims) or j < len(out_dims):
        run_in, run_out = [in_dims[i]], [out_dims[j]]
        pa, pb = in_shape[in_dims[i]], out_shape[out_dims[j]]
        i += 1
        j += 1
        while pa != pb:
            if pa < pb:
                run_in.append(in_dims[i])
                pa *= in_shape[in_dims[i]]
                i += 1
            else:
                run_out.append(out_dims[j])
                pb *= out_shape[out_dims[j]]
                j += 1
        if len(run_in) == 1 and len(run_out) == 1:
            out[run_out[0]] = x[run_in[0]]
            continue
        facs = [f for d in run_in for f in store.factors(x[d])]
        sizes = [out_shape[d] for d in run_out]
        facs = _blocks_as_product(cx, facs, sizes)
        merged = Prod(tuple(facs))
        pieces = (
            store.split(merged, sizes, f"reshape ({cx.where()})") if len(run_out) > 1 else [merged]
        )
        for d, p in zip(run_out, pieces):
            out[d] = p
    return tuple(out)


def _blocks_as_product(cx: RuleContext, facs: list, sizes: list[int]) -> list:
    """A concatenation of k equal blocks viewed as (k, rest) (channel shuffle: `cat` then
    `view(B, k, C / k, ...)`): the blocks become one space `rest`, the block index a frozen
    factor; otherwise the factors unchanged (a concatenation cannot be split into a product)."""
    if len(facs) != 1 or len(sizes) < 2:
        return facs
    cat = cx.store.normalize(facs[0])
    if not isinstance(cat, Cat) or len(cat.parts) != sizes[0]:
        return facs
    size = cx.store.size(cat) // sizes[0]
    if any(cx.store.size(p) != size for p in cat.parts):
        return facs
    blocks, rest = cx.new(sizes[0], "blocks"), cx.new(size, "block")
    cx.unify(cat, Prod((blocks, rest)), f"concatenated blocks viewed as a product ({cx.where()})")
    return [blocks, rest]


def _carve(in_shape, out_shape, d_out: int) -> tuple[int, int] | None:
    """Where output axis `d_out` (k blocks) is carved from: (input axis, end of the output axes
    after the block axis that come from it), or None. The input axis splits into (outer output
    axes before the block axis, k, inner output axes); the axes around it are unchanged."""
    k = out_shape[d_out]
    for d_in in range(min(d_out, len(in_shape) - 1), -1, -1):
        if list(out_shape[:d_in]) != list(in_shape[:d_in]):
            continue
        size, outer = in_shape[d_in], math.prod(out_shape[d_in:d_out])
        if size % (outer * k) or size <= outer * k:
            continue
        acc, j = outer * k, d_out + 1
        while acc < size and j < len(out_shape):
            acc *= out_shape[j]
            j += 1
        if acc == size and list(out_shape[j:]) == list(in_shape[d_in + 1 :]):
            return d_in, j
    return None


def _block_split(cx: RuleContext, x: tuple, in_shape, out_shape):
    """A reshape with a new factor that is only ever indexed (`unbind`, `select`): fused qkv,
    as a leading factor (`(B, T, 3, H, D)`) or inside the heads (`(B, T, H, 3, D)`).

    Returns layouts with a `Blk` axis and `Alt` siblings, so q, k and v get independent spaces,
    or None when the pattern does not apply.
    """
    for d_out in cx.block_dims():
        carved = _carve(in_shape, out_shape, d_out)
        if carved is None:
            continue
        d_in, j = carved
        k, rest_sizes = out_shape[d_out], tuple(out_shape[d_out + 1 : j])
        outer_sizes = list(out_shape[d_in:d_out])
        lay, outer = x[d_in], []
        why = f"stacked blocks ({cx.where()})"
        if outer_sizes:
            *outer, lay = cx.store.split(
                lay, [*outer_sizes, cx.store.size(lay) // math.prod(outer_sizes)], why
            )
        block = cx.store.size(lay) // k
        blocks = cx.store.cut_many(lay, [block * b for b in range(k + 1)], why)
        per_block = [reshape_layouts(cx, (b,), (block,), rest_sizes) for b in blocks]
        key = cx.store.new_key()
        alts = tuple(Alt(key, tuple(pb[t] for pb in per_block)) for t in range(len(rest_sizes)))
        return tuple(x[:d_in]) + tuple(outer) + (Blk(key, k),) + alts + tuple(x[d_in + 1 :])
    return None


def reshape(cx: RuleContext):
    """view / reshape / flatten / unflatten / ...: layouts map through the sizes; a new leading
    factor that is only ever indexed downstream becomes a block axis (`_block_split`)."""
    x = cx.axes(0)
    in_shape, out_shape = tuple(cx.shape(0)), tuple(cx.out_shape())
    if any(isinstance(lay, (Blk, Alt)) for lay in x):
        if in_shape == out_shape:
            return x
        x = cx.collapse(x)
    blocked = _block_split(cx, x, in_shape, out_shape)
    if blocked is not None:
        return blocked
    return reshape_layouts(cx, x, in_shape, out_shape)
