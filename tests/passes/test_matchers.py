"""Tests for the matching functions: permutation, ZipIt greedy and their group-aware forms."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from graphmerge.passes.matchers import (
    GROUPED_MATCHERS,
    MATCHERS,
    MULTI_MATCHERS,
    Match,
    grouped_permute_match,
    grouped_permute_match_multi,
    grouped_zip_match,
    grouped_zip_match_multi,
    permute_match,
    select_matcher,
    zip_match,
)
from graphmerge.passes.matchers.similarity import weight_correlation

# ---------------------------------------------------------------- helpers


def _symmetric(rng: np.random.Generator, size: int) -> np.ndarray:
    A = rng.uniform(-1, 1, (size, size))
    S = (A + A.T) / 2
    np.fill_diagonal(S, 1.0)
    return S


def _copies(rng, n: int, perms: list[np.ndarray], noise: float = 0.0, samples: int = 2000):
    """Features of model 0 and of models whose unit k is model 0's unit perm[k], and their S."""
    x0 = rng.standard_normal((n, samples))
    xs = [x0] + [x0[p] + noise * rng.standard_normal((n, samples)) for p in perms]
    return xs, weight_correlation(np.concatenate(xs))


def _check_structure(match: Match, N: int, n: int, perm: bool) -> None:
    """Shapes, U 0/1 with every unit in exactly one cluster, stacked M columns summing to ~1."""
    assert len(match.merge) == len(match.unmerge) == N
    for m, u in zip(match.merge, match.unmerge):
        assert m.shape == u.shape == (n, match.n_merged)
        assert set(np.unique(u)) <= {0.0, 1.0}
        np.testing.assert_array_equal(u.sum(axis=1), np.ones(n))
    col_sums = sum(m.sum(axis=0) for m in match.merge)
    np.testing.assert_allclose(col_sums, np.ones(match.n_merged), atol=1e-4)
    if perm:
        for m, u in zip(match.merge, match.unmerge):
            np.testing.assert_array_equal(u.sum(axis=0), np.ones(n))
            np.testing.assert_allclose(m, u / N, atol=1e-5)


def _merged(match: Match, xs: list[np.ndarray]) -> np.ndarray:
    """Σ_i M_iᵀ x_i: the merged features (or output-axis weights)."""
    return sum(m.T @ x for m, x in zip(match.merge, xs))


