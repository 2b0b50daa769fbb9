"""Public `merge`: fuse N models of one architecture into one, without training.

    merged = gm.merge([model_a, model_b], data, method="mudsc", matcher="zip", alpha=0.5)

`data` is an iterable of batches (a Tensor, a tuple of Tensors, or a dict of keyword Tensors per
batch), used for activation statistics and to reset BatchNorm statistics. The inputs are never
modified: BatchNorm resets of the base models happen on copies.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
from torch import nn

from graphmerge.api import compile_program
from graphmerge.errors import InputError
from graphmerge.passes.collect_features import collect_features
from graphmerge.passes.partial import build_partial, stop_points
from graphmerge.passes.rewrite import rewrite
from graphmerge.passes.solve_groups import solve_groups
from graphmerge.trace import call_model

__all__ = ["MATCHER_NAMES", "METHODS", "check_models", "merge", "reset_bn_stats", "stop_points"]


@dataclass(frozen=True)
class MethodSpec:
    """How a method configures the solver."""

    solver: str  # "mudsc" | "weight_matching" | "average"
    alpha: float | None = None  # None: the caller's alpha
    matcher: str | None = None  # None: the caller's matcher
    needs_data: bool = True
    zip_a: float = 0.5  # ZipIt's linkage factor (MuDSC's setting by default)
    zip_b: float = 1.0  # within-model merge budget factor


METHODS: dict[str, MethodSpec] = {
    "mudsc": MethodSpec("mudsc"),
    # ZipIt with its own defaults (matching_functions.py: a=0.3, b=0.125); MuDSC's activation-only
    # ablation with MuDSC's a=0.5, b=1 is method="mudsc", alpha=0.
    "zipit": MethodSpec("mudsc", alpha=0.0, matcher="zip", zip_a=0.3, zip_b=0.125),
    "activation_matching": MethodSpec("mudsc", alpha=0.0, matcher="permute"),
    "weight_matching": MethodSpec("weight_matching", needs_data=False),
    "average": MethodSpec("average", needs_data=False),
}
MATCHER_NAMES = ("zip", "permute")


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
            if t.is_floating_point() and not torch.isfinite(t).all():
                raise InputError(f"model {i} has NaN/inf values in {key!r}")
    return models


def reset_bn_stats(model: nn.Module, data) -> bool:
    """Recompute BatchNorm running statistics with one pass over `data` (REPAIR's reset).

    Modifies `model` (call it on a copy). Returns False when the model has no BatchNorm.
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
    with torch.no_grad():
        for batch in data:
            call_model(model, batch)
    for bn, mom in zip(bns, momenta):
        bn.momentum = mom
    for m, flag in flags:
        m.training = flag
    return True


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


def merge(
    models,
    data=None,
    method: str = "mudsc",
    *,
    matcher: str = "zip",
    alpha: float = 0.5,
    seed: int = 0,
    iters: int = 100,
    patience: int = 5,
    reset_bn: bool = True,
    zip_a: float | None = None,
    zip_b: float | None = None,
    example_inputs=None,
    progress: bool = True,
    strict: bool = False,
    stop_at: str | None = None,
    combine: str = "tuple",
    return_program: bool = False,
):
    """Merge `models` (same architecture) into one new model of the first model's class.

    method: "mudsc" (matcher "zip" or "permute", alpha = weight-space share), "zipit",
        "activation_matching", "weight_matching" (Git Re-Basin), "average".
    data: iterable of calibration batches; required except for "weight_matching", "average"
        and "mudsc" with alpha=1. reset_bn: recompute BatchNorm statistics of the bases (on
        copies) and of the merged model on `data`.
    zip_a, zip_b: the zip matcher's linkage and within-model budget factors; default MuDSC's
        a=0.5, b=1 for "mudsc", ZipIt's own a=0.3, b=0.125 for "zipit".
    stop_at: a module name or a group name (see `stop_points`): merge only the layers up to and
        including it and keep each model's own tail. The result is then a torch.fx GraphModule
        returning the tuple of the models' outputs (combine="tuple") or their concatenation along
        the last axis (combine="concat").
    Returns the merged module (and the `Program` when return_program=True).
    """
    spans: dict[str, tuple[float, float]] = {}
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    if matcher not in MATCHER_NAMES:
        raise InputError(f"unknown matcher {matcher!r}; choose one of {list(MATCHER_NAMES)}")
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be in [0, 1], got {alpha}")
    spec = METHODS[method]
    alpha = spec.alpha if spec.alpha is not None else alpha
    matcher = spec.matcher or matcher
    models = check_models(models)
    data = _batches(data)
    needs_data = spec.needs_data and not (spec.solver == "mudsc" and alpha >= 1.0)
    if data is None and (needs_data or example_inputs is None):
        raise InputError(
            f"method {method!r} needs calibration data: pass data=[batch, ...]"
            if needs_data
            else "pass example_inputs (or data) to trace the models"
        )
    example = example_inputs
    if example is None:
        example = next(iter(data), None)
        if example is None:
            raise InputError("the calibration data is empty: pass at least one batch")
    start = time.perf_counter()
    bases = models
    if reset_bn and data is not None:
        copies = [copy.deepcopy(m) for m in models]
        if any([reset_bn_stats(c, data) for c in copies]):  # noqa: C419 (reset every copy)
            bases = copies
    spans["reset_bn"] = (start, time.perf_counter())
    program = compile_program(bases[0], example, strict=strict)
    states = [{k: v.detach() for k, v in m.state_dict().items()} for m in bases]
    start = time.perf_counter()
    if spec.solver == "mudsc" and alpha < 1.0:
        collect_features(program, states, data, progress=progress)
    spans["collect_features"] = (start, time.perf_counter())
    start = time.perf_counter()
    zip_a = spec.zip_a if zip_a is None else zip_a
    zip_b = spec.zip_b if zip_b is None else zip_b
    options = {"a": zip_a, "b": zip_b} if matcher == "zip" else {}
    solve_groups(
        program, states, spec.solver, matcher, alpha, seed, iters, patience, options, progress
    )
    spans["solve_groups"] = (start, time.perf_counter())
    start = time.perf_counter()
    rewrite(program, states)
    merged = copy.deepcopy(models[0])
    merged.load_state_dict(program.merged_state)
    if reset_bn and data is not None:
        reset_bn_stats(merged, data)
    spans["rewrite"] = (start, time.perf_counter())
    program.spans.update(spans)
    program.timings.update({stage: end - begin for stage, (begin, end) in spans.items()})
    if stop_at is not None:
        originals = [{k: v.detach() for k, v in m.state_dict().items()} for m in models]
        merged = build_partial(program, merged.state_dict(), originals, stop_at, combine)
    return (merged, program) if return_program else merged
