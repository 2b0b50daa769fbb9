"""Public `align`: every model permuted into the first model's unit order, without merging.

    a, b_aligned = gm.align([model_a, model_b], data, method="weight_matching")

The models are matched as `gm.merge` matches them (the same passes up to `solve_groups`), but
instead of merging, each model's own weights are permuted so that its units line up with the
first model's: the result of each is a copy of the same class computing the same function as
the input. This is what a loss-barrier plot interpolates along (Git Re-Basin's
`(1 - lam) * A + lam * P(B)`), and the merge of a permutation method is the midpoint of that
line: `gm.merge([a, b], method=m, reset_bn=False)` equals the average of `a` and
`align([a, b], method=m)[1]` parameter for parameter (BatchNorm statistics aside: the merge
resets them on `data`).

Only permutation methods align: "weight_matching", "activation_matching" and "mudsc" with
matcher="permute". A zip ("zipit", "mudsc" with matcher="zip") merges units *within* a model, so
it gives no one-to-one order to put a model in; "average" matches nothing and returns copies.

>>> import torch, graphmerge as gm
>>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
>>> twin = gm.shuffle(net, torch.randn(3, 4), seed=0)  # the same function, units permuted
>>> first, back = gm.align([net, twin], example_inputs=torch.randn(3, 4), progress=False)
>>> torch.equal(back[0].weight, net[0].weight), torch.equal(twin[0].weight, net[0].weight)
(True, False)
"""

from __future__ import annotations

import copy

import numpy as np
from torch import nn

from graphmerge.assignment import Assignment, AxisMaps, apply_unmerge
from graphmerge.errors import InputError
from graphmerge.merge import prepare
from graphmerge.options import MergeOptions
from graphmerge.passes import PIPELINE
from graphmerge.program import Program, run_passes

__all__ = ["align"]

_MATCHING = PIPELINE[: [p.name for p in PIPELINE].index("solve_groups") + 1]  # trace .. solve


def align(
    models,
    data=None,
    method: str = "weight_matching",
    *,
    options: MergeOptions | None = None,
    example_inputs=None,
    **overrides,
) -> list[nn.Module]:
    """`models` (same architecture) matched by `method` and permuted into model 0's unit order.

    method: "weight_matching" (Git Re-Basin; needs no data), "activation_matching", or "mudsc"
        with matcher="permute" (alpha = weight-space share); "average" aligns nothing.
    data, options, example_inputs and keywords: as `gm.merge` (e.g. seed, iters, alpha,
        reset_bn: whether the BatchNorm statistics the matching reads are reset on `data`
        first; the returned models keep their own statistics, permuted).
    Returns a list of new modules, one per input: the first an unchanged copy of model 0,
    each other one with the same function as its input and its units in model 0's order.
    Raises `InputError` for a zip method, `stop_at`, `refine` or `repair` (they merge).
    """
    program = prepare(
        models,
        data,
        method,
        options=options,
        example_inputs=example_inputs,
        caller="align",
        **overrides,
    )
    _check_aligns(program.options)
    program = run_passes(program, _MATCHING)
    onto_first = {name: _onto_first(a) for name, a in program.assignments.items()}
    maps = AxisMaps(program, onto_first, len(program.models))
    return [_permuted(program, maps, i, m) for i, m in enumerate(program.models)]


def _check_aligns(opts: MergeOptions) -> None:
    """An `InputError` unless `opts` match by a permutation and ask for nothing but matching."""
    if opts.solver == "mudsc" and opts.resolved_matcher == "zip":
        fix = "matcher='permute'" if opts.method == "mudsc" else "method='activation_matching'"
        raise InputError(
            f"align needs a permutation, but method={opts.method!r} matches with a zip, which "
            f"merges units within a model and gives no one-to-one order; pass {fix} (or "
            "method='weight_matching')"
        )
    asked = [
        name
        for name, value in (("stop_at", opts.stop_at), ("refine", opts.refine))
        if value is not None
    ] + (["repair"] if opts.repair else [])
    if asked:
        raise InputError(
            f"align only permutes the models; {asked[0]} changes a merged model: "
            "use gm.merge for it"
        )


def _onto_first(a: Assignment) -> Assignment:
    """The assignment that sends each model's units to the position of the model-0 unit they
    are matched with (model 0's own map becomes the identity)."""
    n = a.n_merged
    for t in a.targets:
        if a.zip or len(t) != n or not np.array_equal(np.sort(t), np.arange(n)):
            raise RuntimeError("align: a solved group is not a permutation")  # a solver bug
    position = np.empty(n, dtype=np.int64)
    position[a.targets[0]] = np.arange(n)
    return Assignment.from_targets([position[t] for t in a.targets], a.score, n_merged=n)


def _permuted(program: Program, maps: AxisMaps, model: int, module: nn.Module) -> nn.Module:
    """A copy of `module` (model number `model`) with every grouped axis moved by `maps`."""
    axes_of: dict[str, list[int]] = {}
    for param, axis in program.axis_layouts:
        axes_of.setdefault(param, []).append(axis)
    # a tied name the graph does not read moves like the name it shares storage with
    aliases = program.traced.aliases
    source = {a: o for a, others in aliases.items() for o in others if o in axes_of}
    state = {}
    for key, w in module.state_dict().items():
        w = w.detach().clone()
        traced = key if key in axes_of else source.get(key, key)
        for axis in axes_of.get(traced, []):
            targets = maps.unmerge((traced, axis), model)
            if targets is not None:
                w = apply_unmerge(w, axis, targets)
        state[key] = w
    twin = copy.deepcopy(module)
    twin.load_state_dict(state)
    return twin
