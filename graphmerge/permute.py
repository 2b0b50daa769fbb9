"""Apply permutations of groups to parameter tensors.

A permutation of a group is a gather array: new unit i takes old unit `perm[i]`. A group nested
in parent groups (units within heads) has one permutation per index of its parents: an array of
shape (*parent sizes, size), indexed by the parents' *old* indices, so that a head's units move
with the head and are shuffled inside it.
"""

from __future__ import annotations

import numpy as np
import torch

from graphmerge.layout import Layout, SpaceStore
from graphmerge.program import Program
from graphmerge.units import resolve_layout

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
    return resolve_layout(lay, new, new, coords, perms, store, parents, total)


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
