"""Pass-through facts of the op table: where an axis of an op's first input lands in its output.

A reshape that carves a leading factor asks whether that axis is only ever indexed by constants
downstream (`RuleContext.block_dims`); the question follows the axis through every op whose
table entry has a flow. Each flow takes the user's arguments by schema name, the input and output
shapes (the output shape is None when the output is not one tensor) and the axis, and returns the
output axis, `INDEXED` when a constant index removes the axis there, or None when it is lost.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from graphmerge.rules.dims import dim_index, dim_list
from graphmerge.rules.registry import INDEXED
from graphmerge.rules.shapes import movedim_order

__all__ = [
    "indexed",
    "moved",
    "permuted",
    "reshaped",
    "reversed_axes",
    "same_axis",
    "swapped",
    "swapped_last",
]


def same_axis(args: Mapping, in_shape: tuple, out_shape: tuple | None, d: int) -> int | None:
    """Copies, casts, dropout: the axis keeps its position."""
    return d if out_shape is not None else None


def permuted(args: Mapping, in_shape: tuple, out_shape: tuple | None, d: int) -> int | None:
    """permute: output axis i is input axis dims[i]."""
    return dim_list(args["dims"], len(in_shape)).index(d)


def swapped(args: Mapping, in_shape: tuple, out_shape: tuple | None, d: int) -> int | None:
    """transpose / swapaxes / swapdims."""
    first = args["dim0"] if "dim0" in args else args["axis0"]
    second = args["dim1"] if "dim1" in args else args["axis1"]
    a, b = dim_index(first, len(in_shape)), dim_index(second, len(in_shape))
    return b if d == a else a if d == b else d


def swapped_last(args: Mapping, in_shape: tuple, out_shape: tuple | None, d: int) -> int | None:
    """t / mT / adjoint: the last two axes trade places."""
    rank = len(in_shape)
    if rank < 2:
        return d
    return {rank - 1: rank - 2, rank - 2: rank - 1}.get(d, d)


def reversed_axes(args: Mapping, in_shape: tuple, out_shape: tuple | None, d: int) -> int | None:
    """numpy_T: the axes in reverse order."""
    return len(in_shape) - 1 - d


def moved(args: Mapping, in_shape: tuple, out_shape: tuple | None, d: int) -> int | None:
    """movedim."""
    return movedim_order(args["source"], args["destination"], len(in_shape)).index(d)


def reshaped(args: Mapping, in_shape: tuple, out_shape: tuple | None, d: int) -> int | None:
    """Views, unit axes, expand: the axis survives if it keeps its size and the axes before it
    keep their product."""
    if out_shape is None:
        return None
    before = math.prod(in_shape[:d])
    acc = 1
    for i, s in enumerate(out_shape):
        if acc == before and s == in_shape[d]:
            return i
        acc *= s
    return None


def indexed(args: Mapping, in_shape: tuple, out_shape: tuple | None, d: int) -> str | None:
    """select / unbind: INDEXED when they index this axis; any other axis is not followed."""
    return INDEXED if dim_index(args["dim"], len(in_shape)) == d else None
