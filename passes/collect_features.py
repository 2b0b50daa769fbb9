"""collect_features: stream activation moments for every free group, for all models at once.

Reads: `program.groups` (their `capture` sites), `program.spaces`, `node.meta[AXES]` of the capture
nodes, the traced program, `program.states`, `program.data`, `program.options`,
`program.memory_plan`.
Writes: `program.features`: a `SimilarityStore`, group name -> the Pearson correlation of the
N*units stacked features of the N models (MuDSC's statistic: from Σx, Σxxᵀ and the sample count,
`Moments` in passes/moments.py), float32 for groups of 2048+ stacked units;
`program.capture_plans`: group -> `Capture`. When the plan cuts the groups into waves, each wave
is one pass over the data, and correlations that do not fit the plan's share of memory wait on
disk until the solve reads them.

The traced graph, cut down to the capture nodes (the model's own outputs, e.g. vocabulary-sized
logits, are not computed), is run with each model's weights in turn. A batch whose shapes
differ from the traced ones (the last, smaller batch) is traced again once per shape. Features
are read from the captured tensors in place where their layout allows (conv maps, token
matrices) and multiplied in float32 BLAS with float64 sums (see passes/moments.py).
Nothing is kept across batches: memory is O(Σ groups (N·units)²), never O(samples);
blocks="cross" keeps only the blocks a permutation matcher reads ((N-1)·units² per group).
Across processes (`program.team`) each rank reads its shard, the moments are summed over the
ranks and each group's correlation is kept by its owner only (the others mark it as held
elsewhere).
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import fx
from tqdm.auto import tqdm

from graphmerge.errors import InputError
from graphmerge.layout import Alt, Blk
from graphmerge.passes.graph_runner import GraphRunner
from graphmerge.passes.moments import (
    BLOCKS,
    Moments,
    NonFiniteFeatures,
    blocks_read_by,
    shared_shift,
    sum_over_ranks,
)
from graphmerge.passes.weight_vectors import FLOAT32_FROM_UNITS
from graphmerge.program import AXES, Program
from graphmerge.similarities import SimilarityStore
from graphmerge.trace import check_batch, eval_mode
from graphmerge.units import group_units, leaf_coords

__all__ = [
    "Capture",
    "GraphRunner",
    "Moments",
    "capture_plan",
    "collect_features",
    "collect_moments",
    "features",
]

# A conv map is read in place as B parts of (units, H·W) when H·W is at least this; smaller maps
# are copied into one (samples, units) matrix (many tiny products cost more than the copy).
MIN_PART = 64


@dataclass(frozen=True)
class Capture:
    """How to cut a group's unit features out of one captured tensor.

    positions: (repeat, units) indices into the flattened `dims`. Repeats are extra samples when
    they are aligned across models (frozen factors: pixels, tokens); when another free group
    shares the axes they are not (its units are in each model's own order), so they are averaged
    (`average_repeats`), and so are other axes that carry free groups (`average_dims`).
    """

    node: str
    dims: tuple[int, ...]
    positions: np.ndarray
    average_repeats: bool = False
    average_dims: tuple[int, ...] = ()

    @property
    def prefix(self) -> bool:
        """The positions are 0, 1, ..., repeat·units - 1: a slice, no gather needed."""
        return bool(np.array_equal(self.positions.reshape(-1), np.arange(self.positions.size)))


def _dim_contribution(lay, store, strides: dict[int, int]) -> np.ndarray | None:
    if isinstance(lay, Blk):
        return None
    if isinstance(lay, Alt):  # a stacked axis used whole downstream: its options were unified
        lay = lay.options[0]
    coords = leaf_coords(store.normalize(lay), store)
    present = [s for s in strides if s in coords]
    if not present:
        return None
    out = np.zeros(store.size(lay), dtype=np.int64)
    valid = np.ones(store.size(lay), dtype=bool)
    for s in present:
        out += np.where(coords[s] >= 0, coords[s], 0) * strides[s]
        valid &= coords[s] >= 0
    return np.where(valid, out, -1)


def capture_plan(program: Program, name: str) -> Capture | None:
    """Where and how to read the units of group `name` from the traced graph."""
    group = program.group(name)
    site = group.capture
    if site is None:
        return None
    nodes = {n.name: n for n in program.traced.graph.nodes}
    consumer = nodes[site.node]
    node = consumer if site.arg < 0 else consumer.args[site.arg]
    if not isinstance(node, fx.Node) or node.meta.get(AXES) is None or node.meta[AXES].dims is None:
        return None
    store = program.store
    gs = program.spaces[name]
    strides, stride = {gs.space: 1}, gs.size
    for p in reversed(gs.parents):
        strides[p] = stride
        stride *= store.space_size(p)
    dims, parts, average_dims, other_free = [], [], [], False
    for d, lay in enumerate(node.meta[AXES].dims):
        contrib = _dim_contribution(lay, store, strides)
        free = [
            s
            for s in _plain_leaves(lay, store)
            if s not in strides and store.frozen_reason(s) is None
        ]
        if contrib is not None:
            dims.append(d)
            parts.append(contrib)
            other_free |= bool(free)
        elif free:
            average_dims.append(d)
    if not dims:
        return None
    idx = parts[0]
    for part in parts[1:]:
        idx = np.where(
            (idx[:, None] >= 0) & (part[None, :] >= 0), idx[:, None] + part[None, :], -1
        ).reshape(-1)
    n_units = group_units(store, gs.space, gs.parents)
    valid = np.flatnonzero(idx >= 0)
    if len(valid) == 0 or len(valid) % n_units:
        return None
    order = valid[np.argsort(idx[valid], kind="stable")]
    return Capture(
        node.name, tuple(dims), order.reshape(n_units, -1).T.copy(), other_free, tuple(average_dims)
    )


def _plain_leaves(lay, store) -> list[int]:
    if isinstance(lay, Blk):
        return []
    if isinstance(lay, Alt):
        lay = lay.options[0]
    return store.leaves(lay)


def features(value: torch.Tensor, cap: Capture) -> torch.Tensor:
    """(parts, units, samples) float32 features of a captured tensor, for `Moments.add`.

    One unit axis with its units in order (a conv map, a linear or token layer) is read in
    place: (B, C, H, W) as B parts of (C, H·W), (tokens..., C) as one part whose rows are
    units-minor. Anything else (several unit axes, a gather, repeats averaged, small maps) is
    copied into one (1, units, samples) part.
    """
    if cap.average_dims:
        value = value.mean(dim=cap.average_dims, keepdim=True)
    repeat, units = cap.positions.shape
    if len(cap.dims) == 1 and repeat == 1 and cap.prefix:
        d = cap.dims[0]
        pre, post = math.prod(value.shape[:d]), math.prod(value.shape[d + 1 :])
        x = value.reshape(pre, value.shape[d], post)[:, :units]
        if post == 1:
            return x[:, :, 0].T.unsqueeze(0).to(torch.float32)
        if post >= MIN_PART:
            return x.to(torch.float32)
    rest = [d for d in range(value.dim()) if d not in cap.dims]
    width = math.prod(value.shape[d] for d in cap.dims)
    x = value.permute(*rest, *cap.dims).reshape(-1, width)
    if cap.prefix:
        x = x[:, : repeat * units]
    else:
        x = x.index_select(1, torch.as_tensor(cap.positions.reshape(-1)))
    x = x.reshape(x.shape[0], repeat, units)
    x = x.mean(dim=1) if cap.average_repeats else x.reshape(-1, units)
    return x.to(torch.float32).T.unsqueeze(0)


def _plans(program: Program, names) -> dict[str, Capture]:
    free = [g.name for g in program.free_groups()]
    if names is not None:
        names = list(names)
        unknown = [n for n in names if n not in free]
        if unknown:
            raise InputError(
                f"no free group named {unknown[0]!r}; free groups: {free[:10]}"
                f"{' ...' if len(free) > 10 else ''}"
            )
        free = [n for n in free if n in names]
    plans = {name: capture_plan(program, name) for name in free}
    return {k: v for k, v in plans.items() if v is not None}


def _non_finite(exc: NonFiniteFeatures, name: str, cap: Capture) -> InputError:
    which = " or ".join(f"model {i}" for i in exc.models)
    what = (
        "activations too large for float32 products (|x| > 1e19)"
        if exc.overflow
        else "NaN/inf activations"
    )
    return InputError(
        f"{which} produced {what} at the capture site of group {name} (node {cap.node}); "
        "check its weights and the calibration data"
    )


def _run(runner: GraphRunner, state: dict, batch, index: int, program: Program) -> dict:
    try:
        return runner(state, batch)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(
            f"calibration batch {index} does not fit {type(program.model).__name__}: {exc}"
        ) from exc


def collect_features(program: Program) -> Program:
    """Activation correlations per free group (see the module docstring); nothing is collected
    when the method reads no activations (`program.features` stays empty)."""
    plan = program.memory_plan
    program.features = SimilarityStore(plan.similarity_bytes if plan is not None else None)
    program.capture_plans = {}
    if not program.options.uses_activations:
        return program
    blocks = blocks_read_by(program.options.resolved_matcher)
    waves = plan.waves if plan is not None else (None,)
    for k, wave in enumerate(waves, start=1):
        what = f" (pass {k} of {len(waves)})" if len(waves) > 1 else ""
        moments, plans = collect_moments(
            program, wave, blocks, f"graphmerge: collecting features{what}"
        )
        for name in list(moments):  # one group's moments and correlation at a time
            corr = moments.pop(name).correlation()
            large = corr.shape[0] >= FLOAT32_FROM_UNITS
            program.features[name] = corr.astype(np.float32) if large else corr
        for name in plans.keys() - program.features.keys():  # held by their owner ranks
            program.features.hold_elsewhere(name, program.owners[name])
        program.capture_plans.update(plans)
    return program


def collect_moments(
    program: Program, names=None, blocks: str = "all", desc: str = "graphmerge: moments"
) -> tuple[dict[str, Moments], dict[str, Capture]]:
    """One pass over `program.data`: `Moments` of the free groups `names` (default all).

    The traced graph runs once per model with its weights (`program.states`), cut to the
    capture sites of `names`. blocks: "all" (every block: what the zip matcher reads) or
    "cross" (model 0 x model i and the variances: all a permutation matcher reads; see
    `blocks_read_by`). Returns the moments and the capture plans. Across processes
    (`program.team`), each rank reads its shard and the moments returned are those of the groups
    this rank owns (`program.owners`), summed over every rank's shard.
    """
    if blocks not in BLOCKS:
        raise InputError(f"blocks must be one of {list(BLOCKS)}, got {blocks!r}")
    plans = _plans(program, names)
    runner = GraphRunner(program, [p.node for p in plans.values()])
    n_models, team = len(program.states), program.team
    moments = {
        name: Moments(n_models, cap.positions.shape[1], blocks) for name, cap in plans.items()
    }
    disable = not program.options.progress
    batches = iter(tqdm(program.data, desc=desc, disable=disable, leave=False))
    with eval_mode(program.model):
        if team is None:
            if _accumulate(program, runner, plans, moments, batches) == 0:
                raise InputError(
                    "the calibration data is empty: pass an iterable of at least one batch"
                )
        else:
            first = _shared_first(program, runner, plans, moments, batches)
            team.agree(
                "collecting activation statistics",
                lambda: _accumulate(program, runner, plans, moments, batches, first),
            )
            moments = sum_over_ranks(team, moments, program.owners)
    check = functools.partial(_check_finite, moments, plans)
    check() if team is None else team.agree("checking the summed statistics", check)
    return moments, plans


def _captured(program: Program, runner: GraphRunner, batch, k: int) -> list[dict]:
    check_batch(program.example_inputs, batch, k, type(program.model).__name__)
    return [_run(runner, state, batch, k, program) for state in program.states]


def _unit_features(plans: dict[str, Capture], per_model: list[dict], name: str) -> list:
    cap = plans[name]
    return [features(c[cap.node], cap) for c in per_model]


def _accumulate(program, runner, plans, moments, batches, first=None) -> int:
    """Add `first` (captured values) and every batch left in `batches` to `moments`; returns
    how many batches were added."""
    count = 0
    for k, per_model in enumerate(itertools.chain([first] if first else [], batches), start=1):
        if not isinstance(per_model, list):  # a batch, not yet run
            per_model = _captured(program, runner, per_model, k)
        count += 1
        for name, cap in plans.items():
            try:
                moments[name].add(_unit_features(plans, per_model, name))
            except NonFiniteFeatures as exc:
                raise _non_finite(exc, name, cap) from exc
    return count


def _shared_first(program, runner, plans, moments, batches) -> list[dict] | None:
    """Across processes: run this shard's first batch (None for an empty shard) and give every
    rank's moments the shift of the first rank with data, so that each batch's float32
    products are those one process over all the shards computes."""

    def first():
        batch = next(batches, None)
        if batch is None:
            return None, None
        per_model = _captured(program, runner, batch, 1)
        shifts = {}
        for name, cap in plans.items():
            try:
                shifts[name] = Moments.first_shift(_unit_features(plans, per_model, name))
            except NonFiniteFeatures as exc:
                raise _non_finite(exc, name, cap) from exc
        return per_model, shifts

    per_model, local = program.team.agree("collecting activation statistics", first)
    for name, shift in shared_shift(program.team, local).items():
        moments[name].shift = shift
    return per_model


def _check_finite(moments: dict[str, Moments], plans: dict[str, Capture]) -> None:
    for name, m in moments.items():
        try:
            m.check_finite()
        except NonFiniteFeatures as exc:
            raise _non_finite(exc, name, plans[name]) from exc
