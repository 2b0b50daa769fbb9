"""Public `merge`: fuse N models of one architecture into one, without training.

    merged = gm.merge([model_a, model_b], data, method="mudsc", matcher="zip", alpha=0.5)

`data` is an iterable of batches (a Tensor, a tuple of Tensors, or a dict of keyword Tensors per
batch), used for activation statistics and to reset BatchNorm statistics. The inputs are never
modified: BatchNorm resets of the base models happen on copies. The merge is one run of the
pass pipeline (`graphmerge.passes.PIPELINE`) over a `Program` holding the models, the data and
one validated `MergeOptions`.

Across processes: when torch.distributed has a default process group of several ranks (e.g.
under `torchrun`), every rank calls `merge` with the same models and options and its own shard of
the calibration data (one rank's may be empty); the statistics are summed over the ranks, the
groups solved on their owner ranks, and every rank returns the same merged model (see
`graphmerge.distributed`). Models or options that differ between ranks are refused (`RankError`).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from graphmerge.distributed import Team, current_team, tensor_digest
from graphmerge.errors import InputError
from graphmerge.options import MATCHER_NAMES, METHODS, MergeOptions
from graphmerge.passes import PIPELINE
from graphmerge.passes.partial import stop_points
from graphmerge.passes.reset_bn import reset_bn_stats
from graphmerge.program import Program, run_passes
from graphmerge.trace import check_batch

__all__ = [
    "MATCHER_NAMES",
    "METHODS",
    "MergeOptions",
    "check_models",
    "merge",
    "prepare",
    "reset_bn_stats",
    "stop_points",
]


def check_models(models) -> list[nn.Module]:
    """Same class, same state-dict keys and shapes, finite weights; else an InputError."""
    models = list(models)
    if len(models) < 2:
        raise InputError(f"merge needs at least 2 models, got {len(models)}")
    for i, m in enumerate(models):
        if not isinstance(m, nn.Module):
            raise InputError(f"model {i} is a {type(m).__name__}, not an nn.Module")
    ref = models[0].state_dict()
    for i, m in enumerate(models[1:], start=1):
        if type(m).__qualname__ != type(models[0]).__qualname__:
            raise InputError(
                f"model {i} is a {type(m).__name__}, model 0 a "
                f"{type(models[0]).__name__}: merge needs one architecture"
            )
        state = m.state_dict()
        for key in ref:
            if key not in state:
                raise InputError(
                    f"model {i} has no parameter {key!r} (model 0 has "
                    f"{tuple(ref[key].shape)}): the architectures differ"
                )
            if state[key].shape != ref[key].shape:
                raise InputError(
                    f"parameter {key!r} has shape {tuple(state[key].shape)} in "
                    f"model {i} but {tuple(ref[key].shape)} in model 0"
                )
        extra = [k for k in state if k not in ref]
        if extra:
            raise InputError(f"model {i} has parameter {extra[0]!r} that model 0 lacks")
    for i, m in enumerate(models):
        for key, t in m.state_dict().items():
            if t.is_floating_point() and not _all_finite(t):
                raise InputError(f"model {i} has NaN/inf values in {key!r}")
    return models


def _all_finite(t: torch.Tensor) -> bool:
    """Whether every entry is finite: a finite sum says so at the cost of one read (a NaN or
    an inf anywhere makes the sum NaN or inf); a sum that overflows is checked entry by entry."""
    with torch.no_grad():
        return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def _batches(data) -> list | object:
    if data is None:
        return None
    if isinstance(data, (torch.Tensor, dict)):
        raise InputError(
            "data must be an iterable of batches (e.g. a list or a DataLoader), "
            "not a single batch: wrap it as [batch]"
        )
    if iter(data) is data:  # a one-shot iterator: keep its batches for the several passes
        data = list(data)
    return data


def _needing_data(options: MergeOptions) -> str:
    if options.spec.needs_data and options.uses_activations:
        return f"method {options.method!r}"
    return f"refine={options.refine!r}" if options.refine is not None else "repair=True"


def _example(data, example_inputs, options: MergeOptions, name: str):
    """The inputs to trace with; checks the calibration batches' structure against it."""
    if data is None and (options.needs_data or example_inputs is None):
        raise InputError(
            f"{_needing_data(options)} needs calibration data: pass data=[batch, ...]"
            if options.needs_data
            else "pass example_inputs (or data) to trace the models"
        )
    example = example_inputs
    if data is not None:
        first = next(iter(data), None)
        if first is None:
            raise InputError("the calibration data is empty: pass at least one batch")
        example = first if example is None else example
        # a list is checked whole before any work; a loader batch by batch as it streams
        for k, batch in enumerate(data if isinstance(data, (list, tuple)) else [first], 1):
            check_batch(example, batch, k, name)
    return example


