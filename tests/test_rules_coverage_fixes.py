"""Coverage bugs the supported-architectures table showed, each fixed and pinned here.

Every case went wrong before its fix by freezing units that a permutation can move (the function
was always kept: a coverage gap, not a wrong merge). Each test runs the strict analysis and a
strict shuffle through the public API and checks which groups are now free.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import graphmerge as gm


def _analyze_and_shuffle(model: nn.Module, x) -> gm.Analysis:
    """Strict analysis (no op without a rule) and a strict shuffle that keeps the function."""
    model.eval()
    analysis = gm.analyze(model, x, strict=True)
    assert analysis.unruled == []
    twin = gm.shuffle(model, x, seed=1, strict=True)
    probe = torch.randn_like(x)
    with torch.no_grad():
        torch.testing.assert_close(twin(probe), model(probe), rtol=1e-4, atol=1e-5)
    return analysis


class ChannelShuffle(nn.Module):
    """ShuffleNetV2's unit: cat two halves, view as (2, C / 2), transpose, flatten."""

    def __init__(self):
        super().__init__()
        self.keep, self.work = nn.Conv2d(3, 6, 1), nn.Conv2d(3, 6, 1)
        self.head = nn.Linear(12, 4)

    def forward(self, x):
        h = torch.cat([torch.relu(self.keep(x)), torch.relu(self.work(x))], dim=1)
        b, c, hh, ww = h.shape
        h = h.view(b, 2, c // 2, hh, ww).transpose(1, 2).reshape(b, c, hh, ww)
        return self.head(h.mean((2, 3)))


def test_a_channel_shuffle_keeps_the_units_of_both_halves_free():
    """The view of a concatenation as (blocks, rest) froze every channel ("cannot split")."""
    torch.manual_seed(0)
    analysis = _analyze_and_shuffle(ChannelShuffle(), torch.randn(2, 3, 4, 4))
    free = [g for g in analysis.groups if not g.frozen and g.size > 1]
    # both halves share one permutation of 6 units; the block index (2) is pinned
    (g,) = [g for g in free if ("keep.weight", 0) in g.params()]
    assert g.size == 6 and ("work.weight", 0) in g.params() and ("head.weight", 1) in g.params()


class EllipsisAttention(nn.Module):
    """LongT5's attention: einsum with `...` over (batch, blocks) and a one_hot block mask."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)
        self.o = nn.Linear(8, 3)

    def forward(self, x):  # x: (B, blocks, T, 8) -> heads (2) x head_dim (4)
        q, k, v = (f(x).unflatten(-1, (2, 4)) for f in (self.q, self.k, self.v))
        scores = torch.einsum("...qhd,...khd->...hqk", q, k)
        out = torch.einsum("...hqk,...khd->...qhd", scores.softmax(-1), v).flatten(-2)
        ids = torch.arange(x.shape[-2]) // 2
        pooled = torch.einsum("...nd,...ng->...gd", out, F.one_hot(ids, 2).type(out.dtype))
        return self.o(pooled)


def test_einsum_with_ellipsis_contracts_like_the_explicit_form():
    """`...` equations were left without a rule: every unit they touched was frozen."""
    torch.manual_seed(0)
    analysis = _analyze_and_shuffle(EllipsisAttention(), torch.randn(2, 3, 4, 8))
    free = {p for g in analysis.groups if not g.frozen and g.size > 1 for p in g.params()}
    assert {("q.weight", 0), ("k.weight", 0), ("v.weight", 0), ("o.weight", 1)} <= free
    assert analysis.permutable_share == 1.0


class HeadsFirstFusedQKV(nn.Module):
    """Bloom / Persimmon: one projection viewed as (B, T, heads, 3, head_dim), then q, k, v by
    constant index on the block axis."""

    def __init__(self, heads: int = 2, dim: int = 4):
        super().__init__()
        self.heads, self.dim = heads, dim
        self.qkv, self.o = nn.Linear(6, 3 * heads * dim), nn.Linear(heads * dim, 3)

    def forward(self, x):
        b, t, _ = x.shape
        fused = self.qkv(x).view(b, t, self.heads, 3, self.dim)
        q, k, v = (fused[..., i, :].transpose(1, 2) for i in range(3))
        out = torch.softmax(q @ k.transpose(-1, -2), -1) @ v
        return self.o(out.transpose(1, 2).flatten(2))


def test_a_block_axis_inside_the_heads_gives_q_k_v_their_own_spaces():
    """The block axis was found only as a leading factor: inside the heads it was pinned
    (frozen by the constant index) and q, k, v shared one head_dim permutation."""
    torch.manual_seed(0)
    analysis = _analyze_and_shuffle(HeadsFirstFusedQKV(), torch.randn(2, 5, 6))
    assert analysis.permutable_share == 1.0
    free = [g for g in analysis.groups if not g.frozen and g.size > 1]
    # one heads group, one group for q and k's head_dim (contracted together), one for v's
    on_qkv = [g for g in free if ("qkv.weight", 0) in g.params()]
    assert sorted(g.size for g in on_qkv) == [2, 4, 4]
    (v,) = [g for g in on_qkv if ("o.weight", 1) in g.params() and g.size == 4]
    assert v.structure.within  # permuted within heads


class SliceFromFarBack(nn.Module):
    """`h[:, -512:]` on 8 units (XLNet's memory slice `cat[-mem_len:]`) is all 8 units: the rule
    cut positions [-504:8], a block of 512 that broke the axis algebra downstream (XLNet's add,
    sub and einsum rules recursed until Python's limit)."""

    def __init__(self):
        super().__init__()
        self.fc, self.head = nn.Linear(5, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.head(torch.relu(self.fc(x))[:, -512:])


def test_a_slice_starting_before_the_axis_is_clamped_like_python():
    torch.manual_seed(0)
    analysis = _analyze_and_shuffle(SliceFromFarBack(), torch.randn(3, 5))
    assert analysis.unruled == [] and analysis.permutable_share == 1.0
    (g,) = [g for g in analysis.groups if ("fc.weight", 0) in g.params()]
    assert not g.frozen and g.size == 8 and ("head.weight", 1) in g.params()
