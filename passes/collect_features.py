"""collect_features: stream activation moments for every free group, for all models at once.

Reads: `program.groups` (their `capture` sites), `program.spaces`, `node.meta[AXES]` of the capture
nodes, the traced program.
Writes: `program.features`: group name -> `Moments` over the N*units stacked features of the N
models (MuDSC's statistic: Σx, Σxxᵀ, sample count; `Moments.correlation()` is the Pearson
correlation the matchers consume); `program.capture_plans`: group name -> `Capture`.

The traced graph, cut down to the capture nodes (the model's outputs, e.g. vocabulary-sized
logits, are not computed), is run with each model's weights in turn. A batch whose shapes
differ from the traced ones (the last, smaller batch) is traced again once per shape. Nothing
is kept across batches: memory is O(Σ groups (N·units)²), never O(samples).

How the moments are computed (the statistic is MuDSC's; the arithmetic is ours): each model's
(samples, units) features are cut out of the captured tensor with at most one copy, shifted by a
per-unit constant (the first batch's mean, so that E[xxᵀ] - E[x]E[x]ᵀ does not cancel), and
multiplied in float32 BLAS (`ssyrk` for a model with itself, `sgemm` across models) over chunks
of at most `CHUNK` samples, each chunk's product added into float64 sums. `blocks="cross"`
keeps only what a permutation matcher reads: the blocks model 0 x model i and every unit's
variance, never the within-model blocks (see `blocks_read_by`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.linalg import blas
from torch import fx
from torch.utils._pytree import tree_flatten
from tqdm.auto import tqdm

from graphmerge.errors import InputError
from graphmerge.layout import Alt, Blk
from graphmerge.passes.matchers.similarity import correlation_from_moments
from graphmerge.program import AXES, Program
from graphmerge.trace import eval_mode, normalize_inputs, trace
from graphmerge.units import group_units, leaf_coords

__all__ = [
    "BLOCKS",
    "CHUNK",
    "Capture",
    "GraphRunner",
    "Moments",
    "blocks_read_by",
    "capture_plan",
    "collect_features",
    "features",
]

BLOCKS = ("all", "cross")
# Samples per float32 product: its rounding error grows with the number of terms summed in
# float32; chunks of 16k keep the correlation within ~1e-7 of a float64 computation.
CHUNK = 16384


def blocks_read_by(matcher: str) -> str:
    """The similarity blocks `matcher` reads: "cross" for "permute" (model 0 x model i only),
    "all" for "zip" (it also merges units within a model)."""
    return "cross" if matcher == "permute" else "all"


class NonFiniteFeatures(ValueError):
    """Features (or their float32 products) are not finite; `models` says whose."""

    def __init__(self, models: tuple[int, ...], overflow: bool):
        self.models, self.overflow = models, overflow
        super().__init__(f"models {models}: {'overflow' if overflow else 'NaN/inf'}")


@dataclass
class Moments:
    """Streaming moments of the stacked features of `n_models` models with `units` each.

    Internally the features y = x - shift are summed (float64): `shifted_total` Σy (N·units,),
    `square` Σy² (N·units,), `pairs[(i, j)]` Σ y_i y_jᵀ (units, units) for i <= j ("all"; the
    (i, i) blocks hold their upper triangle) or for i = 0 < j only ("cross"). `total` and
    `outer` give the raw sums Σx and Σxxᵀ; `correlation()` the (N·units)² Pearson correlation.
    """

    n_models: int
    units: int
    blocks: str = "all"
    count: float = 0.0
    shift: torch.Tensor | None = None  # (N·units,) float32, set by the first batch
    shifted_total: np.ndarray = field(init=False)
    square: np.ndarray = field(init=False)
    pairs: dict[tuple[int, int], np.ndarray] = field(init=False)

    def __post_init__(self) -> None:
        if self.blocks not in BLOCKS:
            raise ValueError(f"blocks must be one of {BLOCKS}, got {self.blocks!r}")
        n, u = self.n_models, self.units
        self.shifted_total, self.square = np.zeros(n * u), np.zeros(n * u)
        keys = [(i, j) for i in range(n) for j in range(i, n)]
        if self.blocks == "cross":
            keys = [(0, j) for j in range(1, n)]
        self.pairs = {k: np.zeros((u, u)) for k in keys}

    def add(self, xs: list[torch.Tensor], scratch: bool = False) -> None:
        """Add one batch: xs[i] is model i's (samples, units) float32 features (same samples).

        scratch: xs are C-contiguous copies the caller no longer needs (shifted in place).
        Raises NonFiniteFeatures naming the model on NaN/inf features or float32 overflow.
        """
        if self.shift is None:
            self.shift = torch.cat([_column_sums(x, i) / x.shape[0] for i, x in enumerate(xs)])
            self.shift = self.shift.float()
        u = self.units
        shifts = [self.shift[i * u : (i + 1) * u] for i in range(len(xs))]
        ys = [x.sub_(c) if scratch else (x - c).contiguous() for x, c in zip(xs, shifts)]
        for i, y in enumerate(ys):
            self.shifted_total[i * u : (i + 1) * u] += _column_sums(y, i).numpy()
            if self.blocks == "cross":  # "all" reads the diagonal of its (i, i) blocks
                self.square[i * u : (i + 1) * u] += (y * y).sum(0, dtype=torch.float64).numpy()
        arrays = [y.numpy() for y in ys]
        for start in range(0, arrays[0].shape[0], CHUNK):
            chunk = [a[start : start + CHUNK] for a in arrays]
            for (i, j), acc in self.pairs.items():
                if i == j:  # x_iᵀx_i: A Aᵀ with A = x_iᵀ (Fortran-ordered, no copy)
                    prod = blas.ssyrk(1.0, chunk[i].T, trans=0, lower=0)
                else:
                    prod = chunk[i].T @ chunk[j]
                if not np.isfinite(prod).all():
                    raise NonFiniteFeatures(tuple(sorted({i, j})), overflow=True)
                acc += prod
        self.count += xs[0].shape[0]

    def _shifted_outer(self) -> np.ndarray:
        """Σ y yᵀ (N·units)²; within-model off-diagonal blocks are 0 for "cross"."""
        n, u = self.n_models, self.units
        out = np.zeros((n * u, n * u))
        for (i, j), acc in self.pairs.items():
            if i == j:
                upper = np.triu(acc)
                acc = upper + np.triu(upper, 1).T
            out[i * u : (i + 1) * u, j * u : (j + 1) * u] = acc
            out[j * u : (j + 1) * u, i * u : (i + 1) * u] = acc.T
        if self.blocks == "cross":
            out[np.diag_indices_from(out)] = self.square
        return out

    @property
    def total(self) -> np.ndarray:
        """Σx over all samples, (N·units,) float64."""
        return self.shifted_total + self.count * self._shift64()

    @property
    def outer(self) -> np.ndarray:
        """Σxxᵀ over all samples, (N·units)² float64 (within-model blocks 0 for "cross",
        except the diagonal)."""
        c, s = self._shift64(), self.shifted_total
        out = self._shifted_outer() + np.outer(s, c) + np.outer(c, s) + self.count * np.outer(c, c)
        if self.blocks == "cross":
            _clear_within_models(out, self.n_models, self.units)
        return out

    def _shift64(self) -> np.ndarray:
        if self.shift is None:
            return np.zeros(self.n_models * self.units)
        return self.shift.double().numpy()

    def correlation(self) -> np.ndarray:
        """Pearson correlation (N·units)² (`correlation_from_moments`: population covariance,
        σ_iσ_j clamped at 1e-7). For "cross", only the blocks [model 0, model i], their
        transposes and the diagonal are filled; the within-model off-diagonal blocks are 0
        (a permutation matcher reads S[:n, i·n:(i+1)·n] only)."""
        corr = correlation_from_moments(self.shifted_total, self._shifted_outer(), self.count)
        if self.blocks == "cross":
            _clear_within_models(corr, self.n_models, self.units)
        return corr


def _clear_within_models(mat: np.ndarray, n_models: int, units: int) -> None:
    """Zero the off-diagonal entries of the within-model blocks of `mat` in place."""
    for i in range(n_models):
        block = mat[i * units : (i + 1) * units, i * units : (i + 1) * units]
        diag = block.diagonal().copy()
        block[...] = 0.0
        block[np.diag_indices(units)] = diag


def _column_sums(x: torch.Tensor, model: int) -> torch.Tensor:
    """Σ over samples in float64 of (samples, units) `x`; NonFiniteFeatures on NaN/inf (a sum
    of finite float32 values cannot overflow float64, so this sees every non-finite value)."""
    sums = x.sum(0, dtype=torch.float64)
    if not torch.isfinite(sums).all():
        raise NonFiniteFeatures((model,), overflow=False)
    return sums


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
    """(samples, units) float32 feature matrix of a captured tensor.

    A view of `value` when the unit axes are its last axes and the positions a prefix (linear
    layers, transformers); otherwise one copy (a permute to units-last, a gather, a mean).
    """
    if cap.average_dims:
        value = value.mean(dim=cap.average_dims, keepdim=True)
    rest = [d for d in range(value.dim()) if d not in cap.dims]
    width = math.prod(value.shape[d] for d in cap.dims)
    x = value.permute(*rest, *cap.dims).reshape(-1, width)
    repeat, units = cap.positions.shape
    if cap.prefix:
        x = x[:, : repeat * units]
    else:
        x = x.index_select(1, torch.as_tensor(cap.positions.reshape(-1)))
    x = x.reshape(x.shape[0], repeat, units)
    x = x.mean(dim=1) if cap.average_repeats else x.reshape(-1, units)
    return x.to(torch.float32)


class GraphRunner:
    """Runs the traced graph with any model's weights and returns the captured values only.

    The graph is cut down to what the capture nodes need (its own outputs are dropped).
    """

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
        out.args = (tuple(nodes[n] for n in self.capture_nodes),)
        graph.eliminate_dead_code()
        module = fx.GraphModule(traced.program.graph_module, graph)
        self._by_shape[key] = (traced, module)

    def __call__(self, state: dict, inputs) -> dict[str, torch.Tensor]:
        """Capture node name -> its value, running the graph with `state` on `inputs`."""
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
            caught = module(*flat)
        return dict(zip(self.capture_nodes, caught))


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


def _accumulate(moments: Moments, name: str, cap: Capture, per_model: list[dict]) -> None:
    feats = [features(c[cap.node], cap) for c in per_model]
    scratch = all(
        f.is_contiguous()
        and f.untyped_storage().data_ptr() != c[cap.node].untyped_storage().data_ptr()
        for f, c in zip(feats, per_model)
    )
    try:
        moments.add(feats, scratch=scratch)
    except NonFiniteFeatures as exc:
        which = " or ".join(f"model {i}" for i in exc.models)
        what = (
            "activations whose float32 products overflow" if exc.overflow else "NaN/inf activations"
        )
        raise InputError(
            f"{which} produced {what} at the capture site of group {name} (node {cap.node}); "
            "check its weights and the calibration data"
        ) from exc


def collect_features(
    program: Program,
    states: list[dict],
    data,
    progress: bool = True,
    *,
    blocks: str = "all",
    names=None,
) -> Program:
    """One pass over `data`: accumulate `Moments` per free group (see module docstring).

    states: each model's state dict (the traced graph runs once per model with its weights).
    blocks: "all" (every block: what the zip matcher reads) or "cross" (model 0 x model i and the
        variances: all a permutation matcher reads; see `blocks_read_by`).
    names: the free groups to collect (default all); the graph is cut to their capture sites.
    """
    if blocks not in BLOCKS:
        raise InputError(f"blocks must be one of {list(BLOCKS)}, got {blocks!r}")
    plans = _plans(program, names)
    runner = GraphRunner(program, [p.node for p in plans.values()])
    n_models = len(states)
    moments = {
        name: Moments(n_models, cap.positions.shape[1], blocks) for name, cap in plans.items()
    }
    batches = 0
    with eval_mode(program.model):
        for batch in tqdm(
            data, desc="graphmerge: collecting features", disable=not progress, leave=False
        ):
            batches += 1
            per_model = []
            for state in states:
                try:
                    per_model.append(runner(state, batch))
                except InputError:
                    raise
                except Exception as exc:
                    raise InputError(
                        f"calibration batch {batches} does not fit "
                        f"{type(program.model).__name__}: {exc}"
                    ) from exc
            for name, cap in plans.items():
                _accumulate(moments[name], name, cap, per_model)
    if batches == 0:
        raise InputError("the calibration data is empty: pass an iterable of at least one batch")
    program.features = moments
    program.capture_plans = plans
    return program
