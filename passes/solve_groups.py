"""solve_groups: per group, where every unit of every model goes (an `Assignment`).

Reads: `program.groups`, `program.spaces`, `program.axis_layouts`, `program.features` (when
activations were collected), `program.states`, `program.options`.
Writes: `program.assignments`: group name -> `Assignment` (an index map per model).

Methods: MuDSC's Algorithm 1 (Xu et al., CVPR 2024) (activation-initialised, then seeded random sweeps
over the groups with S = α·C_weight + (1-α)·C_act, revert to the best set on no improvement,
stop after `patience` non-improving sweeps), which with α=0 is activation matching / ZipIt and
with α=1 the weight-only forms; Git Re-Basin weight matching (raw inner products, coordinate
descent, stop after a sweep without progress); and plain averaging (no assignment).

A group nested in a heads group is solved with its siblings as one *family*: one two-level
matching pairs whole heads using all the family's similarity blocks, and units are matched only
within paired heads.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from graphmerge.assignment import Assignment
from graphmerge.memory import MARGIN
from graphmerge.passes.matchers import GROUPED_MATCHERS, MATCHERS, MULTI_MATCHERS, Match
from graphmerge.passes.weight_vectors import WeightVectors
from graphmerge.program import Program
from graphmerge.units import group_units

__all__ = ["SolveUnit", "mudsc", "solve_groups", "solve_units", "weight_matching"]

# A merge that aligns less than this share of the hidden units warns (it is mostly an average).
ALIGNED_SHARE_WARNING = 0.5


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


# -- matching -------------------------------------------------------------------------------------
def _identity(program: Program, name: str, n_models: int) -> Assignment:
    gs = program.spaces[name]
    return Assignment.identity(group_units(program.store, gs.space, gs.parents), n_models)


def _from_match(match: Match, zipped: bool) -> Assignment:
    return Assignment.from_targets(match.targets, match.score, zipped, match.n_merged)


def _keep_unchanged(current: dict, result: dict) -> dict:
    """The new assignments, reusing the current object where nothing changed (cache keys)."""
    out = {}
    for name, new in result.items():
        old = current.get(name)
        if old is not None and old.same_map(new):
            out[name] = Assignment(old.targets, old.n_merged, new.score, old.zip, old.version)
        else:
            out[name] = new
    return out


def _heads_assignment(child: Assignment, heads: int) -> Assignment:
    """The whole-head assignment implied by a grouped match of a nested group."""
    per = len(child.targets[0]) // heads
    targets = [t.reshape(heads, per)[:, 0] // per for t in child.targets]
    return Assignment.from_targets(targets, child.score, child.zip, heads)


def _match_unit(
    program: Program,
    unit: SolveUnit,
    sims: dict,
    matcher: str,
    n_models: int,
    options: dict,
    fresh: bool = False,
) -> dict[str, Assignment]:
    """Match one solve unit; `fresh`: the similarity matrices are temporaries the matcher may
    use as its working buffer."""
    zipped = matcher == "zip"
    if not unit.children:
        if fresh and zipped:
            options = {**options, "overwrite": True}
        match = MATCHERS[matcher](sims[unit.root], n_models, **options)
        return {unit.root: _from_match(match, zipped)}
    heads = program.group(unit.root).size
    blocks = [sims[c] for c in unit.children]
    if len(blocks) == 1:
        matches = [GROUPED_MATCHERS[matcher](blocks[0], n_models, heads, **options)]
    else:
        matches = MULTI_MATCHERS[matcher](blocks, n_models, heads, **options)
    out = {c: _from_match(m, zipped) for c, m in zip(unit.children, matches, strict=True)}
    root = _heads_assignment(out[unit.children[0]], heads)
    score = float(np.mean([m.score for m in matches]))
    out[unit.root] = Assignment(root.targets, root.n_merged, score, zipped)
    return out


def mudsc(program: Program) -> dict[str, Assignment]:
    """MuDSC Algorithm 1 over every solve unit, as `program.options` configure it."""
    opts = program.options
    alpha, matcher, options = opts.resolved_alpha, opts.resolved_matcher, opts.matcher_options
    n_models = len(program.states)
    units = solve_units(program)
    act = program.features  # group name -> activation correlation (maybe read from disk)
    plan = program.memory_plan
    tight = plan is not None and plan.similarity_bytes is not None
    kept = plan.similarity_bytes + plan.budget // MARGIN if tight else 0
    room = None if plan is None else max(plan.budget - plan.estimate_bytes - kept, 0)
    weights = WeightVectors(program, program.states, cache_bytes=room)
    blocks = "cross" if matcher == "permute" else "all"  # what the matcher reads
    assign = {n: _identity(program, n, n_models) for u in units for n in (u.root, *u.children)}
    seeded = [u for u in units if all(n in act for n in u.names) and alpha < 1]
    for result in _solve_each(  # initialise from activations (independent groups)
        program, seeded, lambda u: _match_unit(program, u, act, matcher, n_models, options)
    ):
        assign.update(result)
    for unit in (u for u in units if u not in seeded):  # no activations (or alpha=1): weights

        def start(unit=unit):
            sims = {n: weights.correlation(n, assign, blocks) for n in unit.names}
            return _match_unit(program, unit, sims, matcher, n_models, options)

        assign.update(_on_owner(program, unit, start))
    if alpha <= 0 or not units or opts.iters == 0:
        return assign
    gen = torch.Generator().manual_seed(opts.seed)
    best, best_score, stale = dict(assign), -np.inf, 0
    seen: dict[tuple, dict[str, Assignment]] = {}  # a visit's inputs -> its result
    bar = tqdm(desc="graphmerge: MuDSC sweeps", unit="sweep", disable=not opts.progress)
    with bar:
        for _ in range(opts.iters):
            scores = []
            for k in torch.randperm(len(units), generator=gen).tolist():
                unit = units[k]
                bar.set_postfix_str(f"group {unit.root}", refresh=False)
                # S depends only on the assignments of the groups the weight vectors read:
                # when they are the ones of an earlier visit, so is the (deterministic) match
                key = (k, *(_version(assign, d) for n in unit.names for d in weights.depends_on(n)))
                result = seen.get(key)
                if result is None:

                    def visit(unit=unit, assign=assign):
                        sims = {
                            n: _mixed(weights.correlation(n, assign, blocks), act, n, alpha)
                            for n in unit.names
                        }
                        fresh = all(n in act for n in unit.names)
                        return _match_unit(program, unit, sims, matcher, n_models, options, fresh)

                    result = seen[key] = _on_owner(program, unit, visit)
                assign.update(_keep_unchanged(assign, result))
                scores.append(result[unit.root].score)
            score = float(np.mean(scores))
            if score <= best_score:
                stale += 1
                assign = dict(best)
            else:
                best, best_score, stale = dict(assign), score, 0
            bar.update(1)
            bar.set_postfix_str(
                f"best {best_score:.4f}, no gain {stale}/{opts.patience}", refresh=True
            )
            if stale >= opts.patience:
                break
    return best


# -- across processes (graphmerge.distributed) -------------------------------------------------
# The activation initialisations are independent (each reads its own group's statistics), so
# each owner rank matches its groups in parallel. The sweeps (MuDSC's and weight matching's) are
# Gauss-Seidel: a visit's S reads the current assignments of the groups its weights touch, so
# visits run one at a time, each on its group's owner (which holds its statistics), and every
# rank applies the result: all ranks end with the same assignments.
def _solve_each(program: Program, units: list[SolveUnit], fn) -> list:
    """[fn(unit) for unit in units]; across processes each owner runs its own units."""
    team = program.team
    if team is None:
        return [fn(u) for u in units]
    rank = team.rank
    mine = team.agree(
        "solving groups",
        lambda: {k: fn(u) for k, u in enumerate(units) if program.owners[u.root] == rank},
    )
    every = {k: r for part in team.gather(mine) for k, r in part.items()}
    return [_fresh(every[k]) for k in range(len(units))]


def _on_owner(program: Program, unit: SolveUnit, fn):
    """fn(): here in one process; across processes on the unit's owner, shared with all."""
    team = program.team
    if team is None:
        return fn()
    return _fresh(team.on_owner(program.owners[unit.root], f"solving group {unit.root}", fn))


