"""Assignments as index maps, and how they act on tensor axes.

An `Assignment` says, for each model, which merged unit every unit of a group goes to:
`targets[i][u]` is the merged unit of model i's unit u (the unmerge matrix U_i of ZipIt and MuDSC has a
single 1 per row, at that column). A permutation and a zip are both such maps; no dense
(units x units) matrix is ever needed, and an axis that carries no solved group (vocabulary rows,
positions, the model's inputs and outputs) is never touched.

On a whole tensor axis (a layout over several spaces: heads x head_dim, q | k | v, channel x
pixel), `axis_targets` gives for every position the position its unit moves to, and
`apply_unmerge` / `apply_merge` apply W U_i (each consumer sums its cluster's input
columns) and M_iᵀ W (each merged unit is the mean of its cluster; M_i = U_i / (column sums over
all models, + 1e-5 for zips)) with `index_add`.

    >>> import numpy as np
    >>> a = Assignment.from_targets([np.array([0, 1]), np.array([1, 0])])
    >>> a.counts().tolist()
    [2, 2]
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from graphmerge.layout import Layout
from graphmerge.program import Program
from graphmerge.units import branch_ids, leaf_coords, unit_index

__all__ = [
    "Assignment",
    "AxisMaps",
    "apply_merge",
    "apply_unmerge",
    "axis_targets",
]

_versions = itertools.count()


@dataclass(frozen=True)
class Assignment:
    """targets[i]: int64 (units,) merged unit of each unit of model i; `zip`: M gets the +1e-5.

    `version` is unique per created assignment, so caches can key on it (an unchanged assignment
    keeps its object and version).
    """

    targets: tuple[np.ndarray, ...]
    n_merged: int
    score: float = 0.0
    zip: bool = False
    version: int = field(default_factory=lambda: next(_versions), compare=False)

    @classmethod
    def from_targets(
        cls, targets: Sequence[np.ndarray], score: float = 0.0, zip: bool = False, n_merged=None
    ) -> Assignment:
        arrays = tuple(np.asarray(t, dtype=np.int64) for t in targets)
        n = int(max(int(t.max()) for t in arrays) + 1) if n_merged is None else int(n_merged)
        return cls(arrays, n, float(score), zip)

    @classmethod
    def identity(cls, units: int, n_models: int) -> Assignment:
        return cls(tuple(np.arange(units) for _ in range(n_models)), units)

    def counts(self) -> np.ndarray:
        """Units mapped into each merged unit, over all models: (n_merged,)."""
        return sum(np.bincount(t, minlength=self.n_merged) for t in self.targets)

    def same_map(self, other: Assignment) -> bool:
        return self.zip == other.zip and all(
            np.array_equal(a, b) for a, b in zip(self.targets, other.targets, strict=True)
        )


@dataclass(frozen=True)
class _AxisIndex:
    """What an axis layout is made of, position by position (depends on the layout only)."""

    coords: dict[int, np.ndarray]
    keys: np.ndarray  # (size, 1 + leaves): branch id and every leaf's coordinate


def _axis_index(program: Program, lay: Layout) -> _AxisIndex:
    cache = program.axis_index
    if lay not in cache:
        coords = leaf_coords(lay, program.store)
        size = program.store.size(lay)
        columns = [branch_ids(lay, program.store)] + [coords[s] for s in sorted(coords)]
        keys = np.stack(columns, axis=1) if size else np.zeros((0, len(columns)), np.int64)
        cache[lay] = _AxisIndex(coords, keys)
    return cache[lay]


def axis_targets(
    program: Program,
    lay: Layout,
    assignments: dict[str, Assignment],
    model: int,
    skip: frozenset = frozenset(),
) -> np.ndarray | None:
    """For each position of an axis with normalized layout `lay`, the position its unit moves to
    under `model`'s assignments (-1: the unit has no place there); None when nothing moves.

    skip: spaces kept in place (a group's own units, while its weight vectors are read).
    A position moves as its grouped leaves say: a nested group's unit index carries its parents'
    coordinates, and every leaf the move does not name keeps its coordinate (as a product of
    per-leaf matrices would: a move that contradicts another leaf's map has no target).
    """
    by_space = program.space_names
    index = _axis_index(program, lay)
    coords = index.coords
    moving = [
        s
        for s in coords
        if s not in skip and by_space.get(s) is not None and by_space[s] in assignments
    ]
    if not moving:
        return None
    store = program.store
    new = {s: c.copy() for s, c in coords.items()}
    ok = np.ones(len(index.keys), dtype=bool)
    claimed: dict[int, np.ndarray] = {}
    for s in moving:
        gs = program.spaces[by_space[s]]
        idx = unit_index(coords, s, gs.parents, store)
        if idx is None:
            raise RuntimeError(f"group {by_space[s]} is nested in a space this axis lacks")
        has = idx >= 0
        moved = assignments[by_space[s]].targets[model][np.where(has, idx, 0)]
        sizes = [store.space_size(p) for p in gs.parents] + [store.space_size(s)]
        digits = np.unravel_index(moved, sizes)
        for leaf, digit in zip((*gs.parents, s), digits, strict=True):
            if leaf not in coords:
                continue
            value = np.where(has, digit, coords[leaf])
            if leaf in claimed:  # two maps place this leaf: they must agree
                ok &= (value == new[leaf]) | ~(has & claimed[leaf])
            elif leaf not in moving:  # a leaf no map moves keeps its coordinate
                ok &= (value == coords[leaf]) | ~has
            new[leaf] = np.where(has, value, new[leaf])
            claimed[leaf] = claimed.get(leaf, np.zeros_like(has)) | has
    keys = np.stack([index.keys[:, 0]] + [new[s] for s in sorted(coords)], axis=1)
    target = _find_rows(index.keys, keys)
    target[~ok] = -1
    if np.array_equal(target, np.arange(len(target))):
        return None
    return target


def _find_rows(table: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """For each row of `rows`, its index in `table` (rows of `table` are unique), -1 if absent.

    Rows are read as numbers in a mixed radix (one digit per column, spanning the table's
    range) and looked up in the table's sorted numbers; a table too wide for int64 numbers
    falls back to a row-wise `np.unique`."""
    if len(table) == 0 or len(rows) == 0:
        return np.full(len(rows), -1, dtype=np.int64)
    lo, hi = table.min(axis=0), table.max(axis=0)
    span = (hi - lo + 1).astype(np.int64)
    if float(np.prod(span.astype(np.float64))) >= 2.0**62:
        return _find_rows_unique(table, rows)
    radix = np.concatenate([np.cumprod(span[::-1])[::-1][1:], [1]]).astype(np.int64)
    inside = ((rows >= lo) & (rows <= hi)).all(axis=1)
    keys = (table - lo) @ radix
    wanted = (np.clip(rows, lo, hi) - lo) @ radix
    order = np.argsort(keys, kind="stable")
    ranked = keys[order]
    pos = np.minimum(np.searchsorted(ranked, wanted), len(ranked) - 1)
    return np.where(inside & (ranked[pos] == wanted), order[pos], -1).astype(np.int64)


def _find_rows_unique(table: np.ndarray, rows: np.ndarray) -> np.ndarray:
    both = np.concatenate([table, rows], axis=0)
    _, inverse = np.unique(both, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    where = np.full(int(inverse.max()) + 1 if len(inverse) else 0, -1, dtype=np.int64)
    where[inverse[: len(table)]] = np.arange(len(table))
    return where[inverse[len(table) :]]


class AxisMaps:
    """Axis maps of one set of assignments, cached per (axis key, model, skip).

    `unmerge(key, model)` is the position map of W U_i on parameter axis `key`;
    `merge(key, model)` is (targets, scale) of M_iᵀ W: each position is scaled by
    1 / (units mapped into its target over all models (+1e-5 for zips)) and summed into its
    target. None when nothing on the axis moves.
    """

    def __init__(self, program: Program, assignments: dict[str, Assignment], n_models: int):
        self.program, self.assignments, self.n_models = program, assignments, n_models
        self._cache: dict = {}

    def unmerge(self, key, model: int, skip: frozenset = frozenset()) -> np.ndarray | None:
        ck = ("u", key, model, skip)
        if ck not in self._cache:
            lay = self.program.axis_layouts[key]
            self._cache[ck] = axis_targets(self.program, lay, self.assignments, model, skip)
        return self._cache[ck]

    def merge(self, key, model: int) -> tuple[np.ndarray, np.ndarray] | None:
        ck = ("m", key)
        if ck not in self._cache:
            self._cache[ck] = self._merge_all(key)
        maps = self._cache[ck]
        return None if maps is None else maps[model]

    def _merge_all(self, key) -> list | None:
        targets = [self.unmerge(key, i) for i in range(self.n_models)]
        if all(t is None for t in targets):
            return None
        size = self.program.store.size(self.program.axis_layouts[key])
        targets = [np.arange(size) if t is None else t for t in targets]
        counts = sum(np.bincount(t[t >= 0], minlength=size) for t in targets).astype(np.float64)
        names = self.program.space_names
        leaves = self.program.store.leaves(self.program.axis_layouts[key])
        zipped = any(getattr(self.assignments.get(names.get(s)), "zip", False) for s in leaves)
        denom = counts + (1e-5 if zipped else 0.0)
        out = []
        for t in targets:
            scale = np.zeros(size)
            has = t >= 0
            scale[has] = 1.0 / denom[t[has]]
            out.append((t, scale))
        return out


def apply_unmerge(w: torch.Tensor, axis: int, targets: np.ndarray) -> torch.Tensor:
    """W U along `axis`: new position q sums the old positions p with targets[p] == q."""
    return _scatter(w, axis, targets, None)


def apply_merge(w: torch.Tensor, axis: int, targets: np.ndarray, scale: np.ndarray) -> torch.Tensor:
    """Mᵀ W along `axis`: position p, times scale[p], is summed into position targets[p]."""
    return _scatter(w, axis, targets, scale)


def _scatter(w: torch.Tensor, axis: int, targets: np.ndarray, scale) -> torch.Tensor:
    """index_add along `axis` itself (moving the axis to the front first copies a strided view
    and runs several times slower on a wide last axis, e.g. an embedding's hidden axis)."""
    has = targets >= 0
    src = w if has.all() else w.index_select(axis, torch.as_tensor(np.flatnonzero(has)))
    if scale is not None:
        shape = [1] * w.dim()
        shape[axis] = -1
        src = src * torch.as_tensor(scale[has], dtype=w.dtype).reshape(shape)
    out = torch.zeros(w.shape, dtype=w.dtype)
    return out.index_add_(axis, torch.as_tensor(targets[has]), src)
