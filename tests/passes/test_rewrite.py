"""rewrite: W* = Σ_i M_iᵀ W_i U_i per grouped axis, from index maps, against dense algebra."""

from __future__ import annotations

import sys

import numpy as np
import torch
from torch import nn

from graphmerge.api import compile_program
from graphmerge.assignment import Assignment
from graphmerge.passes.rewrite import rewrite


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(5, 6)
        self.fc2 = nn.Linear(6, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def _dense(targets: np.ndarray, n_merged: int) -> np.ndarray:
    u = np.zeros((len(targets), n_merged))
    u[np.arange(len(targets)), targets] = 1.0
    return u


def test_merged_weights_equal_the_dense_formula_for_a_zip():
    torch.manual_seed(0)
    models = [MLP().eval(), MLP().eval()]
    program = compile_program(models[0], torch.randn(3, 5))
    program.states = [{k: v.detach() for k, v in m.state_dict().items()} for m in models]
    # a zip of fc1's 2x6 units into 6: clusters of 1, 2 and 3 units, within and across models
    t1 = [np.array([0, 0, 1, 2, 3, 4]), np.array([5, 1, 2, 3, 5, 4])]
    t2 = [np.array([0, 1, 2, 3]), np.array([1, 0, 3, 2])]  # a permutation of fc2's units
    program.assignments = {
        "fc1:out": Assignment.from_targets(t1, zip=True, n_merged=6),
        "fc2:out": Assignment.from_targets(t2, n_merged=4),
    }
    merged = rewrite(program).merged_state
    u1 = [_dense(t, 6) for t in t1]
    u2 = [_dense(t, 4) for t in t2]
    m1 = [u / (sum(x.sum(0) for x in u1) + 1e-5) for u in u1]
    m2 = [u / sum(x.sum(0) for x in u2) for u in u2]
    s = program.states
    w = {k: [st[k].double().numpy() for st in s] for k in s[0]}
    expect = {
        "fc1.weight": sum(m1[i].T @ w["fc1.weight"][i] for i in (0, 1)),
        "fc1.bias": sum(m1[i].T @ w["fc1.bias"][i] for i in (0, 1)),
        "fc2.weight": sum(m2[i].T @ w["fc2.weight"][i] @ u1[i] for i in (0, 1)),
        "fc2.bias": sum(m2[i].T @ w["fc2.bias"][i] for i in (0, 1)),
        "head.weight": sum(w["head.weight"][i] @ u2[i] for i in (0, 1)) / 2,
        "head.bias": sum(w["head.bias"]) / 2,
    }
    for key, value in expect.items():
        np.testing.assert_allclose(merged[key].double().numpy(), value, atol=1e-6, err_msg=key)


def test_no_assignments_is_the_plain_average():
    torch.manual_seed(1)
    models = [MLP().eval(), MLP().eval()]
    program = compile_program(models[0], torch.randn(3, 5))
    program.states = [m.state_dict() for m in models]
    merged = rewrite(program).merged_state
    for key in merged:
        torch.testing.assert_close(
            merged[key], (program.states[0][key] + program.states[1][key]) / 2
        )


class TiedLM(nn.Module):
    """An embedding and an output head sharing one weight (as GPT-2's), wide enough to slice."""

    def __init__(self, vocab=50, dim=6):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.mix = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids):
        return self.head(torch.relu(self.mix(self.emb(ids))))


def test_large_tensors_are_rewritten_a_slice_at_a_time_with_the_same_bits(monkeypatch):
    """Slicing a tensor along an axis no group carries (the vocabulary) bounds the float64
    temporaries and changes no bit; a tensor tied in both models is computed once, still tied."""
    rewrite_pass = sys.modules["graphmerge.passes.rewrite"]  # the package exports the function
    torch.manual_seed(2)
    models = [TiedLM().eval(), TiedLM().eval()]
    ids = torch.randint(0, 50, (2, 7))
    program = compile_program(models[0], ids)
    program.states = [m.state_dict() for m in models]
    perm = [np.arange(6), np.array([3, 1, 0, 5, 4, 2])]
    program.assignments = {
        name: Assignment.from_targets(perm, n_merged=6) for name in _free_groups(program)
    }
    whole = dict(rewrite(program).merged_state)
    monkeypatch.setattr(rewrite_pass, "SLICE_ELEMENTS", 7)  # the 50 x 6 embedding: 50 slices
    calls = []
    slice_fn = rewrite_pass._merged_slice
    monkeypatch.setattr(
        rewrite_pass,
        "_merged_slice",
        lambda ts, plan: calls.append(ts[0].shape) or slice_fn(ts, plan),
    )
    sliced = rewrite(program).merged_state
    assert calls.count(torch.Size([1, 6])) == 50  # the tied embedding, once, row by row
    assert whole.keys() == sliced.keys()
    for key, value in whole.items():
        assert torch.equal(value, sliced[key]), key
    assert sliced["emb.weight"] is sliced["head.weight"]
    # the permutation moved the embedding's hidden axis: not a plain average
    avg = (program.states[0]["emb.weight"] + program.states[1]["emb.weight"]) / 2
    assert not torch.allclose(sliced["emb.weight"], avg)


def _free_groups(program) -> list[str]:
    return [g.name for g in program.free_groups() if g.size == 6]
