"""rewrite: the merged state dict, W* = Σ_i M_iᵀ W_i U_i per grouped axis (MuDSC's Eq. 2).

Reads: `program.assignments`, `program.axis_layouts`, `program.groups` (member roles),
`program.states`.
Writes: `program.merged_state`.

Every tensor axis that carries a solved group is transformed per model: produced axes ("out":
rows, biases, norm affine, running statistics, cls tokens) by the merge map, so each merged unit
is the mean of its cluster; contracted axes ("in": input columns) by the unmerge map, so each
consumer sums its cluster's columns. Both are index maps applied with `index_add` (no dense
matrix); axes that carry no solved group are untouched. Tensors in no group are averaged;
integer tensors (`num_batches_tracked`) are taken from the first model.
"""

from __future__ import annotations

import torch

from graphmerge.assignment import AxisMaps, apply_merge, apply_unmerge
from graphmerge.program import Program

__all__ = ["rewrite"]


def rewrite(program: Program) -> Program:
    """Build `program.merged_state` from `program.states` and `program.assignments`."""
    states = program.states
    n = len(states)
    assignments = program.assignments
    roles = {(m.param, m.axis): m.role for g in program.groups for m in g.members}
    axes_of: dict[str, list[int]] = {}
    for param, axis in program.axis_layouts:
        axes_of.setdefault(param, []).append(axis)
    # a tied name the graph does not read is transformed like the name it shares storage with
    source = {a: o for a, others in program.traced.aliases.items() for o in others if o in axes_of}
    maps = AxisMaps(program, assignments, n)
    merged = {}
    for key, ref in states[0].items():
        if not ref.is_floating_point():
            merged[key] = ref.clone()
            continue
        traced = key if key in axes_of else source.get(key, key)
        total = None
        for i, state in enumerate(states):
            w = state[key].detach().to(torch.float64)
            for axis in axes_of.get(traced, []) if assignments else []:
                layout_key = (traced, axis)
                if roles.get(layout_key, "out") == "in":
                    targets = maps.unmerge(layout_key, i)
                    if targets is not None:
                        w = apply_unmerge(w, axis, targets)
                else:
                    merge = maps.merge(layout_key, i)
                    if merge is not None:
                        w = apply_merge(w, axis, merge[0], merge[1] * n)
            total = w if total is None else total + w
        merged[key] = (total / n).to(ref.dtype)
    program.merged_state = merged
    return program
