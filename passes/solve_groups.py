"""solve_groups: per group and per model, the unmerge matrix U_i (units -> merged units).

Reads: `program.groups`, `program.spaces`, `program.axis_layouts`, `program.features` (when
activations were collected), the models' weights.
Writes: `program.assignments`: group name -> `Assignment` (one 0/1 matrix per model).

Methods (MUDSC_SPEC.md): MuDSC's Algorithm 1 (activation-initialised, then seeded random sweeps
over the groups with S = α·C_weight + (1-α)·C_act, revert to the best set on no improvement,
stop after `patience` non-improving sweeps), which with α=0 is activation matching / ZipIt and
with α=1 the weight-only forms; Git Re-Basin weight matching (raw inner products, coordinate
descent, stop after a sweep without progress); and plain averaging (identity).

A group nested in a heads group is solved with its siblings as one *family*: one two-level
matching pairs whole heads using all the family's similarity blocks, and units are matched only
within paired heads. Merge matrices are derived from U (M = U / column sums), so permutations and
zips go through the same rewrite.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse
import torch
from tqdm.auto import tqdm

from graphmerge.passes.matchers import GROUPED_MATCHERS, MATCHERS, MULTI_MATCHERS, Match
from graphmerge.passes.matchers.similarity import weight_correlation
from graphmerge.program import Program
from graphmerge.units import branch_ids, group_units, leaf_coords, unit_index, unit_positions

__all__ = [
    "Assignment",
    "SolveUnit",
    "axis_merge",
    "axis_unmerge",
    "layout_unmerge",
    "solve_groups",
]


@dataclass(frozen=True)
class Assignment:
    """U_i for every model: (units, merged units) 0/1 matrices; `zip` says M needs the +1e-5."""

    unmerge: tuple
    score: float = 0.0
    zip: bool = False


@dataclass(frozen=True)
class SolveUnit:
    """What one matching call decides: a plain group, or a heads group with nested groups."""

    root: str
    children: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return self.children if self.children else (self.root,)


def solve_units(program: Program) -> list[SolveUnit]:
    """Plain groups, and families of a free heads group with the free groups nested in it."""
    free = {g.name: g for g in program.free_groups()}
    units, nested = [], set()
    for name, g in free.items():
        kids = tuple(
            c for c in g.structure.nested if c in free and free[c].structure.within == (name,)
        )
        if kids:
            units.append(SolveUnit(name, kids))
            nested.update(kids)
    for name, g in free.items():
        if name in nested or any(u.root == name for u in units):
            continue
        if g.structure.within:  # nested in several or in frozen groups: kept in place
            continue
        units.append(SolveUnit(name, ()))
    return units


# -- axis matrices ------------------------------------------------------------------------------
def axis_unmerge(
    program: Program,
    key: tuple[str, int],
    assignments: dict,
    model: int,
    cache: dict | None = None,
    skip: frozenset = frozenset(),
) -> np.ndarray | None:
    """U for a whole tensor axis (size, size) for `model`, or None when nothing on it moves.

    skip: spaces kept in place (a group's own units, while its weight vectors are read).
    """
    if cache is not None and (key, model, skip) in cache:
        return cache[(key, model, skip)]
    out = layout_unmerge(program, program.axis_layouts[key], assignments, model, skip)
    if cache is not None:
        cache[(key, model, skip)] = out
    return out


def layout_unmerge(
    program: Program, lay, assignments: dict, model: int, skip: frozenset = frozenset()
) -> np.ndarray | None:
    """U (size, size) for any normalized axis layout (a parameter's or an activation's)."""
    store = program.store
    coords = leaf_coords(lay, store)
    by_space = {gs.space: (name, gs) for name, gs in program.spaces.items()}
    size = store.size(lay)
    branch = branch_ids(lay, store)
    out = (branch[:, None] == branch[None, :]).astype(float)
    for leaf, coord in coords.items():
        name, gs = by_space.get(leaf, (None, None))
        if name is not None and name in assignments and leaf not in skip:
            idx = unit_index(coords, leaf, gs.parents, store)
            u = assignments[name].unmerge[model]
            ok = idx >= 0
            safe = np.where(ok, idx, 0)
            part = u[safe[:, None], safe[None, :]]
            part = np.where(
                ok[:, None] & ok[None, :], part, (~ok[:, None] & ~ok[None, :]).astype(float)
            )
        else:
            part = (coord[:, None] == coord[None, :]).astype(float)
        out = out * part
    return None if np.array_equal(out, np.eye(size)) else out


def axis_merge(program: Program, key, assignments: dict, n_models: int, cache=None) -> list | None:
    """M for a whole axis, per model: U / (column sums over all models (+1e-5 for zips))."""
    us = [axis_unmerge(program, key, assignments, i, cache) for i in range(n_models)]
    if all(u is None for u in us):
        return None
    size = program.store.size(program.axis_layouts[key])
    us = [np.eye(size) if u is None else u for u in us]
    colsum = sum(u.sum(0) for u in us)
    leaves = program.store.leaves(program.axis_layouts[key])
    by_space = {gs.space: name for name, gs in program.spaces.items()}
    eps = 1e-5 if any(assignments.get(by_space.get(s), Assignment(())).zip for s in leaves) else 0.0
    return [u / (colsum + eps) for u in us]


def _apply(w: torch.Tensor, axis: int, a: np.ndarray) -> torch.Tensor:
    """New axis q = Σ_p a[p, q] w[p] along `axis`.

    Axis matrices map every old unit to one merged unit (one nonzero per row), so this is an
    index_add, not a dense product.
    """
    moved = w.movedim(axis, 0)
    flat = moved.reshape(moved.shape[0], -1).to(torch.float64)
    nonzero = a != 0
    if (nonzero.sum(1) == 1).all():
        target = nonzero.argmax(1)
        rows = np.arange(len(target))
        sparse = scipy.sparse.csr_matrix(
            (a[rows, target], (target, rows)), shape=(a.shape[1], a.shape[0])
        )
        out = torch.from_numpy(np.asarray(sparse @ flat.numpy()))
    else:
        out = torch.as_tensor(a.T, dtype=torch.float64) @ flat
    return out.reshape((a.shape[1],) + tuple(moved.shape[1:])).movedim(0, axis)


# -- similarities -------------------------------------------------------------------------------
class _Weights:
    """Weight vectors of units (spec §1.3), other axes mapped by the current matrices."""

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
        self._correlations: dict = {}  # name -> (key, matrix, the assignments it was made from)

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

    def vectors(self, name: str, assignments: dict, model: int) -> np.ndarray:
        program = self.program
        g = program.group(name)
        gs = program.spaces[name]
        n_units = group_units(program.store, gs.space, gs.parents)
        parts, cache = [], {}
        roles = self.roles
        for m in g.members:
            if m.param not in self.params or (m.param, m.axis) not in program.axis_layouts:
                continue  # running statistics are left out of the weight similarity
            w = self.states[model][m.param]
            for a in self.axes_of.get(m.param, []):
                if a == m.axis:
                    continue
                key = (m.param, a)
                if self.raw or roles.get(key) == "out":
                    mat = axis_unmerge(program, key, assignments, model, cache)
                else:
                    mats = axis_merge(program, key, assignments, len(self.states), cache)
                    mat = None if mats is None else mats[model]
                if mat is not None:
                    w = _apply(w, a, mat)
            own = frozenset((gs.space, *gs.parents))  # other groups on this axis move first
            mat = axis_unmerge(program, (m.param, m.axis), assignments, model, cache, own)
            if mat is not None:
                w = _apply(w, m.axis, mat)
            pos = self.positions((m.param, m.axis), name)  # (repeat, units)
            sel = w.to(torch.float64).movedim(m.axis, 0)[torch.as_tensor(pos.T.reshape(-1))]
            parts.append(sel.reshape(n_units, -1).numpy())
        return np.concatenate(parts, axis=1) if parts else np.zeros((n_units, 1))

    def depends_on(self, name: str) -> tuple[str, ...]:
        """Groups whose assignments enter `name`'s weight vectors (on any axis of its members)."""
        if name not in self._deps:
            by_space = {gs.space: n for n, gs in self.program.spaces.items()}
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

    def correlation(self, name: str, assignments: dict) -> np.ndarray:
        """Pearson correlation of the stacked weight vectors; recomputed only when one of the
        assignments it depends on changed (an unchanged one keeps its unmerge tuple object)."""
        used = [getattr(assignments.get(d), "unmerge", None) for d in self.depends_on(name)]
        key = tuple(id(u) for u in used)
        cached = self._correlations.get(name)
        if cached is not None and cached[0] == key:
            return cached[1]
        vecs = [self.vectors(name, assignments, i) for i in range(len(self.states))]
        corr = weight_correlation(np.concatenate(vecs, axis=0))
        self._correlations[name] = (key, corr, used)  # `used` keeps the ids from being reused
        return corr


# -- matching -------------------------------------------------------------------------------------
def _identity(program: Program, name: str, n_models: int) -> Assignment:
    gs = program.spaces[name]
    n = group_units(program.store, gs.space, gs.parents)
    return Assignment(tuple(np.eye(n) for _ in range(n_models)))


def _keep_unchanged(current: dict, result: dict) -> dict:
    """The new assignments, reusing the current object where nothing changed (cache keys)."""
    out = {}
    for name, new in result.items():
        old = current.get(name)
        same = (
            old is not None
            and old.zip == new.zip
            and all(np.array_equal(a, b) for a, b in zip(old.unmerge, new.unmerge))
        )
        out[name] = Assignment(old.unmerge, new.score, old.zip) if same else new
    return out


def _heads_assignment(child: Match, heads: int) -> tuple:
    """The whole-head assignment implied by a grouped match of a nested group."""
    out = []
    for u in child.unmerge:
        per = u.shape[0] // heads
        coarse = u.reshape(heads, per, heads, per).sum(axis=(1, 3))
        out.append((coarse > 0).astype(float))
    return tuple(out)


def _match_unit(
    program: Program, unit: SolveUnit, sims: dict, matcher: str, n_models: int, options: dict
) -> dict[str, Assignment]:
    zipped = matcher == "zip"
    if not unit.children:
        match = MATCHERS[matcher](sims[unit.root], n_models, **options)
        return {unit.root: Assignment(tuple(match.unmerge), match.score, zipped)}
    heads = program.group(unit.root).size
    blocks = [sims[c] for c in unit.children]
    if len(blocks) == 1:
        matches = [GROUPED_MATCHERS[matcher](blocks[0], n_models, heads, **options)]
    else:
        matches = MULTI_MATCHERS[matcher](blocks, n_models, heads, **options)
    out = {c: Assignment(tuple(m.unmerge), m.score, zipped) for c, m in zip(unit.children, matches)}
    out[unit.root] = Assignment(
        _heads_assignment(matches[0], heads), float(np.mean([m.score for m in matches])), zipped
    )
    return out


def _activation_sims(program: Program) -> dict[str, np.ndarray]:
    feats = getattr(program, "features", None) or {}
    return {name: m.correlation() for name, m in feats.items()}


def mudsc(
    program: Program,
    states: list[dict],
    alpha: float,
    matcher: str,
    seed: int = 0,
    iters: int = 100,
    patience: int = 5,
    options: dict | None = None,
    progress: bool = True,
) -> dict[str, Assignment]:
    """MuDSC Algorithm 1 (spec §1.4) over every solve unit."""
    options = options or {}
    n_models = len(states)
    units = solve_units(program)
    act = _activation_sims(program)
    weights = _Weights(program, states)
    assign: dict[str, Assignment] = {
        n: _identity(program, n, n_models) for u in units for n in (u.root, *u.children)
    }
    blind = []
    for unit in units:  # initialise from activations
        if all(n in act for n in unit.names) and alpha < 1:
            assign.update(_match_unit(program, unit, act, matcher, n_models, options))
        else:
            blind.append(unit)
    for unit in blind:  # no activation statistics (or alpha=1): start from the weights
        sims = {n: weights.correlation(n, assign) for n in unit.names}
        assign.update(_match_unit(program, unit, sims, matcher, n_models, options))
    if alpha <= 0 or not units:
        return assign
    gen = torch.Generator().manual_seed(seed)
    best, best_score, stale = dict(assign), -np.inf, 0
    bar = tqdm(range(iters), desc="graphmerge: MuDSC sweeps", disable=not progress, leave=False)
    for _ in bar:
        scores = []
        for k in torch.randperm(len(units), generator=gen).tolist():
            unit = units[k]
            sims = {}
            for n in unit.names:
                cw = weights.correlation(n, assign)
                sims[n] = alpha * cw + (1 - alpha) * act[n] if n in act else cw
            result = _match_unit(program, unit, sims, matcher, n_models, options)
            assign.update(_keep_unchanged(assign, result))
            scores.append(result[unit.root].score)
        score = float(np.mean(scores))
        if score <= best_score:
            stale += 1
            assign = dict(best)
            if stale >= patience:
                break
        else:
            best, best_score, stale = dict(assign), score, 0
    return best


def weight_matching(
    program: Program, states: list[dict], seed: int = 0, iters: int = 100, progress: bool = True
) -> dict[str, Assignment]:
    """Git Re-Basin weight matching (spec §3): raw inner products, model 0 fixed."""
    n_models = len(states)
    units = solve_units(program)
    assign = {n: _identity(program, n, n_models) for u in units for n in (u.root, *u.children)}
    weights = _Weights(program, states, raw=True)
    gen = torch.Generator().manual_seed(seed)
    for _ in tqdm(
        range(iters), desc="graphmerge: weight matching", disable=not progress, leave=False
    ):
        progress_made = False
        for k in torch.randperm(len(units), generator=gen).tolist():
            unit = units[k]
            sims = {}
            for n in unit.names:
                v = [weights.vectors(n, assign, i) for i in range(n_models)]
                sims[n] = _inner_product_blocks(v)
            old = sum(_objective(sims[n], assign[n]) for n in unit.names)
            result = _match_unit(program, unit, sims, "permute", n_models, {})
            new = sum(_objective(sims[n], result[n]) for n in unit.names)
            if new > old + 1e-12:
                assign.update(result)
                progress_made = True
        if not progress_made:
            break
    return assign


def _inner_product_blocks(vectors: list[np.ndarray]) -> np.ndarray:
    """A (N·n)² matrix whose model-0-vs-i blocks are raw inner products (spec §3)."""
    n, n_models = vectors[0].shape[0], len(vectors)
    s = np.zeros((n * n_models, n * n_models))
    for i in range(1, n_models):
        block = vectors[0] @ vectors[i].T
        s[:n, i * n : (i + 1) * n] = block
        s[i * n : (i + 1) * n, :n] = block.T
    return s


def _objective(s: np.ndarray, a: Assignment) -> float:
    n = a.unmerge[0].shape[0]
    total = 0.0
    for i in range(1, len(a.unmerge)):
        p = a.unmerge[i] @ a.unmerge[0].T  # model-i unit -> model-0 unit
        total += float((s[:n, i * n : (i + 1) * n] * p.T).sum())
    return total


def solve_groups(
    program: Program,
    states: list[dict],
    method: str,
    matcher: str = "zip",
    alpha: float = 0.5,
    seed: int = 0,
    iters: int = 100,
    patience: int = 5,
    options: dict | None = None,
    progress: bool = True,
) -> Program:
    """Fill `program.assignments` for `method` (see module docstring)."""
    if method == "average":
        program.assignments = {}
    elif method == "weight_matching":
        program.assignments = weight_matching(program, states, seed, iters, progress)
    else:
        program.assignments = mudsc(
            program, states, alpha, matcher, seed, iters, patience, options, progress
        )
    return program
