"""Apply permutations of groups to parameter tensors.

A permutation of a group is a gather array: new unit i takes old unit `perm[i]`. A group nested
in parent groups (units within heads) has one permutation per index of its parents: an array of
shape (*parent sizes, size), indexed by the parents' *old* indices, so that a head's units move
with the head and are shuffled inside it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from graphmerge.layout import Cat, Layout, Leaf, Prod, SpaceStore
from graphmerge.program import Program

__all__ = ["axis_gather_index", "permute_state_dict", "random_permutations"]


def random_permutations(
    program: Program, seed: int, names=None, avoid_identity: bool = False
) -> dict[int, np.ndarray]:
    """A random allowed permutation per free group (all of them, or those in `names`)."""
    rng = np.random.default_rng(seed)
    perms: dict[int, np.ndarray] = {}
    for g in program.groups:
        if g.frozen or g.size <= 1 or (names is not None and g.name not in names):
            continue
        gs = program.spaces[g.name]
        shape = tuple(program.store.space_size(p) for p in gs.parents) + (gs.size,)
        base = np.broadcast_to(np.arange(gs.size), shape).copy()
        perm = rng.permuted(base, axis=-1)
        if avoid_identity:
            flat = perm.reshape(-1, gs.size)
            for row in flat:
                if np.array_equal(row, np.arange(gs.size)):
                    row[:] = np.roll(row, 1)
        perms[gs.space] = perm
    return perms


def axis_gather_index(
    lay: Layout,
    perms: dict[int, np.ndarray],
    store: SpaceStore,
    parents: dict[int, tuple[int, ...]],
) -> np.ndarray:
    """Old position for every new position of an axis with layout `lay`."""
    total = store.size(lay)
    coords: dict[int, np.ndarray] = {}
    new = np.arange(total)
    return _resolve(lay, new, new, coords, perms, store, parents, total)


def _resolve(lay, new, rows, coords, perms, store, parents, total) -> np.ndarray:
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
                out[mask] = off + _resolve(
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
                    old_digits[i] = _resolve(
                        lay.parts[i], digits[i], rows, coords, perms, store, parents, total
                    )
                    pending.remove(i)
                    progressed = True
            if not progressed:
                raise RuntimeError("nested permutation whose parent is not on the same axis")
        return sum(d * st for d, st in zip(old_digits, strides))
    return new  # UNIT or empty


def permute_state_dict(
    program: Program, perms: dict[int, np.ndarray], state: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """A new state dict with every parameter axis gathered by the permutations."""
    store = program.store
    parents = {gs.space: gs.parents for gs in program.spaces.values()}
    out = dict(state)
    aliases = program.traced.aliases
    done: set[tuple[str, int]] = set()
    for (param, axis), lay in program.axis_layouts.items():
        if (param, axis) in done or not any(s in perms for s in store.leaves(lay)):
            continue
        done.update((name, axis) for name in [param, *aliases.get(param, [])])
        idx = axis_gather_index(lay, perms, store, parents)
        if np.array_equal(idx, np.arange(len(idx))):
            continue
        index = torch.as_tensor(idx, dtype=torch.long)
        for name in [param, *aliases.get(param, [])]:
            if name in out:
                out[name] = out[name].index_select(axis, index.to(out[name].device))
    return out
