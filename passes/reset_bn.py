"""reset_bn: the weights each model is merged from, after a BatchNorm reset on copies.

Reads: `program.models`, `program.data`, `program.options` (`reset_bn`).
Writes: `program.states` (one state dict per model; the inputs are never modified).

MuDSC and ZipIt recompute the BatchNorm running statistics of the base models on the
calibration data before matching (REPAIR's reset: momentum None, one pass in train mode), so the
activation statistics come from the reset models; `build_module` resets the merged model too.
Across processes (`program.team`), each rank resets on its shard and the running statistics are
then combined into those of one pass over all the shards (`share_bn_stats`).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from graphmerge.errors import InputError
from graphmerge.program import Program
from graphmerge.trace import call_model, check_batch

__all__ = ["has_batch_norm", "reset_bn", "reset_bn_on_shards", "reset_bn_stats", "share_bn_stats"]


def has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def reset_bn_stats(model: nn.Module, data, example=None) -> bool:
    """Recompute BatchNorm running statistics with one pass over `data` (REPAIR's reset).

    Modifies `model` (call it on a copy). Each batch is checked against `example` (default: the
    first batch) before it runs; a batch that does not fit is an `InputError` naming it.
    Returns False when the model has no BatchNorm.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return False
    flags = [(m, m.training) for m in model.modules()]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    try:
        with torch.no_grad():
            for k, batch in enumerate(data, start=1):
                example = batch if example is None else example
                check_batch(example, batch, k, type(model).__name__)
                try:
                    call_model(model, batch)
                except Exception as exc:
                    raise InputError(
                        f"calibration batch {k} does not fit {type(model).__name__}: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
    finally:
        for bn, mom in zip(bns, momenta, strict=True):
            bn.momentum = mom
        for m, flag in flags:
            m.training = flag
    return True


def share_bn_stats(team, model: nn.Module) -> None:
    """Make the running statistics each rank's `reset_bn_stats` left in `model` those of one
    pass over every rank's shard: the per-batch averages, weighted by each rank's batch count,
    summed in float64 in rank order (the same bits on every rank). `team`: a
    `graphmerge.distributed.Team`."""
    bns = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None
    ]
    parts = []
    for bn in bns:
        n = float(bn.num_batches_tracked)
        parts += [n * _f64(bn.running_mean), n * _f64(bn.running_var), np.array([n])]
    if not parts:
        return
    total, start = team.sum_exact(np.concatenate(parts)), 0
    for bn in bns:
        c = bn.running_mean.numel()
        mean, var = total[start : start + c], total[start + c : start + 2 * c]
        n = total[start + 2 * c]
        start += 2 * c + 1
        if n > 0:
            bn.running_mean.copy_(torch.from_numpy(mean / n))
            bn.running_var.copy_(torch.from_numpy(var / n))
            bn.num_batches_tracked.fill_(int(n))


def _f64(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy()


def reset_bn_on_shards(program: Program, model: nn.Module) -> None:
    """`reset_bn_stats` of `model` on `program.data`; across processes on every rank's shard."""
    team = program.team

    def reset():
        reset_bn_stats(model, program.data, program.example_inputs)

    if team is None:
        return reset()
    team.agree("resetting BatchNorm statistics", reset)
    share_bn_stats(team, model)


def reset_bn(program: Program) -> Program:
    """Fill `program.states`: the models' weights, BatchNorm statistics reset when asked."""
    models = program.models or [program.model]
    if program.options.reset_bn and program.data is not None and has_batch_norm(models[0]):
        models = [copy.deepcopy(m) for m in models]
        for m in models:
            reset_bn_on_shards(program, m)
    program.states = [{k: v.detach() for k, v in m.state_dict().items()} for m in models]
    return program
