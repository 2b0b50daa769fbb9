"""The rules added for the core ATen opset and the ops `transformers` exports, end to end.

Each case is a small module around one op (or a family of variants): `gm.shuffle(strict=True)`
must keep its function on a fresh input, the op must have a working rule (nothing reported
unruled), and the hidden units the op does not read by position must stay permutable: the share of
permutable hidden units is pinned per case (1.0 where the op is equivariant in them).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import graphmerge as gm


class Case(nn.Module):
    """fc_in -> f(h) -> fc_out, with `f` the op under test; widths 12 -> 8 -> 3."""

    def __init__(self, fn, d_in: int = 6, width: int = 8, d_out_in: int | None = None):
        super().__init__()
        self.fc_in = nn.Linear(d_in, width)
        self.fn = fn
        self.fc_out = nn.Linear(d_out_in or width, 3)
        with torch.no_grad():
            self.fc_in.bias.normal_()

    def forward(self, x):
        return self.fc_out(self.fn(self, torch.tanh(self.fc_in(x))))


def _index_put(self, h):
    h = h.clone()
    h[torch.tensor([0, 2])] = h[:2] * 2  # rows chosen by index; the units axis unifies
    return h


def _index_put_units(self, h):
    h = h.clone()
    h[:, torch.tensor([0, 2])] = 0.5  # writes chosen units: the units axis is pinned
    return h


def _masked_assign(self, h):
    h = h.clone()
    h[h.abs() < 0.1] = 0.0
    return h


def _copy_into_slice(self, h):
    out = torch.zeros(h.shape[0], h.shape[1] + 2)
    out[:, 1:-1] = h  # copy_ into a slice: the slice of out is h's space
    return out[:, 1:-1] * 3


def _scatter_add(self, h):
    index = torch.arange(h.shape[0]).remainder(2)[:, None].expand_as(h)
    return torch.zeros(2, h.shape[1]).scatter_add(0, index, h)


def _select_scatter(self, h):
    return torch.select_scatter(h, h[0] * 2, 0, 1)


def _slice_scatter(self, h):
    return torch.slice_scatter(h, h[:, :4].exp(), dim=1, start=4, end=8)


def _inplace_views(self, h):
    g = h.clone()
    g.unsqueeze_(0)
    g.transpose_(0, 1)
    g.squeeze_(1)
    return g.t_().t()


def _views_as(self, h):
    g = h.reshape(h.shape[0], 2, -1)
    return g.reshape_as(h) + h.view_as(h) + g.flatten(1).ravel().view_as(h)


def _diagonal(self, h):
    gram = h[:, :, None] * h[:, None, :]  # (B, C, C): both axes the units
    return torch.diagonal(gram, dim1=1, dim2=2) + gram.diagonal(0, -2, -1).sqrt()


def _hsplit(self, h):
    a, b = torch.hsplit(h, 2)
    return torch.cat([b, a], dim=1)


def _meshgrid(self, h):
    grid_a, grid_b = torch.meshgrid(torch.arange(h.shape[0]), torch.arange(3), indexing="ij")
    return h * (grid_a + grid_b).sum()


def _pointwise(self, h):
    logs = torch.log2(h.abs() + 1) + torch.log10(h.abs() + 1) + F.logsigmoid(h)
    return logs + torch.asinh(h) + h.clip(-0.5, 0.5)


def _glu(self, h):
    return F.glu(h, dim=-1)  # (B, 8) -> (B, 4): the halves are one space


def _histogram(self, h):
    return h * torch.histc(h, bins=4, min=-1, max=1).sum()


def _searchsorted(self, h):
    return h * torch.bucketize(h, torch.tensor([-0.5, 0.0, 0.5])).float()


def _cdist(self, h):
    return torch.cdist(h[None], h[None] + 0.5)[0]


def _diff(self, h):
    return torch.diff(h, dim=0, append=h[:1]) + h


def _fft(self, h):
    spec = torch.fft.rfft(h, dim=0)
    return torch.fft.irfft(spec * 2, n=h.shape[0], dim=0)


def _complex_views(self, h):
    parts = torch.view_as_real(torch.view_as_complex(h.reshape(h.shape[0], -1, 2).contiguous()))
    return parts.flatten(1)


def _tile(self, h):
    copies = h.tile((3,)).reshape(h.shape[0], 3, h.shape[1])  # (copy, unit) on the last axis
    return copies.sum(1) + h.tile((1, 1, 1))[0] + h.multiply(h)


def _scatter(self, h):
    index = torch.tensor([[1], [0], [2], [1], [0]]).expand(-1, h.shape[1])
    return torch.zeros(3, h.shape[1]).scatter(0, index, h).scatter_reduce(0, index, h, "amax")


CASES = {
    "glu": (_glu, 1.0),
    "tile": (_tile, 1.0),
    "scatter": (_scatter, 1.0),
    "index_put": (_index_put, 1.0),
    "index_put_units": (_index_put_units, 0.0),
    "masked_assign": (_masked_assign, 1.0),
    "copy_into_slice": (_copy_into_slice, 1.0),
    "scatter_add": (_scatter_add, 1.0),
    "select_scatter": (_select_scatter, 1.0),
    "slice_scatter": (_slice_scatter, 1.0),
    "inplace_views": (_inplace_views, 1.0),
    "views_as": (_views_as, 1.0),
    "diagonal": (_diagonal, 1.0),
    "hsplit": (_hsplit, 1.0),
    "meshgrid": (_meshgrid, 1.0),
    "pointwise": (_pointwise, 1.0),
    "histogram": (_histogram, 1.0),
    "searchsorted": (_searchsorted, 1.0),
    "cdist": (_cdist, 1.0),  # a distance is symmetric in the units
    "diff": (_diff, 1.0),
    "fft": (_fft, 1.0),
    # the 4 complex units stay free; the (real, imag) pair axis is pinned (4 of 20 hidden units,
    # counting the pinned pair axis once per complex unit and once more at fc_out's input)
    "complex_views": (_complex_views, 0.2),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_shuffle_keeps_function_through_the_op(name):
    fn, share = CASES[name]
    width_out = {"cdist": 5, "glu": 4}.get(name)
    torch.manual_seed(0)
    model = Case(fn, d_out_in=width_out).eval()
    example, fresh = torch.randn(5, 6), torch.randn(5, 6)
    twin = gm.shuffle(model, example, seed=1, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(twin(fresh), model(fresh), rtol=1e-4, atol=1e-5)
    analysis = gm.analyze(model, example, strict=True)
    assert analysis.unruled == []
    assert analysis.permutable_share == pytest.approx(share)


class MapCase(nn.Module):
    """conv_in (3 -> 8 channels) -> f(map) -> flatten -> fc_out: ops on (B, C, H, W) maps."""

    def __init__(self, fn, flat: int):
        super().__init__()
        self.conv_in = nn.Conv2d(3, 8, 3, padding=1)
        self.fn = fn
        self.fc_out = nn.Linear(flat, 3)

    def forward(self, x):
        return self.fc_out(self.fn(self, torch.relu(self.conv_in(x))).flatten(1))


def _im2col_col2im(self, m):
    cols = F.unfold(m, kernel_size=2, stride=2)  # (B, 8 * 4, 16): channels outer, taps inner
    return F.fold(cols * 2, output_size=m.shape[-2:], kernel_size=2, stride=2)


def _pixel_shuffle(self, m):
    return F.pixel_shuffle(F.pixel_unshuffle(m, 2), 2)


def _grid_sample(self, m):
    theta = torch.tensor([[[0.9, 0.1, 0.0], [-0.1, 0.9, 0.0]]]).expand(m.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(m.shape), align_corners=False)
    return F.grid_sample(m, grid, align_corners=False)


def _sliding_windows(self, m):
    return m.unfold(3, 2, 2).mean(-1)  # windows along the width: (B, C, H, W / 2)


MAP_CASES = {
    "im2col_col2im": (_im2col_col2im, 8 * 64),
    "pixel_shuffle": (_pixel_shuffle, 8 * 64),
    "grid_sample": (_grid_sample, 8 * 64),
    "sliding_windows": (_sliding_windows, 8 * 32),
}


@pytest.mark.parametrize("name", sorted(MAP_CASES))
def test_shuffle_keeps_function_through_the_map_op(name):
    fn, flat = MAP_CASES[name]
    torch.manual_seed(0)
    model = MapCase(fn, flat).eval()
    example, fresh = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    twin = gm.shuffle(model, example, seed=1, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(twin(fresh), model(fresh), rtol=1e-4, atol=1e-5)
    analysis = gm.analyze(model, example, strict=True)
    assert analysis.unruled == []
    conv = [g for g in analysis.groups if ("conv_in.weight", 0) in g.params()]
    assert not conv[0].frozen, conv[0].reason  # the channels stay permutable


def test_embedding_bag_passes_the_embedding_axis():
    class Bags(nn.Module):
        def __init__(self):
            super().__init__()
            self.bag, self.fc = nn.EmbeddingBag(20, 8, mode="mean"), nn.Linear(8, 3)

        def forward(self, ids, offsets):
            return self.fc(torch.tanh(self.bag(ids, offsets)))

    model = Bags().eval()
    example = (torch.tensor([1, 4, 7, 2, 9, 3]), torch.tensor([0, 2, 5]))
    twin = gm.shuffle(model, example, seed=1, strict=True)
    fresh = (torch.tensor([5, 6, 11, 2]), torch.tensor([0, 1]))
    with torch.no_grad():
        torch.testing.assert_close(twin(*fresh), model(*fresh))
    groups = gm.permutation_groups(model, example)
    (g,) = [g for g in groups if ("bag.weight", 1) in g.params()]
    assert not g.frozen and ("fc.weight", 1) in g.params()
