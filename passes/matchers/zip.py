"""zip_match: ZipIt's greedy clustering of all N·n units down to n merged units.

Repeatedly merge the most similar pair of live units (across or within models); the merged
unit's similarity to every other unit is the minimum of its parts' (complete linkage) times `a`.
Each model may spend only `int((to_remove // N) · b)` merges within itself; after that its units
can only merge with other models' units.

The greedy search works in place in one (m, m) buffer (float64, or float32 for a float32 S) and
touches O(m) entries per merge:
upper bounds on the row maxima find the next pair (a row is rescanned only when it comes up),
rows are read and never columns, and a dead unit's column is masked when a row is next read
rather than cleared in every row; the one column written per merge is the merged unit's.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from graphmerge.passes.matchers import Match, units_per_model

__all__ = ["ZipBudgets", "greedy_zip", "match_from_clusters", "zip_match", "zip_score"]

_NEG = -np.inf
_TILE = 128  # rows (and columns) per tile in whole-matrix passes: bounded temporaries
_WORK_DTYPES = (np.float64, np.float32)  # a float32 S (a wide group's) stays float32


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
    *,
    overwrite: bool = False,
) -> tuple[np.ndarray, list[float]]:
    """Run `merges` greedy ZipIt merges on the units of a (local) similarity matrix.

    Takes sims (m, m) symmetric, model_of/group_of (m,) the origin model and global group of
    each unit, the number of merges, the linkage factor a and the budgets (spent in place).
    sims is copied unless `overwrite` (then a writeable float64 or float32 C-contiguous sims is
    the working buffer and its contents are destroyed). Returns (rep, values): rep[u] is the index of the unit that
    represents u's cluster (its lowest index), values[k] the similarity at pick k. A merged unit
    keeps the origin model and group of its representative.
    """
    s = _working_buffer(sims, overwrite)
    np.fill_diagonal(s, _NEG)
    return _GreedyZip(s, model_of, a, budgets, group_of).run(merges)


def _working_buffer(sims: np.ndarray, overwrite: bool) -> np.ndarray:
    """sims itself when it may be overwritten and is a C-contiguous float64/float32 array, else
    a copy (float32 stays float32, anything else becomes float64)."""
    if overwrite and _is_work_buffer(sims):
        return sims
    dtype = np.float32 if sims.dtype == np.float32 else np.float64
    return np.array(sims, dtype=dtype, order="C")


def _is_work_buffer(a: np.ndarray) -> bool:
    """Whether `a` can serve as the working buffer in place."""
    return a.dtype in _WORK_DTYPES and a.flags.c_contiguous and a.flags.writeable


class _GreedyZip:
    """The greedy search on a working matrix `s` (m, m) with a -inf diagonal, owned and changed.

    Between merges, for every two live units r, c: s[r, c] is their current similarity (min
    linkage times a, -inf where banned). Entries in a dead unit's column are stale and are set
    to -inf when the row is next read; a dead unit's row is never read. bound[r] is an upper
    bound on the largest entry of live row r (-inf for a dead r), exact when the row was last
    scanned: a merge raises the bounds where the merged column rose and leaves them where it
    fell, so only a row that comes up as the best candidate is rescanned.

    The next pair is the first maximum in row-major order (i < j): the first row i whose bound
    is the largest and exact, and the first maximum of that row. A row before i with the same
    maximum would have a bound at least as large and come first.
    """

    def __init__(self, s, model_of, a, budgets: ZipBudgets, group_of):
        self.s, self.a, self.budgets = s, a, budgets
        self.model_of = np.asarray(model_of)
        budgeted = budgets.group is not None and group_of is not None
        self.group_of = np.asarray(group_of) if budgeted else None
        m = s.shape[0]
        self.dead = np.zeros(m, dtype=bool)
        self.graveyard = np.empty(m, dtype=np.int64)  # dead units, in the order they died
        self.n_dead = 0
        self.masked = np.zeros(m, dtype=np.int64)  # row r has -inf at graveyard[:masked[r]]
        self.parent = np.arange(m)
        self.new = np.empty(m, dtype=s.dtype)
        self._model_masks: dict[int, np.ndarray] = {}
        for origin in budgets.closed_models:
            _ban_within(s, np.flatnonzero(self.model_of == origin))
        for origin in budgets.closed_groups if self.group_of is not None else ():
            _ban_within(s, np.flatnonzero(self.group_of == origin))
        self.bound = s.max(axis=1)

    def run(self, merges: int) -> tuple[np.ndarray, list[float]]:
        """Make `merges` merges; return (rep, values) as `greedy_zip`."""
        values = [self._merge(*self._pick()) for _ in range(merges)]
        rep = self.parent  # parent[j] = i < j for every merged j: follow the links to the root
        while True:
            nxt = rep[rep]
            if np.array_equal(nxt, rep):
                return rep, values
            rep = nxt

    def _row(self, r: int) -> np.ndarray:
        """Row r of s with dead columns set to -inf (in place): r's similarity to every unit."""
        row = self.s[r]
        if self.masked[r] < self.n_dead:
            row[self.graveyard[self.masked[r] : self.n_dead]] = _NEG
            self.masked[r] = self.n_dead
        return row

    def _pick(self) -> tuple[int, int]:
        bound = self.bound
        while True:
            i = int(np.argmax(bound))
            if bound[i] == _NEG:  # nothing admissible left: merge the first two live units
                i, j = np.flatnonzero(~self.dead)[:2]
                return int(i), int(j)
            row = self._row(i)
            j = int(np.argmax(row))
            if row[j] == bound[i]:
                return min(i, j), max(i, j)
            bound[i] = row[j]  # the bound was loose: tighten it and look again

    def _merge(self, i: int, j: int) -> float:
        """Merge unit j into unit i; update s, the bounds and the budgets; return s[i, j]."""
        new = self.new
        row_i, row_j = self._row(i), self._row(j)
        value = float(row_i[j])
        np.minimum(row_i, row_j, out=new)  # new[i] = new[j] = -inf: the diagonal is -inf
        if self.a > 0:
            new *= self.a
        else:
            np.copyto(new, _NEG, where=self._model_mask(i))
            np.copyto(new, _NEG, where=self._model_mask(j))
        np.maximum(self.bound, new, out=self.bound)
        self.bound[i], self.bound[j] = new.max(), _NEG
        self.dead[j], self.parent[j], self.graveyard[self.n_dead] = True, i, j
        self.n_dead += 1
        self.masked[i] = self.n_dead
        self.s[i] = new
        self.s[:, i] = new
        self._spend(i, j)
        return value

    def _model_mask(self, u: int) -> np.ndarray:
        origin = int(self.model_of[u])
        if origin not in self._model_masks:
            self._model_masks[origin] = self.model_of == origin
        return self._model_masks[origin]

    def _spend(self, i: int, j: int) -> None:
        """Spend the budgets of a within-model/-group merge; ban a model/group that closes.

        A ban only lowers entries, so the bounds stay valid."""
        origin = int(self.model_of[i])
        if origin == self.model_of[j] and self.budgets.spend_model(origin):
            _ban_within(self.s, np.flatnonzero(~self.dead & (self.model_of == origin)))
        if self.group_of is None or self.group_of[i] != self.group_of[j]:
            return
        if self.budgets.spend_group(int(self.group_of[i])):
            group = self.group_of == self.group_of[i]
            _ban_within(self.s, np.flatnonzero(~self.dead & group))


