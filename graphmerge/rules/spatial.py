"""Position-dependent rules: pooling and resampling, padding, triangular masks, flip and roll.

What these ops compute depends on where along an axis a value sits, so those axes are pinned;
channel and batch axes pass through.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from graphmerge.rules.dims import dim_list

if TYPE_CHECKING:
    from graphmerge.rule_context import RuleContext

__all__ = ["flip_roll", "pad", "spatial1d", "spatial2d", "spatial3d", "tri"]


def _spatial(nspatial: int) -> Callable:
    """The rule for ops over the last `nspatial` axes (pooling, upsampling, padding modes)."""

    def rule(cx: RuleContext):
        x = cx.axes(0)
        for d in range(len(x) - nspatial, len(x)):
            cx.freeze(x[d], f"spatial axis of {cx.op_name()}")
        outs = []
        for shp in cx.out_shapes():
            keep = tuple(x[: len(x) - nspatial])
            outs.append(
                keep
                + tuple(
                    cx.new(s, "spatial", frozen=f"spatial axis of {cx.op_name()}")
                    for s in shp[len(keep) :]
                )
            )
        return outs if len(outs) > 1 else outs[0]

    rule.__name__ = rule.__qualname__ = f"spatial{nspatial}d"
    return rule


spatial1d, spatial2d, spatial3d = _spatial(1), _spatial(2), _spatial(3)


def pad(cx: RuleContext):
    """constant_pad_nd / pad: `pad` lists (before, after) pairs from the last axis backwards;
    a padded axis is pinned."""
    x = cx.axes(0)
    pads = list(cx.arg("pad"))
    out_shape = cx.out_shape()
    out = list(x)
    for i in range(len(pads) // 2):
        d = len(x) - 1 - i
        if pads[2 * i] or pads[2 * i + 1]:
            cx.freeze(x[d], f"padded axis ({cx.where()})")
            out[d] = cx.new(out_shape[d], "padded", frozen="padded axis")
    return tuple(out)


def tri(cx: RuleContext):
    """triu / tril: the mask depends on the positions along the last two axes."""
    x = cx.axes(0)
    for d in (-1, -2):
        cx.freeze(x[d], f"{cx.op_name()} mask depends on position ({cx.where()})")
    return x


def flip_roll(cx: RuleContext):
    """flip / roll move values along `dims` (all axes, flattened, for roll without dims)."""
    x = cx.axes(0)
    dims = cx.arg("dims")
    if dims is None or (not isinstance(dims, int) and len(dims) == 0):
        cx.freeze_all(x, f"{cx.op_name()} over all axes")
        return tuple(cx.new(s, "pinned", frozen=cx.op_name()) for s in cx.out_shape())
    for d in dim_list(dims, len(x)):
        cx.freeze(x[d], f"{cx.op_name()} moves positions along the axis")
    return x
