"""collect_features: stream activation moments for every free group, for all models at once.

Reads: `program.groups` (their `capture` sites), `program.spaces`, `node.meta[AXES]` of the capture
nodes, the traced program, `program.states`, `program.data`, `program.options`.
Writes: `program.features`: a `SimilarityStore`, group name -> the Pearson correlation of the
N*units stacked features of the N models (from streamed sums of x and x xᵀ in float64);
`program.capture_plans`. When the plan cuts the groups into waves, each wave is one pass over
the data and its correlations may be kept on disk until the solve reads them.

The traced graph is run with each model's weights in turn, with the capture tensors as extra
outputs. A batch whose shapes differ from the traced ones (the last, smaller batch) is traced
again once per shape. Memory is O(Σ groups (N·units)²), never O(samples).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import fx
from torch.utils._pytree import tree_flatten, tree_leaves
from tqdm.auto import tqdm

from graphmerge.errors import InputError
from graphmerge.layout import Alt, Blk
from graphmerge.passes.matchers.similarity import correlation_from_moments
from graphmerge.passes.weight_vectors import FLOAT32_FROM_UNITS
from graphmerge.program import AXES, Program
from graphmerge.similarities import SimilarityStore
from graphmerge.trace import check_batch, eval_mode, normalize_inputs, trace
from graphmerge.units import group_units, leaf_coords

__all__ = ["GraphRunner", "Moments", "capture_plan", "collect_features"]


@dataclass
class Moments:
    """Streaming first and second moments of stacked unit features (float64)."""

    total: np.ndarray
    outer: np.ndarray
    count: float = 0.0

    @classmethod
    def zeros(cls, dim: int) -> Moments:
        return cls(np.zeros(dim), np.zeros((dim, dim)), 0.0)

    def add(self, x: torch.Tensor) -> None:
        x = x.to(torch.float64)
        self.total += x.sum(0).numpy()
        self.outer += (x.T @ x).numpy()
        self.count += x.shape[0]


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
    """(samples, units) feature matrix of a captured tensor."""
    if cap.average_dims:
        value = value.mean(dim=cap.average_dims, keepdim=True)
    rest = [d for d in range(value.dim()) if d not in cap.dims]
    x = value.permute(*rest, *cap.dims).reshape(
        -1, int(np.prod([value.shape[d] for d in cap.dims]))
    )
    pos = torch.as_tensor(cap.positions)
    x = x[:, pos.reshape(-1)].reshape(x.shape[0], cap.positions.shape[0], cap.positions.shape[1])
    if cap.average_repeats:
        return x.mean(dim=1)
    return x.reshape(-1, cap.positions.shape[1])


class GraphRunner:
    """Runs the traced graph with any model's weights, returning extra captured values."""

    def __init__(self, program: Program, capture_nodes: list[str]):
        self.program = program
        self.capture_nodes = list(dict.fromkeys(capture_nodes))
        self._by_shape: dict[tuple, tuple] = {}
        self._add(self._key(program.example_inputs), program.traced)

    @staticmethod
    def _key(inputs) -> tuple:
        args, kwargs = normalize_inputs(inputs)
        return tuple(
            (k, tuple(v.shape))
            for k, v in [*enumerate(args), *sorted(kwargs.items())]
            if isinstance(v, torch.Tensor)
        )

    def _add(self, key, traced) -> None:
        graph = copy.deepcopy(traced.graph)
        nodes = {n.name: n for n in graph.nodes}
        missing = [n for n in self.capture_nodes if n not in nodes]
        if missing:
            raise InputError(
                f"the graph traced for input shapes {key} lacks capture nodes "
                f"{missing[:3]}; use calibration batches of one shape"
            )
        out = next(n for n in graph.nodes if n.op == "output")
        outs = out.args[0]
        out.args = (
            (
                tuple(outs) if isinstance(outs, (list, tuple)) else (outs,),
                tuple(nodes[n] for n in self.capture_nodes),
            ),
        )
        module = fx.GraphModule(traced.program.graph_module, graph)
        self._by_shape[key] = (traced, module)

    def __call__(self, state: dict, inputs) -> tuple[list, dict[str, torch.Tensor]]:
        key = self._key(inputs)
        if key not in self._by_shape:
            self._add(key, trace(self.program.model, inputs))
        traced, module = self._by_shape[key]
        ep = traced.program
        args, kwargs = normalize_inputs(inputs)
        example_kwargs = normalize_inputs(self.program.example_inputs)[1]
        kwargs = {k: kwargs[k] for k in example_kwargs if k in kwargs} | kwargs
        user = [v for v in tree_flatten((args, kwargs))[0] if isinstance(v, torch.Tensor)]
        flat, user_iter = [], iter(user)
        for spec in ep.graph_signature.input_specs:
            kind = spec.kind.name
            if kind in ("PARAMETER", "BUFFER"):
                flat.append(
                    state[spec.target] if spec.target in state else ep.constants[spec.target]
                )
            elif kind in ("CONSTANT_TENSOR", "CUSTOM_OBJ"):
                flat.append(ep.constants[spec.target])
            elif kind == "USER_INPUT":
                flat.append(next(user_iter))
            else:
                raise InputError(f"unsupported exported input kind {kind}")
        with torch.no_grad():
            outputs, caught = module(*flat)
        return list(outputs), dict(zip(self.capture_nodes, caught))


