"""build_module: the merged model the user gets back.

Reads: `program.merged_state`, `program.models`, `program.data`, `program.options`
(`reset_bn`, `stop_at`, `combine`). Writes: `program.result`.

A full merge is a new instance of the first model's class with the merged weights, its
BatchNorm statistics recomputed on the calibration data (as MuDSC and ZipIt do); a partial merge
(`stop_at`) is the GraphModule `build_partial` makes: the merged trunk, then each model's own
tail on its original weights. Across processes, every rank builds the same model.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from graphmerge.distributed import tensor_digest
from graphmerge.passes.partial import build_partial
from graphmerge.passes.reset_bn import reset_bn_on_shards
from graphmerge.program import Program

__all__ = ["build_module"]


def _with_state(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """A deep copy of `model` whose parameters and buffers are the tensors of `state` (no copy
    of the model's own weights is made first; tied tensors stay tied)."""
    memo: dict[int, object] = {}
    named = [
        *model.named_parameters(remove_duplicate=False),
        *model.named_buffers(remove_duplicate=False),
    ]
    for name, tensor in named:
        if id(tensor) in memo or name not in state:
            continue
        value = state[name].to(tensor.dtype)
        if isinstance(tensor, nn.Parameter):
            value = nn.Parameter(value, requires_grad=tensor.requires_grad)
        memo[id(tensor)] = value
    return copy.deepcopy(model, memo)


def _same_on_every_rank(team, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` when every rank rewrote the same bits (the same assignments and weights), else
    rank 0's (machines whose arithmetic differs in the last bit)."""
    if len(set(team.gather(tensor_digest(state)))) == 1:
        return state
    return team.broadcast(state if team.rank == 0 else None, 0)


def build_module(program: Program) -> Program:
    """Fill `program.result` (see module docstring)."""
    opts = program.options
    models = program.models or [program.model]
    if program.team is not None:
        program.merged_state = _same_on_every_rank(program.team, program.merged_state)
    merged = _with_state(models[0], program.merged_state)
    if opts.reset_bn and program.data is not None:
        reset_bn_on_shards(program, merged)
    if opts.stop_at is None:
        program.result = merged
        return program
    originals = [{k: v.detach() for k, v in m.state_dict().items()} for m in models]
    program.result = build_partial(
        program, merged.state_dict(), originals, opts.stop_at, opts.combine
    )
    return program