def _start_on_ranks(team: Team, models, data, example_inputs, opts: MergeOptions):
    """`check_models`, `_batches` and `_example` across processes: each rank checks its own
    models and shard (which may be empty), the models and options must hash the same on every
    rank, and the example traced is the first batch of the first rank with data."""
    models = team.agree("checking the models", lambda: check_models(models))
    digests = {f"model {i}": tensor_digest(m.state_dict()) for i, m in enumerate(models)}
    digests["the options"] = repr(dataclasses.replace(opts, progress=False))
    team.check_same(digests)
    data = team.agree("reading the calibration data", lambda: _batches(data))
    first = None if data is None else next(iter(data), None)
    has = team.gather(first is not None)
    if example_inputs is None and any(has):
        example_inputs = team.broadcast(first, has.index(True))
    name = type(models[0]).__name__

    def check():
        if first is None and example_inputs is not None:  # an empty shard
            return example_inputs
        return _example(data, example_inputs, opts, name)

    return models, data, team.agree("checking the calibration data", check)


def merge(
    models,
    data=None,
    method: str | None = None,
    *,
    options: MergeOptions | None = None,
    example_inputs=None,
    return_program: bool = False,
    **overrides,
):
    """Merge `models` (same architecture) into one new model of the first model's class.

    method: "mudsc" (matcher "zip" or "permute", alpha = weight-space share), "zipit",
        "activation_matching", "weight_matching" (Git Re-Basin), "average".
    data: iterable of calibration batches; required except for "weight_matching", "average"
        and "mudsc" with alpha=1.
    options: a `MergeOptions` (e.g. from a YAML config); keywords override its fields.
    keywords (see `MergeOptions`): matcher="zip", alpha=0.5, seed=0, iters=100,
        patience=5, reset_bn=True (recompute BatchNorm statistics of the bases, on copies, and
        of the merged model on `data`), zip_a / zip_b (the zip matcher's linkage and
        within-model budget factors; default MuDSC's a=0.5, b=1 for "mudsc", ZipIt's own
        a=0.3, b=0.125 for "zipit"), strict=False, progress=True,
        stop_at=None: a module name or a group name (see `stop_points`): merge only the layers
        up to and including it and keep each model's own tail. The result is then a torch.fx
        GraphModule returning the tuple of the models' outputs (combine="tuple") or their
        concatenation along the last axis (combine="concat").
        refine=None | "least_squares": after matching, refit each linear/conv layer's merged
        weights, in graph order, by ridge least squares so that, on `data`, it maps the merged
        model's own inputs to the matched average of the models' outputs (PLeaS, in closed
        form; `ridge`, default 1e-3, is relative to the mean input variance; one pass over
        `data` per layer). repair=False: scale and shift each merged hidden unit that feeds no
        BatchNorm to the average of its matched units' mean and std on `data` (REPAIR).
    Returns the merged module (and the `Program` when return_program=True).
    """
    program = prepare(
        models, data, method, options=options, example_inputs=example_inputs, **overrides
    )
    program = run_passes(program, PIPELINE)
    return (program.result, program) if return_program else program.result


def prepare(
    models,
    data=None,
    method: str | None = None,
    *,
    options: MergeOptions | None = None,
    example_inputs=None,
    caller: str = "merge",
    **overrides,
) -> Program:
    """The `Program` a merge runs its passes on (arguments as `merge`): the models checked, the
    calibration data checked and kept, one validated `MergeOptions`; no pass has run yet.
    `caller` names the public function in errors."""
    names = set(MergeOptions.field_types()) - {"method"}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise InputError(f"{caller}() got unknown option {unknown[0]!r}; options: {sorted(names)}")
    if method is not None:
        overrides["method"] = method
    opts = dataclasses.replace(options or MergeOptions(), **overrides)
    team = current_team()
    if team is None:
        models = check_models(models)
        data = _batches(data)
        example = _example(data, example_inputs, opts, type(models[0]).__name__)
    else:
        if opts.refines:
            raise InputError(
                "refine='least_squares' and repair=True read statistics of every layer that "
                "are not yet summed across processes: run this merge in one process, or "
                "without them"
            )
        models, data, example = _start_on_ranks(team, models, data, example_inputs, opts)
    return Program(
        model=models[0], example_inputs=example, options=opts, models=models, data=data, team=team
    )
