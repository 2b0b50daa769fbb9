"""refine_weights: least-squares weights after matching (PLeaS) and statistics repair (REPAIR).

Reads: `program.merged_state` (the rewrite), `program.assignments`, `program.states`,
`program.data`, `program.options` (`refine`, `ridge`, `repair`, `reset_bn`, `stop_at`).
Writes: `program.merged_state` (refit/repaired weights, BatchNorm statistics) and
`program.refinements` (per layer weight: what was done, or why it was left as rewritten).

In graph order, for each linear/conv layer (`find_layers`; "average" merges are refit too),
one pass over the calibration data streams the second moments of the merged model's own input
to the layer (with the layers before it already refit) and of the target: the models' outputs
of that layer mapped into the merged units and averaged (M_iᵀ y_i, as `rewrite` maps weights;
a zip's merged unit averages its cluster). Then:

- refine="least_squares": W = (C_tx + λ W₀)(C_xx + λ I)⁻¹, b = E[t] - W E[x] (covariances
  centred when the layer has a bias, raw second moments when not), W₀ the rewrite's weights,
  λ = ridge · tr(C_xx) / d. The ridge pulls directions the data does not span (dead units, rank
  deficiency, fewer merged units than inputs) back to the rewrite's weights; with λ > 0 the
  system is positive definite and solved by Cholesky.
- repair=True: each merged hidden unit (a free group's) that feeds no BatchNorm is scaled
  and shifted so that its mean and std on the data are the average of its cluster's means and
  stds in the models (REPAIR; without a bias, scaled only). Its statistics come from the same
  moments: E[Wx + b] and diag(W C_xx Wᵀ).
- a refit layer read by a BatchNorm alone gets that BatchNorm's running statistics from the
  same moments (when reset_bn), so the layers after it see what the final reset will give.
  A repair alone makes no pass over the data for layers it leaves (BatchNorm's, the outputs').

Memory: one layer's moments at a time, (d + units)² float64 with d the layer's input width
(a convolution's in_channels · kernel area); time: one pass over the data per layer.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch
from tqdm.auto import tqdm

from graphmerge.assignment import AxisMaps, apply_merge
from graphmerge.passes.collect_features import GraphRunner
from graphmerge.passes.layer_stats import (
    Layer,
    LayerStats,
    find_layers,
    layer_inputs,
    merged_target,
    output_rows,
)
from graphmerge.passes.partial import trunk_nodes
from graphmerge.program import Program
from graphmerge.trace import eval_mode

__all__ = ["fit_least_squares", "refine_weights"]


def refine_weights(program: Program) -> Program:
    """Refit and/or repair the merged weights (see the module docstring); a no-op when both
    options are off or without calibration data."""
    opts = program.options
    if not opts.refines or program.data is None:
        return program
    nodes = trunk_nodes(program, opts.stop_at) if opts.stop_at is not None else None
    layers, skipped = find_layers(program, nodes)
    program.refinements = dict(skipped)
    state = dict(program.merged_state)
    maps = AxisMaps(program, program.assignments, len(program.states))
    desc = "graphmerge: refining layers"
    for layer in tqdm(layers, desc=desc, disable=not opts.progress, leave=False):
        if opts.refine is None and not _repairs(layer):
            program.refinements[layer.weight] = "unchanged"  # nothing to do: no pass over data
            continue
        stats = _collect(program, layer, state, maps)
        program.refinements[layer.weight] = _update(program, layer, stats, state, maps)
    program.merged_state = state
    return program


def _repairs(layer: Layer) -> bool:
    """Whether repair=True rescales this layer: hidden units that feed no BatchNorm."""
    return layer.out_grouped and layer.batch_norm is None


def _collect(program: Program, layer: Layer, state: dict, maps: AxisMaps) -> LayerStats:
    """One pass over the data: the layer's moments (merged input, models' outputs)."""
    runner = GraphRunner(program, [layer.source, layer.node])
    stats = LayerStats(len(program.states))
    with eval_mode(program.model):
        for batch in program.data:
            x = runner(state, batch)[layer.source]
            rows = [output_rows(layer, runner(s, batch)[layer.node]) for s in program.states]
            parts = merged_target(maps, layer, rows)
            stats.add(layer_inputs(layer, x.to(torch.float32)), parts, rows)
    return stats


def _update(program: Program, layer: Layer, stats: LayerStats, state: dict, maps) -> str:
    """Refit / repair one layer in `state`; returns what was done."""
    opts = program.options
    ref = state[layer.weight]
    w = ref.detach().double().movedim(layer.out_axis, 0)
    shape = w.shape
    w = w.reshape(shape[0], -1).numpy()
    b = None if layer.bias is None else state[layer.bias].detach().double().numpy()
    done = []
    if opts.refine == "least_squares":
        w, b = fit_least_squares(stats, w, b, opts.ridge)
        done.append("refit")
    mean_x, cov_x = stats.input_moments(center=True)
    mean = w @ mean_x + (0.0 if b is None else b)
    var = np.einsum("ud,de,ue->u", w, cov_x, w)
    if opts.repair and _repairs(layer):
        w, b, mean, var = _repair(stats, maps, layer, w, b, mean, var)
        done.append("repaired")
    w = torch.from_numpy(w).reshape(shape).movedim(0, layer.out_axis)
    state[layer.weight] = w.contiguous().to(ref.dtype)
    if b is not None:
        state[layer.bias] = torch.from_numpy(b).to(state[layer.bias].dtype)
    if layer.batch_norm is not None and opts.reset_bn and done:
        for name, value in zip(layer.batch_norm, (mean, var), strict=True):
            state[name] = torch.from_numpy(value).to(state[name].dtype)
        done.append("BatchNorm statistics set")
    return ", ".join(done) or "unchanged"


def fit_least_squares(
    stats: LayerStats, w0: np.ndarray, b0: np.ndarray | None, ridge: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """The ridge least-squares weights (W, b) mapping the layer's inputs to its target.

    w0: (units, d) the rewrite's weights, what the ridge pulls towards; b0: its bias (None: the
    layer has none, and the fit is through the origin). Returns float64 arrays.
    """
    center = b0 is not None
    mean_x, cxx = stats.input_moments(center)
    mean_t, ctx = stats.cross_moments(center)
    d = cxx.shape[0]
    lam = ridge * float(np.trace(cxx)) / d
    if not lam > 0.0:  # the input is constant: nothing to fit but the bias
        w = w0
    else:
        a = cxx + lam * np.eye(d)
        rhs = (ctx + lam * w0).T
        try:
            w = scipy.linalg.cho_solve(scipy.linalg.cho_factor(a), rhs).T
        except np.linalg.LinAlgError:
            w = np.linalg.lstsq(a, rhs, rcond=None)[0].T
    b = None if b0 is None else mean_t - w @ mean_x
    return w, b


def _merged_units(maps: AxisMaps, layer: Layer, per_model: np.ndarray) -> np.ndarray:
    """(n_models, units) per-unit values -> (units,) the matched average in the merged units."""
    n = per_model.shape[0]
    total = np.zeros(per_model.shape[1])
    for i, v in enumerate(per_model):
        merge = maps.merge((layer.weight, layer.out_axis), i)
        t = torch.from_numpy(v)
        t = t / n if merge is None else apply_merge(t, 0, merge[0], merge[1])
        total += t.numpy()
    return total


def _repair(stats: LayerStats, maps, layer: Layer, w, b, mean, var):
    """Scale (and shift, with a bias) each unit to the matched average of the models' mean and
    std; returns the new (w, b, mean, var)."""
    means, stds = stats.unit_moments()
    goal_mean = _merged_units(maps, layer, means)
    goal_std = _merged_units(maps, layer, stds)
    std = np.sqrt(np.maximum(var, 0.0))
    live = (std > 1e-8 * max(float(std.max(initial=0.0)), 1e-30)) & (goal_std > 0)
    scale = np.where(live, goal_std / np.where(live, std, 1.0), 1.0)
    w = w * scale[:, None]
    if b is None:
        return w, None, mean * scale, var * scale**2
    b = np.where(live, scale * (b - mean) + goal_mean, b)
    return w, b, np.where(live, goal_mean, mean), var * scale**2
