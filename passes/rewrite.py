"""rewrite: the merged state dict, W* = Σ_i M_iᵀ W_i U_i per grouped axis (MuDSC's Eq. 2).

Reads: `program.assignments`, `program.axis_layouts`, `program.groups` (member roles),
`program.states`.
Writes: `program.merged_state`.

Every tensor axis that carries a solved group is transformed per model: produced axes ("out":
rows, biases, norm affine, running statistics, cls tokens) by the merge map, so each merged unit
is the mean of its cluster; contracted axes ("in": input columns) by the unmerge map, so each
consumer sums its cluster's columns. Both are index maps applied with `index_add` (no dense
matrix); axes that carry no solved group are untouched, and a large tensor is done a slice of
such an axis at a time (an embedding's vocabulary never has a full float64 copy). Tensors in no
group are averaged; integer tensors (`num_batches_tracked`) are taken from the first model. A
tensor tied in every model (GPT-2's embedding and LM head) is computed once and stays tied.
"""

from __future__ import annotations

import torch

from graphmerge.assignment import AxisMaps, apply_merge, apply_unmerge
from graphmerge.memory import SLICE_ELEMENTS, slices
from graphmerge.program import Program

__all__ = ["rewrite"]


def rewrite(program: Program) -> Program:
    """Build `program.merged_state` from `program.states` and `program.assignments`."""
    states = program.states
    assignments = program.assignments
    roles = {(m.param, m.axis): m.role for g in program.groups for m in g.members}
    axes_of: dict[str, list[int]] = {}
    for param, axis in program.axis_layouts:
        axes_of.setdefault(param, []).append(axis)
    # a tied name the graph does not read is transformed like the name it shares storage with
    source = {a: o for a, others in program.traced.aliases.items() for o in others if o in axes_of}
    maps = AxisMaps(program, assignments, len(states))
    merged: dict[str, torch.Tensor] = {}
    done: dict[tuple, torch.Tensor] = {}  # tied tensors (the same storage in every model): once
    for key, ref in states[0].items():
        if not ref.is_floating_point():
            merged[key] = ref.clone()
            continue
        traced = key if key in axes_of else source.get(key, key)
        axes = axes_of.get(traced, []) if assignments else []
        tied = (traced, *((s[key].data_ptr(), s[key].shape, s[key].stride()) for s in states))
        if tied not in done:
            plan = _axis_plan(traced, axes, roles, maps, len(states))
            done[tied] = _merged_tensor([s[key] for s in states], plan)
        merged[key] = done[tied]
    program.merged_state = merged
    return program


def _axis_plan(key: str, axes: list[int], roles: dict, maps: AxisMaps, n: int) -> list:
    """(axis, role, per-model map) for each axis of parameter `key` that a solved group moves:
    "in" axes take the unmerge targets, "out" axes the merge (targets, scale · N)."""
    plan = []
    for axis in axes:
        role = roles.get((key, axis), "out")
        if role == "in":
            per_model = [maps.unmerge((key, axis), i) for i in range(n)]
        else:
            per_model = [maps.merge((key, axis), i) for i in range(n)]
        if any(m is not None for m in per_model):
            plan.append((axis, role, per_model))
    return plan


def _merged_tensor(tensors: list[torch.Tensor], plan: list) -> torch.Tensor:
    """The mean over models of each model's tensor mapped into the merged space, computed a
    slice at a time along the longest axis no group moves (a vocabulary, a kernel's taps) so
    that the float64 temporaries stay near SLICE_ELEMENTS whatever the tensor's size."""
    ref = tensors[0]
    pieces = slices(ref.shape, {axis for axis, _, _ in plan}, SLICE_ELEMENTS)
    if pieces == [None]:
        return _merged_slice(tensors, plan).to(ref.dtype)
    out = torch.empty(ref.shape, dtype=ref.dtype)
    for piece in pieces:
        part = [t.narrow(*piece) for t in tensors]
        out.narrow(*piece).copy_(_merged_slice(part, plan))
    return out


def _merged_slice(tensors: list[torch.Tensor], plan: list) -> torch.Tensor:
    """Σ_i M_iᵀ W_i U_i / N in float64 for one slice of a tensor (every moved axis whole)."""
    n = len(tensors)
    total = None
    for i, tensor in enumerate(tensors):
        w = tensor.detach().to(torch.float64)
        for axis, role, per_model in plan:
            if per_model[i] is None:
                continue
            if role == "in":
                w = apply_unmerge(w, axis, per_model[i])
            else:
                targets, scale = per_model[i]
                w = apply_merge(w, axis, targets, scale * n)
        total = w if total is None else total + w
    return total / n
