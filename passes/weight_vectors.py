"""Weight vectors of units (MuDSC's weight space) and the similarities Algorithm 1 builds from them.

The weight vector of unit j of a group, in model i, is the concatenation of every tensor slice
that belongs to unit j across the group's members (producer rows, consumer columns, norm affine
entries; running statistics left out), with every *other* axis of each tensor first mapped into
the current merged space of the group that owns it (the v(P_{l-1}, P_l, W_l, W_{l+1}) step).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.linalg import blas

from graphmerge.assignment import Assignment, AxisMaps, apply_merge, apply_unmerge
from graphmerge.memory import SLICE_ELEMENTS, slices
from graphmerge.passes.matchers.similarity import mirror_upper
from graphmerge.program import Program
from graphmerge.units import group_units, leaf_coords, unit_index, unit_positions

__all__ = ["FLOAT32_FROM_UNITS", "FLOAT32_FROM_WORK", "Gram", "WeightVectors"]

# Groups of at least this many stacked units (N·n) take their Gram products in float32
# (accumulated in float64): twice as fast, correlations within about 1e-6 of float64.
FLOAT32_FROM_UNITS = 2048
# ... and so do groups whose Gram costs at least this many multiply-adds ((N·n)² x the length
# of the weight vectors: a transformer's residual stream, read by every layer), about a
# second of float64 BLAS; small models keep float64 everywhere.
FLOAT32_FROM_WORK = 2**35
MIN_STD_PRODUCT = 1e-7  # as `similarity.weight_correlation`: a constant vector correlates 0


class WeightVectors:
    """Weight vectors of every group's units, and their cached Pearson correlation.

    raw: map every other axis with the unmerge map (Git Re-Basin's permuted weights) instead
    of merging produced axes (MuDSC's code merges inputs and unmerges outputs).
    cache_bytes: how much memory the cached correlations may take (None: no limit).
    """

    def __init__(self, program: Program, states: list[dict], raw: bool = False, cache_bytes=None):
        self.program, self.states, self.raw = program, states, raw
        self.cache_bytes = cache_bytes
        kinds = program.traced.placeholders.values()
        self.params = {t for k, t in kinds if k == "param"}
        self.axes_of: dict[str, list[int]] = {}
        for param, axis in program.axis_layouts:
            self.axes_of.setdefault(param, []).append(axis)
        self.roles = {(m.param, m.axis): m.role for g in program.groups for m in g.members}
        self._positions: dict = {}
        self._deps: dict[tuple, tuple[str, ...]] = {}
        self._static: dict[str, Gram | list[np.ndarray]] = {}
        self._correlations: dict[str, tuple[tuple, np.ndarray]] = {}

    def positions(self, key, name: str) -> np.ndarray:
        """(repeat, units) positions of group `name`'s units on axis `key`."""
        if (key, name) not in self._positions:
            program = self.program
            gs = program.spaces[name]
            lay = program.axis_layouts[key]
            idx = unit_index(leaf_coords(lay, program.store), gs.space, gs.parents, program.store)
            self._positions[(key, name)] = unit_positions(
                idx, group_units(program.store, gs.space, gs.parents)
            )
        return self._positions[(key, name)]

    def vectors(self, name: str, assignments: dict[str, Assignment], model: int) -> np.ndarray:
        """(units, length) float64 weight vectors of group `name` in `model` (concatenated)."""
        maps = AxisMaps(self.program, assignments, len(self.states))
        parts = [self.member_vectors(name, m, maps, model) for m in self.members(name)]
        n_units = self.units(name)
        return np.concatenate(parts, axis=1) if parts else np.zeros((n_units, 1))

    def units(self, name: str) -> int:
        gs = self.program.spaces[name]
        return group_units(self.program.store, gs.space, gs.parents)

    def members(self, name: str) -> list:
        """The group's members that enter its weight vectors (parameters, not statistics)."""
        layouts = self.program.axis_layouts
        return [
            m
            for m in self.program.group(name).members
            if m.param in self.params and (m.param, m.axis) in layouts
        ]

    def member_vectors(
        self, name: str, member, maps: AxisMaps, model: int, piece=None, dtype=torch.float64
    ) -> np.ndarray:
        """(units, length) `dtype`: `member`'s slice of every unit, other axes mapped; `piece`
        (axis, start, length): only that slice of another axis (a member no map changes)."""
        gs = self.program.spaces[name]
        w = self.states[model][member.param]
        if piece is not None:
            w = w.narrow(*piece)
        w = w.to(dtype)
        for a in self.axes_of.get(member.param, []):
            if a != member.axis:
                w = self._map_other_axis(w, (member.param, a), maps, model)
        own = frozenset((gs.space, *gs.parents))  # other groups on the group's axis move first
        targets = maps.unmerge((member.param, member.axis), model, own)
        if targets is not None:
            w = apply_unmerge(w, member.axis, targets)
        pos = self.positions((member.param, member.axis), name)  # (repeat, units)
        sel = w.movedim(member.axis, 0)[torch.as_tensor(pos.T.reshape(-1))]
        return sel.reshape(self.units(name), -1).numpy()

    def _map_other_axis(self, w: torch.Tensor, key, maps: AxisMaps, model: int) -> torch.Tensor:
        if self.raw or self.roles.get(key) == "out":
            targets = maps.unmerge(key, model)
            return w if targets is None else apply_unmerge(w, key[1], targets)
        merged = maps.merge(key, model)
        return w if merged is None else apply_merge(w, key[1], *merged)

    def member_deps(self, name: str, member) -> tuple[str, ...]:
        """Groups whose assignments change `member`'s slice of `name`'s units."""
        key = (name, member.param, member.axis)
        if key not in self._deps:
            program, by_space = self.program, self.program.space_names
            gs = program.spaces[name]
            own = {gs.space, *gs.parents}
            deps: set[str] = set()
            for a in self.axes_of.get(member.param, []):
                leaves = program.store.leaves(program.axis_layouts[(member.param, a)])
                deps.update(
                    by_space[s]
                    for s in leaves
                    if s in by_space and (a != member.axis or s not in own)
                )
            deps.discard(name)
            self._deps[key] = tuple(sorted(deps))
        return self._deps[key]

    def depends_on(self, name: str) -> tuple[str, ...]:
        """Groups whose assignments enter `name`'s weight vectors (on any axis of its members)."""
        return tuple(sorted({d for m in self.members(name) for d in self.member_deps(name, m)}))

    def gram(self, name: str, assignments: dict[str, Assignment], blocks: str = "all") -> Gram:
        """The Gram matrix of the stacked weight vectors of all models, streamed member by
        member (no concatenated vectors); members that no assignment can change are read once
        and kept, as their Gram matrix or, when shorter, as their vectors (`blocks`: "all", or
        "cross" for the model-0-vs-i blocks and the diagonal only, what a permutation reads)."""
        static = self._static_part(name)
        total = Gram.zeros(len(self.states), self.units(name), blocks, self.float32(name))
        if isinstance(static, list):
            total.add(static)
        maps = AxisMaps(self.program, assignments, len(self.states))
        for m in self.members(name):
            if self.member_deps(name, m):
                self._add_member(total, name, m, maps)
        if isinstance(static, Gram):
            total.absorb(static)
        return total

    def _static_part(self, name: str) -> Gram | list[np.ndarray]:
        """The members no assignment changes: stacked vectors, or their Gram when that is
        smaller (a long embedding table against a few hundred units). A large member enters
        the Gram a slice at a time (SLICE_ELEMENTS per model), never as whole float64 copies."""
        if name not in self._static:
            static = [m for m in self.members(name) if not self.member_deps(name, m)]
            maps = AxisMaps(self.program, {}, 1)
            models = range(len(self.states))
            length = sum(self._length(name, m) for m in static)
            if length < len(self.states) * self.units(name):
                parts = [[self.member_vectors(name, m, maps, i) for i in models] for m in static]
                self._static[name] = [
                    np.concatenate([p[i] for p in parts], axis=1)
                    if parts
                    else np.zeros((self.units(name), 0))
                    for i in models
                ]
            else:
                gram = Gram.zeros(len(self.states), self.units(name), "all", self.float32(name))
                for m in static:
                    shape = self.states[0][m.param].shape
                    for piece in slices(shape, {m.axis}, SLICE_ELEMENTS):
                        gram.add(
                            [
                                self.member_vectors(name, m, maps, i, piece, gram.dtype)
                                for i in models
                            ]
                        )
                self._static[name] = gram
        return self._static[name]

    def _length(self, name: str, member) -> int:
        """The length of `member`'s slice of each unit of group `name`."""
        shape = self.states[0][member.param].shape
        repeat = self.positions((member.param, member.axis), name).shape[0]
        return repeat * (shape.numel() // shape[member.axis])

    def float32(self, name: str) -> bool:
        """Whether group `name`'s Gram products run in float32 (see FLOAT32_FROM_WORK)."""
        stacked = len(self.states) * self.units(name)
        if stacked >= FLOAT32_FROM_UNITS:
            return True
        shapes = [self.states[0][m.param].shape for m in self.members(name)]
        length = sum(shape.numel() // shape[m.axis] for shape, m in zip(shapes, self.members(name)))
        return stacked * stacked * length >= FLOAT32_FROM_WORK

    def _add_member(self, gram: Gram, name: str, member, maps: AxisMaps) -> None:
        models = range(len(self.states))
        vectors = [self.member_vectors(name, member, maps, i, None, gram.dtype) for i in models]
        gram.add(vectors)

    def correlation(
        self, name: str, assignments: dict[str, Assignment], blocks: str = "all"
    ) -> np.ndarray:
        """Pearson correlation (N·units)² of the weight vectors of all models; recomputed only
        when an assignment it depends on changed (keyed on the assignments' versions)."""
        key = (blocks,) + tuple(
            getattr(assignments.get(d), "version", None) for d in self.depends_on(name)
        )
        cached = self._correlations.get(name)
        if cached is not None and cached[0] == key:
            return cached[1]
        corr = self.gram(name, assignments, blocks).correlation()
        self._remember(name, key, corr)
        return corr

    def _remember(self, name: str, key: tuple, corr: np.ndarray) -> None:
        """Cache `corr`, dropping the least recently made ones beyond `cache_bytes`."""
        self._correlations.pop(name, None)
        if self.cache_bytes is not None and corr.nbytes > self.cache_bytes:
            return
        self._correlations[name] = (key, corr)
        if self.cache_bytes is not None:
            while sum(c.nbytes for _, c in self._correlations.values()) > self.cache_bytes:
                self._correlations.pop(next(iter(self._correlations)))


class Gram:
    """Streamed Gram matrix G = V Vᵀ of N models' stacked unit vectors V (N·n, L), with the
    row sums and the length, so Pearson correlations (each vector centred over its own
    elements, as MuDSC's weight similarity does) follow without the vectors.

    blocks "cross" keeps only what a permutation matcher reads: the blocks of model 0 against
    each model i and the diagonal. Large groups (FLOAT32_FROM_UNITS, FLOAT32_FROM_WORK) take
    their products in float32 (accumulated in float64) and give float32 correlations: within
    about 1e-6 of float64, at half the time and memory. The whole matrix of a wide group
    (FLOAT32_FROM_UNITS stacked units, "all" blocks) also accumulates in float32, one triangle
    in place (SYRK), mirrored when read: its few members add little rounding.
    """

    def __init__(self, n_models: int, units: int, blocks: str, g, diag, sums, length, large):
        self.n_models, self.units, self.blocks = n_models, units, blocks
        self.g, self.diag, self.sums, self.length = g, diag, sums, length
        self.large = large  # float32 products and correlations
        self.mirrored = True  # a float32 g holds only its upper triangle until mirrored

    @property
    def dtype(self) -> torch.dtype:
        """The precision of the products, which the unit vectors may as well be read in."""
        return torch.float32 if self.large else torch.float64

    @classmethod
    def zeros(cls, n_models: int, units: int, blocks: str, large: bool | None = None) -> Gram:
        """An empty Gram; `large` defaults to N·n >= FLOAT32_FROM_UNITS."""
        size = n_models * units
        shape = (size, size) if blocks == "all" else (n_models - 1, units, units)
        large = size >= FLOAT32_FROM_UNITS if large is None else large
        # the whole matrix of a wide group accumulates in float32: half the memory
        compact = blocks == "all" and large and size >= FLOAT32_FROM_UNITS
        g = np.zeros(shape, dtype=np.float32 if compact else np.float64)
        return cls(n_models, units, blocks, g, np.zeros(size), np.zeros(size), 0, large)

    def add(self, vectors: list[np.ndarray]) -> None:
        """Add one member's slices, (units, L) per model."""
        v = np.concatenate(vectors, axis=0)
        if v.shape[1] == 0:
            return
        if v.dtype == np.float64:
            self.sums += v.sum(axis=1)
            self.diag += np.einsum("ij,ij->i", v, v)
        else:  # float32 vectors (a large group's), float64 sums
            self.sums += v.sum(axis=1, dtype=np.float64)
            self.diag += np.einsum("ij,ij->i", v, v, dtype=np.float64)
        self.length += v.shape[1]
        v = v.astype(np.float32 if self.large else np.float64, copy=False)
        if self.g.dtype == np.float32:  # one triangle, in place: no product-sized temporary
            blas.ssyrk(1.0, v.T, beta=1.0, c=self.g.T, trans=1, lower=1, overwrite_c=1)
            self.mirrored = False
            return
        if self.blocks == "all":
            self.g += v @ v.T
            return
        n = self.units
        for i in range(1, self.n_models):
            self.g[i - 1] += v[:n] @ v[i * n : (i + 1) * n].T

    def absorb(self, other: Gram) -> None:
        """Add another Gram of the same units ("all" blocks) into this one."""
        self.sums += other.sums
        self.diag += other.diag
        self.length += other.length
        if self.blocks == "all":
            self.g += other.g
            self.mirrored = self.mirrored and other.mirrored
            return
        n = self.units
        for i in range(1, self.n_models):
            self.g[i - 1] += other.g[:n, i * n : (i + 1) * n]

    def _full(self) -> np.ndarray:
        """g with both triangles filled ("all" blocks)."""
        if not self.mirrored:
            mirror_upper(self.g)
            self.mirrored = True
        return self.g

    def raw_blocks(self) -> np.ndarray:
        """The (N·n, N·n) matrix of raw inner products (cross blocks only for "cross")."""
        if self.blocks == "all":
            out = self._full().astype(np.float64)
            np.fill_diagonal(out, self.diag)
            return out
        n, size = self.units, self.n_models * self.units
        out = np.zeros((size, size))
        for i in range(1, self.n_models):
            out[:n, i * n : (i + 1) * n] = self.g[i - 1]
            out[i * n : (i + 1) * n, :n] = self.g[i - 1].T
        return out

    def correlation(self) -> np.ndarray:
        """Pearson correlation (N·n, N·n), σ_iσ_j clamped at 1e-7 (a constant vector
        correlates 0); for "cross" the within-model blocks are left 0. Consumes `g` (computed
        in place, a band of rows at a time)."""
        length = max(self.length, 1)
        mean = self.sums / length
        var = np.clip(self.diag / length - mean * mean, 0.0, None)
        std = np.sqrt(var)
        dtype = np.float32 if self.large else np.float64
        if self.blocks == "all":
            out = self._full()
            _normalize_rows(out, mean, std, length, 0)
            np.fill_diagonal(out, np.where(var >= MIN_STD_PRODUCT, 1.0, var / MIN_STD_PRODUCT))
            self.g = None
            return out.astype(dtype, copy=False)
        n, size = self.units, self.n_models * self.units
        out = np.zeros((size, size), dtype=dtype)
        for i in range(1, self.n_models):
            block = self.g[i - 1]
            _normalize_rows(block, mean[:n], std[:n], length, i * n, mean, std)
            out[:n, i * n : (i + 1) * n] = block
            out[i * n : (i + 1) * n, :n] = block.T
        self.g = None
        return out


def _normalize_rows(g, mean, std, length, col0, col_mean=None, col_std=None, band=512):
    """In place, a band of rows at a time: g -> (g / L - μ_i μ_j) / max(σ_i σ_j, 1e-7), NaN -> 0
    (in float64 whatever g's dtype).

    Rows are the units of `mean`/`std`; columns are units col0.. of `col_mean`/`col_std`
    (default: the same as the rows)."""
    col_mean = mean if col_mean is None else col_mean[col0 : col0 + g.shape[1]]
    col_std = std if col_std is None else col_std[col0 : col0 + g.shape[1]]
    for lo in range(0, g.shape[0], band):
        rows = g[lo : lo + band]
        work = rows if rows.dtype == np.float64 else rows.astype(np.float64)
        work /= length
        work -= np.outer(mean[lo : lo + band], col_mean)
        work /= np.maximum(np.outer(std[lo : lo + band], col_std), MIN_STD_PRODUCT)
        if not np.isfinite(work).all():
            np.nan_to_num(work, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        if work is not rows:
            rows[...] = work
