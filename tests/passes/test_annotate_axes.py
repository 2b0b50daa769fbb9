"""annotate_axes + the rule table: structure of the groups that each op family produces.

Each test builds a tiny module inline, checks the groups as sets of (parameter, axis) and their
structure, and checks the numbers: `shuffle` keeps the function.
"""

import torch
import torch.nn.functional as F
from torch import nn

import graphmerge as gm


def _groups(net, x):
    return {g.name: g for g in gm.permutation_groups(net, x)}


def _assert_shuffle_keeps(net, x, probe, seed=0):
    twin = gm.shuffle(net, x, seed=seed)
    torch.testing.assert_close(twin(probe), net(probe), rtol=1e-4, atol=1e-5)
    changed = [k for k, v in net.state_dict().items() if not torch.equal(v, twin.state_dict()[k])]
    assert changed


class ConvFlatten(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc, self.head = (
            nn.Conv2d(3, 8, 3, padding=1),
            nn.Linear(8 * 16, 10),
            nn.Linear(10, 2),
        )

    def forward(self, x):
        return self.head(torch.relu(self.fc(torch.relu(self.conv(x)).flatten(1))))


def test_flatten_of_conv_map_carries_spatial_factor():
    torch.manual_seed(0)
    net, x = ConvFlatten().eval(), torch.randn(2, 3, 4, 4)
    g = _groups(net, x)["conv:out"]
    assert g.params() == {("conv.weight", 0), ("conv.bias", 0), ("fc.weight", 1)}
    fc_member = next(m for m in g.members if m.param == "fc.weight")
    assert fc_member.role == "in" and fc_member.repeat == 16
    _assert_shuffle_keeps(net, x, torch.randn(5, 3, 4, 4))


class MHA(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn, self.head = nn.MultiheadAttention(16, 4, batch_first=True), nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.attn(x, x, x, need_weights=False)[0].mean(1))


def test_multihead_attention_heads_nest_qk_and_v():
    torch.manual_seed(0)
    net, x = MHA().eval(), torch.randn(2, 5, 16)
    groups = gm.permutation_groups(net, x)
    heads = [g for g in groups if g.structure.nested]
    assert len(heads) == 1 and heads[0].size == 4
    nested = [g for g in groups if g.structure.within == (heads[0].name,)]
    assert sorted(g.size for g in nested) == [4, 4] and all(g.structure.heads == 4 for g in nested)
    qk = next(g for g in nested if ("attn.out_proj.weight", 1) not in g.params())
    v = next(g for g in nested if ("attn.out_proj.weight", 1) in g.params())
    assert qk.params() == {("attn.in_proj_weight", 0), ("attn.in_proj_bias", 0)}
    assert not qk.frozen and not v.frozen
    _assert_shuffle_keeps(net, x, torch.randn(3, 7, 16))


class GQA(nn.Module):
    """Grouped-query attention written as Llama does: expand + reshape of k and v."""

    def __init__(self, d=16, heads=4, kv=2):
        super().__init__()
        self.h, self.kv, self.hd = heads, kv, d // heads
        self.q, self.k = nn.Linear(d, d), nn.Linear(d, kv * self.hd)
        self.v, self.o, self.head = nn.Linear(d, kv * self.hd), nn.Linear(d, d), nn.Linear(d, 2)

    def forward(self, x):
        b, t, _ = x.shape
        q = self.q(x).view(b, t, self.h, self.hd).transpose(1, 2)
        k = self.k(x).view(b, t, self.kv, self.hd).transpose(1, 2)
        v = self.v(x).view(b, t, self.kv, self.hd).transpose(1, 2)
        rep = self.h // self.kv
        k = k[:, :, None].expand(b, self.kv, rep, t, self.hd).reshape(b, self.h, t, self.hd)
        v = v[:, :, None].expand(b, self.kv, rep, t, self.hd).reshape(b, self.h, t, self.hd)
        o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, -1)
        return self.head(self.o(o).mean(1))


def test_grouped_query_attention_nests_query_heads_in_kv_heads():
    torch.manual_seed(0)
    net, x = GQA().eval(), torch.randn(2, 5, 16)
    groups = gm.permutation_groups(net, x)
    kv_heads = [g for g in groups if g.size == 2 and len(g.structure.nested) >= 2]
    assert len(kv_heads) == 1
    kv = kv_heads[0]
    assert ("k.weight", 0) in kv.params() and ("q.weight", 0) in kv.params()
    rep = [
        g
        for g in groups
        if g.structure.within == (kv.name,)
        and ("k.weight", 0) not in g.params()
        and ("v.weight", 0) not in g.params()
    ]
    assert rep and rep[0].size == 2 and ("q.weight", 0) in rep[0].params()
    _assert_shuffle_keeps(net, x, torch.randn(3, 6, 16))


