"""plan_merge: check a merge's plan and size its memory before any heavy work.

Reads: `program.options`, `program.groups`, `program.spaces`, the traced graph, the models.
Writes: `program.memory_plan` (a `MemoryPlan`: the estimate per stage, the budget, and the
waves of groups the statistics are collected in). Raises `InputError` for a stop point the model
does not have (a typo fails in seconds, not after the statistics and the solve) and
`ResourceError` when even one group at a time cannot fit the budget.

The estimate counts what a merge holds at its peak, above what the process already holds (the
models, the traced program): BatchNorm copies of the models, the activation moments of every
group ((N·units)² float64 each; a permutation keeps only the model-0-vs-i blocks), one batch's
captured activations, the solve's similarity matrices (float32 for a wide group), the merged
weights with the rewrite's slice temporaries and, for a refit or a repair, the largest layer's
input moments and one batch of its rows. When the moments of all groups do not fit, they are
collected in waves of groups, one pass over the data per wave.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from graphmerge.errors import ResourceError
from graphmerge.memory import (
    MARGIN,
    SLICE_ELEMENTS,
    MemoryPlan,
    available_memory,
    format_bytes,
    resident_bytes,
    slices,
)
from graphmerge.passes.weight_vectors import FLOAT32_FROM_UNITS
from graphmerge.program import Program
from graphmerge.units import group_units

__all__ = ["estimate_memory", "plan_merge", "plan_owners"]

_F64 = 8


def _state_bytes(model: torch.nn.Module) -> int:
    seen, total = set(), 0
    for t in model.state_dict(keep_vars=True).values():
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    return total


def _moment_bytes(units: int, n_models: int, blocks: str) -> int:
    if blocks == "all":
        return _F64 * (n_models * units) ** 2
    return _F64 * ((n_models - 1) * units * units + 4 * n_models * units)


def _correlation_bytes(units: int, n_models: int) -> int:
    """A group's activation correlation: (N·units)², float32 from FLOAT32_FROM_UNITS stacked
    units (whole matrices even for a permutation, which reads only the cross blocks)."""
    stacked = n_models * units
    return (4 if stacked >= FLOAT32_FROM_UNITS else _F64) * stacked * stacked


def _capture_bytes(program: Program) -> int:
    """One batch's captured activations, all models (float32)."""
    total = 0
    for g in program.free_groups():
        site = g.capture
        node = next((n for n in program.traced.graph.nodes if site and n.name == site.node), None)
        if node is None:
            continue
        value = node if site.arg < 0 else node.args[site.arg]
        val = getattr(value, "meta", {}).get("val")
        if isinstance(val, torch.Tensor):
            total += val.numel() * 4
    return total


def _largest_activation(program: Program) -> int:
    """The largest tensor a statistics forward computes: the graph is cut to the capture nodes
    (a language model's vocabulary-sized logits are never computed), so only their ancestors."""
    sites = {g.capture.node: g.capture.arg for g in program.free_groups() if g.capture}
    todo = []
    for node in program.traced.graph.nodes:
        if node.name in sites:  # the captured value: the node, or the argument it reads
            arg = sites[node.name]
            todo.append(node if arg < 0 else node.args[arg])
    todo = [n for n in todo if isinstance(n, torch.fx.Node)]
    seen: set = set()
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(node.all_input_nodes)
    sizes = [  # computed tensors: weights and inputs (placeholders) are counted elsewhere
        n.meta["val"].numel() * n.meta["val"].element_size()
        for n in seen
        if n.op != "placeholder" and isinstance(n.meta.get("val"), torch.Tensor)
    ]
    return max(sizes, default=0)


@dataclass(frozen=True)
class _Parts:
    """What a merge allocates, in bytes (see `estimate_memory`)."""

    bn_copies: int
    moments: int  # all groups' activation moments (float64)
    largest_moments: int  # the largest group's
    correlations: int  # all groups' activation correlations, as the solve holds them
    batch: int  # one batch's captured activations and forward intermediates
    working: int  # the solve's matrices for the largest group
    merged: int  # one model's weights


