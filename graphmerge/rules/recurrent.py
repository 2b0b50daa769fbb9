"""Recurrent rules: LSTM, GRU and Elman RNN layers (`aten.lstm`, `aten.gru`, `aten.rnn_tanh`,
`aten.rnn_relu`, input and packed-data forms) and their single-step cells (`aten.lstm_cell`, ...).

The hidden units of each layer and direction are one space. The rows of `weight_ih`, `weight_hh`
and the biases are the gate blocks stacked (LSTM: i, f, g, o; GRU: r, z, n; RNN: one), each
indexed by that space, like a GLU's two halves. The columns of `weight_hh`, the hidden state and
the output's feature axis carry the layer's output space: the hidden space, or with
`proj_size` the projection space (the rows of `weight_hr`, whose columns read the hidden space;
the cell state stays in the hidden space). A bidirectional layer's output is the concatenation of
its two directions' spaces, which the next layer's `weight_ih` columns read.

The states have one slice per layer and direction along their first axis: the full-sequence ops
return them as a stacked layout (`Blk`/`Alt`), so that `h_n[-1]` gets the last layer's space and
an encoder's `h_n` handed to a decoder lines up layer by layer. An initial state that is a
constant fill (`torch.zeros`, what nn.LSTM makes when none is given) relates to nothing; another
plain one ties every layer's space to its last axis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from graphmerge.layout import UNIT, Alt, Blk, Cat, Layout

if TYPE_CHECKING:
    from torch import fx

    from graphmerge.rule_context import RuleContext

__all__ = ["GATES", "cell", "recurrent"]

# Gate blocks stacked in the rows of weight_ih / weight_hh / the biases, per op family.
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


@dataclass(frozen=True)
class _Layer:
    """One layer and direction: its parameters (fx nodes) and its spaces."""

    weights: tuple  # w_ih, w_hh, (b_ih, b_hh), (w_hr)
    hidden: Layout  # the cell's units: gate blocks, cell state
    out: Layout  # what it emits: the hidden space, or the projection space


def _gate_rows(hidden: Layout, gates: int) -> Layout:
    return Cat((hidden,) * gates) if gates > 1 else hidden


def _wire(cx: RuleContext, params: list, gates: int, has_biases: bool, proj: bool, where: str):
    """Relate one layer-direction's parameters to new spaces; returns the `_Layer`."""
    w_ih, w_hh = params[0], params[1]
    biases = params[2:4] if has_biases else []
    w_hr = params[-1] if proj else None
    hidden = cx.new(cx.shape_of(w_ih)[0] // gates, f"{where}.hidden")
    out = cx.new(cx.shape_of(w_hr)[0], f"{where}.proj") if proj else hidden
    rows = _gate_rows(hidden, gates)
    for p in (w_ih, w_hh, *biases):
        cx.unify(cx.axes_of(p)[0], rows, f"{cx.op_name()} gate rows")
    cx.unify(cx.axes_of(w_hh)[1], out, f"{cx.op_name()} recurrent columns")
    cx.consume(w_hh, 1)
    if w_hr is not None:
        cx.unify(cx.axes_of(w_hr)[0], out, "lstm projection rows")
        cx.unify(cx.axes_of(w_hr)[1], hidden, "lstm projection columns")
        cx.consume(w_hr, 1)
    return _Layer(tuple(params), hidden, out)


def _layers(cx: RuleContext, gates: int) -> list[_Layer]:
    """Every layer-direction of a full-sequence op, in the flat-weights order."""
    params = list(cx.arg("params"))
    has_biases = bool(cx.arg("has_biases"))
    n = int(cx.arg("num_layers")) * (2 if cx.arg("bidirectional") else 1)
    per = len(params) // n
    proj = per == (5 if has_biases else 3)
    return [
        _wire(cx, params[i * per : (i + 1) * per], gates, has_biases, proj, f"{cx.node.name}.{i}")
        for i in range(n)
    ]


def _state_input(cx: RuleContext, node: fx.Node, spaces: list[Layout], batch: Layout | None):
    """An initial state (layers x directions, batch, units) against each slice's space."""
    if cx.is_uniform(node):
        return
    lays = cx.axes_of(node)
    if isinstance(lays[0], Blk) and lays[0].size == len(spaces):
        key = lays[0].key
        per = [[_option(lay, key, i) for lay in lays[1:]] for i in range(len(spaces))]
    else:
        plain = cx.collapse(lays)
        cx.freeze(plain[0], f"layer/direction index of a recurrent state ({cx.where()})")
        per = [list(plain[1:]) for _ in spaces]
    for (b, units), space in zip(per, spaces):
        b, units = cx.collapse((b, units))
        cx.unify(units, space, f"{cx.op_name()} initial state")
        if batch is not None:
            cx.unify(b, batch, f"{cx.op_name()} state batch")


def _option(lay: Layout, key: int, i: int) -> Layout:
    return lay.options[i] if isinstance(lay, Alt) and lay.key == key else lay


def _state_output(cx: RuleContext, spaces: list[Layout], batch: Layout) -> tuple:
    """Final-state layouts: one slice per layer-direction, stacked when there are several."""
    if len(spaces) == 1:
        return (UNIT, batch, spaces[0])
    key = cx.store.new_key()
    return (Blk(key, len(spaces)), batch, Alt(key, tuple(spaces)))


def recurrent(cx: RuleContext):
    """lstm / gru / rnn_tanh / rnn_relu over a whole sequence: output, final state(s)."""
    gates = GATES[cx.op_name()]
    layers = _layers(cx, gates)
    dirs = 2 if cx.arg("bidirectional") else 1
    packed = cx.arg("batch_sizes") is not None
    x = cx.collapse(cx.axes(0))
    b_axis = None if packed else (0 if cx.arg("batch_first") else 1)
    feature = x[-1]
    cx.contract_node(cx.args[0], 0, len(x) - 1)
    for k in range(0, len(layers), dirs):
        for layer in layers[k : k + dirs]:
            w_ih = layer.weights[0]
            cx.unify(cx.axes_of(w_ih)[1], feature, f"{cx.op_name()} input columns")
            cx.consume(w_ih, 1)
        outs = [layer.out for layer in layers[k : k + dirs]]
        feature = outs[0] if dirs == 1 else Cat(tuple(outs))
    hx = cx.arg("hx")
    states = list(hx) if isinstance(hx, (list, tuple)) else [hx]
    batch = x[b_axis] if b_axis is not None else None
    _state_input(cx, states[0], [layer.out for layer in layers], batch)
    if len(states) > 1:
        _state_input(cx, states[1], [layer.hidden for layer in layers], batch)
    output = tuple(x[:-1]) + (feature,)
    if batch is None:
        batch = cx.collapse(cx.axes_of(states[0]))[1]
    finals = [_state_output(cx, [layer.out for layer in layers], batch)]
    if len(cx.out_shapes()) > 2:
        finals.append(_state_output(cx, [layer.hidden for layer in layers], batch))
    return [output, *finals]


def cell(cx: RuleContext):
    """lstm_cell / gru_cell / rnn_tanh_cell / rnn_relu_cell: one step, (batch, units) states."""
    gates = GATES[cx.op_name().removesuffix("_cell")]
    layer = _wire(cx, [cx.args[2], cx.args[3]], gates, False, False, cx.node.name)
    for b in (cx.arg(n) for n in ("b_ih", "b_hh") if cx.is_tensor(n)):
        cx.unify(cx.axes_of(b)[0], _gate_rows(layer.hidden, gates), f"{cx.op_name()} bias")
    cx.contract(0, -1, 2, 1)
    x = cx.axes(0)
    hx = cx.arg("hx")
    for state in list(hx) if isinstance(hx, (list, tuple)) else [hx]:
        if cx.is_uniform(state):
            continue
        lays = cx.axes_of(state)
        cx.unify(lays[-1], layer.hidden, f"{cx.op_name()} state")
        for a, b in zip(lays[:-1], x[:-1]):
            cx.unify(a, b, f"{cx.op_name()} state batch")
    out = tuple(x[:-1]) + (layer.hidden,)
    return [out, out] if len(cx.out_shapes()) > 1 else out