def _fresh(result: dict[str, Assignment] | None) -> dict[str, Assignment] | None:
    """Assignments as new objects of this process (versions key caches per process)."""
    if result is None:
        return None
    return {n: Assignment(a.targets, a.n_merged, a.score, a.zip) for n, a in result.items()}


def _version(assign: dict[str, Assignment], name: str) -> int | None:
    a = assign.get(name)
    return None if a is None else a.version


def _mixed(cw: np.ndarray, act, name: str, alpha: float, band: int = 512) -> np.ndarray:
    """S = α·C_weight + (1-α)·C_act (C_w alone when there is no C_act), computed in float64;
    float32 when both are (a wide group: half the memory, made a band of rows at a time)."""
    if name not in act:
        return cw
    ca = act[name]
    if cw.dtype != np.float32 or ca.dtype != np.float32:
        out = np.multiply(cw, alpha, dtype=np.float64)
        out += (1 - alpha) * ca
        return out
    out = np.empty(cw.shape, dtype=np.float32)
    for lo in range(0, cw.shape[0], band):
        rows = np.multiply(cw[lo : lo + band], alpha, dtype=np.float64)
        rows += (1 - alpha) * ca[lo : lo + band]
        out[lo : lo + band] = rows
    return out


def weight_matching(program: Program) -> dict[str, Assignment]:
    """Git Re-Basin weight matching: raw inner products, model 0 fixed."""
    opts = program.options
    n_models = len(program.states)
    units = solve_units(program)
    assign = {n: _identity(program, n, n_models) for u in units for n in (u.root, *u.children)}
    weights = WeightVectors(program, program.states, raw=True)
    gen = torch.Generator().manual_seed(opts.seed)
    bar = tqdm(desc="graphmerge: weight matching", unit="sweep", disable=not opts.progress)
    with bar:
        for _ in range(opts.iters):
            progress_made = False
            for k in torch.randperm(len(units), generator=gen).tolist():

                def visit(unit=units[k], assign=assign):  # the better assignment, or None
                    sims = {n: weights.gram(n, assign, "cross").raw_blocks() for n in unit.names}
                    old = sum(_objective(sims[n], assign[n]) for n in unit.names)
                    result = _match_unit(program, unit, sims, "permute", n_models, {})
                    new = sum(_objective(sims[n], result[n]) for n in unit.names)
                    return result if new > old + 1e-12 else None

                result = _on_owner(program, units[k], visit)
                if result is not None:
                    assign.update(result)
                    progress_made = True
            bar.update(1)
            if not progress_made:
                break
    return assign


