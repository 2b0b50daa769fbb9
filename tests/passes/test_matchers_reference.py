"""The fast matchers against slow, plainly written references of the same rules (MUDSC_SPEC §1.5,
§1.7): every merge is the argmax over the whole upper triangle, every merged row is rebuilt from
scratch, every group pair gets its own LAP. Results must be identical, not just close.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from graphmerge.passes.matchers import (
    Match,
    grouped_permute_match,
    grouped_zip_match,
    grouped_zip_match_multi,
    permute_match,
    zip_match,
)
from graphmerge.passes.matchers.zip import _symmetrize

NEG = -np.inf

# ---------------------------------------------------------------- references


class _Budgets:
    """Within-model and within-group merges left, and which have closed (shared by tuples)."""

    def __init__(self, model: int, N: int, group: int | None = None, n_groups: int = 0):
        self.left = {("model", k): model for k in range(N)}
        if group is not None:
            self.left.update({("group", g): group for g in range(n_groups)})
        self.closed: set[tuple[str, int]] = set()

    def spend(self, key: tuple[str, int]) -> bool:
        """One within-merge in `key`; True when that closes it (the first time it reaches 0)."""
        self.left[key] -= 1
        if self.left[key] <= 0 and key not in self.closed:
            self.closed.add(key)
            return True
        return False


def _reference_greedy(sims, origin, merges, a, budgets):
    """ZipIt greedy on one symmetric matrix. origin[u] = {"model": m, "group": g or absent}.

    Returns (members of each final cluster keyed by its lowest unit, pick values)."""
    s = np.array(sims, dtype=float)
    m = len(s)
    np.fill_diagonal(s, NEG)
    live = np.ones(m, dtype=bool)

    def ban(kind, value):
        sel = np.array([origin[u].get(kind) == value for u in range(m)]) & live
        s[np.ix_(sel, sel)] = NEG

    for kind, value in budgets.closed:
        ban(kind, value)
    members = {u: [u] for u in range(m)}
    values = []
    for _ in range(merges):
        upper = np.where(np.triu(np.ones((m, m), dtype=bool), 1), s, NEG)
        if upper.max() == NEG:  # nothing admissible: the first two live units
            i, j = np.flatnonzero(live)[:2]
        else:
            i, j = divmod(int(np.argmax(upper)), m)  # first maximum in row-major order
        values.append(s[i, j])
        live[j] = False
        row = np.minimum(s[i], s[j])
        if a > 0:
            row = row * a
        else:
            both = {origin[i]["model"], origin[j]["model"]}
            row[[origin[u]["model"] in both for u in range(m)]] = NEG
        row[~live] = NEG
        row[i] = NEG
        s[i, :], s[:, i], s[j, :], s[:, j] = row, row, NEG, NEG
        members[i] += members.pop(j)
        for kind in ("model", "group"):
            key = (kind, origin[i].get(kind))
            within = key in budgets.left and origin[i].get(kind) == origin[j].get(kind)
            if within and budgets.spend(key):
                ban(*key)
    return members, values


def _match_from_assignment(assign: np.ndarray, n_merged: int, N: int, values) -> Match:
    """U = one-hot assignment, M = U / (column sums + 1e-5), score = mean finite pick."""
    U = np.zeros((len(assign), n_merged))
    U[np.arange(len(assign)), assign] = 1.0
    M = U / (U.sum(axis=0, keepdims=True) + 1e-5)
    finite = [v for v in values if np.isfinite(v)]
    score = float(np.mean(finite)) if finite else 0.0
    return Match.from_dense(merge=np.split(M, N), unmerge=np.split(U, N), score=score)


def _reference_zip(S, N, a, b):
    n = S.shape[0] // N
    to_remove = N * n - n
    budgets = _Budgets(int((to_remove // N) * b + 1e-4), N)
    origin = [{"model": u // n} for u in range(N * n)]
    members, values = _reference_greedy((S + S.T) / 2, origin, to_remove, a, budgets)
    assign = np.empty(N * n, dtype=int)
    for column, rep in enumerate(sorted(members)):
        assign[members[rep]] = column
    return _match_from_assignment(assign, n, N, values)


def _reference_partners(blocks, N, groups):
    """partner[i][j]: model i's group paired with model 0's group j (block LAPs, then G×G LAP)."""
    partner = [np.arange(groups)]
    for i in range(1, N):
        total = np.zeros((groups, groups))
        for S in blocks:
            n = S.shape[0] // N
            og = n // groups
            for j in range(groups):
                for k in range(groups):
                    block = S[j * og : (j + 1) * og, i * n + k * og : i * n + (k + 1) * og]
                    rows, cols = linear_sum_assignment(block, maximize=True)
                    total[j, k] += block[rows, cols].mean()
        partner.append(linear_sum_assignment(total, maximize=True)[1])
    return partner


def _reference_grouped_zip(S, N, groups, partner, a, b, b_group):
    n = S.shape[0] // N
    og = n // groups
    to_remove = N * n - n
    budgets = _Budgets(
        int((to_remove // N) * b + 1e-4),
        N,
        int(to_remove * b_group // (N * groups) + 1e-4),
        N * groups,
    )
    sym = (S + S.T) / 2
    assign = np.empty(N * n, dtype=int)
    values = []
    for j in range(groups):
        units = [i * n + int(partner[i][j]) * og + d for i in range(N) for d in range(og)]
        origin = [{"model": u // n, "group": u // og} for u in units]
        local = sym[np.ix_(units, units)]
        members, picks = _reference_greedy(local, origin, N * og - og, a, budgets)
        values += picks
        for column, rep in enumerate(sorted(members)):
            assign[[units[u] for u in members[rep]]] = j * og + column
    return _match_from_assignment(assign, n, N, values)


def _assert_identical(got: Match, want: Match) -> None:
    assert len(got.merge) == len(want.merge)
    for g, w in zip(got.merge + got.unmerge, want.merge + want.unmerge):
        assert g.shape == w.shape
        np.testing.assert_array_equal(g, w)
    assert got.score == want.score


def _similarity(seed: int, size: int, ties: bool, shift: float = 0.0) -> np.ndarray:
    """A random similarity, not symmetric; rounded to one decimal it ties a lot. With shift < -1
    every entry is negative, so a merged unit (min times a < 1) can be more similar to a unit
    than either of its parts was."""
    S = np.random.default_rng(seed).uniform(-1, 1, (size, size)) + shift
    return np.round(S, 1) if ties else S


# ---------------------------------------------------------------- zip

_A = st.sampled_from([0.5, 0.3, 1.0, 2.0, 0.0, -0.5])
_SHIFT = st.sampled_from([0.0, 0.0, -1.5])
_B = st.sampled_from([1.0, 0.5, 0.125, 0.0])


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    N=st.sampled_from([2, 3]),
    n=st.integers(1, 14),
    a=_A,
    b=_B,
    ties=st.booleans(),
    shift=_SHIFT,
)
def test_zip_equals_reference(seed, N, n, a, b, ties, shift):
    S = _similarity(seed, N * n, ties, shift)
    _assert_identical(zip_match(S, N, a=a, b=b), _reference_zip(S, N, a, b))


@pytest.mark.parametrize("n", [40, 70])
@pytest.mark.parametrize("N,a,b", [(2, 0.5, 1.0), (2, 0.3, 0.125), (3, 0.0, 0.5), (2, -1.0, 0.25)])
def test_zip_equals_reference_larger(n, N, a, b):
    S = _similarity(n * N, N * n, ties=False)
    _assert_identical(zip_match(S, N, a=a, b=b), _reference_zip(S, N, a, b))


def test_zip_merged_unit_becomes_the_best_partner():
    # all negative with ties: min times a = 0.5 makes a merged unit more similar to some units
    # than anything they had, and the first maximum in row-major order then sits in such a row
    S = -np.array(
        [
            [1.8, 1.05, 1.05, 1.05, 1.05, 1.7, 1.0, 0.75],
            [1.05, 0.6, 1.1, 1.25, 1.15, 0.85, 1.25, 1.1],
            [1.05, 1.1, 2.0, 1.15, 1.55, 1.1, 0.95, 1.4],
            [1.05, 1.25, 1.15, 1.4, 1.5, 1.35, 0.55, 0.75],
            [1.05, 1.15, 1.55, 1.5, 0.4, 0.9, 0.65, 1.45],
            [1.7, 0.85, 1.1, 1.35, 0.9, 0.2, 0.7, 0.45],
            [1.0, 1.25, 0.95, 0.55, 0.65, 0.7, 0.1, 1.65],
            [0.75, 1.1, 1.4, 0.75, 1.45, 0.45, 1.65, 2.0],
        ]
    )
    match = zip_match(S, 2)
    _assert_identical(match, _reference_zip(S, 2, 0.5, 1.0))
    assert match.clusters()[0] == [(0, 0), (0, 1), (1, 1), (1, 2), (1, 3)]


def test_zip_symmetric_input_and_overwrite():
    # an exactly symmetric S takes the copy path; overwrite=True works in S itself
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 8))
    S = x @ x.T
    assert np.array_equal(S, S.T)
    want = _reference_zip(S, 2, 0.5, 1.0)
    before = S.copy()
    _assert_identical(zip_match(S, 2), want)
    np.testing.assert_array_equal(S, before)  # not modified by default
    _assert_identical(zip_match(S, 2, overwrite=True), want)
    assert not np.array_equal(S, before)  # the working buffer was S
    A = rng.uniform(-1, 1, (60, 60))
    _assert_identical(zip_match(A.copy(), 2, overwrite=True), _reference_zip(A, 2, 0.5, 1.0))


@pytest.mark.parametrize("scale", [1.0, 2.0**1022, 2.0**1023, 1.7e308])
def test_symmetrize_is_the_whole_matrix_expression(scale):
    # tiles of 128: sizes that do and do not divide them; A + Aᵀ is exactly symmetric (the copy
    # path) unless doubling its entries overflows, which (S + Sᵀ)/2 does as well
    rng = np.random.default_rng(1)
    for size in (5, 128, 300):
        A = rng.uniform(-1, 1, (size, size)) * scale
        with np.errstate(over="ignore"):
            for S in (A, A + A.T):
                want = (S + S.T) / 2
                np.testing.assert_array_equal(_symmetrize(S), want)
                C = S.copy()
                assert _symmetrize(C, out=C) is C
                np.testing.assert_array_equal(C, want)


# ---------------------------------------------------------------- grouped


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    N=st.sampled_from([2, 3]),
    shape=st.sampled_from([(1, 5), (2, 3), (3, 2), (4, 1), (2, 6), (5, 2)]),
    a=_A,
    b=_B,
    b_group=st.sampled_from([1.0, 0.5, 0.0]),
    ties=st.booleans(),
    shift=_SHIFT,
)
def test_grouped_zip_equals_reference(seed, N, shape, a, b, b_group, ties, shift):
    groups, og = shape
    S = _similarity(seed, N * groups * og, ties, shift)
    partner = _reference_partners([S], N, groups)
    want = _reference_grouped_zip(S, N, groups, partner, a, b, b_group)
    _assert_identical(grouped_zip_match(S, N, groups, a=a, b=b, b_group=b_group), want)


def test_grouped_zip_multi_equals_reference():
    rng = np.random.default_rng(3)
    for N in (2, 3):
        blocks = [rng.uniform(-1, 1, (N * 12, N * 12)), rng.uniform(-1, 1, (N * 8, N * 8))]
        partner = _reference_partners(blocks, N, 4)
        got = grouped_zip_match_multi(blocks, N, 4, a=0.3, b=0.5, b_group=0.5)
        for match, S in zip(got, blocks):
            _assert_identical(match, _reference_grouped_zip(S, N, 4, partner, 0.3, 0.5, 0.5))


@pytest.mark.parametrize("groups,og", [(3, 4), (2, 130), (6, 1)])
def test_grouped_permute_equals_reference(groups, og):
    # block scores are means over Og matched entries (Og = 130 sums past numpy's 128 unroll)
    rng = np.random.default_rng(groups * og)
    for N in (2, 3):
        n = groups * og
        S = rng.uniform(-1, 1, (N * n, N * n))
        partner = _reference_partners([S], N, groups)
        match = grouped_permute_match(S, N, groups)
        per_model = []
        for i in range(1, N):
            taken = match.unmerge[i].argmax(axis=0)  # unit of model i in each merged unit
            values = []
            for j in range(groups):
                k = int(partner[i][j])
                block = S[j * og : (j + 1) * og, i * n + k * og : i * n + (k + 1) * og]
                rows, cols = linear_sum_assignment(block, maximize=True)
                np.testing.assert_array_equal(taken[j * og : (j + 1) * og], k * og + cols)
                values.append(block[rows, cols].mean())
            per_model.append(np.mean(values))
        assert match.score == float(np.mean(per_model))


def test_permute_equals_reference():
    rng = np.random.default_rng(4)
    for N in (2, 3):
        n = 50
        S = rng.uniform(-1, 1, (N * n, N * n))
        match = permute_match(S, N)
        values = []
        for i in range(1, N):
            rows, cols = linear_sum_assignment(S[:n, i * n : (i + 1) * n], maximize=True)
            np.testing.assert_array_equal(match.unmerge[i][cols, np.arange(n)], np.ones(n))
            np.testing.assert_array_equal(match.merge[i], match.unmerge[i] / N)
            values.append(S[:n, i * n : (i + 1) * n][rows, cols].mean())
        assert match.score == float(np.mean(values))


# ---------------------------------------------------------------- memory


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    fn()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak


def test_zip_memory_is_one_working_copy():
    # the working buffer and the returned Match (two (N·n, n) matrices, together the size of S)
    # never coexist; overwrite=True leaves only the Match
    n = 384
    S = np.random.default_rng(5).uniform(-1, 1, (2 * n, 2 * n))
    assert _peak_bytes(lambda: zip_match(S, 2)) < 1.1 * S.nbytes
    assert _peak_bytes(lambda: zip_match(S, 2, a=0.3, b=0.125)) < 1.1 * S.nbytes
    T = S.copy()
    assert _peak_bytes(lambda: zip_match(T, 2, overwrite=True)) < 1.1 * S.nbytes
    # grouped: per-tuple buffers only, so the Match dominates
    assert _peak_bytes(lambda: grouped_zip_match(S, 2, 12)) < 1.1 * S.nbytes
    assert _peak_bytes(lambda: permute_match(S, 2)) < 1.1 * S.nbytes


@pytest.mark.parametrize("symmetric", [True, False])
def test_zip_works_in_float32_for_a_float32_s(symmetric):
    """A wide group's float32 S is symmetrised and zipped in float32, in place with overwrite:
    the same picks and score as the float64 zip of the same (symmetrised) values, since a=0.5
    halves exactly."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((80, 5)).astype(np.float32)
    S = x @ x.T if symmetric else rng.uniform(-1, 1, (80, 80)).astype(np.float32)
    half = _symmetrize(S)
    assert half.dtype == np.float32
    np.testing.assert_array_equal(half, (S + S.T) / 2)  # float32 arithmetic
    want = zip_match(half.astype(np.float64), 2)
    _assert_identical(zip_match(S, 2), want)
    work = S.copy()
    _assert_identical(zip_match(work, 2, overwrite=True), want)
    assert not np.array_equal(work, S)  # the float32 buffer itself was the working buffer
