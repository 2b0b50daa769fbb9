"""Weight vectors and their streamed Gram matrices (MuDSC's weight similarity)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from zoo import ZOO

import graphmerge as gm
from graphmerge.api import compile_program
from graphmerge.assignment import Assignment
from graphmerge.passes.matchers.similarity import weight_correlation
from graphmerge.passes.weight_vectors import Gram, WeightVectors


def _setup(name: str):
    entry = ZOO[name]
    model = entry.build().eval()
    twin = gm.shuffle(model, entry.example(), seed=2)
    program = compile_program(model, entry.example())
    states = [{k: v.detach() for k, v in m.state_dict().items()} for m in (model, twin)]
    return program, states


def _some_assignments(program, seed: int = 0) -> dict:
    """A random permutation of every free group (nested groups stay in place)."""
    rng = np.random.default_rng(seed)
    out = {}
    for g in program.free_groups():
        if g.structure.within or g.structure.nested:
            continue
        n = g.size
        out[g.name] = Assignment.from_targets([np.arange(n), rng.permutation(n)])
    return out


@pytest.mark.parametrize("name", ["resnet20", "vit_block", "groupnorm_resnet", "swiglu_rmsnorm"])
def test_streamed_gram_equals_the_concatenated_vectors(name):
    program, states = _setup(name)
    weights = WeightVectors(program, states)
    assign = _some_assignments(program)
    for g in program.free_groups():
        vecs = np.concatenate([weights.vectors(g.name, assign, i) for i in (0, 1)], axis=0)
        reference = weight_correlation(vecs)
        full = weights.correlation(g.name, assign, "all")
        np.testing.assert_allclose(full, reference, atol=1e-10, err_msg=g.name)
        cross = weights.correlation(g.name, assign, "cross")
        n = vecs.shape[0] // 2
        np.testing.assert_allclose(cross[:n, n:], reference[:n, n:], atol=1e-10)
        assert not cross[:n, :n].any()  # within-model blocks are not computed for a permute


def test_the_cache_follows_the_assignments_it_depends_on():
    program, states = _setup("resnet20")
    weights = WeightVectors(program, states)
    first = _some_assignments(program, 0)
    name = next(n for n in first if set(weights.depends_on(n)) & set(first))
    before = weights.correlation(name, first)
    second = dict(first)
    dep = next(d for d in weights.depends_on(name) if d in first)
    second[dep] = _some_assignments(program, 1)[dep]
    after = weights.correlation(name, second)
    fresh = WeightVectors(program, states).correlation(name, second)
    np.testing.assert_array_equal(after, fresh)
    assert not np.array_equal(before, after)


def test_float32_products_of_large_groups_stay_close_to_float64():
    rng = np.random.default_rng(0)
    v = [rng.standard_normal((1100, 300)) + 0.1, rng.standard_normal((1100, 300))]
    big = Gram.zeros(2, 1100, "all")  # 2200 stacked units: float32 products
    big.add(v)
    reference = weight_correlation(np.concatenate(v, axis=0))
    np.testing.assert_allclose(big.correlation(), reference, atol=1e-5)


def test_groups_with_costly_grams_take_float32_products(monkeypatch):
    """A group below FLOAT32_FROM_UNITS whose Gram is costly (a residual stream read by every
    layer) takes float32 products: same correlation within 1e-5; small groups stay float64."""
    from graphmerge.passes import weight_vectors as wv

    program, states = _setup("resnet20")
    assign = _some_assignments(program)
    name = max(
        (g.name for g in program.free_groups() if not g.structure.within),
        key=lambda n: len(WeightVectors(program, states).members(n)),
    )
    reference = WeightVectors(program, states).correlation(name, assign)
    assert reference.dtype == np.float64
    monkeypatch.setattr(wv, "FLOAT32_FROM_WORK", 1)
    fast = WeightVectors(program, states)
    assert fast.float32(name)
    low = fast.correlation(name, assign)
    assert low.dtype == np.float32
    np.testing.assert_allclose(low, reference, atol=1e-5)
    assert not np.array_equal(low, reference.astype(np.float32))  # it did change precision


def test_wide_groups_accumulate_one_triangle_in_float32_in_place():
    """From FLOAT32_FROM_UNITS stacked units the whole Gram is float32, filled in place by
    SYRK (no product-sized temporary, half the memory) and mirrored when read: the same
    correlation as float64 accumulation within 1e-6."""
    rng = np.random.default_rng(3)
    parts = [[rng.standard_normal((1100, 200)) + 0.2 * k for k in range(2)] for _ in range(3)]
    wide = Gram.zeros(2, 1100, "all")
    exact = Gram.zeros(2, 1100, "all", large=False)
    assert wide.g.dtype == np.float32 and exact.g.dtype == np.float64
    buffer = wide.g
    for vectors in parts:
        wide.add(vectors)
        exact.add(vectors)
    assert wide.g is buffer
    raw = wide.raw_blocks()
    np.testing.assert_allclose(raw, raw.T)  # both triangles filled
    np.testing.assert_allclose(raw, exact.raw_blocks(), rtol=1e-5, atol=1e-3)
    corr = wide.correlation()
    assert corr is buffer  # normalised in place
    np.testing.assert_allclose(corr, exact.correlation(), atol=1e-6)


class _LM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(400, 8)
        self.fc = torch.nn.Linear(8, 8)
        self.head = torch.nn.Linear(8, 5)

    def forward(self, ids):
        x = self.emb(ids)
        return self.head(x + torch.relu(self.fc(x)))


def test_a_long_static_member_is_read_a_slice_at_a_time(monkeypatch):
    """An embedding table (a member no assignment changes, longer than the group's stacked
    units) enters the Gram in slices of SLICE_ELEMENTS entries: the same correlation, and
    never a whole copy of the table."""
    from graphmerge.passes import weight_vectors as wv

    torch.manual_seed(0)
    model = _LM().eval()
    ids = torch.randint(0, 400, (2, 6))
    twin = gm.shuffle(model, ids, seed=2)
    program = compile_program(model, ids)
    states = [{k: v.detach() for k, v in m.state_dict().items()} for m in (model, twin)]
    assign = _some_assignments(program)
    names = [g.name for g in program.free_groups()]
    reference = {n: WeightVectors(program, states).correlation(n, assign) for n in names}
    monkeypatch.setattr(wv, "SLICE_ELEMENTS", 40)  # the 400 x 8 table: 80 slices of 5 rows
    sliced = WeightVectors(program, states)
    pieces = []
    read = sliced.member_vectors
    monkeypatch.setattr(
        sliced, "member_vectors", lambda *a: pieces.append((a[1].param, *a[4:])) or read(*a)
    )
    for n in names:
        np.testing.assert_allclose(sliced.correlation(n, assign), reference[n], atol=1e-12)
    table = [p[1] for p in pieces if p[0] == "emb.weight"]
    assert table and None not in table  # the table is only ever read in slices
    assert sorted(set(table)) == [(0, start, 5) for start in range(0, 400, 5)]
