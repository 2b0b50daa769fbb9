"""The rule table: how each ATen op maps the axis layouts of its inputs to those of its outputs.

A rule is a function `rule(cx) -> output layouts` registered for one or more ops. It may unify
layouts (`cx.unify`: elementwise alignment, norms, residual adds), declare contractions
(`cx.contract`: the axis is summed against a weight, which makes the weight axis a consumer and the
activation a capture site), and freeze what it cannot follow (`cx.freeze`). Rules marked
`structural` see stacked layouts (`Blk`/`Alt`) unresolved; every other rule sees them collapsed.

An op with no entry freezes every axis it touches (see passes/annotate_axes.py).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass

import torch

from graphmerge.layout import UNIT, Alt, Blk, Cat, Layout, Prod

__all__ = ["RULES", "RULES_BY_NAME", "Rule", "rule_for"]

aten = torch.ops.aten


@dataclass(frozen=True)
class Rule:
    fn: Callable
    structural: bool = False


RULES: dict[object, Rule] = {}
RULES_BY_NAME: dict[str, Rule] = {}


def _register(*ops, structural: bool = False):
    def deco(fn):
        for op in ops:
            if op is not None:
                RULES[op] = Rule(fn, structural)
        return fn

    return deco


def _op(name: str):
    return getattr(aten, name, None)


def rule_for(target) -> Rule | None:
    if target in RULES:
        return RULES[target]
    packet = getattr(target, "overloadpacket", None)
    if packet in RULES:
        return RULES[packet]
    ns = getattr(target, "namespace", None)
    name = getattr(packet, "__name__", "").split(".")[-1]
    return RULES_BY_NAME.get(f"{ns}.{name}") if ns else None


def _dim(d: int, rank: int) -> int:
    return d + rank if d < 0 else d


# -- elementwise ------------------------------------------------------------------------------
_UNARY = [
    "relu",
    "relu_",
    "gelu",
    "gelu_",
    "silu",
    "silu_",
    "sigmoid",
    "sigmoid_",
    "tanh",
    "tanh_",
    "hardtanh",
    "hardtanh_",
    "relu6",
    "elu",
    "elu_",
    "leaky_relu",
    "leaky_relu_",
    "hardswish",
    "hardswish_",
    "hardsigmoid",
    "hardsigmoid_",
    "mish",
    "softplus",
    "selu",
    "celu",
    "neg",
    "exp",
    "log",
    "log1p",
    "expm1",
    "sqrt",
    "rsqrt",
    "abs",
    "erf",
    "sin",
    "cos",
    "tan",
    "reciprocal",
    "square",
    "sign",
    "floor",
    "ceil",
    "round",
    "trunc",
    "logical_not",
    "isnan",
    "isinf",
    "nan_to_num",
    "dropout",
    "alpha_dropout",
    "feature_dropout",
    "feature_alpha_dropout",
    "dropout_",
    "feature_dropout_",
    "alpha_dropout_",
    "feature_alpha_dropout_",
    "clone",
    "contiguous",
    "detach",
    "detach_",
    "alias",
    "lift_fresh_copy",
    "_to_copy",
    "to",
    "type_as",
    "clamp",
    "clamp_",
    "clamp_min",
    "clamp_max",
    "softmax",
    "_softmax",
    "log_softmax",
    "_log_softmax",
    "special_erf",
    "_safe_softmax",
    "logit",
    "sinh",
    "cosh",
    "asin",
    "acos",
    "atan",
    "bitwise_not",
    "frac",
    "positive",
]
_BINARY = [
    "add",
    "add_",
    "sub",
    "sub_",
    "mul",
    "mul_",
    "div",
    "div_",
    "rsub",
    "maximum",
    "minimum",
    "where",
    "masked_fill",
    "masked_fill_",
    "pow",
    "eq",
    "ne",
    "lt",
    "gt",
    "le",
    "ge",
    "logical_and",
    "logical_or",
    "logical_xor",
    "addcmul",
    "addcdiv",
    "lerp",
    "fmod",
    "remainder",
    "atan2",
    "floor_divide",
    "bitwise_and",
    "bitwise_or",
    "bitwise_xor",
    "copysign",
    "hypot",
    "xlogy",
    "fmax",
    "fmin",
    "true_divide",
    "__and__",
    "__or__",
    "__xor__",
    "__iand__",
    "__ior__",
]

_STRUCTURAL_UNARY = {
    "clone",
    "contiguous",
    "detach",
    "detach_",
    "alias",
    "lift_fresh_copy",
    "_to_copy",
    "to",
    "type_as",
    "dropout",
    "dropout_",
}


def _unary(cx):
    return cx.axes(0)


for _name in _UNARY:
    _register(_op(_name), structural=_name in _STRUCTURAL_UNARY)(_unary)


def broadcast(cx, layouts: list[tuple], out_shape) -> tuple:
    """Align layouts from the right; every non-1 axis of the same output position unifies."""
    rank = len(out_shape)
    out = []
    for pos in range(rank):
        size = out_shape[pos]
        if size == 1:
            out.append(UNIT)
            continue
        found: Layout | None = None
        for lays in layouts:
            k = pos - (rank - len(lays))
            if k < 0 or cx.store.size(lays[k]) != size:
                continue
            if found is None:
                found = lays[k]
            else:
                cx.unify(found, lays[k], "broadcast")
        out.append(found if found is not None else cx.new(size, "broadcast"))
    return tuple(out)


def _binary(cx):
    lays = [cx.axes(i) for i in range(len(cx.args)) if cx.is_tensor(i)]
    return broadcast(cx, lays, cx.out_shape())


for _name in _BINARY:
    _register(_op(_name))(_binary)


# -- creation ---------------------------------------------------------------------------------
def _uniform_new(cx):
    """Tensors whose values are the same along every axis: any permutation keeps them."""
    return tuple(cx.new(s, "uniform") for s in cx.out_shape())


def _varying_new(cx):
    name = cx.op_name()
    return tuple(
        cx.new(s, "constant", frozen=f"{name} values vary along the axis ({cx.where()})")
        for s in cx.out_shape()
    )


for _name in [
    "zeros",
    "ones",
    "full",
    "empty",
    "zeros_like",
    "ones_like",
    "full_like",
    "empty_like",
    "new_zeros",
    "new_ones",
    "new_full",
    "new_empty",
    "scalar_tensor",
    "empty_strided",
    "new_empty_strided",
    "fill",
    "zero",
]:
    _register(_op(_name))(_uniform_new)
for _name in [
    "arange",
    "linspace",
    "logspace",
    "randn",
    "rand",
    "randint",
    "randn_like",
    "rand_like",
    "randint_like",
    "eye",
    "tensor",
    "randperm",
    "normal",
    "bernoulli",
]:
    _register(_op(_name))(_varying_new)


@_register(
    _op("_assert_tensor_metadata"),
    _op("_assert_scalar"),
    _op("sym_constrain_range"),
    _op("sym_constrain_range_for_size"),
    _op("_assert_async"),
    _op("sym_size"),
    _op("sym_numel"),
    _op("sym_stride"),
    _op("_check_is_size"),
)
def _no_tensor(cx):
    return None


@_register(_op("item"), _op("_local_scalar_dense"))
def _item(cx):
    cx.freeze(cx.axes(0), f"value read by .item() ({cx.where()})")


# -- contractions -----------------------------------------------------------------------------
@_register(aten.linear)
def _linear(cx):
    x, w = cx.axes(0), cx.axes(1)
    cx.contract(0, -1, 1, 1)
    if cx.is_tensor(2):
        cx.unify(cx.axes(2)[0], w[0], "linear bias")
    return tuple(x[:-1]) + (w[0],)


def _matmul_core(cx, a: tuple, b: tuple, ia: int, ib: int, out_shape) -> tuple:
    a1, b1 = len(a) == 1, len(b) == 1
    a2 = (UNIT,) + a if a1 else a
    b2 = b + (UNIT,) if b1 else b
    cx.contract(ia, -1, ib, 0 if b1 else -2)
    batch_rank = max(len(a2), len(b2)) - 2
    batch_shape = tuple(out_shape[:batch_rank])
    batch = broadcast(cx, [a2[:-2], b2[:-2]], batch_shape) if batch_rank else ()
    out = batch + ((a2[-2],) if not a1 else ()) + ((b2[-1],) if not b1 else ())
    return out


@_register(aten.matmul, aten.mm, aten.bmm, _op("dot"), _op("mv"), _op("vdot"))
def _matmul(cx):
    return _matmul_core(cx, cx.axes(0), cx.axes(1), 0, 1, cx.out_shape())


@_register(aten.addmm, _op("baddbmm"), _op("addmv"), _op("addbmm"))
def _addmm(cx):
    prod = _matmul_core(cx, cx.axes(1), cx.axes(2), 1, 2, cx.out_shape())
    return broadcast(cx, [prod, cx.axes(0)], cx.out_shape())


@_register(_op("einsum"))
def _einsum(cx):
    eq = cx.args[0].replace(" ", "")
    operands = cx.args[1]
    lhs, _, rhs = eq.partition("->")
    terms = lhs.split(",")
    if "..." in eq or len(terms) != len(operands):
        return None  # unsupported: caller freezes
    if not rhs:
        letters = sorted({c for t in terms for c in t})
        rhs = "".join(c for c in letters if sum(t.count(c) for t in terms) == 1)
    by_letter: dict[str, Layout] = {}
    for i, (term, node) in enumerate(zip(terms, operands)):
        lays = cx.axes_of(node)
        for j, c in enumerate(term):
            if cx.store.size(lays[j]) == 1:
                continue
            if c not in rhs:
                cx.contract_node(node, i + 1, j)
            if c in by_letter:
                cx.unify(by_letter[c], lays[j], "einsum")
            else:
                by_letter[c] = lays[j]
    return tuple(by_letter.get(c, UNIT) for c in rhs)


_register(_op("einsum"))(_einsum)


@_register(aten.scaled_dot_product_attention, _op("_scaled_dot_product_flash_attention_for_cpu"))
def _sdpa(cx):
    q, k, v = cx.axes(0), cx.axes(1), cx.axes(2)
    qs, ks = cx.shape(0), cx.shape(1)
    if len(qs) >= 3 and len(ks) >= 3 and qs[-3] != ks[-3] and ks[-3] > 1 and qs[-3] % ks[-3] == 0:
        rep = cx.new(qs[-3] // ks[-3], "kv_rep")  # grouped-query attention (enable_gqa)
        k = k[:-3] + (Prod((k[-3], rep)),) + k[-2:]
        v = v[:-3] + (Prod((v[-3], rep)),) + v[-2:]
    cx.contract(0, -1, 1, -1)
    cx.unify(k[-2], v[-2], "attention keys/values")
    batch_shape = tuple(cx.out_shape()[:-2])
    batch = broadcast(cx, [q[:-2], k[:-2], v[:-2]], batch_shape)
    mask = cx.kwarg_or_arg("attn_mask", 3)
    if isinstance(mask, torch.fx.Node):
        full = batch + (q[-2], k[-2])
        broadcast(cx, [full, cx.axes_of(mask)], tuple(batch_shape) + (qs[-2], ks[-2]))
    out = batch + (q[-2], v[-1])
    n_out = len(cx.out_shapes())
    if n_out > 1:  # variants that also return logsumexp etc.
        return [out] + [
            tuple(cx.new(s, "aux", frozen="attention auxiliary output") for s in shp)
            for shp in cx.out_shapes()[1:]
        ]
    return out


# -- convolution ------------------------------------------------------------------------------
def _conv(cx, transposed: bool, groups: int):
    x, w = cx.axes(0), cx.axes(1)
    nspatial = len(cx.shape(1)) - 2
    lead = len(x) - nspatial - 1
    w_in, w_out = (0, 1) if transposed else (1, 0)
    for d in range(lead + 1, len(x)):
        cx.freeze(x[d], f"spatial axis of {cx.op_name()} ({cx.where()})")
    for d in range(2, len(w)):
        cx.freeze(w[d], "convolution kernel axis")
    if groups == 1:
        cx.contract(0, lead, 1, w_in)
        out_ch = w[w_out]
    else:
        g = cx.new(groups, "conv_groups")
        cin_g = w[w_in] if not transposed else cx.new(cx.shape(1)[0] // groups, "conv_in")
        if transposed:
            cx.unify(w[w_in], Prod((g, cin_g)), "grouped transposed conv")
        cx.unify(x[lead], Prod((g, cin_g)), "grouped conv input")
        cx.contract_node(cx.args[0], 0, lead)
        cx.contract_node(cx.args[1], 1, w_in)
        out_size = cx.out_shape()[lead]
        if transposed:
            out_ch = Prod((g, w[w_out]))
        else:
            out_ch = Prod((g, cx.new(out_size // groups, "conv_out")))
            cx.unify(w[w_out], out_ch, "grouped conv output")
    if cx.is_tensor(2):
        cx.unify(cx.axes(2)[0], out_ch, "conv bias")
    spatial = tuple(
        cx.new(s, "spatial", frozen=f"spatial axis of {cx.op_name()}")
        for s in cx.out_shape()[lead + 1 :]
    )
    return tuple(x[:lead]) + (out_ch,) + spatial


@_register(aten.conv1d, aten.conv2d, aten.conv3d)
def _conv_nd(cx):
    return _conv(cx, False, int(cx.arg_or(6, 1)))


@_register(_op("conv_transpose1d"), _op("conv_transpose2d"), _op("conv_transpose3d"))
def _conv_t(cx):
    return _conv(cx, True, int(cx.arg_or(6, 1)))


@_register(aten.convolution, _op("_convolution"))
def _convolution(cx):
    return _conv(cx, bool(cx.args[6]), int(cx.args[8]))


# -- normalization ----------------------------------------------------------------------------
def _channel_norm(cx, params: list[int]):
    x = cx.axes(0)
    ch = x[1] if len(x) > 1 else x[0]
    for i in params:
        if cx.is_tensor(i):
            cx.unify(cx.axes(i)[0], ch, f"{cx.op_name()} parameter")
    return x


@_register(aten.batch_norm, _op("instance_norm"))
def _batch_norm(cx):
    return _channel_norm(cx, [1, 2, 3, 4])


@_register(
    _op("_native_batch_norm_legit_no_training"),
    _op("_native_batch_norm_legit"),
    _op("_native_batch_norm_legit_functional"),
    _op("native_batch_norm"),
    _op("cudnn_batch_norm"),
)
def _native_batch_norm(cx):
    x = _channel_norm(cx, [1, 2, 3, 4])
    ch = x[1] if len(x) > 1 else x[0]
    outs = [x]
    for shp in cx.out_shapes()[1:]:
        outs.append(
            (ch,)
            if len(shp) == 1 and shp[0] == cx.store.size(ch)
            else tuple(cx.new(s, "aux", frozen="norm statistics") for s in shp)
        )
    return outs


@_register(aten.layer_norm, _op("rms_norm"), _op("native_layer_norm"), _op("_fused_rms_norm"))
def _layer_norm(cx):
    x = cx.axes(0)
    n = len(cx.args[1])
    for i in (2, 3):
        if cx.is_tensor(i):
            w = cx.axes(i)
            for a, b in zip(w, x[-n:]):
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


@_register(aten.group_norm, _op("native_group_norm"))
def _group_norm(cx):
    x = cx.axes(0)
    native = cx.op_name() == "native_group_norm"
    groups = int(cx.args[6] if native else cx.args[1])
    channels = cx.shape(0)[1]
    if groups > 1:
        split = Prod((cx.new(groups, "groups"), cx.new(channels // groups, "group_dim")))
        cx.unify(x[1], split, "group_norm groups")
    for i in (1, 2) if native else (2, 3):
        if cx.is_tensor(i):
            cx.unify(cx.axes(i)[0], x[1], "group_norm parameter")
    if not native:
        return x
    return [x] + [
        tuple(cx.new(s, "aux", frozen="norm statistics") for s in shp)
        for shp in cx.out_shapes()[1:]
    ]


@_register(aten.embedding)
def _embedding(cx):
    w = cx.axes(0)
    cx.freeze(w[0], f"embedding rows indexed by token ids ({cx.where()})")
    return tuple(cx.axes(1)) + (w[1],)


# -- reductions -------------------------------------------------------------------------------
def _reduce_dims(cx, dims, keepdim: bool, rank: int) -> list[int]:
    if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        return list(range(rank))
    if isinstance(dims, int):
        dims = [dims]
    return sorted({_dim(d, rank) for d in dims})


def _reduced(x: tuple, dims: list[int], keepdim: bool) -> tuple:
    out = []
    for i, lay in enumerate(x):
        if i in dims:
            if keepdim:
                out.append(UNIT)
        else:
            out.append(lay)
    return tuple(out)


@_register(
    aten.sum,
    aten.mean,
    aten.amax,
    aten.amin,
    _op("prod"),
    _op("any"),
    _op("all"),
    _op("logsumexp"),
    _op("nansum"),
    _op("nanmean"),
    _op("count_nonzero"),
)
def _reduce(cx):
    x = cx.axes(0)
    dims = cx.args[1] if len(cx.args) > 1 and not isinstance(cx.args[1], torch.dtype) else None
    keep = bool(cx.kwarg_or_arg("keepdim", 2) or False)
    if cx.op_name() in ("prod", "any", "all") and len(cx.args) > 1:
        keep = bool(cx.kwarg_or_arg("keepdim", 2) or False)
    rank = len(x)
    d = _reduce_dims(cx, dims, keep, rank)
    out = _reduced(x, d, keep)
    if len(cx.out_shape()) != len(out):
        out = _reduced(x, d, not keep)
    return out


@_register(_op("var"), _op("std"), _op("var_mean"), _op("std_mean"))
def _var(cx):
    x = cx.axes(0)
    dims = cx.kwarg_or_arg("dim", 1)
    keep = bool(cx.kwarg_or_arg("keepdim", 3) or False)
    d = _reduce_dims(cx, dims, keep, len(x))
    out = _reduced(x, d, keep)
    if len(cx.out_shapes()) > 1:
        return [out for _ in cx.out_shapes()]
    return out


@_register(_op("linalg_vector_norm"), _op("norm"))
def _norm(cx):
    x = cx.axes(0)
    dims = cx.kwarg_or_arg("dim", 2)
    keep = bool(cx.kwarg_or_arg("keepdim", 3) or False)
    d = _reduce_dims(cx, dims, keep, len(x))
    out = _reduced(x, d, keep)
    if len(out) != len(cx.out_shape()):
        out = _reduced(x, d, not keep)
    return out


@_register(
    _op("max"),
    _op("min"),
    _op("argmax"),
    _op("argmin"),
    _op("sort"),
    _op("topk"),
    _op("argsort"),
    _op("kthvalue"),
    _op("median"),
    _op("mode"),
)
def _index_reduce(cx):
    """Reductions whose result carries indices (or order) along the reduced axis: it is pinned."""
    x = cx.axes(0)
    name = cx.op_name()
    shapes = cx.out_shapes()
    if name in ("max", "min") and len(cx.args) == 1:
        return tuple(cx.new(s, "scalar") for s in cx.out_shape())
    if name in ("max", "min") and len(cx.args) > 1 and cx.is_tensor(1):
        return broadcast(cx, [x, cx.axes(1)], cx.out_shape())
    dim = cx.args[1] if len(cx.args) > 1 and isinstance(cx.args[1], int) else None
    if name == "topk":
        dim = cx.kwarg_or_arg("dim", 2)
    if name in ("sort", "argsort"):
        dim = cx.kwarg_or_arg("dim", 1)
        dim = -1 if dim is None else dim
    if dim is None:
        cx.freeze_all(x, f"{name} over all axes ({cx.where()})")
        return (
            [tuple(cx.new(s, "idx", frozen=name) for s in shp) for shp in shapes]
            if len(shapes) > 1
            else tuple(cx.new(s, "idx", frozen=name) for s in shapes[0])
        )
    d = _dim(dim, len(x))
    cx.freeze(x[d], f"{name} returns positions along this axis ({cx.where()})")
    outs = []
    for shp in shapes:
        if len(shp) == len(x):
            outs.append(
                tuple(x[i] if i != d else cx.new(shp[d], "idx", frozen=name) for i in range(len(x)))
            )
        else:
            outs.append(tuple(x[i] for i in range(len(x)) if i != d))
    return outs if len(shapes) > 1 else outs[0]


# -- pooling and resampling -------------------------------------------------------------------
def _spatial_op(nspatial: int):
    def rule(cx):
        x = cx.axes(0)
        for d in range(len(x) - nspatial, len(x)):
            cx.freeze(x[d], f"spatial axis of {cx.op_name()}")
        outs = []
        for shp in cx.out_shapes():
            keep = tuple(x[: len(x) - nspatial])
            outs.append(
                keep
                + tuple(
                    cx.new(s, "spatial", frozen=f"spatial axis of {cx.op_name()}")
                    for s in shp[len(keep) :]
                )
            )
        return outs if len(outs) > 1 else outs[0]

    return rule


for _names, _k in [
    (
        [
            "max_pool1d",
            "avg_pool1d",
            "adaptive_avg_pool1d",
            "adaptive_max_pool1d",
            "max_pool1d_with_indices",
            "upsample_nearest1d",
            "upsample_linear1d",
            "reflection_pad1d",
            "replication_pad1d",
        ],
        1,
    ),
    (
        [
            "max_pool2d",
            "avg_pool2d",
            "adaptive_avg_pool2d",
            "adaptive_max_pool2d",
            "max_pool2d_with_indices",
            "_adaptive_avg_pool2d",
            "upsample_nearest2d",
            "upsample_bilinear2d",
            "upsample_bicubic2d",
            "_upsample_nearest_exact2d",
            "_upsample_bilinear2d_aa",
            "reflection_pad2d",
            "replication_pad2d",
        ],
        2,
    ),
    (
        [
            "max_pool3d",
            "avg_pool3d",
            "adaptive_avg_pool3d",
            "adaptive_max_pool3d",
            "max_pool3d_with_indices",
            "upsample_nearest3d",
            "upsample_trilinear3d",
        ],
        3,
    ),
]:
    for _name in _names:
        _register(_op(_name))(_spatial_op(_k))


@_register(_op("constant_pad_nd"), _op("pad"))
def _pad(cx):
    x = cx.axes(0)
    pads = list(cx.args[1])
    out_shape = cx.out_shape()
    out = list(x)
    for i in range(len(pads) // 2):
        d = len(x) - 1 - i
        if pads[2 * i] or pads[2 * i + 1]:
            cx.freeze(x[d], f"padded axis ({cx.where()})")
            out[d] = cx.new(out_shape[d], "padded", frozen="padded axis")
    return tuple(out)


@_register(_op("triu"), _op("tril"))
def _tri(cx):
    x = cx.axes(0)
    for d in (-1, -2):
        cx.freeze(x[d], f"{cx.op_name()} mask depends on position ({cx.where()})")
    return x


@_register(_op("flip"), _op("roll"))
def _positional(cx):
    x = cx.axes(0)
    dims = cx.args[1] if cx.op_name() == "flip" else cx.kwarg_or_arg("dims", 2)
    if dims is None or dims == []:
        cx.freeze_all(x, f"{cx.op_name()} over all axes")
        return tuple(cx.new(s, "pinned", frozen=cx.op_name()) for s in cx.out_shape())
    for d in [dims] if isinstance(dims, int) else dims:
        cx.freeze(x[_dim(d, len(x))], f"{cx.op_name()} moves positions along the axis")
    return x


# -- shape and layout ops ---------------------------------------------------------------------
@_register(aten.permute, structural=True)
def _permute(cx):
    x = cx.axes(0)
    return tuple(x[_dim(d, len(x))] for d in cx.args[1])


@_register(aten.transpose, _op("swapaxes"), _op("swapdims"), structural=True)
def _transpose(cx):
    x = list(cx.axes(0))
    a, b = _dim(cx.args[1], len(x)), _dim(cx.args[2], len(x))
    x[a], x[b] = x[b], x[a]
    return tuple(x)


@_register(aten.t, _op("numpy_T"), _op("mT"), _op("adjoint"), structural=True)
def _t(cx):
    x = list(cx.axes(0))
    if len(x) >= 2:
        x[-1], x[-2] = x[-2], x[-1]
    return tuple(x)


@_register(_op("movedim"), structural=True)
def _movedim(cx):
    x = list(cx.axes(0))
    src, dst = cx.args[1], cx.args[2]
    src = [src] if isinstance(src, int) else list(src)
    dst = [dst] if isinstance(dst, int) else list(dst)
    order = [None] * len(x)
    for s, d in zip(src, dst):
        order[_dim(d, len(x))] = _dim(s, len(x))
    rest = iter(i for i in range(len(x)) if i not in [_dim(s, len(x)) for s in src])
    return tuple(x[o if o is not None else next(rest)] for o in order)


@_register(aten.unsqueeze, structural=True)
def _unsqueeze(cx):
    x = list(cx.axes(0))
    d = _dim(cx.args[1], len(x) + 1)
    return tuple(x[:d] + [UNIT] + x[d:])


@_register(aten.squeeze, structural=True)
def _squeeze(cx):
    x = cx.axes(0)
    shape = cx.shape(0)
    dims = cx.args[1] if len(cx.args) > 1 else None
    if dims is None:
        drop = {i for i, s in enumerate(shape) if s == 1}
    else:
        drop = {
            _dim(d, len(x))
            for d in ([dims] if isinstance(dims, int) else dims)
            if shape[_dim(d, len(x))] == 1
        }
    return tuple(lay for i, lay in enumerate(x) if i not in drop)


@_register(aten.expand, _op("expand_as"), _op("broadcast_to"), structural=True)
def _expand(cx):
    x = cx.axes(0)
    out_shape = cx.out_shape()
    lead = len(out_shape) - len(x)
    out = [cx.new(s, "expanded") for s in out_shape[:lead]]
    for i, lay in enumerate(x):
        size = out_shape[lead + i]
        out.append(lay if cx.shape(0)[i] == size else cx.new(size, "expanded"))
    return tuple(out)


@_register(_op("repeat"))
def _repeat(cx):
    x = cx.axes(0)
    reps = list(cx.args[1])
    lead = len(reps) - len(x)
    out = [cx.new(r, "repeated") for r in reps[:lead]]
    for i, lay in enumerate(x):
        r = reps[lead + i]
        out.append(lay if r == 1 else Prod((cx.new(r, "repeated"), lay)))
    return tuple(out)


@_register(_op("repeat_interleave"))
def _repeat_interleave(cx):
    if not cx.is_tensor(0) or not isinstance(cx.args[1], int):
        return None
    x = list(cx.axes(0))
    dim = cx.kwarg_or_arg("dim", 2)
    if dim is None:
        return None
    d = _dim(dim, len(x))
    x[d] = Prod((x[d], cx.new(cx.args[1], "repeated")))
    return tuple(x)


@_register(aten.cat, _op("concat"), _op("concatenate"))
def _cat(cx):
    tensors = [t for t in cx.args[0]]
    dim = cx.kwarg_or_arg("dim", 1) or 0
    rank = len(cx.out_shape())
    d = _dim(dim, rank)
    kept = [t for t in tensors if cx.shape_of(t) != (0,) and cx.shape_of(t)[d] != 0]
    lays = [cx.axes_of(t) for t in (kept or tensors[:1])]
    out = list(lays[0])
    for other in lays[1:]:
        for i in range(rank):
            if i != d:
                cx.unify(out[i], other[i], "cat")
    out[d] = lays[0][d] if len(lays) == 1 else Cat(tuple(lay[d] for lay in lays))
    return tuple(out)


@_register(aten.stack, structural=True)
def _stack(cx):
    tensors = list(cx.args[0])
    dim = cx.kwarg_or_arg("dim", 1) or 0
    lays = [cx.collapse(cx.axes_of(t)) for t in tensors]
    rank = len(cx.out_shape())
    d = _dim(dim, rank)
    key = cx.store.new_key()
    out = []
    for i in range(len(lays[0])):
        opts = tuple(lay[i] for lay in lays)
        out.append(opts[0] if all(o == opts[0] for o in opts) else Alt(key, opts))
    return tuple(out[:d]) + (Blk(key, len(tensors)),) + tuple(out[d:])


@_register(aten.select, structural=True)
def _select(cx):
    x = cx.axes(0)
    d = _dim(cx.args[1], len(x))
    idx = cx.args[2]
    if isinstance(x[d], Blk):
        key = x[d].key
        idx = _dim(idx, x[d].size)
        return tuple(_pick(lay, key, idx) for i, lay in enumerate(x) if i != d)
    x = cx.collapse(x)
    cx.freeze(x[d], f"constant index on this axis ({cx.where()})")
    return tuple(lay for i, lay in enumerate(x) if i != d)


def _pick(lay, key: int, idx: int):
    if isinstance(lay, Alt) and lay.key == key:
        return lay.options[idx]
    return lay


@_register(aten.unbind, structural=True)
def _unbind(cx):
    x = cx.axes(0)
    d = _dim(cx.kwarg_or_arg("dim", 1) or 0, len(x))
    n = cx.shape(0)[d]
    if isinstance(x[d], Blk):
        key = x[d].key
        return [tuple(_pick(lay, key, i) for j, lay in enumerate(x) if j != d) for i in range(n)]
    x = cx.collapse(x)
    cx.freeze(x[d], f"unbind along this axis ({cx.where()})")
    return [tuple(lay for j, lay in enumerate(x) if j != d) for _ in range(n)]


@_register(aten.slice)
def _slice(cx):
    x = list(cx.axes(0))
    d = _dim(cx.kwarg_or_arg("dim", 1) or 0, len(x))
    size = cx.shape(0)[d]
    start = cx.kwarg_or_arg("start", 2)
    end = cx.kwarg_or_arg("end", 3)
    step = cx.kwarg_or_arg("step", 4) or 1
    start = 0 if start is None else (start + size if start < 0 else min(start, size))
    end = size if end is None else (end + size if end < 0 else min(end, size))
    if step != 1:
        cx.freeze(x[d], f"strided slice ({cx.where()})")
        x[d] = cx.new(cx.out_shape()[d], "pinned", frozen="strided slice")
    else:
        x[d] = cx.store.cut(x[d], start, end, f"slice ({cx.where()})")
    return tuple(x)


@_register(_op("narrow"))
def _narrow(cx):
    x = list(cx.axes(0))
    d = _dim(cx.args[1], len(x))
    start, length = cx.args[2], cx.args[3]
    x[d] = cx.store.cut(x[d], start, start + length, f"narrow ({cx.where()})")
    return tuple(x)


@_register(
    aten.split,
    aten.split_with_sizes,
    _op("chunk"),
    _op("tensor_split"),
    _op("unsafe_split"),
    _op("split_with_sizes_copy"),
)
def _split(cx):
    x = list(cx.axes(0))
    shapes = cx.out_shapes()
    name = cx.op_name()
    dim = cx.kwarg_or_arg("dim", 2)
    dim = 0 if dim is None else dim
    d = _dim(dim, len(x))
    bounds, off = [0], 0
    for shp in shapes:
        off += shp[d]
        bounds.append(off)
    pieces = cx.store.cut_many(x[d], bounds, f"{name} ({cx.where()})")
    outs = []
    pieces = iter(pieces)
    for shp in shapes:
        lay = next(pieces) if shp[d] > 0 else UNIT
        outs.append(tuple(x[:d]) + (lay,) + tuple(x[d + 1 :]))
    return outs


@_register(aten.index_select)
def _index_select(cx):
    x = list(cx.axes(0))
    d = _dim(cx.args[1], len(x))
    cx.freeze(x[d], f"index_select reads positions along this axis ({cx.where()})")
    x[d] = cx.new(cx.out_shape()[d], "indexed", frozen="index_select output")
    return tuple(x)


@_register(aten.gather)
def _gather(cx):
    x, idx = cx.axes(0), cx.axes(2)
    d = _dim(cx.args[1], len(x))
    cx.freeze(x[d], f"gather reads positions along this axis ({cx.where()})")
    cx.freeze(idx[d], "gather index")
    for i in range(len(x)):
        if i != d and cx.shape(0)[i] == cx.shape(2)[i]:
            cx.unify(x[i], idx[i], "gather")
        elif i != d:
            cx.freeze(x[i], "gather over a partial axis")
            cx.freeze(idx[i], "gather over a partial axis")
    return idx


@_register(aten.index)
def _index(cx):
    """x[idx] with tensor indices on some axes: those axes are pinned; the rest pass through."""
    x = cx.axes(0)
    indices = list(cx.args[1])
    used = [i for i, t in enumerate(indices) if t is not None]
    for i in used:
        cx.freeze(x[i], f"indexed by a tensor ({cx.where()})")
        cx.freeze_all(cx.axes_of(indices[i]), "index tensor")
    out_shape = cx.out_shape()
    contiguous = used == list(range(used[0], used[-1] + 1)) if used else True
    rest_before = [x[i] for i in range(len(x)) if i < (used[0] if used else 0)]
    rest_after = [x[i] for i in range(len(x)) if used and i > used[-1]]
    if not contiguous:
        rest_before, rest_after = [], [x[i] for i in range(len(x)) if i not in used]
    n_idx = len(out_shape) - len(rest_before) - len(rest_after)
    if n_idx < 0:
        return None
    mid = tuple(
        cx.new(s, "indexed", frozen="advanced indexing output")
        for s in (out_shape[len(rest_before) : len(rest_before) + n_idx])
    )
    if contiguous:
        return tuple(rest_before) + mid + tuple(rest_after)
    return mid + tuple(rest_after)


# -- reshape ------------------------------------------------------------------------------------
def reshape_layouts(cx, x: tuple, in_shape, out_shape) -> tuple:
    """Map input layouts to output layouts through a reshape, refining spaces as needed."""
    store = cx.store
    in_dims = [i for i, s in enumerate(in_shape) if s != 1]
    out_dims = [i for i, s in enumerate(out_shape) if s != 1]
    out: list[Layout] = [UNIT] * len(out_shape)
    i = j = 0
    while i < len(in_dims) or j < len(out_dims):
        run_in, run_out = [in_dims[i]], [out_dims[j]]
        pa, pb = in_shape[in_dims[i]], out_shape[out_dims[j]]
        i += 1
        j += 1
        while pa != pb:
            if pa < pb:
                run_in.append(in_dims[i])
                pa *= in_shape[in_dims[i]]
                i += 1
            else:
                run_out.append(out_dims[j])
                pb *= out_shape[out_dims[j]]
                j += 1
        if len(run_in) == 1 and len(run_out) == 1:
            out[run_out[0]] = x[run_in[0]]
            continue
        facs = [f for d in run_in for f in store.factors(x[d])]
        sizes = [out_shape[d] for d in run_out]
        merged = Prod(tuple(facs))
        pieces = (
            store.split(merged, sizes, f"reshape ({cx.where()})") if len(run_out) > 1 else [merged]
        )
        for d, p in zip(run_out, pieces):
            out[d] = p
    return tuple(out)


def _block_split(cx, x: tuple, in_shape, out_shape):
    """A reshape whose new leading factor is only ever indexed (`unbind`, `select`): fused qkv.

    Returns layouts with a `Blk` axis and `Alt` siblings, so q, k and v get independent spaces,
    or None when the pattern does not apply.
    """
    for d_out in cx.block_dims():
        k = out_shape[d_out]
        # the input axis that this output axis is carved from, with the axes after it
        prefix = math.prod(out_shape[:d_out])
        acc, d_in = 1, None
        for i, s in enumerate(in_shape):
            if acc == prefix and s % k == 0 and s > k:
                d_in = i
                break
            acc *= s
        if d_in is None:
            continue
        rest_sizes, acc2, j = [], k, d_out + 1
        while acc2 < in_shape[d_in] and j < len(out_shape):
            rest_sizes.append(out_shape[j])
            acc2 *= out_shape[j]
            j += 1
        if (
            acc2 != in_shape[d_in]
            or list(out_shape[:d_out]) != list(in_shape[:d_in])
            or list(out_shape[j:]) != list(in_shape[d_in + 1 :])
        ):
            continue
        blocks = cx.store.cut_many(
            x[d_in],
            [in_shape[d_in] // k * b for b in range(k + 1)],
            f"stacked blocks ({cx.where()})",
        )
        per_block = [
            reshape_layouts(cx, (b,), (in_shape[d_in] // k,), tuple(rest_sizes)) for b in blocks
        ]
        key = cx.store.new_key()
        alts = tuple(Alt(key, tuple(pb[t] for pb in per_block)) for t in range(len(rest_sizes)))
        return tuple(x[:d_in]) + (Blk(key, k),) + alts + tuple(x[d_in + 1 :])
    return None


@_register(
    aten.view,
    aten.reshape,
    aten._unsafe_view,
    _op("flatten"),
    _op("unflatten"),
    _op("view_copy"),
    _op("_reshape_alias"),
    structural=True,
)
def _reshape(cx):
    x = cx.axes(0)
    in_shape, out_shape = tuple(cx.shape(0)), tuple(cx.out_shape())
    if any(isinstance(lay, (Blk, Alt)) for lay in x):
        if in_shape == out_shape:
            return x
        x = cx.collapse(x)
    blocked = _block_split(cx, x, in_shape, out_shape)
    if blocked is not None:
        return blocked
    return reshape_layouts(cx, x, in_shape, out_shape)


# -- Python-level helpers in the graph ---------------------------------------------------------
@_register(operator.getitem, structural=True)
def _getitem(cx):
    return cx.item(cx.args[1])


# -- weight parametrizations and mixture-of-experts kernels ------------------------------------------
@_register(_op("_weight_norm"), _op("_weight_norm_interface"))
def _weight_norm(cx):
    """w = g * v / ||v|| (norm over every axis but `dim`): permutations pass straight through."""
    v, g = cx.axes(0), cx.axes(1)
    for i, lay in enumerate(g):
        if cx.shape(1)[i] != 1:
            cx.unify(lay, v[i], "weight_norm magnitude")
    if len(cx.out_shapes()) == 1:
        return v
    d = _dim(cx.arg_or(2, 0), len(v))
    return [v, tuple(v[i] if i == d else UNIT for i in range(len(v)))]


def _grouped_mm(cx):
    """x (S, K) against per-expert weights w (E, K, N), experts chosen by offsets: out (S, N).

    All experts share one permutation of N (sound, though coarser than per-expert).
    """
    if len(cx.shape(0)) != 2 or len(cx.shape(1)) != 3:
        return None
    x, w = cx.axes(0), cx.axes(1)
    cx.contract(0, -1, 1, 1)
    cx.freeze(w[0], f"expert axis selected by offsets ({cx.where()})")
    return (x[0], w[2])


_register(_op("_grouped_mm"))(_grouped_mm)
# Custom ops registered by other libraries, keyed by "namespace.name" (they may load later).
RULES_BY_NAME["transformers.grouped_mm_fallback"] = Rule(_grouped_mm)


# -- scans ----------------------------------------------------------------------------------------
def _scan(cx):
    """Running sums/products: the scanned axis is pinned (order matters), others pass through."""
    x = cx.axes(0)
    d = _dim(cx.kwarg_or_arg("dim", 1), len(x))
    cx.freeze(x[d], f"{cx.op_name()} accumulates along this axis ({cx.where()})")
    shapes = cx.out_shapes()
    return [x for _ in shapes] if len(shapes) > 1 else x


for _name in ["cumsum", "cumsum_", "cumprod", "cumprod_", "logcumsumexp", "cummax", "cummin"]:
    _register(_op(_name))(_scan)