def _zip_reference(S, N, a=0.5, b=1.0):
    """Plain ZipIt greedy with real row/column deletion, as a check on the cached version."""
    s = (S + S.T) / 2
    np.fill_diagonal(s, -np.inf)
    n = S.shape[0] // N
    members = [[u] for u in range(N * n)]
    origin = [u // n for u in range(N * n)]
    to_remove = N * n - n
    budget = [int((to_remove // N) * b + 1e-4)] * N
    values = []
    for _ in range(to_remove):
        k = int(np.argmax(s))
        i, j = sorted(divmod(k, s.shape[0]))
        values.append(s[i, j])
        row = np.minimum(s[i], s[j])
        if a > 0:
            row = row * a
        else:
            row[[o in (origin[i], origin[j]) for o in origin]] = -np.inf
        row[i] = -np.inf
        s[i], s[:, i] = row, row
        s = np.delete(np.delete(s, j, 0), j, 1)
        members[i] += members.pop(j)
        same = origin[i] == origin.pop(j)
        if same:
            budget[origin[i]] -= 1
            if budget[origin[i]] <= 0:
                sel = np.array(origin) == origin[i]
                s[np.ix_(sel, sel)] = -np.inf
    return [sorted(divmod(u, n) for u in c) for c in members], float(np.mean(values))


# ---------------------------------------------------------------- permute


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_permute_equals_brute_force(n):
    rng = np.random.default_rng(n)
    S = _symmetric(rng, 2 * n)
    match = permute_match(S, 2)
    cross = S[:n, n:]
    best = max(itertools.permutations(range(n)), key=lambda p: cross[range(n), p].sum())
    found = match.unmerge[1].argmax(axis=0)
    assert found.tolist() == list(best)
    np.testing.assert_array_equal(match.unmerge[0], np.eye(n))
    assert match.score == pytest.approx(cross[range(n), best].mean())
    _check_structure(match, 2, n, perm=True)


def test_permute_recovers_permuted_copy():
    rng = np.random.default_rng(0)
    n = 12
    perm = rng.permutation(n)
    xs, S = _copies(rng, n, [perm], noise=0.3)
    match = permute_match(S, 2)
    # unit k of model 1 is unit perm[k] of model 0, so merged unit perm[k] takes unit k
    assert match.unmerge[1].argmax(axis=0)[perm].tolist() == list(range(n))
    x1_clean = xs[0][perm]
    np.testing.assert_allclose(_merged(match, [xs[0], x1_clean]), xs[0], atol=1e-12)
    _check_structure(match, 2, n, perm=True)


def test_permute_three_models():
    rng = np.random.default_rng(1)
    n = 7
    perms = [rng.permutation(n), rng.permutation(n)]
    xs, S = _copies(rng, n, perms)
    match = permute_match(S, 3)
    _check_structure(match, 3, n, perm=True)
    for i, p in enumerate(perms, start=1):
        assert match.unmerge[i].argmax(axis=0)[p].tolist() == list(range(n))
    np.testing.assert_allclose(_merged(match, xs), xs[0], atol=1e-12)
    assert match.score == pytest.approx(1.0)


def test_permute_rejects_bad_input():
    with pytest.raises(ValueError, match="split"):
        permute_match(np.eye(5), 2)
    S = np.eye(4)
    S[0, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        permute_match(S, 2)


# ---------------------------------------------------------------- zip

# model 0: a0 a1 | model 1: b0 b1
S_4 = np.array(
    [
        [1.0, 0.1, 0.2, 0.9],
        [0.1, 1.0, 0.8, 0.3],
        [0.2, 0.8, 1.0, 0.0],
        [0.9, 0.3, 0.0, 1.0],
    ]
)


def test_zip_cross_pairs():
    match = zip_match(S_4, 2)
    assert match.clusters() == [[(0, 0), (1, 1)], [(0, 1), (1, 0)]]
    assert match.score == pytest.approx((0.9 + 0.8) / 2)
    np.testing.assert_array_equal(match.unmerge[1], [[0, 1], [1, 0]])
    np.testing.assert_allclose(match.merge[0], np.eye(2) / (2 + 1e-5))
    _check_structure(match, 2, 2, perm=True)


def test_zip_min_linkage_times_a_and_clusters_of_three():
    # a0 a1 a2 | b0 b1 b2. Picks: a0-b0 (.95); a1-a2 (.5, within model 0); then {a0,b0}-b1 at
    # min(.9, .8)·a = .4. With max linkage it would be .45, without ·a .8 would beat .5.
    S = np.full((6, 6), 0.1)
    np.fill_diagonal(S, 1.0)
    for (i, j), v in {(0, 3): 0.95, (0, 4): 0.9, (3, 4): 0.8, (1, 2): 0.5}.items():
        S[i, j] = S[j, i] = v
    match = zip_match(S, 2, a=0.5)
    assert match.clusters() == [[(0, 0), (1, 0), (1, 1)], [(0, 1), (0, 2)], [(1, 2)]]
    assert match.score == pytest.approx((0.95 + 0.5 + 0.4) / 3)
    np.testing.assert_allclose(match.merge[0][:, 0], [1 / (3 + 1e-5), 0, 0])
    np.testing.assert_allclose(match.merge[1][:, 0], [1 / (3 + 1e-5)] * 2 + [0])
    _check_structure(match, 2, 3, perm=False)
    # the merged features are cluster means
    xs = [np.arange(6.0).reshape(3, 2), 10 + np.arange(6.0).reshape(3, 2)]
    merged = _merged(match, xs)
    np.testing.assert_allclose(merged[0], (xs[0][0] + xs[1][0] + xs[1][1]) / 3, rtol=1e-4)
    # with a = 0.9 the merged pair's similarity to b1 (.72) wins over a1-a2 (.5)
    assert zip_match(S, 2, a=0.9).score == pytest.approx((0.95 + 0.72 + 0.5) / 3)


def test_zip_a_nonpositive_bans_merged_units():
    # a0-b0 .9, then {a0,b0}-a1 would be .4 with a=.5; with a=0 the merged unit is banned
    S = np.array(
        [
            [1.0, 0.8, 0.9, 0.0],
            [0.8, 1.0, 0.8, 0.1],
            [0.9, 0.8, 1.0, 0.0],
            [0.0, 0.1, 0.0, 1.0],
        ]
    )
    assert zip_match(S, 2, a=0.5).clusters() == [[(0, 0), (0, 1), (1, 0)], [(1, 1)]]
    banned = zip_match(S, 2, a=0.0)
    assert banned.clusters() == [[(0, 0), (1, 0)], [(0, 1), (1, 1)]]
    assert banned.score == pytest.approx((0.9 + 0.1) / 2)


def test_zip_budget_binds():
    # a0..a3 | b0..b3: model 0's units are very alike (.9), cross pairs .5, model 1's 0.
    # b=0.5 gives each model int((4 // 2)·0.5) = 1 within-model merge, so after a0-a1 model 0
    # may not merge a2-a3 (.9) and has to pair them with model 1.
    S = np.zeros((8, 8))
    S[:4, :4] = 0.9
    S[:4, 4:] = S[4:, :4] = 0.5
    np.fill_diagonal(S, 1.0)
    match = zip_match(S, 2, b=0.5)
    assert match.clusters() == [
        [(0, 0), (0, 1), (1, 2)],
        [(0, 2), (1, 0)],
        [(0, 3), (1, 1)],
        [(1, 3)],
    ]
    assert match.score == pytest.approx((0.9 + 0.5 + 0.5 + 0.25) / 4)
    # with b=1 the budget is 2 and a2-a3 merge within model 0
    assert [(0, 2), (0, 3)] == zip_match(S, 2, b=1.0).clusters()[1][:2]
    _check_structure(match, 2, 4, perm=False)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("a,b", [(0.5, 1.0), (0.3, 0.125), (0.0, 1.0), (0.9, 0.5)])
def test_zip_matches_deletion_reference(seed, a, b):
    rng = np.random.default_rng(seed)
    n = 9
    S = _symmetric(rng, 2 * n)
    match = zip_match(S, 2, a=a, b=b)
    clusters, score = _zip_reference(S, 2, a=a, b=b)
    assert sorted(match.clusters()) == sorted(clusters)
    assert match.score == pytest.approx(score)
    assert match.n_merged == n
    _check_structure(match, 2, n, perm=False)


@pytest.mark.parametrize("seed", range(40))
def test_zip_ties_and_forced_picks(seed):
    # Similarities rounded to one decimal tie a lot; the cached search must still take the first
    # maximum in row-major order, as the deletion reference does. With a=0 or tiny budgets every
    # pair can end up banned; the matcher still returns n merged units.
    rng = np.random.default_rng(seed)
    n, N = int(rng.integers(2, 10)), int(rng.integers(2, 4))
    a, b = float(rng.choice([0.5, 0.3, 0.0, 1.0])), float(rng.choice([1.0, 0.5, 0.125]))
    S = np.round(_symmetric(rng, N * n), 1)
    match = zip_match(S, N, a=a, b=b)
    _check_structure(match, N, n, perm=False)
    assert match.n_merged == n and np.isfinite(match.score)
    clusters, score = _zip_reference(S, N, a=a, b=b)
    if np.isfinite(score):  # the reference degenerates (merges a unit with itself) otherwise
        assert sorted(match.clusters()) == sorted(clusters)
        assert match.score == pytest.approx(score)


def test_zip_recovers_copies_and_three_models():
    rng = np.random.default_rng(3)
    n = 6
    perm = rng.permutation(n)
    xs, S = _copies(rng, n, [perm])
    match = zip_match(S, 2)
    assert sorted(match.clusters()) == sorted([[(0, int(perm[k])), (1, k)] for k in range(n)])
    np.testing.assert_allclose(_merged(match, [xs[0], xs[0][perm]]), xs[0], rtol=1e-4)
    perms = [rng.permutation(n), rng.permutation(n)]
    xs, S = _copies(rng, n, perms)
    match3 = zip_match(S, 3)
    assert match3.n_merged == n
    expected = sorted(
        sorted([(0, k)] + [(i + 1, int(np.flatnonzero(p == k)[0])) for i, p in enumerate(perms)])
        for k in range(n)
    )
    assert sorted(match3.clusters()) == expected
    _check_structure(match3, 3, n, perm=False)
    S_rand = _symmetric(rng, 3 * n)
    _check_structure(zip_match(S_rand, 3), 3, n, perm=False)
    clusters, _ = _zip_reference(S_rand, 3)
    assert sorted(zip_match(S_rand, 3).clusters()) == sorted(clusters)


def test_zip_reduction_r():
    rng = np.random.default_rng(4)
    S = _symmetric(rng, 8)
    match = zip_match(S, 2, r=0.75)
    assert match.n_merged == 2
    assert sum(len(c) for c in match.clusters()) == 8


# ---------------------------------------------------------------- grouped


def _head_copy(rng, groups: int, og: int):
    """Model 1 = model 0 with heads permuted and units permuted within heads (plus noise)."""
    n = groups * og
    heads = rng.permutation(groups)
    within = [rng.permutation(og) for _ in range(groups)]
    # unit (g, d) of model 1 is unit (heads[g], within[g][d]) of model 0
    source = np.array([heads[g] * og + within[g][d] for g in range(groups) for d in range(og)])
    xs, S = _copies(rng, n, [source], noise=0.2)
    return source, xs, S


def _check_groups_kept(match: Match, groups: int) -> None:
    """Every merged group takes all its units from one group of each model, bijectively."""
    n = match.unmerge[0].shape[0]
    og = n // groups
    assert match.n_merged == n
    for u in match.unmerge:
        units, cols = np.nonzero(u)
        pairs = {(int(c) // og, int(v) // og) for v, c in zip(units, cols)}
        merged_groups = sorted(g for g, _ in pairs)
        model_groups = sorted(h for _, h in pairs)
        assert merged_groups == list(range(groups)) and model_groups == list(range(groups))


def test_grouped_permute_recovers_planted_heads():
    rng = np.random.default_rng(5)
    source, xs, S = _head_copy(rng, groups=4, og=5)
    match = grouped_permute_match(S, 2, groups=4)
    assert match.unmerge[1].argmax(axis=0)[source].tolist() == list(range(20))
    _check_structure(match, 2, 20, perm=True)
    _check_groups_kept(match, 4)
    np.testing.assert_allclose(_merged(match, [xs[0], xs[0][source]]), xs[0], atol=1e-12)


def _crosses_groups(match: Match, groups: int) -> bool:
    og = match.unmerge[0].shape[0] // groups
    return any(
        len({int(u) // og for u in np.nonzero(un[:, g * og : (g + 1) * og])[0]}) > 1
        for un in match.unmerge
        for g in range(groups)
    )


def test_grouped_permute_never_crosses_groups():
    rng = np.random.default_rng(6)
    for N in (2, 3):
        S = _symmetric(rng, N * 12)
        assert _crosses_groups(permute_match(S, N), 3)  # the plain LAP would mix groups
        match = grouped_permute_match(S, N, groups=3)
        assert not _crosses_groups(match, 3)
        _check_structure(match, N, 12, perm=True)
        _check_groups_kept(match, 3)


def test_grouped_permute_single_group_equals_plain():
    rng = np.random.default_rng(7)
    S = _symmetric(rng, 10)
    grouped, plain = grouped_permute_match(S, 2, 1), permute_match(S, 2)
    np.testing.assert_array_equal(grouped.unmerge[1], plain.unmerge[1])
    assert grouped.score == pytest.approx(plain.score)


def test_grouped_zip_keeps_groups_and_recovers_planted_heads():
    rng = np.random.default_rng(8)
    source, _, S = _head_copy(rng, groups=3, og=4)
    match = grouped_zip_match(S, 2, groups=3)
    _check_structure(match, 2, 12, perm=True)  # every unit paired with its copy
    _check_groups_kept(match, 3)
    assert sorted(match.clusters()) == sorted([[(0, int(source[k])), (1, k)] for k in range(12)])
    for N in (2, 3):
        S_rand = _symmetric(rng, N * 12)
        random_match = grouped_zip_match(S_rand, N, groups=3)
        _check_structure(random_match, N, 12, perm=False)
        _check_groups_kept(random_match, 3)


def test_grouped_zip_group_budget_binds():
    # 2 groups of 4 units. Model 0's group 0 units are alike (.9); paired groups share .5.
    # b_group=0.5 gives each group int(8·0.5 // 4) = 1 within-group merge: after a0-a1, a2-a3
    # may not merge and pair with model 1's units instead.
    S = np.zeros((16, 16))
    S[:4, :4] = 0.9
    for g in range(2):
        S[g * 4 : g * 4 + 4, 8 + g * 4 : 12 + g * 4] = 0.5
    S = np.maximum(S, S.T)
    np.fill_diagonal(S, 1.0)
    match = grouped_zip_match(S, 2, groups=2, b_group=0.5)
    assert match.clusters()[:4] == [
        [(0, 0), (0, 1), (1, 2)],
        [(0, 2), (1, 0)],
        [(0, 3), (1, 1)],
        [(1, 3)],
    ]
    assert match.clusters()[4:] == [[(0, k), (1, k)] for k in range(4, 8)]
    assert match.score == pytest.approx((0.9 + 0.5 + 0.5 + 0.25 + 4 * 0.5) / 8)
    _check_groups_kept(match, 2)
    assert zip_match(S, 2).clusters()[1][:2] == [(0, 2), (0, 3)]  # no group budget: merged
    assert grouped_zip_match(S, 2, groups=2).clusters()[1][:2] == [(0, 2), (0, 3)]


def test_grouped_zip_single_group_equals_plain():
    rng = np.random.default_rng(9)
    S = _symmetric(rng, 12)
    grouped, plain = grouped_zip_match(S, 2, 1), zip_match(S, 2)
    assert grouped.clusters() == plain.clusters()
    assert grouped.score == pytest.approx(plain.score)


def test_multi_shares_one_group_pairing():
    rng = np.random.default_rng(10)
    source, _, S_qk = _head_copy(rng, groups=4, og=3)
    S_v = _symmetric(rng, 2 * 8)  # noise: alone it would pair groups differently
    heads = source[::3] // 3  # model 0 head of each model 1 head
    for fn in (grouped_permute_match_multi, grouped_zip_match_multi):
        m_qk, m_v = fn([S_qk, S_v], 2, 4)
        for match, og in ((m_qk, 3), (m_v, 2)):
            _check_groups_kept(match, 4)
            units, cols = np.nonzero(match.unmerge[1])
            pairing = {int(c) // og: int(u) // og for u, c in zip(units, cols)}
            assert all(heads[pairing[g]] == g for g in range(4))
    single = grouped_permute_match_multi([S_v], 2, 4)[0]
    assert np.array_equal(single.unmerge[1], grouped_permute_match(S_v, 2, 4).unmerge[1])
    alone = single.unmerge[1].argmax(axis=0)[::2] // 2  # model 1 group of each merged group
    assert any(heads[alone[g]] != g for g in range(4))


def test_grouped_rejects_indivisible_groups():
    with pytest.raises(ValueError, match="groups"):
        grouped_permute_match(np.eye(10), 2, groups=2)


# ---------------------------------------------------------------- registry


def test_registry_and_select():
    assert set(MATCHERS) == set(GROUPED_MATCHERS) == set(MULTI_MATCHERS) == {"permute", "zip"}
    assert select_matcher("zip")(S_4, 2).clusters() == zip_match(S_4, 2).clusters()
    slow = select_matcher("zip", a=0.0)(S_4, 2)
    assert slow.clusters() == zip_match(S_4, 2, a=0.0).clusters()
    rng = np.random.default_rng(11)
    S = _symmetric(rng, 16)
    grouped = select_matcher("permute", groups=2)(S, 2)
    np.testing.assert_array_equal(grouped.unmerge[1], grouped_permute_match(S, 2, 2).unmerge[1])
    with pytest.raises(KeyError, match="unknown matcher"):
        select_matcher("average")