def _parts(program: Program, n_models: int) -> _Parts:
    opts = program.options
    model = program.model
    blocks = "cross" if opts.resolved_matcher == "permute" else "all"
    free = program.free_groups()
    sizes = [_moment_bytes(_group_units(program, g.name), n_models, blocks) for g in free]
    uses = opts.uses_activations
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    return _Parts(
        bn_copies=n_models * _state_bytes(model) if opts.reset_bn and has_bn else 0,
        moments=sum(sizes) if uses else 0,
        largest_moments=max(sizes, default=0) if uses else 0,
        correlations=sum(_correlation_bytes(_group_units(program, g.name), n_models) for g in free)
        if uses
        else 0,
        batch=(n_models * _capture_bytes(program) + 4 * _largest_activation(program))
        if uses
        else 0,
        working=max(
            (_solve_bytes(_group_units(program, g.name), n_models) for g in free), default=0
        ),
        merged=_state_bytes(model) + _rewrite_bytes(program),
    )


def _refine_bytes(program: Program, n_models: int) -> int:
    """refine_weights' peak for its largest layer: the moments of its input (d² + units·d
    float64) and one batch's unfolded input rows and the models' output rows (float32), on top
    of the merged weights and a forward's intermediates."""
    peak = 0
    for node in program.traced.graph.nodes:
        op = str(node.target)
        if node.op != "call_function" or not op.startswith(
            ("aten.linear", "aten.conv", "aten.addmm")
        ):
            continue
        weight, out = node.args[2 if "addmm" in op else 1].meta.get("val"), node.meta.get("val")
        if not isinstance(weight, torch.Tensor) or not isinstance(out, torch.Tensor):
            continue
        units = weight.shape[1] if "addmm" in op else weight.shape[0]
        d, samples = weight.numel() // max(units, 1), out.numel() // max(units, 1)
        moments = _F64 * (d * d + units * d + 4 * n_models * units)
        peak = max(peak, moments + 4 * samples * (2 * d + (n_models + 2) * units))
    return peak + 4 * _largest_activation(program)


