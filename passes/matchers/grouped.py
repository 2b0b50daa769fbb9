"""Group-aware matching (GroupNorm groups, attention heads): units never leave their group.

Units are group-major: unit = g·Og + d with Og = n / groups. Matching is two-level. For every
pair (group j of model 0, group k of model i) a LAP on their Og×Og block gives the block's mean
matched similarity G[j, k] and a within-block assignment; a G×G LAP on G pairs the groups. The
permutation variant then uses the within-block assignments of the paired groups; the zip variant
runs the greedy zip inside each tuple of paired groups, Og merged units per tuple.

The `_multi` forms take several unit sets (say q/k units and v units of one attention layer)
that must share one group pairing: G is the sum over the sets of their block scores.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.optimize import linear_sum_assignment

from graphmerge.passes.matchers import Match, units_per_model
from graphmerge.passes.matchers.permute import match_from_permutations, solve_assignment
from graphmerge.passes.matchers.zip import (
    ZipBudgets,
    greedy_zip,
    match_from_clusters,
    zip_score,
)

__all__ = [
    "GroupPairing",
    "grouped_permute_match",
    "grouped_permute_match_multi",
    "grouped_zip_match",
    "grouped_zip_match_multi",
    "pair_groups",
]


@dataclasses.dataclass(frozen=True)
class GroupPairing:
    """Groups of models 1..N-1 paired with model 0's groups, and within-block assignments.

    partner[i][j]: the group of model i paired with group j of model 0 (partner[0] = identity).
    within[s][i][j]: for unit set s, the Og units of group partner[i][j] of model i (local
        indices 0..Og-1) matched to units 0..Og-1 of group j of model 0 (within[s][0] unused).
    values[s][i][j]: the mean matched similarity of that block.
    """

    partner: list[np.ndarray]
    within: list[list[np.ndarray]]
    values: list[list[np.ndarray]]


def _group_width(S: np.ndarray, N: int, groups: int) -> tuple[int, int]:
    n = units_per_model(S, N)
    if groups < 1 or n % groups:
        raise ValueError(f"{n} units per model do not split into {groups} groups")
    return n, n // groups


def _block_scores(cross: np.ndarray, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """LAP on every Og×Og block of a cross-model block; returns scores (G, G), cols (G, G, Og).

    scores[j, k] is the mean matched similarity of block (j, k), as `solve_assignment` gives it.
    """
    og = cross.shape[0] // groups
    blocks = cross.reshape(groups, og, groups, og).transpose(0, 2, 1, 3)
    cols = np.zeros((groups, groups, og), dtype=np.int64)
    for j in range(groups if og > 1 else 0):  # a 1×1 LAP has one answer
        # negated into contiguous blocks, a block row at a time: the solver neither copies nor
        # negates (maximize=True would)
        costs = np.negative(blocks[j], out=np.empty(blocks.shape[1:]))
        for k in range(groups):
            rows, cols[j, k] = linear_sum_assignment(costs[k])
            if not np.array_equal(rows, np.arange(og)):
                raise AssertionError("linear_sum_assignment returned rows out of order")
    grid = np.ix_(range(groups), range(groups), range(og))
    scores = blocks[grid[0], grid[1], grid[2], cols].mean(axis=-1)
    return np.asarray(scores, dtype=np.float64), cols


def pair_groups(blocks: list[np.ndarray], N: int, groups: int) -> GroupPairing:
    """Pair every model's groups with model 0's by the two-level LAP, jointly over `blocks`.

    Takes the similarity matrices (N·n_s, N·n_s) of the unit sets, all with `groups` groups;
    the group-pair score is the sum over the sets of each block's mean matched similarity.
    """
    if not blocks:
        raise ValueError("pair_groups needs at least one similarity matrix")
    widths = [_group_width(S, N, groups)[0] for S in blocks]
    partner = [np.arange(groups)]
    within: list[list[np.ndarray]] = [[np.empty(0)] for _ in blocks]
    values: list[list[np.ndarray]] = [[np.empty(0)] for _ in blocks]
    for i in range(1, N):
        per_set = [
            _block_scores(S[:n, i * n : (i + 1) * n], groups) for S, n in zip(blocks, widths)
        ]
        paired, _ = solve_assignment(sum(scores for scores, _ in per_set))
        partner.append(paired)
        for s, (scores, cols) in enumerate(per_set):
            within[s].append(cols[np.arange(groups), paired])
            values[s].append(scores[np.arange(groups), paired])
    return GroupPairing(partner=partner, within=within, values=values)


def grouped_permute_match_multi(blocks: list[np.ndarray], N: int, groups: int) -> list[Match]:
    """Group-aware permutation matching of several unit sets sharing one group pairing.

    Takes the similarity matrices of the sets, the model count and the group count; returns one
    permutation Match per set. Merged group j is model 0's group j; its unit j·Og + d averages
    model 0's unit with its within-block matches. Each score is the set's mean matched similarity.
    """
    pairing = pair_groups(blocks, N, groups)
    matches = []
    for s, S in enumerate(blocks):
        n, og = _group_width(S, N, groups)
        columns = [np.arange(n)]
        for i in range(1, N):
            local = pairing.within[s][i]  # (G, Og)
            columns.append((pairing.partner[i][:, None] * og + local).reshape(-1))
        score = float(np.mean([pairing.values[s][i].mean() for i in range(1, N)]))
        matches.append(match_from_permutations(columns, score))
    return matches


def grouped_permute_match(S: np.ndarray, N: int, groups: int) -> Match:
    """Group-aware permutation matching of one unit set: see `grouped_permute_match_multi`.

    Example:
        >>> C = np.eye(4)[[2, 3, 0, 1]]  # model 1 = model 0 with its two heads swapped
        >>> S = np.block([[np.eye(4), C], [C.T, np.eye(4)]])
        >>> grouped_permute_match(S, 2, groups=2).unmerge[1].argmax(0).tolist()
        [2, 3, 0, 1]
    """
    return grouped_permute_match_multi([S], N, groups)[0]


def grouped_zip_match_multi(
    blocks: list[np.ndarray],
    N: int,
    groups: int,
    a: float = 0.5,
    b: float = 1.0,
    b_group: float = 1.0,
) -> list[Match]:
    """Group-aware zip of several unit sets: pair groups jointly, then zip within each tuple.

    Takes the similarity matrices of the sets, the model count, the group count, the linkage
    factor a, the within-model budget factor b and the within-group budget factor b_group.
    Returns one zip Match per set with n merged units; merged group j (units j·Og..(j+1)·Og-1)
    comes from the tuple (group j of model 0, its partners) and holds exactly Og units.
    """
    pairing = pair_groups(blocks, N, groups)
    return [_zip_tuples(S, N, groups, pairing.partner, a, b, b_group) for S in blocks]


def grouped_zip_match(
    S: np.ndarray, N: int, groups: int, a: float = 0.5, b: float = 1.0, b_group: float = 1.0
) -> Match:
    """Group-aware zip of one unit set: see `grouped_zip_match_multi`."""
    return grouped_zip_match_multi([S], N, groups, a=a, b=b, b_group=b_group)[0]


def _zip_tuples(
    S: np.ndarray,
    N: int,
    groups: int,
    partner: list[np.ndarray],
    a: float,
    b: float,
    b_group: float,
) -> Match:
    """Zip one unit set tuple by tuple, with model budgets shared across tuples."""
    n, og = _group_width(S, N, groups)
    to_remove = N * n - n
    budgets = ZipBudgets(
        model=np.full(N, int((to_remove // N) * b + 1e-4)),
        group=np.full(N * groups, int(to_remove * b_group // (N * groups) + 1e-4)),
    )
    model_of = np.repeat(np.arange(N), n)
    group_of = np.arange(N * n) // og  # global group id: model · groups + group
    assign = np.empty(N * n, dtype=np.int64)
    values: list[float] = []
    for j in range(groups):
        units = np.concatenate([i * n + partner[i][j] * og + np.arange(og) for i in range(N)])
        local = S[np.ix_(units, units)]
        local = (local + local.T) / 2  # = ((S + Sᵀ)/2)[units, units], without a copy of S
        rep, picks = greedy_zip(
            local, model_of[units], N * og - og, a, budgets, group_of[units], overwrite=True
        )
        values.extend(picks)
        reps, cluster = np.unique(rep, return_inverse=True)
        if len(reps) != og:
            raise AssertionError(f"tuple {j} kept {len(reps)} units, expected {og}")
        assign[units] = j * og + cluster
    match = match_from_clusters(assign, n, N)
    return dataclasses.replace(match, score=zip_score(values))
