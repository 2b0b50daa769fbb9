"""Normalization rules: batch / instance norm, layer / RMS norm, group norm, weight norm.

A norm's per-channel parameters and statistics share the channel axis they normalize; the
statistics outputs of the native variants are frozen unless they are plainly per channel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from graphmerge.layout import UNIT, Prod
from graphmerge.rules.dims import dim_index

if TYPE_CHECKING:
    from graphmerge.rule_context import RuleContext

__all__ = ["batch_norm", "group_norm", "layer_norm", "native_batch_norm", "weight_norm"]

_CHANNEL_PARAMS = ("weight", "bias", "running_mean", "running_var")


def _channel_norm(cx: RuleContext) -> tuple:
    """Unify each per-channel parameter with axis 1 of the input (axis 0 for 1-d input)."""
    x = cx.axes(0)
    ch = x[1] if len(x) > 1 else x[0]
    for name in _CHANNEL_PARAMS:
        if cx.is_tensor(name):
            cx.unify(cx.axes(name)[0], ch, f"{cx.op_name()} parameter")
    return x


def batch_norm(cx: RuleContext):
    """batch_norm / instance_norm: the output has the input's layouts."""
    return _channel_norm(cx)


def native_batch_norm(cx: RuleContext):
    """The native batch norms: the output, then per-channel statistics (or frozen ones)."""
    x = _channel_norm(cx)
    ch = x[1] if len(x) > 1 else x[0]
    outs = [x]
    for shp in cx.out_shapes()[1:]:
        outs.append(
            (ch,)
            if len(shp) == 1 and shp[0] == cx.store.size(ch)
            else tuple(cx.new(s, "aux", frozen="norm statistics") for s in shp)
        )
    return outs


def layer_norm(cx: RuleContext):
    """layer_norm / rms_norm and native forms: the parameters share the normalized trailing axes;
    statistics (native forms) keep the leading axes."""
    x = cx.axes(0)
    n = len(cx.arg("normalized_shape"))
    for name in ("weight", "bias"):
        if cx.is_tensor(name):
            for a, b in zip(cx.axes(name), x[-n:]):
                cx.unify(a, b, f"{cx.op_name()} parameter")
    shapes = cx.out_shapes()
    if len(shapes) == 1:
        return x
    stats = tuple(x[:-n]) + (UNIT,) * n
    return [x] + [
        stats
        if len(s) == len(stats)
        else tuple(cx.new(d, "aux", frozen="norm statistics") for d in s)
        for s in shapes[1:]
    ]


def group_norm(cx: RuleContext):
    """group_norm / native_group_norm: channels are (group, channel in group); the parameters
    are per channel. Only the native form returns (frozen) statistics."""
    x = cx.axes(0)
    groups = int(cx.arg("num_groups", "group"))
    channels = cx.shape(0)[1]
    if groups > 1:
        split = Prod((cx.new(groups, "groups"), cx.new(channels // groups, "group_dim")))
        cx.unify(x[1], split, "group_norm groups")
    for name in ("weight", "bias"):
        if cx.is_tensor(name):
            cx.unify(cx.axes(name)[0], x[1], "group_norm parameter")
    if len(cx.out_shapes()) == 1:
        return x
    return [x] + [
        tuple(cx.new(s, "aux", frozen="norm statistics") for s in shp)
        for shp in cx.out_shapes()[1:]
    ]


def weight_norm(cx: RuleContext):
    """w = g * v / ||v|| (norm over every axis but `dim`): permutations pass straight through."""
    v, g = cx.axes("v"), cx.axes("g")
    for i, lay in enumerate(g):
        if cx.shape("g")[i] != 1:
            cx.unify(lay, v[i], "weight_norm magnitude")
    if len(cx.out_shapes()) == 1:
        return v
    d = dim_index(cx.arg("dim", default=0), len(v))
    return [v, tuple(v[i] if i == d else UNIT for i in range(len(v)))]
