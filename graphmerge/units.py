"""Units of a group on a tensor axis: which position of the axis holds which unit.

A group's *units* are its space's indices, taken per index of its parent groups when it is
nested (unit = ravel(parent indices..., own index)), so a head_dim group nested in 4 heads of 8
has 32 units. An axis with layout `Prod(heads, head_dim)` then holds each unit exactly once; an
axis where the group is one factor of several (a flattened conv map, a uniform head_dim) holds
each unit `repeat` times.
"""

from __future__ import annotations

import numpy as np

from graphmerge.layout import Cat, Layout, Prod, SpaceStore
from graphmerge.permute import _resolve

__all__ = ["branch_ids", "group_units", "leaf_coords", "unit_index", "unit_positions"]


def leaf_coords(lay: Layout, store: SpaceStore) -> dict[int, np.ndarray]:
    """For every leaf space of a normalized layout, its index at each axis position (-1: absent)."""
    coords: dict[int, np.ndarray] = {}
    total = store.size(lay)
    new = np.arange(total)
    _resolve(lay, new, new, coords, {}, store, {}, total)
    return coords


def branch_ids(lay: Layout, store: SpaceStore) -> np.ndarray:
    """An id per axis position naming its concatenation block path: positions in different
    blocks never exchange units, even when the blocks carry the same space (GLU, q|k)."""
    if isinstance(lay, Cat):
        out, offset = [], 0
        for part in lay.parts:
            ids = branch_ids(part, store)
            out.append(ids + offset)
            offset += int(ids.max()) + 1 if len(ids) else 0
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
    if isinstance(lay, Prod) and lay.parts:
        ids = np.zeros(1, dtype=np.int64)
        for part in lay.parts:
            child = branch_ids(part, store)
            width = int(child.max()) + 1
            ids = (ids[:, None] * width + child[None, :]).reshape(-1)
        return ids
    return np.zeros(store.size(lay), dtype=np.int64)


def unit_index(
    coords: dict[int, np.ndarray], space: int, parents: tuple[int, ...], store: SpaceStore
) -> np.ndarray:
    """Unit of the group at each position (ravel of parent indices and own index), -1 if absent."""
    own = coords.get(space)
    if own is None:
        return None
    idx = own.copy()
    valid = own >= 0
    stride = store.space_size(space)
    for p in reversed(parents):
        pc = coords.get(p)
        if pc is None:
            return None
        idx = idx + np.where(pc >= 0, pc, 0) * stride
        valid &= pc >= 0
        stride *= store.space_size(p)
    return np.where(valid, idx, -1)


def unit_positions(idx: np.ndarray, n_units: int) -> np.ndarray:
    """Positions as an array (repeat, n_units): column u lists the positions holding unit u."""
    valid = np.flatnonzero(idx >= 0)
    order = valid[np.argsort(idx[valid], kind="stable")]
    if len(order) % n_units:
        raise ValueError("a group's units are not repeated evenly along the axis")
    return order.reshape(n_units, -1).T


def group_units(store: SpaceStore, space: int, parents: tuple[int, ...]) -> int:
    n = store.space_size(space)
    for p in parents:
        n *= store.space_size(p)
    return n