class Depthwise(nn.Module):
    def __init__(self):
        super().__init__()
        self.pw = nn.Conv2d(3, 8, 1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.gc = nn.Conv2d(8, 12, 3, padding=1, groups=2)
        self.head = nn.Linear(12, 2)

    def forward(self, x):
        return self.head(self.gc(torch.relu(self.dw(self.pw(x)))).mean((2, 3)))


def test_depthwise_passes_channels_and_grouped_conv_keeps_groups():
    torch.manual_seed(0)
    net, x = Depthwise().eval(), torch.randn(2, 3, 6, 6)
    groups = gm.permutation_groups(net, x)
    by_param = {(m.param, m.axis): g for g in groups for m in g.members}
    assert by_param[("pw.weight", 0)] is by_param[("dw.weight", 0)]  # depthwise keeps channels
    gc_out = [g for g in groups if ("gc.weight", 0) in g.params() and not g.frozen]
    assert any(g.structure.within for g in gc_out)  # output channels nested in conv groups
    _assert_shuffle_keeps(net, x, torch.randn(3, 3, 6, 6))


class ConstantScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 2)
        self.register_buffer("scale", torch.linspace(0.5, 2.0, 8), persistent=False)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)) * self.scale)


def test_constant_varying_along_units_pins_them():
    net, x = ConstantScale().eval(), torch.randn(3, 4)
    g = _groups(net, x)["fc1:out"]
    assert g.frozen and "constant scale" in g.reason


class Unruled(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)

    def forward(self, x):
        h = torch.tanh(
            self.fc1(x)
        )  # as_strided has no rule on purpose (graphmerge/rules/reasons.py)
        return self.fc3(torch.relu(self.fc2(h.as_strided(h.shape, h.stride()))))


def test_op_without_rule_freezes_with_source_line():
    torch.manual_seed(0)
    net, x = Unruled().eval(), torch.randn(3, 4)
    analysis = gm.analyze(net, x)
    g = {g.name: g for g in analysis.groups}
    assert g["fc1:out"].frozen and "no rule for aten.as_strided" in g["fc1:out"].reason
    assert "test_annotate_axes.py:" in g["fc1:out"].reason
    assert not g["fc2:out"].frozen
    assert any(op == "aten.as_strided" for op, _, _ in analysis.unruled)


class Scan(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.head = nn.Linear(4, 8), nn.Linear(8, 6), nn.Linear(6, 2)

    def forward(self, x):  # (B, T, 4): a running sum over tokens keeps the features free
        h = torch.cumsum(self.fc1(x), dim=1)
        return self.head(torch.cumsum(torch.relu(self.fc2(h)), dim=-1).mean(1))


def test_scan_pins_only_the_scanned_axis():
    torch.manual_seed(0)
    net, x = Scan().eval(), torch.randn(2, 5, 4)
    g = _groups(net, x)
    assert not g["fc1:out"].frozen
    assert g["fc2:out"].frozen and "cumsum accumulates" in g["fc2:out"].reason
    _assert_shuffle_keeps(net, x, torch.randn(3, 7, 4))


class Conv1D(nn.Module):
    """GPT-2's Conv1D: addmm with a (in, out) weight."""

    def __init__(self):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.randn(6, 10)), nn.Parameter(torch.randn(10))
        self.head = nn.Linear(10, 2)

    def forward(self, x):
        h = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
        return self.head(torch.tanh(h))


def test_addmm_with_transposed_weight_roles():
    torch.manual_seed(0)
    net, x = Conv1D().eval(), torch.randn(3, 6)
    groups = gm.permutation_groups(net, x)
    free = next(g for g in groups if not g.frozen and g.size == 10)
    roles = {(m.param, m.axis): m.role for m in free.members}
    assert roles == {("weight", 1): "out", ("bias", 0): "out", ("head.weight", 1): "in"}
    _assert_shuffle_keeps(net, x, torch.randn(5, 6))


class GLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 12), nn.Linear(6, 2)

    def forward(self, x):
        a, b = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(a * torch.sigmoid(b))


def test_chunk_makes_blocks():
    torch.manual_seed(0)
    net, x = GLU().eval(), torch.randn(3, 4)
    free = [g for g in gm.permutation_groups(net, x) if not g.frozen and g.size > 1]
    assert sorted(g.size for g in free) == [6] and free[0].structure.kind == "blocks"
    assert free[0].params() == {("fc1.weight", 0), ("fc1.bias", 0), ("fc2.weight", 1)}
    fc1 = next(m for m in free[0].members if m.param == "fc1.weight")
    assert fc1.repeat == 1
    _assert_shuffle_keeps(net, x, torch.randn(5, 4))


class DeadBranch(nn.Module):
    """A layer whose result is discarded: its weights are unused, not free groups."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.dead_conv = nn.Conv2d(4, 5, 3, bias=False)
        self.dead_ln = nn.LayerNorm(4)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        h = self.conv(x)
        _ = self.dead_conv(h)
        _ = self.dead_ln(h.mean((2, 3)))
        return self.head(h.mean((2, 3)))


def test_discarded_layers_are_not_groups():
    torch.manual_seed(0)
    net, x = DeadBranch().eval(), torch.randn(2, 3, 6, 6)
    groups = gm.permutation_groups(net, x)
    params = {m.param for g in groups for m in g.members}
    assert not any(p.startswith(("dead_conv", "dead_ln")) for p in params)
    assert next(g for g in groups if g.name == "conv:out").params() == {
        ("conv.weight", 0),
        ("conv.bias", 0),
        ("head.weight", 1),
    }
    twin = gm.shuffle(net, x, seed=1)
    assert torch.equal(twin.dead_conv.weight, net.dead_conv.weight)
