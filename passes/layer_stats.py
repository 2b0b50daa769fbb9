"""Layer statistics for the refit and the repair: which layers, and their streamed moments.

`find_layers` lists the linear and convolution layers of the traced graph (in graph order), with
the reason each other such layer is left as rewritten.
`LayerStats` streams, for one layer, the second moments a least-squares refit and a statistics
repair need: of the merged model's own layer input x (a linear layer's input rows, a
convolution's unfolded patches) and of the target t (the models' layer outputs mapped into the
merged units and averaged, as `rewrite` maps the weights): Σx, Σxxᵀ, Σt, Σtxᵀ, and per model
and unit Σy, Σy². Sums are float32 products per batch, shifted by the first batch's mean,
added into float64; nothing is kept across batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx

from graphmerge.assignment import AxisMaps, apply_merge
from graphmerge.program import Program

__all__ = ["Layer", "LayerStats", "find_layers", "layer_inputs", "merged_target", "output_rows"]

_LINEAR = {"aten.linear.default"}
_ADDMM = {"aten.addmm.default"}  # GPT-2's Conv1D: addmm(bias, x, weight (in, out))
_CONV = {"aten.conv1d.default", "aten.conv2d.default"}
_BATCH_NORM = {"aten.batch_norm.default"}


@dataclass(frozen=True)
class Layer:
    """One refittable layer: its node, the input node, its parameters (state-dict names).

    kind: "linear" or "conv"; conv: (kernel, stride, padding, dilation) as 2-tuples (a conv1d is
    a conv2d of height 1); out_grouped: its output units are a free group's (hidden units);
    batch_norm: the (running_mean, running_var) names of a BatchNorm that reads its output
    alone, else None; out_axis: the weight's axis of output units (1 for an addmm's (in, out)
    weight, read as a linear layer).
    """

    node: str
    source: str
    weight: str
    bias: str | None
    kind: str
    conv: tuple | None
    out_grouped: bool
    batch_norm: tuple[str, str] | None
    out_axis: int = 0

    @property
    def unit_dim(self) -> int:
        """The dim of the layer's output that holds its units."""
        return -1 if self.kind == "linear" else 1


def _param(program: Program, node) -> str | None:
    if not isinstance(node, fx.Node) or node.op != "placeholder":
        return None
    kind, target = program.traced.placeholders.get(node.name, (None, None))
    return target if kind in ("param", "buffer") else None


def _conv_geometry(node: fx.Node, weight_shape) -> tuple | str:
    """(kernel, stride, padding, dilation) as 2-tuples, or why the conv is left as rewritten.

    A conv1d is read as a conv2d of height 1."""
    args = list(node.args) + [None] * (7 - len(node.args))
    stride, padding, dilation, groups = args[3:7]
    if groups not in (None, 1):
        return f"a grouped convolution (groups={groups})"
    if isinstance(padding, str):
        return f"padding={padding!r}"
    dims = len(weight_shape) - 2

    def pair(v, default: int, height: int) -> tuple[int, int]:
        v = [default] if v is None else list(v) if isinstance(v, (list, tuple)) else [v]
        v = [int(e) for e in v] * (dims if len(v) == 1 else 1)
        return (v[0], v[1]) if dims == 2 else (height, v[0])

    kernel = tuple(weight_shape[2:]) if dims == 2 else (1, int(weight_shape[2]))
    return kernel, pair(stride, 1, 1), pair(padding, 0, 0), pair(dilation, 1, 1)


def _batch_norm(program: Program, node: fx.Node) -> tuple[str, str] | None:
    users = list(node.users)
    if len(users) != 1 or str(users[0].target) not in _BATCH_NORM:
        return None
    names = [_param(program, users[0].args[i]) for i in (3, 4)]
    return None if None in names else (names[0], names[1])


def _operands(node: fx.Node) -> tuple | None:
    """(input, weight, bias) nodes of a linear, conv or plain addmm node, else None."""
    target = str(node.target)
    if node.op != "call_function" or target not in _LINEAR | _CONV | _ADDMM:
        return None
    if target in _ADDMM:  # addmm(bias, x, weight); beta / alpha would scale the terms
        return None if node.kwargs else (node.args[1], node.args[2], node.args[0])
    return node.args[0], node.args[1], node.args[2] if len(node.args) > 2 else None


def _layer(program: Program, node: fx.Node, grouped: set) -> Layer | str | None:
    """The node's `Layer`, why it is left as rewritten, or None when it is not a layer."""
    operands = _operands(node)
    if operands is None:
        return None
    source, w_arg, b_arg = operands
    weight, bias = _param(program, w_arg), _param(program, b_arg)
    if weight is None or (bias is None and b_arg is not None):
        return None  # a product with an activation, or an addmm adding something else
    shared = [a for a in (w_arg, b_arg) if isinstance(a, fx.Node) and len(a.users) > 1]
    if shared or program.traced.aliases.get(weight) or program.traced.aliases.get(bias):
        return "its weight or bias is shared (read by another node, or tied)"
    conv = None
    if str(node.target) in _CONV:
        conv = _conv_geometry(node, program.states[0][weight].shape)
        if isinstance(conv, str):
            return conv
    out_axis = 1 if str(node.target) in _ADDMM else 0
    kind = "linear" if conv is None else "conv"
    return Layer(
        node.name,
        source.name,
        weight,
        bias,
        kind,
        conv,
        (weight, out_axis) in grouped,
        _batch_norm(program, node),
        out_axis,
    )


