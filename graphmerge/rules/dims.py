"""Dimension arguments of ATen ops: negative dims, and one dim or a list of them."""

from __future__ import annotations

__all__ = ["dim_index", "dim_list"]


def dim_index(d: int, rank: int) -> int:
    """The axis that dim `d` names in a tensor of `rank` axes (`-1` is the last)."""
    return d + rank if d < 0 else d


def dim_list(dims, rank: int) -> list[int]:
    """The axes named by `dims` (an int or a sequence of ints), normalized, in the given order."""
    return [dim_index(d, rank) for d in ([dims] if isinstance(dims, int) else dims)]
