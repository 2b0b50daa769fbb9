"""Weight vectors of units (MUDSC_SPEC §1.3) and the similarities Algorithm 1 builds from them.

The weight vector of unit j of a group, in model i, is the concatenation of every tensor slice
that belongs to unit j across the group's members (producer rows, consumer columns, norm affine
entries; running statistics left out), with every *other* axis of each tensor first mapped into
the current merged space of the group that owns it (the v(P_{l-1}, P_l, W_l, W_{l+1}) step).
"""

from __future__ import annotations

import numpy as np
import torch

from graphmerge.assignment import Assignment, AxisMaps, apply_merge, apply_unmerge
from graphmerge.passes.matchers.similarity import weight_correlation
from graphmerge.program import Program
from graphmerge.units import group_units, leaf_coords, unit_index, unit_positions

__all__ = ["WeightVectors"]


class WeightVectors:
    """Weight vectors of every group's units, and their cached Pearson correlation.

    raw: map every other axis with the unmerge map (Git Re-Basin's permuted weights) instead
    of merging produced axes (MuDSC's code merges inputs and unmerges outputs).
    """

    def __init__(self, program: Program, states: list[dict], raw: bool = False):
        self.program, self.states, self.raw = program, states, raw
        kinds = program.traced.placeholders.values()
        self.params = {t for k, t in kinds if k == "param"}
        self.axes_of: dict[str, list[int]] = {}
        for param, axis in program.axis_layouts:
            self.axes_of.setdefault(param, []).append(axis)
        self.roles = {(m.param, m.axis): m.role for g in program.groups for m in g.members}
        self._positions: dict = {}
        self._deps: dict[str, tuple[str, ...]] = {}
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
        """(units, length) float64 weight vectors of group `name` in `model`."""
        program = self.program
        gs = program.spaces[name]
        n_units = group_units(program.store, gs.space, gs.parents)
        maps = AxisMaps(program, assignments, len(self.states))
        own = frozenset((gs.space, *gs.parents))  # other groups on the group's axis move first
        parts = []
        for m in program.group(name).members:
            if m.param not in self.params or (m.param, m.axis) not in program.axis_layouts:
                continue  # running statistics are left out of the weight similarity
            w = self.states[model][m.param].to(torch.float64)
            for a in self.axes_of.get(m.param, []):
                if a != m.axis:
                    w = self._map_other_axis(w, (m.param, a), maps, model)
            targets = maps.unmerge((m.param, m.axis), model, own)
            if targets is not None:
                w = apply_unmerge(w, m.axis, targets)
            pos = self.positions((m.param, m.axis), name)  # (repeat, units)
            sel = w.movedim(m.axis, 0)[torch.as_tensor(pos.T.reshape(-1))]
            parts.append(sel.reshape(n_units, -1).numpy())
        return np.concatenate(parts, axis=1) if parts else np.zeros((n_units, 1))

    def _map_other_axis(self, w: torch.Tensor, key, maps: AxisMaps, model: int) -> torch.Tensor:
        if self.raw or self.roles.get(key) == "out":
            targets = maps.unmerge(key, model)
            return w if targets is None else apply_unmerge(w, key[1], targets)
        merged = maps.merge(key, model)
        return w if merged is None else apply_merge(w, key[1], *merged)

    def depends_on(self, name: str) -> tuple[str, ...]:
        """Groups whose assignments enter `name`'s weight vectors (on any axis of its members)."""
        if name not in self._deps:
            by_space = self.program.space_names
            deps: set[str] = set()
            for m in self.program.group(name).members:
                for a in self.axes_of.get(m.param, []):
                    lay = self.program.axis_layouts[(m.param, a)]
                    deps.update(
                        by_space[s] for s in self.program.store.leaves(lay) if s in by_space
                    )
            deps.discard(name)
            self._deps[name] = tuple(sorted(deps))
        return self._deps[name]

    def correlation(self, name: str, assignments: dict[str, Assignment]) -> np.ndarray:
        """Pearson correlation of the stacked weight vectors of all models; recomputed only when
        an assignment it depends on changed (keyed on the assignments' versions)."""
        key = tuple(getattr(assignments.get(d), "version", None) for d in self.depends_on(name))
        cached = self._correlations.get(name)
        if cached is not None and cached[0] == key:
            return cached[1]
        vecs = [self.vectors(name, assignments, i) for i in range(len(self.states))]
        corr = weight_correlation(np.concatenate(vecs, axis=0))
        self._correlations[name] = (key, corr)
        return corr