def find_layers(program: Program, nodes=None) -> tuple[list[Layer], dict[str, str]]:
    """(layers in graph order, {weight name: why it is left as rewritten}).

    A layer is a linear, addmm or conv1d/conv2d node whose weight is a parameter; nodes: only
    nodes in this set (a partial merge's trunk); a shared or tied weight or bias, a grouped
    convolution and string padding are left as rewritten. `out_grouped`: the weight's output
    axis carries a free group (hidden units; a model output is frozen).
    """
    free = {g.name for g in program.free_groups()}
    names, lay = program.space_names, program.axis_layouts
    grouped = {
        key for key in lay if any(names.get(s) in free for s in program.store.leaves(lay[key]))
    }
    layers, skipped = [], {}
    for node in program.traced.graph.nodes:
        if nodes is not None and node not in nodes:
            continue
        found = _layer(program, node, grouped)
        if isinstance(found, Layer):
            layers.append(found)
        elif found is not None:
            skipped[_param(program, _operands(node)[1])] = found
    return layers, skipped


def layer_inputs(layer: Layer, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as (samples, features) rows: a linear layer's input rows, or a
    convolution's unfolded patches (in the order of the flattened weight's columns)."""
    if layer.kind == "linear":
        return x.reshape(-1, x.shape[-1])
    kernel, stride, padding, dilation = layer.conv
    if x.dim() == 3:  # conv1d: a conv2d of height 1
        x = x.unsqueeze(2)
    cols = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def output_rows(layer: Layer, y: torch.Tensor) -> torch.Tensor:
    """The layer's output as float32 (samples, units) rows, in the order of `layer_inputs`."""
    if layer.kind == "linear":
        rows = y.reshape(-1, y.shape[-1])
    else:
        rows = y.reshape(y.shape[0], y.shape[1], -1).transpose(1, 2).reshape(-1, y.shape[1])
    return rows.to(torch.float32)


def merged_target(maps: AxisMaps, layer: Layer, rows: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each model's `output_rows` mapped into the merged units, divided so that their sum is the
    target (the matched average): M_iᵀ y_i, as `rewrite` maps the weights."""
    n = len(rows)
    out = []
    for i, r in enumerate(rows):
        merge = maps.merge((layer.weight, layer.out_axis), i)
        out.append(r / n if merge is None else apply_merge(r, 1, merge[0], merge[1]))
    return out


class LayerStats:
    """Streamed moments of one layer (see the module docstring)."""

    def __init__(self, n_models: int):
        self.n_models = n_models
        self.count = 0
        self.shift_x = self.shift_t = None
        self.sx = self.sxx = self.st = self.stx = None
        self.sy = self.syy = None

    def add(self, x: torch.Tensor, parts: list[torch.Tensor], ys: list[torch.Tensor]) -> None:
        """x: (samples, d) merged input rows; parts: `merged_target`'s rows (their sum is the
        target); ys: each model's own output rows (samples, units), float32."""
        t = sum(parts)
        x = x.to(torch.float32)
        if self.shift_x is None:
            self.shift_x, self.shift_t = x.mean(0), t.mean(0)
            d, u = x.shape[1], t.shape[1]
            self.sx, self.sxx = np.zeros(d), np.zeros((d, d))
            self.st, self.stx = np.zeros(u), np.zeros((u, d))
            self.sy = np.zeros((self.n_models, ys[0].shape[1]))
            self.syy = np.zeros_like(self.sy)
        xs, ts = x - self.shift_x, t - self.shift_t
        self.sx += xs.sum(0).double().numpy()
        self.sxx += (xs.T @ xs).double().numpy()
        self.st += ts.sum(0).double().numpy()
        self.stx += (ts.T @ xs).double().numpy()
        for i, y in enumerate(ys):
            self.sy[i] += y.sum(0).double().numpy()
            self.syy[i] += y.square().sum(0).double().numpy()
        self.count += x.shape[0]

    def input_moments(self, center: bool) -> tuple[np.ndarray, np.ndarray]:
        """(E[x], the covariance of x) when center, else (E[x], E[xxᵀ])."""
        n, c = self.count, self.shift_x.double().numpy()
        mean_s = self.sx / n
        cov = self.sxx / n - np.outer(mean_s, mean_s)
        mean = mean_s + c
        return mean, cov if center else cov + np.outer(mean, mean)

    def cross_moments(self, center: bool) -> tuple[np.ndarray, np.ndarray]:
        """(E[t], the cross-covariance of t and x) when center, else (E[t], E[txᵀ])."""
        n = self.count
        mean_xs, mean_ts = self.sx / n, self.st / n
        cov = self.stx / n - np.outer(mean_ts, mean_xs)
        mean_x = mean_xs + self.shift_x.double().numpy()
        mean_t = mean_ts + self.shift_t.double().numpy()
        return mean_t, cov if center else cov + np.outer(mean_t, mean_x)

    def unit_moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Per model and unit, (mean, std) of its own output: (n_models, units) each."""
        mean = self.sy / self.count
        var = np.maximum(self.syy / self.count - mean**2, 0.0)
        return mean, np.sqrt(var)
