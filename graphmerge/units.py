"""Units of a group on a tensor axis: which position of the axis holds which unit.

A group's *units* are its space's indices, taken per index of its parent groups when it is
nested (unit = ravel(parent indices..., own index)), so a head_dim group nested in 4 heads of 8
has 32 units. An axis with layout `Prod(heads, head_dim)` then holds each unit exactly once; an
axis where the group is one factor of several (a flattened conv map, a uniform head_dim) holds
each unit `repeat` times.
"""

from __future__ import annotations

import math

import numpy as np

from graphmerge.layout import Cat, Layout, Leaf, Prod, SpaceStore

__all__ = [
    "branch_ids",
    "group_units",
    "leaf_coords",
    "resolve_layout",
    "unit_index",
    "unit_positions",
]


def leaf_coords(lay: Layout, store: SpaceStore) -> dict[int, np.ndarray]:
    """For every leaf space of a normalized layout, its index at each axis position (-1: absent)."""
    coords: dict[int, np.ndarray] = {}
    total = store.size(lay)
    new = np.arange(total)
    resolve_layout(lay, new, new, coords, {}, store, {}, total)
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


def resolve_layout(lay, new, rows, coords, perms, store, parents, total) -> np.ndarray:
    """Old position of each new position `new` of an axis with layout `lay` under `perms`.

    perms: space -> gather array (nested spaces indexed by their parents' old indices);
    coords (filled in): every leaf space's old index at each position of the whole axis
    (`rows` are the positions `new` stands for; `total` the axis size; -1 where absent).
    """
    if isinstance(lay, Leaf):
        s = lay.space
        perm = perms.get(s)
        if perm is None:
            old = new
        elif parents.get(s):
            idx = tuple(coords[p][rows] for p in parents[s])
            old = perm[idx + (new,)]
        else:
            old = perm[new]
        coords.setdefault(s, np.full(total, -1))[rows] = old
        return old
    if isinstance(lay, Cat):
        out = np.empty_like(new)
        off = 0
        for part in lay.parts:
            size = store.size(part)
            mask = (new >= off) & (new < off + size)
            if mask.any():
                out[mask] = off + resolve_layout(
                    part, new[mask] - off, rows[mask], coords, perms, store, parents, total
                )
            off += size
        return out
    if isinstance(lay, Prod):
        sizes = [store.size(p) for p in lay.parts]
        strides = [math.prod(sizes[i + 1 :]) for i in range(len(sizes))]
        digits = [(new // st) % sz for st, sz in zip(strides, sizes)]
        old_digits: list = [None] * len(sizes)
        pending = list(range(len(lay.parts)))
        while pending:
            progressed = False
            for i in list(pending):
                leaves = store.leaves(lay.parts[i])
                needs = {p for s in leaves for p in parents.get(s, ()) if s in perms}
                ready = all(
                    p in coords and (coords[p][rows] >= 0).all() for p in needs if p not in leaves
                )
                if ready:
                    old_digits[i] = resolve_layout(
                        lay.parts[i], digits[i], rows, coords, perms, store, parents, total
                    )
                    pending.remove(i)
                    progressed = True
            if not progressed:
                raise RuntimeError("nested permutation whose parent is not on the same axis")
        return sum(d * st for d, st in zip(old_digits, strides))
    return new  # UNIT or empty
