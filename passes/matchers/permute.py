"""permute_match: align every model to model 0 with one linear assignment (Git Re-Basin style).

Model 0 keeps its unit order; for model i the LAP on the cross block S[model 0, model i]
(maximising similarity) picks which of its units joins each of model 0's units. The merged unit
j is the mean of unit j of model 0 and its matches.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from graphmerge.passes.matchers import Match, units_per_model

__all__ = ["match_from_permutations", "permute_match", "solve_assignment"]


def solve_assignment(cost: np.ndarray) -> tuple[np.ndarray, float]:
    """Maximise Σ_j cost[j, cols[j]] over permutations; return (cols, mean matched value).

    `cost` is square (n, n); cols[j] is the column matched to row j.
    """
    # maximize=True negates a copy inside the solver; one contiguous negated copy instead
    rows, cols = linear_sum_assignment(np.negative(cost, out=np.empty(cost.shape)))
    if not np.array_equal(rows, np.arange(cost.shape[0])):
        raise AssertionError("linear_sum_assignment returned rows out of order")
    return cols, float(cost[rows, cols].mean())


def match_from_permutations(columns: list[np.ndarray], score: float) -> Match:
    """Build a permutation `Match` from columns[i][j] = unit of model i merged into unit j.

    columns[0] is normally the identity. U_i is the 0/1 permutation matrix with
    U_i[columns[i][j], j] = 1 and M_i = U_i / N, so Σ_i M_iᵀ x_i is the mean of matched units.
    """
    targets = []
    for cols in columns:
        n = len(cols)
        if not np.array_equal(np.sort(cols), np.arange(n)):
            raise ValueError("columns must be a permutation of the units")
        target = np.empty(n, dtype=np.int64)
        target[cols] = np.arange(n)  # unit cols[j] goes to merged unit j
        targets.append(target)
    return Match(targets=tuple(targets), n_merged=len(columns[0]), score=score)


def permute_match(S: np.ndarray, N: int) -> Match:
    """Match models 1..N-1 to model 0 by one LAP each on the cross blocks of `S`.

    Takes S (N·n, N·n) and the model count N; returns a permutation Match (n_merged == n) whose
    score is the mean matched similarity over all N-1 assignments. Only the cross blocks
    S[:n, i·n:(i+1)·n] are read.

    Example:
        >>> S = np.array([[1, 0, 0, 1], [0, 1, 1, 0], [0, 1, 1, 0], [1, 0, 0, 1]], float)
        >>> permute_match(S, 2).unmerge[1].astype(int).tolist()
        [[0, 1], [1, 0]]
    """
    n = units_per_model(S, N)
    columns = [np.arange(n)]
    values = []
    for i in range(1, N):
        cols, value = solve_assignment(S[:n, i * n : (i + 1) * n])
        columns.append(cols)
        values.append(value)
    return match_from_permutations(columns, float(np.mean(values)))
