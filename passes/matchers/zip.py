"""zip_match: ZipIt's greedy clustering of all N·n units down to n merged units.

Repeatedly merge the most similar pair of live units (across or within models); the merged
unit's similarity to every other unit is the minimum of its parts' (complete linkage) times `a`.
Each model may spend only `int((to_remove // N) · b)` merges within itself; after that its units
can only merge with other models' units.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from graphmerge.passes.matchers import Match, units_per_model

__all__ = ["ZipBudgets", "greedy_zip", "match_from_clusters", "zip_match", "zip_score"]

_NEG = -np.inf


@dataclasses.dataclass
class ZipBudgets:
    """Remaining within-model (and optionally within-group) merges, shared across calls.

    model[m]: merges left within model m. group[g]: merges left within original group g
    (global group id over all models), or None when groups are not budgeted. closed_models /
    closed_groups: those whose budget ran out, whose units may no longer merge with each other.
    As in the spec, a budget is checked when a within-merge spends it, so a budget that starts
    at 0 still allows one merge.
    """

    model: np.ndarray
    group: np.ndarray | None = None
    closed_models: set[int] = dataclasses.field(default_factory=set)
    closed_groups: set[int] = dataclasses.field(default_factory=set)

    def spend_model(self, origin: int) -> bool:
        """Spend one merge within model `origin`; True when that closes the model."""
        self.model[origin] -= 1
        if self.model[origin] <= 0 and origin not in self.closed_models:
            self.closed_models.add(origin)
            return True
        return False

    def spend_group(self, origin: int) -> bool:
        """Spend one merge within group `origin`; True when that closes the group."""
        assert self.group is not None
        self.group[origin] -= 1
        if self.group[origin] <= 0 and origin not in self.closed_groups:
            self.closed_groups.add(origin)
            return True
        return False


def greedy_zip(
    sims: np.ndarray,
    model_of: np.ndarray,
    merges: int,
    a: float,
    budgets: ZipBudgets,
    group_of: np.ndarray | None = None,
) -> tuple[np.ndarray, list[float]]:
    """Run `merges` greedy ZipIt merges on the units of a (local) similarity matrix.

    Takes sims (m, m) symmetric (copied, not modified), model_of/group_of (m,) the origin model
    and global group of each unit, the number of merges, the linkage factor a and the budgets
    (spent in place). Returns (rep, values): rep[u] is the index of the unit that represents
    u's cluster (its lowest index), values[k] the similarity at pick k. A merged unit keeps the
    origin model and group of its representative.
    """
    m = sims.shape[0]
    s = np.array(sims, dtype=np.float64)
    np.fill_diagonal(s, _NEG)
    model_of = np.asarray(model_of)
    groups_budgeted = budgets.group is not None and group_of is not None
    alive = np.ones(m, dtype=bool)
    rep = np.arange(m)
    for origin in budgets.closed_models:
        _ban_within(s, model_of == origin)
    for origin in budgets.closed_groups if groups_budgeted else ():
        _ban_within(s, group_of == origin)
    picker = _RowMaxPicker(s)
    values: list[float] = []
    for _ in range(merges):
        i, j = picker.pick(alive)
        values.append(float(s[i, j]))
        rep[rep == j] = i
        alive[j] = False
        old_i, old_j = s[:, i].copy(), s[:, j].copy()
        _link(s, i, j, a, alive, model_of)
        picker.update(i, j, old_i, old_j)
        if model_of[i] == model_of[j] and budgets.spend_model(int(model_of[i])):
            picker.rescan(_ban_within(s, alive & (model_of == model_of[i])))
        if groups_budgeted and group_of[i] == group_of[j] and budgets.spend_group(int(group_of[i])):
            picker.rescan(_ban_within(s, alive & (group_of == group_of[i])))
    return rep, values


def _link(s: np.ndarray, i: int, j: int, a: float, alive: np.ndarray, model_of: np.ndarray):
    """Merge unit j into unit i in place: min linkage times a (a <= 0: ban both origin models)."""
    row = np.minimum(s[i], s[j])
    if a > 0:
        row *= a
    else:
        row[(model_of == model_of[i]) | (model_of == model_of[j])] = _NEG
    row[~alive] = _NEG
    row[i] = _NEG
    s[i, :] = row
    s[:, i] = row
    s[j, :] = _NEG
    s[:, j] = _NEG


def _ban_within(s: np.ndarray, selected: np.ndarray) -> np.ndarray:
    """Set the similarity between every two selected units to -inf; return their indices."""
    idx = np.flatnonzero(selected)
    s[np.ix_(idx, idx)] = _NEG
    return idx


class _RowMaxPicker:
    """Finds the first maximum of a symmetric matrix in row-major order, caching row maxima.

    For a symmetric matrix with -inf diagonal the first maximum (i, j) has i < j, which is the
    pair ZipIt's argmax over the upper triangle returns. After a merge only the rows whose cached
    maximum may have dropped are rescanned. `s` is the matrix being merged, updated in place.
    """

    def __init__(self, s: np.ndarray):
        self.s = s
        self.row_max = s.max(axis=1)

    def pick(self, alive: np.ndarray) -> tuple[int, int]:
        """The pair (i, j), i < j, to merge next."""
        i = int(np.argmax(self.row_max))
        if self.row_max[i] == _NEG:  # nothing admissible left: merge the first two live units
            i, j = np.flatnonzero(alive)[:2]
            return int(i), int(j)
        j = int(np.argmax(self.s[i]))
        return min(i, j), max(i, j)

    def update(self, i: int, j: int, old_i: np.ndarray, old_j: np.ndarray) -> None:
        """Refresh the cache after columns/rows i and j changed from old_i and old_j."""
        new_i = self.s[:, i]
        held = np.isfinite(self.row_max)
        stale = held & (((old_i == self.row_max) & (new_i < old_i)) | (old_j == self.row_max))
        self.row_max = np.maximum(self.row_max, new_i)
        stale[[i, j]] = True
        self.rescan(np.flatnonzero(stale))

    def rescan(self, rows: np.ndarray) -> None:
        """Recompute the cached maxima of `rows`."""
        if len(rows):
            self.row_max[rows] = self.s[rows].max(axis=1)


def match_from_clusters(assign: np.ndarray, n_merged: int, N: int) -> Match:
    """Build a zip `Match` from assign[u] = merged column of stacked unit u (N·n units).

    U = the 0/1 assignment, M = U / (column sums + 1e-5), split into N row blocks.
    """
    P = np.zeros((len(assign), n_merged))
    P[np.arange(len(assign)), assign] = 1.0
    M = P / (P.sum(axis=0, keepdims=True) + 1e-5)
    return Match(merge=np.split(M, N), unmerge=np.split(P, N), score=0.0)


def zip_match(
    S: np.ndarray, N: int, r: float | None = None, a: float = 0.5, b: float = 1.0
) -> Match:
    """ZipIt greedy matching of all N·n units of `S` down to int(N·n·(1-r)) merged units.

    Takes S (N·n, N·n) (symmetrised as (S + Sᵀ)/2, which leaves a symmetric S unchanged), the
    model count N, the reduction r (default 1 - 1/N: n merged units), the linkage factor a (a ≤ 0
    bans a merged unit against every unit of both origin models) and the within-model budget
    factor b. Returns a Match whose columns are ordered by each cluster's lowest stacked unit and
    whose score is the mean similarity at each pick.

    Example:
        >>> S = np.array([[1, .1, .2, .9], [.1, 1, .8, .3], [.2, .8, 1, 0], [.9, .3, 0, 1]])
        >>> zip_match(S, 2).clusters()
        [[(0, 0), (1, 1)], [(0, 1), (1, 0)]]
    """
    n = units_per_model(S, N)
    total = N * n
    target = n if r is None else int(total * (1 - r) + 1e-4)
    if not 1 <= target <= total:
        raise ValueError(f"reduction r={r} leaves {target} of {total} units")
    to_remove = total - target
    budgets = ZipBudgets(model=np.full(N, int((to_remove // N) * b + 1e-4)))
    model_of = np.repeat(np.arange(N), n)
    rep, values = greedy_zip((S + S.T) / 2, model_of, to_remove, a, budgets)
    reps, assign = np.unique(rep, return_inverse=True)
    match = match_from_clusters(assign, len(reps), N)
    return dataclasses.replace(match, score=zip_score(values))


def zip_score(values: list[float]) -> float:
    """Mean of the finite pick values (a forced pick with no admissible pair is -inf)."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else 0.0