def _ban_within(s: np.ndarray, idx: np.ndarray) -> None:
    """Set the similarity between every two of the units `idx` to -inf."""
    for start in range(0, len(idx), _TILE):
        s[idx[start : start + _TILE, None], idx] = _NEG


def _symmetrize(S: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(S + Sᵀ)/2 tile by tile into `out` (a new array if None; may be S itself), float32 for a
    float32 S and float64 otherwise.

    Each entry is (S[i, j] + S[j, i]) / 2 exactly as the whole-matrix expression computes it in
    S's precision. An exactly symmetric S is that already (x + x does not round, and halving it
    gives x back, unless 2x overflows), so it is only copied.
    """
    if S.dtype not in _WORK_DTYPES:  # the expression in S's own precision, as it always was
        return np.asarray((S + S.T) / 2, dtype=np.float64)
    if out is None:
        out = np.empty(S.shape, dtype=S.dtype)
    if _is_symmetric(S):
        if out is not S:
            np.copyto(out, S)
        return out
    tile = np.empty((_TILE, _TILE), dtype=S.dtype)
    for upper, lower in _tile_pairs(S.shape[0]):
        t = tile[: upper[0].stop - upper[0].start, : upper[1].stop - upper[1].start]
        np.add(S[upper], S[lower].T, out=t)
        t /= 2
        out[upper] = t
        out[lower] = t.T
    return out


def _tile_pairs(m: int):
    """(upper, lower) index pairs of the tiles on and above the diagonal and their mirrors."""
    for r0 in range(0, m, _TILE):
        for c0 in range(r0, m, _TILE):
            rows, cols = slice(r0, min(r0 + _TILE, m)), slice(c0, min(c0 + _TILE, m))
            yield (rows, cols), (cols, rows)


def _is_symmetric(S: np.ndarray) -> bool:
    """Whether S == Sᵀ exactly with every |entry| below half the dtype's largest (stops at the
    first tile that fails)."""
    half_max = np.finfo(S.dtype).max / 2
    for upper, lower in _tile_pairs(S.shape[0]):
        block = S[upper]
        if not (-half_max < block.min() and block.max() < half_max):
            return False
        if not np.array_equal(block, S[lower].T):
            return False
    return True


def match_from_clusters(assign: np.ndarray, n_merged: int, N: int) -> Match:
    """Build a zip `Match` from assign[u] = merged column of stacked unit u (N·n units).

    U = the 0/1 assignment, M = U / (column sums + 1e-5), split into N row blocks.
    """
    targets = tuple(np.asarray(t, dtype=np.int64) for t in np.split(np.asarray(assign), N))
    return Match(targets=targets, n_merged=n_merged, score=0.0, eps=1e-5)


def zip_match(
    S: np.ndarray,
    N: int,
    r: float | None = None,
    a: float = 0.5,
    b: float = 1.0,
    *,
    overwrite: bool = False,
) -> Match:
    """ZipIt greedy matching of all N·n units of `S` down to int(N·n·(1-r)) merged units.

    Takes S (N·n, N·n) (symmetrised as (S + Sᵀ)/2, which leaves a symmetric S unchanged), the
    model count N, the reduction r (default 1 - 1/N: n merged units), the linkage factor a (a ≤ 0
    bans a merged unit against every unit of both origin models) and the within-model budget
    factor b. With `overwrite`, a writeable float64 or float32 C-contiguous S is the working
    buffer (its contents are destroyed; saves one copy of S). Returns a Match whose columns are
    ordered by each cluster's lowest stacked unit and whose score is the mean similarity at each
    pick.

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
    s = _symmetrize(S, out=S if overwrite and _is_work_buffer(S) else None)
    rep, values = greedy_zip(s, model_of, to_remove, a, budgets, overwrite=True)
    del s
    reps, assign = np.unique(rep, return_inverse=True)
    match = match_from_clusters(assign, len(reps), N)
    return dataclasses.replace(match, score=zip_score(values))


def zip_score(values: list[float]) -> float:
    """Mean of the finite pick values (a forced pick with no admissible pair is -inf)."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else 0.0