def _objective(s: np.ndarray, a: Assignment) -> float:
    """Σ over model i > 0 of the cross-block similarity of each unit and the model-0 unit it
    is merged with (assignments here are permutations)."""
    n = len(a.targets[0])
    source0 = np.empty(a.n_merged, dtype=np.int64)
    source0[a.targets[0]] = np.arange(n)
    total = 0.0
    for i in range(1, len(a.targets)):
        partner = source0[a.targets[i]]  # the model-0 unit each model-i unit is merged with
        total += float(s[partner, i * n + np.arange(n)].sum())
    return total


SOLVERS = {"mudsc": mudsc, "weight_matching": weight_matching, "average": lambda program: {}}


def solve_groups(program: Program) -> Program:
    """Fill `program.assignments` for `program.options.method` (see module docstring)."""
    program.assignments = SOLVERS[program.options.solver](program)
    plan, store = program.memory_plan, program.features
    if plan is not None and plan.similarity_bytes is not None and hasattr(store, "spill"):
        store.spill()  # a tight budget: the rewrite needs the room more than the statistics
    if program.options.solver != "average":
        _warn_if_mostly_average(program)
    return program


def _warn_if_mostly_average(program: Program) -> None:
    """Warn when less than half of the hidden units could be aligned, naming why."""
    aligned, total = program.aligned_units()
    if not total or aligned >= ALIGNED_SHARE_WARNING * total:
        return
    unsolved = [g for g in program.groups if g.hidden and g.name not in program.assignments]
    reasons = Counter(g.reason or "not solved" for g in unsolved)
    ops = ", ".join(f"{op} at {where}" for (op, where) in list(program.unruled)[:5])
    warnings.warn(
        f"only {aligned} of {total} hidden units ({aligned / total:.0%}) of "
        f"{type(program.model).__name__} could be aligned; the rest are averaged in place. "
        f"Why: {'; '.join(r for r, _ in reasons.most_common(3))}"
        + (f". Ops without rules: {ops}" if ops else ""),
        stacklevel=2,
    )
