"""Position-dependent rules: pooling and resampling, padding, triangular masks, flip and roll,
Fourier transforms, differences, sliding windows (unfold, im2col / col2im), grid sampling and
pixel shuffles.

What these ops compute depends on where along an axis a value sits, so those axes are pinned;
channel and batch axes pass through.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from graphmerge.layout import Prod
from graphmerge.rules.dims import dim_index, dim_list

if TYPE_CHECKING:
    from graphmerge.rule_context import RuleContext

__all__ = [
    "affine_grid",
    "col2im",
    "diff",
    "fft",
    "flip_roll",
    "grid_sample",
    "im2col",
    "pad",
    "pixel_shuffle",
    "spatial1d",
    "spatial2d",
    "spatial3d",
    "tri",
    "unfold",
]


def _spatial(nspatial: int) -> Callable:
    """The rule for ops over the last `nspatial` axes (pooling, upsampling, padding modes)."""

    def rule(cx: RuleContext):
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

    rule.__name__ = rule.__qualname__ = f"spatial{nspatial}d"
    return rule


spatial1d, spatial2d, spatial3d = _spatial(1), _spatial(2), _spatial(3)


def pad(cx: RuleContext):
    """constant_pad_nd / pad: `pad` lists (before, after) pairs from the last axis backwards;
    a padded axis is pinned."""
    x = cx.axes(0)
    pads = list(cx.arg("pad"))
    out_shape = cx.out_shape()
    out = list(x)
    for i in range(len(pads) // 2):
        d = len(x) - 1 - i
        if pads[2 * i] or pads[2 * i + 1]:
            cx.freeze(x[d], f"padded axis ({cx.where()})")
            out[d] = cx.new(out_shape[d], "padded", frozen="padded axis")
    return tuple(out)


def tri(cx: RuleContext):
    """triu / tril: the mask depends on the positions along the last two axes."""
    x = cx.axes(0)
    for d in (-1, -2):
        cx.freeze(x[d], f"{cx.op_name()} mask depends on position ({cx.where()})")
    return x


def flip_roll(cx: RuleContext):
    """flip / roll move values along `dims` (all axes, flattened, for roll without dims)."""
    x = cx.axes(0)
    dims = cx.arg("dims")
    if dims is None or (not isinstance(dims, int) and len(dims) == 0):
        cx.freeze_all(x, f"{cx.op_name()} over all axes")
        return tuple(cx.new(s, "pinned", frozen=cx.op_name()) for s in cx.out_shape())
    for d in dim_list(dims, len(x)):
        cx.freeze(x[d], f"{cx.op_name()} moves positions along the axis")
    return x


def _pinned_axes(cx: RuleContext, dims: list[int], why: str) -> tuple:
    """The input's layouts with `dims` frozen, and the output's: those axes new frozen spaces."""
    x = cx.axes(0)
    for d in dims:
        cx.freeze(x[d], f"{why} ({cx.where()})")
    out_shape = cx.out_shape()
    return tuple(
        cx.new(out_shape[i], "pinned", frozen=why) if i in dims else x[i] for i in range(len(x))
    )


def fft(cx: RuleContext):
    """Fourier transforms and shifts (_fft_r2c, fft_irfft, fft_fftshift, ...): the transformed
    axes (`dim`; every axis without it) mix or move every position."""
    rank = len(cx.shape(0))
    dims = cx.arg("dim")
    dims = list(range(rank)) if dims is None else dim_list(dims, rank)
    return _pinned_axes(cx, dims, "Fourier-transformed axis")


def diff(cx: RuleContext):
    """x[i + 1] - x[i] along `dim` (with `prepend` / `append` joined there): that axis is pinned,
    the others broadcast against the prepended and appended tensors."""
    x = cx.axes(0)
    d = dim_index(cx.arg("dim", default=-1), len(x))
    for name in ("prepend", "append"):
        if cx.is_tensor(name):
            other = cx.axes(name)
            for i in range(len(x)):
                if i != d and cx.shape(name)[i] == cx.shape(0)[i]:
                    cx.unify(x[i], other[i], "diff")
            cx.freeze(other[d], "diff")
    return _pinned_axes(cx, [d], "differences along the axis")


def unfold(cx: RuleContext):
    """Sliding windows along `dimension`: that axis becomes (windows, ..., window size), both
    positional."""
    x = cx.axes(0)
    d = dim_index(cx.arg("dimension"), len(x))
    cx.freeze(x[d], f"windows along the axis ({cx.where()})")
    out_shape = cx.out_shape()
    out = list(x)
    out[d] = cx.new(out_shape[d], "windows", frozen="spatial axis of unfold")
    return tuple(out) + (cx.new(out_shape[-1], "window", frozen="spatial axis of unfold"),)


def im2col(cx: RuleContext):
    """(N, C, H, W) -> (N, C * kernel taps, blocks): channels outer, taps and blocks positional."""
    x = cx.axes(0)
    for d in range(len(x) - 2, len(x)):
        cx.freeze(x[d], f"spatial axis of im2col ({cx.where()})")
    lead = len(x) - 3
    out_shape = cx.out_shape()
    taps = cx.new(out_shape[lead] // cx.shape(0)[lead], "taps", frozen="convolution kernel axis")
    blocks = cx.new(out_shape[-1], "blocks", frozen="spatial axis of im2col")
    return tuple(x[:lead]) + (Prod((x[lead], taps)), blocks)


def col2im(cx: RuleContext):
    """(N, C * kernel taps, blocks) -> (N, C, H, W): the inverse of im2col."""
    x = cx.axes(0)
    lead = len(x) - 2
    out_shape = cx.out_shape()
    channels = cx.new(out_shape[lead], "channels")
    taps = cx.new(cx.shape(0)[lead] // out_shape[lead], "taps", frozen="convolution kernel axis")
    cx.unify(x[lead], Prod((channels, taps)), f"col2im channels ({cx.where()})")
    cx.freeze(x[-1], f"spatial axis of col2im ({cx.where()})")
    spatial = tuple(cx.new(s, "spatial", frozen="spatial axis of col2im") for s in out_shape[-2:])
    return tuple(x[:lead]) + (channels,) + spatial


def grid_sample(cx: RuleContext):
    """grid_sampler(_2d/_3d)(input (N, C, *in), grid (N, *out, k)): channels pass through, the
    sampled positions and the grid's axes are positional; batches unify."""
    x, grid = cx.axes("input"), cx.axes("grid")
    for lay in x[2:]:
        cx.freeze(lay, f"spatial axis of grid_sampler ({cx.where()})")
    cx.freeze_all(grid[1:], f"sampling grid ({cx.where()})")
    cx.unify(x[0], grid[0], "grid_sampler batch")
    out = cx.out_shape()
    return (x[0], x[1]) + tuple(cx.new(s, "spatial", frozen="spatial axis") for s in out[2:])


