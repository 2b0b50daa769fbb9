"""The op table: every op graphmerge has a rule for, with its facts, in one place.

Each row names ops (ATen unless qualified) and what they share: the rule function, whether it is
structural (sees stacked layouts unresolved), and, for pass-through ops, how an axis of the first
input reaches the output (`flow`, see flows.py). Adding an op is adding its name to a row (or a
row) and a test. The names are resolved at import: a name that is not an op raises
`RuleTableError` naming it.
"""

from __future__ import annotations

from graphmerge.rules import (
    attention,
    contractions,
    elementwise,
    flows,
    indexing,
    norms,
    recurrent,
    reductions,
    reshape,
    shapes,
    spatial,
)
from graphmerge.rules.registry import Row, Rule, build_index, row

__all__ = ["RULES", "RULES_BY_NAME", "TABLE", "passthrough_ops", "rule_for"]

TABLE: tuple[Row, ...] = (
    # -- elementwise ----------------------------------------------------------------------------
    row(
        "relu relu_ gelu gelu_ silu silu_ sigmoid sigmoid_ tanh tanh_ hardtanh hardtanh_ relu6 "
        "elu elu_ leaky_relu leaky_relu_ hardswish hardswish_ hardsigmoid hardsigmoid_ mish "
        "softplus selu celu neg exp log log1p expm1 sqrt rsqrt abs erf sin cos tan reciprocal "
        "square sign floor ceil round trunc logical_not isnan isinf nan_to_num alpha_dropout "
        "feature_dropout feature_alpha_dropout feature_dropout_ alpha_dropout_ "
        "feature_alpha_dropout_ softmax _softmax log_softmax _log_softmax special_erf "
        "_safe_softmax logit sinh cosh asin acos atan bitwise_not frac positive",
        elementwise.unary,
    ),
    row(
        "clone contiguous detach detach_ alias lift_fresh_copy _to_copy to type_as dropout "
        "dropout_",
        elementwise.unary,
        structural=True,
        flow=flows.same_axis,
    ),
    row("clamp clamp_ clamp_min clamp_max", elementwise.clamp),
    row(
        "add add_ sub sub_ mul mul_ div div_ rsub maximum minimum where masked_fill masked_fill_ "
        "pow eq ne lt gt le ge logical_and logical_or logical_xor addcmul addcdiv lerp fmod "
        "remainder atan2 floor_divide bitwise_and bitwise_or bitwise_xor copysign hypot xlogy "
        "fmax fmin true_divide __and__ __or__ __xor__ __iand__ __ior__",
        elementwise.binary,
    ),
    # -- creation and scalars -------------------------------------------------------------------
    row(
        "zeros ones full empty zeros_like ones_like full_like empty_like new_zeros new_ones "
        "new_full new_empty scalar_tensor empty_strided new_empty_strided fill zero",
        elementwise.uniform_new,
    ),
    row(
        "arange linspace logspace randn rand randint randn_like rand_like randint_like eye "
        "tensor randperm normal bernoulli",
        elementwise.varying_new,
    ),
    row(
        "_assert_tensor_metadata _assert_scalar sym_constrain_range sym_constrain_range_for_size "
        "_assert_async sym_size sym_numel sym_stride",
        elementwise.no_tensor,
    ),
    row("item _local_scalar_dense", elementwise.item),
    # -- contractions ---------------------------------------------------------------------------
    row("linear", contractions.linear),
    row("matmul mm bmm dot mv vdot", contractions.matmul),
    row("addmm baddbmm addmv addbmm", contractions.addmm),
    row("einsum", contractions.einsum),
    row("conv1d conv2d conv3d", contractions.conv),
    row("conv_transpose1d conv_transpose2d conv_transpose3d", contractions.conv_transpose),
    row("convolution _convolution", contractions.convolution),
    row("_grouped_mm transformers.grouped_mm_fallback", contractions.grouped_mm),
    row(
        "scaled_dot_product_attention _scaled_dot_product_flash_attention_for_cpu",
        attention.sdpa,
    ),
    # -- recurrent layers -----------------------------------------------------------------------
    row("lstm gru rnn_tanh rnn_relu", recurrent.recurrent, structural=True),
    row("lstm_cell gru_cell rnn_tanh_cell rnn_relu_cell", recurrent.cell),
    # -- normalization --------------------------------------------------------------------------
    row("batch_norm instance_norm", norms.batch_norm),
    row(
        "_native_batch_norm_legit_no_training _native_batch_norm_legit "
        "_native_batch_norm_legit_functional native_batch_norm cudnn_batch_norm",
        norms.native_batch_norm,
    ),
    row("layer_norm rms_norm native_layer_norm _fused_rms_norm", norms.layer_norm),
    row("group_norm native_group_norm", norms.group_norm),
    row("_weight_norm _weight_norm_interface", norms.weight_norm),
    # -- reductions and scans -------------------------------------------------------------------
    row(
        "sum mean amax amin prod any all logsumexp nansum nanmean count_nonzero "
        "linalg_vector_norm norm",
        reductions.reduce,
    ),
    row("var std var_mean std_mean", reductions.var),
    row("max min argmax argmin sort topk argsort kthvalue median mode", reductions.index_reduce),
    row("cumsum cumsum_ cumprod cumprod_ logcumsumexp cummax cummin", reductions.scan),
    # -- pooling, resampling, padding, position-dependent ops -----------------------------------
    row(
        "max_pool1d avg_pool1d adaptive_avg_pool1d adaptive_max_pool1d max_pool1d_with_indices "
        "upsample_nearest1d upsample_linear1d reflection_pad1d replication_pad1d",
        spatial.spatial1d,
    ),
    row(
        "max_pool2d avg_pool2d adaptive_avg_pool2d adaptive_max_pool2d max_pool2d_with_indices "
        "_adaptive_avg_pool2d upsample_nearest2d upsample_bilinear2d upsample_bicubic2d "
        "_upsample_nearest_exact2d _upsample_bilinear2d_aa reflection_pad2d replication_pad2d",
        spatial.spatial2d,
    ),
    row(
        "max_pool3d avg_pool3d adaptive_avg_pool3d adaptive_max_pool3d max_pool3d_with_indices "
        "upsample_nearest3d upsample_trilinear3d",
        spatial.spatial3d,
    ),
    row("constant_pad_nd pad", spatial.pad),
    row("triu tril", spatial.tri),
    row("flip roll", spatial.flip_roll),
    # -- axis permutations and views ------------------------------------------------------------
    row("permute", shapes.permute, structural=True, flow=flows.permuted),
    row("transpose swapaxes swapdims", shapes.transpose, structural=True, flow=flows.swapped),
    row("t mT adjoint", shapes.swap_last, structural=True, flow=flows.swapped_last),
    row("numpy_T", shapes.reverse, structural=True, flow=flows.reversed_axes),
    row("movedim", shapes.movedim, structural=True, flow=flows.moved),
    row("unsqueeze", shapes.unsqueeze, structural=True, flow=flows.reshaped),
    row("squeeze", shapes.squeeze, structural=True, flow=flows.reshaped),
    row("expand expand_as broadcast_to", shapes.expand, structural=True, flow=flows.reshaped),
    row(
        "view reshape _unsafe_view flatten unflatten view_copy _reshape_alias",
        reshape.reshape,
        structural=True,
        flow=flows.reshaped,
    ),
    row("repeat", shapes.repeat),
    row("repeat_interleave", shapes.repeat_interleave),
    # -- concatenation, stacking, splitting -----------------------------------------------------
    row("cat concat concatenate", shapes.cat),
    row("stack", shapes.stack, structural=True),
    row(
        "split split_with_sizes chunk tensor_split unsafe_split split_with_sizes_copy",
        shapes.split,
    ),
    # -- indexing -------------------------------------------------------------------------------
    row("select", indexing.select, structural=True, flow=flows.indexed),
    row("unbind", indexing.unbind, structural=True, flow=flows.indexed),
    row("operator.getitem", indexing.getitem, structural=True),
    row("slice", indexing.slice_),
    row("narrow", indexing.narrow),
    row("index_select", indexing.index_select),
    row("gather", indexing.gather),
    row("index", indexing.index),
    row("embedding", indexing.embedding),
)

# Rules by torch target (op packets, operator.getitem), and by "namespace.name" for ops that a
# library registers after graphmerge is imported.
RULES, RULES_BY_NAME = build_index(TABLE)


def rule_for(target) -> Rule | None:
    """The table entry for an fx node's target (an op overload, its packet, or a function)."""
    if target in RULES:
        return RULES[target]
    packet = getattr(target, "overloadpacket", None)
    if packet in RULES:
        return RULES[packet]
    ns = getattr(target, "namespace", None)
    name = getattr(packet, "__name__", "").split(".")[-1]
    return RULES_BY_NAME.get(f"{ns}.{name}") if ns else None


def passthrough_ops() -> list[str]:
    """Names of the ops an axis is followed through (those with a flow), sorted."""
    return sorted(name for r in TABLE if r.rule.flow is not None for name in r.names)
