"""Rule bugs found while splitting the rule table, each through the public API.

Each model below went wrong before the fix: a wrong rule (the strict self-check raises), a rule
that crashed or gave the wrong shapes (its groups frozen and the op reported), or a stacked
block (fused qkv) not recognised through a pass-through op the old second op table lacked.
Every test checks the groups, that nothing is reported without a rule, and that a strict
shuffle keeps the function while permuting the free groups.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import graphmerge as gm
from graphmerge.rules import RULES, Rule, shapes


def _check(model: nn.Module, x: torch.Tensor) -> dict[str, gm.PermutationGroup]:
    """Strict analysis with no op left without a rule, and a strict shuffle that keeps the
    function and changes parameters; returns the free groups (size > 1) by name."""
    model.eval()
    analysis = gm.analyze(model, x, strict=True)
    assert analysis.unruled == []
    free = {g.name: g for g in analysis.groups if not g.frozen and g.size > 1}
    assert free
    twin = gm.shuffle(model, x, seed=1, strict=True)
    probe = torch.randn_like(x)
    with torch.no_grad():
        torch.testing.assert_close(twin(probe), model(probe), rtol=1e-4, atol=1e-5)
    before, after = model.state_dict(), twin.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    return free


class ClampToParameter(nn.Module):
    """torch.clamp with a learned per-unit lower bound (the bound was ignored: wrong rule)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(5, 8), nn.Linear(8, 3)
        self.lo = nn.Parameter(torch.linspace(-0.5, 0.5, 8))

    def forward(self, x):
        return self.fc2(torch.clamp(self.fc1(x), min=self.lo))


def test_clamp_with_a_tensor_bound_permutes_the_bound_with_the_units():
    torch.manual_seed(0)
    free = _check(ClampToParameter(), torch.randn(4, 5))
    assert {m.param for m in free["fc1:out"].members} >= {"fc1.weight", "fc1.bias", "lo"}


class KthOverBatch(nn.Module):
    """kthvalue along the batch (its k was read as the dim: the rule crashed)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(5, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        return self.fc2(h - h.kthvalue(2, dim=0, keepdim=True).values)


def test_kthvalue_pins_its_dim_not_k():
    torch.manual_seed(0)
    assert set(_check(KthOverBatch(), torch.randn(4, 5))) == {"fc1:out"}


class ReversedAxes(nn.Module):
    """`x.T` of a 3-d tensor reverses all axes (the rule swapped the last two)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(5, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = torch.tanh(self.fc1(x))  # (B, T, 8)
        return self.fc2(h.T.permute(2, 1, 0))


@pytest.mark.filterwarnings("ignore:The use of `x.T` on tensors:UserWarning")
def test_numpy_T_reverses_every_axis():
    torch.manual_seed(0)
    assert set(_check(ReversedAxes(), torch.randn(2, 3, 5))) == {"fc1:out"}


class EinsumTotal(nn.Module):
    """einsum with an explicit empty output (was read as the implicit output: wrong shapes)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(5, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = torch.tanh(self.fc1(x))
        return self.fc2(h / (1 + torch.einsum("bf->", h * h)))


def test_einsum_with_empty_output_sums_everything():
    torch.manual_seed(0)
    assert set(_check(EinsumTotal(), torch.randn(4, 5))) == {"fc1:out"}


class FusedQKV(nn.Module):
    """timm-style fused qkv whose blocks reach `unbind` through `style` ops."""

    def __init__(self, style: str):
        super().__init__()
        self.style = style
        self.inp, self.qkv = nn.Linear(6, 8), nn.Linear(8, 24)
        self.out, self.head = nn.Linear(8, 8), nn.Linear(8, 2)

    def forward(self, x):
        b, t = x.shape[:2]
        qkv = self.qkv(self.inp(x)).reshape(b, t, 3, 2, 4)
        if self.style == "permute":
            qkv = qkv.permute(2, 0, 3, 1, 4)
        elif self.style == "movedim":
            qkv = qkv.movedim(2, 0).transpose(2, 3)
        else:
            qkv = qkv.swapaxes(0, 2).swapaxes(1, 2).transpose(2, 3)
        q, k, v = qkv.unbind(0)
        att = torch.softmax(q @ k.transpose(-2, -1), -1) @ v
        return self.head(self.out(att.transpose(1, 2).reshape(b, t, 8)).mean(1))


@pytest.mark.parametrize("style", ["permute", "movedim", "swapaxes"])
def test_fused_qkv_blocks_are_found_through_every_axis_permutation(style):
    torch.manual_seed(0)
    free = _check(FusedQKV(style), torch.randn(2, 5, 6))
    # q, k and v get their own spaces (q and k share head dims, v has its own)
    assert set(free) == {
        "inp:out",
        "out:out",
        "qkv:out.block0.heads",
        "qkv:out.block0.head_dim",
        "qkv:out.block2.head_dim",
    }


def test_block_detection_follows_the_table(monkeypatch):
    """Without movedim's flow in the table, the blocks are no longer found (coarser groups)."""
    torch.manual_seed(0)
    monkeypatch.setitem(RULES, torch.ops.aten.movedim, Rule(shapes.movedim, structural=True))
    free = _check(FusedQKV("movedim"), torch.randn(2, 5, 6))
    assert not any("block" in name for name in free)


class EinsumHead(nn.Module):
    """An activation as the second einsum operand (its capture site indexed past the call's
    arguments: the merge crashed with IndexError)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(5, 8)
        self.w = nn.Parameter(torch.randn(3, 8))

    def forward(self, x):
        return torch.einsum("of,bf->bo", self.w, torch.relu(self.fc1(x)))


def test_einsum_operand_capture_site_is_the_operand_itself():
    torch.manual_seed(0)
    model = EinsumHead().eval()
    data = [torch.randn(16, 5) for _ in range(3)]
    group = next(g for g in gm.permutation_groups(model, data[0]) if g.name == "fc1:out")
    assert (group.capture.node, group.capture.arg, group.capture.dim) == ("relu", -1, 1)
    # merging a model with its own shuffled copy gives the model back
    twin = gm.shuffle(model, data[0], seed=2, strict=True)
    assert not torch.equal(twin.fc1.weight, model.fc1.weight)
    merged = gm.merge([model, twin], data, method="mudsc")
    probe = torch.randn(7, 5)
    with torch.no_grad():
        torch.testing.assert_close(merged(probe), model(probe), rtol=1e-4, atol=1e-5)
