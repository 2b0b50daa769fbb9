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
        "softplus selu celu neg _neg_view _neg_view_copy exp log log1p expm1 sqrt rsqrt abs erf sin cos tan reciprocal "
        "square sign floor ceil round trunc logical_not isnan isinf nan_to_num alpha_dropout "
        "feature_dropout feature_alpha_dropout feature_dropout_ alpha_dropout_ "
        "feature_alpha_dropout_ softmax _softmax log_softmax _log_softmax special_erf "
        "_safe_softmax logit sinh cosh asin acos atan bitwise_not frac positive "
        "acosh asinh atanh log10 log2 exp2 erfc erfinv lgamma digamma i0 sinc deg2rad rad2deg "
        "sgn signbit isfinite isposinf isneginf hardshrink softshrink rrelu threshold "
        "conj_physical real imag angle "
        "acos_ asin_ atan_ cos_ cosh_ sin_ sinh_ tan_ exp_ expm1_ log_ log1p_ log2_ log10_ "
        "sqrt_ rsqrt_ neg_ abs_ reciprocal_ sign_ floor_ ceil_ round_ trunc_ frac_ erf_ erfc_ "
        "erfinv_ square_ logit_ nan_to_num_ mish_ celu_ selu_ logical_not_ bitwise_not_ exp2_ "
        "acosh_ asinh_ atanh_ threshold_ rrelu_ sgn_ i0_ lgamma_ digamma_ deg2rad_ rad2deg_ "
        "sinc_ relu6_ absolute absolute_ negative negative_ arccos arcsin arctan arccosh "
        "arcsinh arctanh fix fix_ special_expit special_exp2 special_expm1 special_log1p "
        "special_sinc special_round special_ndtr special_logit special_psi special_digamma "
        "special_gammaln log_sigmoid",
        elementwise.unary,
    ),
    row(
        "clone contiguous detach detach_ alias lift_fresh_copy _to_copy to type_as dropout "
        "dropout_ alias_copy detach_copy lift_fresh conj _conj resolve_conj resolve_neg "
        "_autocast_to_full_precision _autocast_to_reduced_precision _conj_copy pin_memory cpu "
        "cuda as_tensor",
        elementwise.unary,
        structural=True,
        flow=flows.same_axis,
    ),
    row("clamp clamp_ clamp_min clamp_max clamp_min_ clamp_max_ clip clip_", elementwise.clamp),
    row(
        "add add_ sub sub_ mul mul_ div div_ rsub maximum minimum where masked_fill masked_fill_ "
        "pow eq ne lt gt le ge logical_and logical_or logical_xor addcmul addcdiv lerp fmod "
        "remainder atan2 floor_divide bitwise_and bitwise_or bitwise_xor copysign hypot xlogy "
        "fmax fmin true_divide __and__ __or__ __xor__ __iand__ __ior__ "
        "logaddexp logaddexp2 heaviside float_power ldexp nextafter gcd lcm igamma igammac "
        "polygamma special_xlog1py special_zeta bitwise_left_shift bitwise_right_shift "
        "__lshift__ __rshift__ __ilshift__ __irshift__ __ixor__ xlogy_ pow_ fmod_ remainder_ "
        "atan2_ hypot_ lerp_ addcmul_ addcdiv_ logical_and_ logical_or_ logical_xor_ "
        "bitwise_and_ bitwise_or_ bitwise_xor_ copysign_ float_power_ ldexp_ nextafter_ gcd_ "
        "lcm_ heaviside_ floor_divide_ true_divide_ copy copy_ multiply multiply_ divide divide_ "
        "subtract subtract_ greater greater_equal less less_equal not_equal greater_ less_ "
        "arctan2 polar",
        elementwise.binary,
    ),
    row("native_dropout log_sigmoid_forward", elementwise.with_mask),
    row("glu", elementwise.glu),
    # -- creation and scalars -------------------------------------------------------------------
    row(
        "zeros ones full empty zeros_like ones_like full_like empty_like new_zeros new_ones "
        "new_full new_empty scalar_tensor empty_strided new_empty_strided fill zero fill_ zero_",
        elementwise.uniform_new,
    ),
    row(
        "arange linspace logspace randn rand randint randn_like rand_like randint_like eye "
        "tensor randperm normal bernoulli",
        elementwise.varying_new,
    ),
    row(
        "_assert_tensor_metadata _assert_scalar sym_constrain_range sym_constrain_range_for_size "
        "_assert_async sym_size sym_numel sym_stride sym_storage_offset sym_is_contiguous",
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
    row("histc bincount", reductions.histogram),
    row("cdist _cdist_forward", reductions.cdist),
    row("pdist _pdist_forward", reductions.pdist),
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
        "upsample_nearest3d upsample_trilinear3d _adaptive_avg_pool3d reflection_pad3d "
        "replication_pad3d",
        spatial.spatial3d,
    ),
    row("constant_pad_nd pad", spatial.pad),
    row("triu tril", spatial.tri),
    row("flip roll", spatial.flip_roll),
    row(
        "_fft_r2c _fft_c2r _fft_c2c fft_fft fft_ifft fft_rfft fft_irfft fft_hfft fft_ihfft "
        "fft_fft2 fft_ifft2 fft_rfft2 fft_irfft2 fft_hfft2 fft_ihfft2 fft_fftn fft_ifftn "
        "fft_rfftn fft_irfftn fft_hfftn fft_ihfftn fft_fftshift fft_ifftshift",
        spatial.fft,
    ),
    row("diff", spatial.diff),
    row("unfold unfold_copy", spatial.unfold),
    row("im2col", spatial.im2col),
    row("col2im", spatial.col2im),
    row("grid_sampler grid_sampler_2d grid_sampler_3d", spatial.grid_sample),
    row("affine_grid_generator", spatial.affine_grid),
    row("pixel_shuffle pixel_unshuffle", spatial.pixel_shuffle),
    # -- axis permutations and views ------------------------------------------------------------
    row("permute permute_copy", shapes.permute, structural=True, flow=flows.permuted),
    row(
        "transpose swapaxes swapdims transpose_copy transpose_ swapaxes_ swapdims_",
        shapes.transpose,
        structural=True,
        flow=flows.swapped,
    ),
    row(
        "t mT adjoint t_copy t_ mH matrix_H",
        shapes.swap_last,
        structural=True,
        flow=flows.swapped_last,
    ),
    row("numpy_T", shapes.reverse, structural=True, flow=flows.reversed_axes),
    row("movedim moveaxis", shapes.movedim, structural=True, flow=flows.moved),
    row(
        "unsqueeze unsqueeze_copy unsqueeze_",
        shapes.unsqueeze,
        structural=True,
        flow=flows.reshaped,
    ),
    row("squeeze squeeze_copy squeeze_", shapes.squeeze, structural=True, flow=flows.reshaped),
    row(
        "expand expand_as broadcast_to expand_copy",
        shapes.expand,
        structural=True,
        flow=flows.reshaped,
    ),
    row(
        "view reshape _unsafe_view flatten unflatten view_copy _reshape_alias view_as "
        "reshape_as ravel _reshape_alias_copy _ncf_view _ncf_unsqueeze",
        reshape.reshape,
        structural=True,
        flow=flows.reshaped,
    ),
    row("repeat", shapes.repeat),
    row("tile", shapes.tile),
    row("repeat_interleave", shapes.repeat_interleave),
    # -- concatenation, stacking, splitting -----------------------------------------------------
    row("cat concat concatenate", shapes.cat),
    row("stack", shapes.stack, structural=True),
    row(
        "split split_with_sizes chunk tensor_split unsafe_split split_with_sizes_copy split_copy "
        "unsafe_split_with_sizes",
        shapes.split,
    ),
    row("hsplit", shapes.hsplit),
    row("vsplit", shapes.vsplit),
    row("dsplit", shapes.dsplit),
    row("diagonal diagonal_copy linalg_diagonal", shapes.diagonal),
    row("view_as_real view_as_real_copy", shapes.view_as_real),
    row("view_as_complex view_as_complex_copy", shapes.view_as_complex),
    row("meshgrid", shapes.meshgrid),
    # -- indexing -------------------------------------------------------------------------------
    row("select select_copy", indexing.select, structural=True, flow=flows.indexed),
    row("unbind unbind_copy", indexing.unbind, structural=True, flow=flows.indexed),
    row("operator.getitem", indexing.getitem, structural=True),
    row("slice slice_copy", indexing.slice_),
    row("narrow narrow_copy", indexing.narrow),
    row("index_select", indexing.index_select),
    row("gather", indexing.gather),
    row("index _unsafe_index", indexing.index),
    row("index_put index_put_ _unsafe_index_put _index_put_impl_", indexing.index_put),
    row(
        "scatter scatter_ scatter_add scatter_add_ scatter_reduce scatter_reduce_",
        indexing.scatter,
    ),
    row("select_scatter", indexing.select_scatter),
    row("slice_scatter", indexing.slice_scatter),
    row("embedding", indexing.embedding),
    row("embedding_bag _embedding_bag _embedding_bag_forward_only", indexing.embedding_bag),
    row("searchsorted bucketize", indexing.searchsorted),
    row("one_hot", indexing.one_hot),
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