def affine_grid(cx: RuleContext):
    """affine_grid_generator(theta (N, k, k + 1), size): a sampling grid (N, *size, k) of
    positions; the batch passes through, everything else is positional."""
    theta = cx.axes("theta")
    cx.freeze_all(theta[1:], f"affine transform coefficients ({cx.where()})")
    out = cx.out_shape()
    return (theta[0],) + tuple(cx.new(s, "grid", frozen="sampling grid") for s in out[1:])


def pixel_shuffle(cx: RuleContext):
    """pixel_shuffle (C * r * r, H, W) -> (C, H * r, W * r) and pixel_unshuffle, its inverse: the
    channel axis is (channels, r, r) with the two factors r positional."""
    x = cx.axes(0)
    out_shape = cx.out_shape()
    c_in, c_out = cx.shape(0)[-3], out_shape[-3]
    for d in (-2, -1):
        cx.freeze(x[d], f"spatial axis of {cx.op_name()} ({cx.where()})")
    spatial = tuple(cx.new(s, "spatial", frozen="spatial axis") for s in out_shape[-2:])
    if c_in > c_out:  # shuffle: the input's channels carry the factors
        r2 = cx.new(c_in // c_out, "sub-pixel", frozen="sub-pixel position")
        channels = cx.new(c_out, "channels")
        cx.unify(x[-3], Prod((channels, r2)), f"{cx.op_name()} channels")
        return tuple(x[:-3]) + (channels,) + spatial
    r2 = cx.new(c_out // c_in, "sub-pixel", frozen="sub-pixel position")
    return tuple(x[:-3]) + (Prod((x[-3], r2)),) + spatial
