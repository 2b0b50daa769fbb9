"""infer_groups: groups as sets of parameter axes, names, nesting, frozen reasons."""

from __future__ import annotations

import torch
from torch import nn

import graphmerge as gm
from graphmerge.api import compile_program


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(6, 8)
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = self.embed(x)
        h = h + self.fc2(torch.relu(self.fc1(h)))
        return self.head(self.norm(h))


class Heads(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.gn = nn.GroupNorm(4, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(torch.relu(self.gn(self.conv(x))).mean((2, 3)))


def _groups(model, example):
    return {g.name: g for g in compile_program(model.eval(), example, verify=False).groups}


def test_a_residual_stream_is_one_group_with_every_member():
    groups = _groups(Residual(), torch.randn(2, 6))
    stream = groups["embed:out"]
    assert not stream.frozen and stream.size == 8
    assert stream.params() == {
        ("embed.weight", 0),
        ("embed.bias", 0),
        ("fc1.weight", 1),
        ("fc2.weight", 0),
        ("fc2.bias", 0),
        ("norm.weight", 0),
        ("norm.bias", 0),
        ("head.weight", 1),
    }
    assert groups["fc1:out"].params() == {("fc1.weight", 0), ("fc1.bias", 0), ("fc2.weight", 1)}
    roles = {(m.param, m.axis): m.role for m in stream.members}
    assert roles[("head.weight", 1)] == "in" and roles[("embed.weight", 0)] == "out"
    assert stream.capture is not None and "head" in stream.capture.module


def test_model_inputs_and_outputs_are_frozen_and_named_so():
    groups = _groups(Residual(), torch.randn(2, 6)).values()
    reasons = {g.reason for g in groups if g.frozen}
    assert any(r.startswith("model input") for r in reasons)
    assert any(r.startswith("model output") for r in reasons)


def test_groupnorm_channels_nest_in_its_groups():
    groups = _groups(Heads(), torch.randn(2, 3, 8, 8))
    (inner,) = [g for g in groups.values() if g.structure.within]
    outer = groups[inner.structure.within[0]]
    assert outer.size * inner.size == 8 and inner.structure.heads == outer.size == 4
    assert ("gn.weight", 0) in inner.params() and ("conv.weight", 0) in inner.params()
    assert inner.name in outer.structure.nested


def test_names_and_order_are_stable():
    a = [g.name for g in gm.permutation_groups(Residual().eval(), torch.randn(2, 6))]
    b = [g.name for g in gm.permutation_groups(Residual().eval(), torch.randn(5, 6))]
    assert a == b and len(set(a)) == len(a)