def collect_features(program: Program) -> Program:
    """Activation correlations per free group, one pass over `program.data` per wave of groups
    (see the module docstring and `MemoryPlan.waves`).

    The traced graph runs once per model with its weights (`program.states`); nothing is
    collected when the method reads no activations (`program.features` stays empty).
    """
    plan = program.memory_plan
    program.features = SimilarityStore(plan.similarity_bytes if plan is not None else None)
    program.capture_plans = {}
    if not program.options.uses_activations:
        return program
    waves = plan.waves if plan is not None else (tuple(g.name for g in program.free_groups()),)
    for k, wave in enumerate(waves, start=1):
        what = f" (pass {k} of {len(waves)})" if len(waves) > 1 else ""
        moments, plans = _collect(program, wave, f"graphmerge: collecting features{what}")
        for name in list(moments):  # one group's moments and correlation at a time
            m = moments.pop(name)
            corr = correlation_from_moments(m.total, m.outer, m.count)
            del m
            large = corr.shape[0] >= FLOAT32_FROM_UNITS
            program.features[name] = corr.astype(np.float32) if large else corr
        program.capture_plans.update(plans)
    return program


def _collect(program: Program, names, desc: str) -> tuple[dict, dict]:
    """Moments of groups `names` over one pass of the data, and their capture plans."""
    states, data, progress = program.states, program.data, program.options.progress
    plans = {name: capture_plan(program, name) for name in names}
    plans = {k: v for k, v in plans.items() if v is not None}
    runner = GraphRunner(program, [p.node for p in plans.values()])
    n_models = len(states)
    moments = {
        name: Moments.zeros(n_models * cap.positions.shape[1]) for name, cap in plans.items()
    }
    batches = 0
    with eval_mode(program.model):
        for batch in tqdm(data, desc=desc, disable=not progress, leave=False):
            batches += 1
            check_batch(program.example_inputs, batch, batches, type(program.model).__name__)
            per_model = []
            for state in states:
                try:
                    _, caught = runner(state, batch)
                except InputError:
                    raise
                except Exception as exc:
                    raise InputError(
                        f"calibration batch {batches} does not fit "
                        f"{type(program.model).__name__}: {exc}"
                    ) from exc
                per_model.append(caught)
            for name, cap in plans.items():
                feats = [features(c[cap.node], cap) for c in per_model]
                x = torch.cat(feats, dim=1)
                if not torch.isfinite(x).all():
                    bad = next(i for i, f in enumerate(feats) if not torch.isfinite(f).all())
                    raise InputError(
                        f"model {bad} produced NaN/inf activations at the capture "
                        f"site of group {name} (node {cap.node}); check its weights "
                        "and the calibration data"
                    )
                moments[name].add(x)
    if batches == 0:
        raise InputError("the calibration data is empty: pass an iterable of at least one batch")
    return moments, plans


def flat_outputs(outputs) -> list[torch.Tensor]:
    return [t for t in tree_leaves(outputs) if isinstance(t, torch.Tensor)]