def estimate_memory(
    program: Program, n_models: int = 2, waves: int = 1, spill: bool = False
) -> dict[str, int]:
    """Extra bytes per merge stage above what the process holds (see the module docstring).

    With `waves` > 1 the moments are collected a share at a time, so collecting holds about one
    wave's moments; with `spill` the similarity matrices wait on disk between uses, so the
    solve holds one group's at a time.
    """
    p = _parts(program, n_models)
    held = p.moments if waves == 1 else max(p.moments // waves, p.largest_moments)
    stages = {
        "reset_bn": p.bn_copies,
        "collect_features": p.bn_copies + held + p.batch,
        "solve_groups": p.bn_copies + (0 if spill else p.correlations) + p.working,
        "rewrite": p.bn_copies + p.merged,
        "build_module": p.bn_copies + p.merged,
    }
    if program.options.refines:
        stages["refine_weights"] = p.bn_copies + p.merged + _refine_bytes(program, n_models)
    return stages


def _solve_bytes(units: int, n_models: int) -> int:
    """One group's solve: S, the weight and activation correlations and the matcher's copies of
    S, float64; a wide group (FLOAT32_FROM_UNITS stacked units) keeps them float32 and zips in
    place (a permutation's LAP adds a float64 copy of a cross block)."""
    stacked = n_models * units
    if stacked >= FLOAT32_FROM_UNITS:
        return 4 * 4 * stacked * stacked
    return 5 * _F64 * stacked * stacked


def _rewrite_bytes(program: Program) -> int:
    """The rewrite's float64 temporaries (a model's slice, its mapped copy, the index_add
    output, the running sum and the new sum) for the largest slice it works on (see
    `rewrite`: a tensor whole when a free group moves every axis or it is small, else
    SLICE_ELEMENTS-sized slices of an axis no free group moves)."""
    moved: dict[str, set[int]] = {}
    for g in program.free_groups():
        for m in g.members:
            moved.setdefault(m.param, set()).add(m.axis)
    largest = 0
    for key, t in program.model.state_dict().items():
        piece = slices(t.shape, moved.get(key, set()), SLICE_ELEMENTS)[0]
        elements = t.numel() if piece is None else t.numel() // t.shape[piece[0]] * piece[2]
        largest = max(largest, elements)
    return 5 * _F64 * largest


def _group_units(program: Program, name: str) -> int:
    gs = program.spaces[name]
    return group_units(program.store, gs.space, gs.parents)


def _waves(program: Program, room: int, n_models: int) -> tuple[tuple[str, ...], ...]:
    """Groups in graph order, cut into runs whose moments fit `room` bytes."""
    blocks = "cross" if program.options.resolved_matcher == "permute" else "all"
    waves: list[list[str]] = [[]]
    used = 0
    for g in program.free_groups():
        size = _moment_bytes(_group_units(program, g.name), n_models, blocks)
        if size > room:
            raise ResourceError(
                f"the activation statistics of group {g.name} alone need {format_bytes(size)}, "
                f"more than the {format_bytes(max(room, 0))} left of the memory budget: raise "
                "memory_budget (--max-memory), use matcher='permute' (half of it), or "
                "method='weight_matching' (no statistics)"
            )
        if used + size > room and waves[-1]:
            waves.append([])
            used = 0
        waves[-1].append(g.name)
        used += size
    return tuple(tuple(w) for w in waves if w)


def plan_owners(program: Program, n_models: int) -> dict[str, int]:
    """Free group -> the rank that holds its summed statistics and solves it: solve units (a
    heads group and the groups nested in it together) balanced over the ranks by the bytes of
    their moments. Refuses ranks whose analyses found different groups."""
    from graphmerge.distributed import balance
    from graphmerge.passes.solve_groups import solve_units

    team = program.team
    groups = "|".join(f"{g.name}:{g.size}:{g.frozen}" for g in program.groups)
    team.check_same({"the permutation groups found": groups})
    blocks = "cross" if program.options.resolved_matcher == "permute" else "all"
    units = solve_units(program)
    sizes = {
        u: sum(_moment_bytes(_group_units(program, n), n_models, blocks) for n in u.names)
        for u in units
    }
    owners = {n: rank for u, rank in balance(sizes, team.size).items() for n in (u.root, *u.names)}
    for g in program.free_groups():  # groups no solve unit holds are collected, never solved
        owners.setdefault(g.name, 0)
    return owners


def plan_merge(program: Program) -> Program:
    """Validate `stop_at`, estimate the merge's memory and cut the statistics into waves."""
    opts = program.options
    if opts.stop_at is not None:
        from graphmerge.passes.partial import trunk_nodes

        trunk_nodes(program, opts.stop_at)  # raises InputError naming valid points
    n_models = max(len(program.models), 2)
    budget = opts.budget_bytes or available_memory()
    held = resident_bytes()
    if program.team is not None:  # one plan on every rank: the tightest budget, the largest hold
        budget, held = program.team.extreme(budget, False), program.team.extreme(held, True)
        program.owners = plan_owners(program, n_models)
    if held >= budget:
        raise ResourceError(
            f"the models and the traced program already take {format_bytes(held)}, more than "
            f"the memory budget of {format_bytes(budget)}: raise memory_budget (--max-memory)"
        )
    stages = estimate_memory(program, n_models)
    waves: tuple[tuple[str, ...], ...] = (tuple(g.name for g in program.free_groups()),)
    keep = None  # no limit: every similarity matrix stays in memory
    if held + max(stages.values(), default=0) > budget and opts.uses_activations:
        p = _parts(program, n_models)
        waves = _waves(program, budget - held - p.bn_copies - p.batch, n_models)
        stages = estimate_memory(program, n_models, len(waves), spill=True)
        # the spare room, shared by the similarity matrices kept in memory and the solve's
        # cache of weight correlations (solve_groups gives that cache what is left)
        spare = budget - held - p.bn_copies - p.working - budget // MARGIN
        keep = max(spare, 0) // 2
    plan = MemoryPlan(held, stages, budget, waves, keep)
    if plan.estimate_bytes > budget:
        stage = max(stages, key=stages.get)
        raise ResourceError(
            f"{stage} needs about {format_bytes(stages[stage])} on top of the "
            f"{format_bytes(held)} the process holds, over the memory budget of "
            f"{format_bytes(budget)}: raise memory_budget (--max-memory), merge fewer models, "
            "use matcher='permute', or method='weight_matching' / 'average'"
        )
    program.memory_plan = plan
    return program
