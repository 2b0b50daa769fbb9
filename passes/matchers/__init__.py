"""Matching functions Ψ: similarity matrix in, per-model merge/unmerge matrices out.

A similarity matrix `S` is a float64 array of shape (N·n, N·n) for N models with n units each,
model 0's units first (float32 for a wide group, see `graphmerge.passes.weight_vectors`). A matcher returns a `Match`: for each model i a merge matrix M_i and an
unmerge matrix U_i, both (n, n_merged). The merged weights are W* = Σ_i M_iᵀ W_i U_i per axis,
so each merged unit is the mean of the original units in its cluster (the columns of the stacked
M sum to about 1) and each consumer sums its cluster's input columns (U is 0/1).

These are pure functions of numpy arrays; they know nothing about graphs or programs.

Example:
    >>> import numpy as np
    >>> S = np.array([[1.0, 0.1, 0.2, 0.9], [0.1, 1.0, 0.8, 0.3],
    ...               [0.2, 0.8, 1.0, 0.0], [0.9, 0.3, 0.0, 1.0]])
    >>> select_matcher("permute")(S, 2).unmerge[1].astype(int).tolist()
    [[0, 1], [1, 0]]
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import numpy as np

__all__ = [
    "GROUPED_MATCHERS",
    "MATCHERS",
    "MULTI_MATCHERS",
    "Match",
    "Matcher",
    "grouped_permute_match",
    "grouped_permute_match_multi",
    "grouped_zip_match",
    "grouped_zip_match_multi",
    "permute_match",
    "select_matcher",
    "units_per_model",
    "zip_match",
]


@dataclasses.dataclass(frozen=True, eq=False)
class Match:
    """The result of one matching: where every unit of every model goes, and the merge value.

    targets[i]: int64 (n,), the merged unit of each unit of model i (U_i has its one 1 there).
    n_merged: the number of merged units. eps: M_i = U_i / (column sums over all models + eps),
        1e-5 for zips (ZipIt's and MuDSC's), 0 for permutations (M_i = U_i / N).
    score: the merge value Algorithm 1 maximises (perm: mean matched similarity; zip: mean
        similarity at each greedy pick).
    `merge` and `unmerge` give the dense (n, n_merged) float64 matrices M_i and U_i on demand
    (Σ_i M_iᵀ x_i averages each cluster's units; U_i[u, c] = 1 when unit u of model i is in
    merged unit c); the solve itself only reads `targets`.
    """

    targets: tuple[np.ndarray, ...]
    n_merged: int
    score: float
    eps: float = 0.0

    def __post_init__(self) -> None:
        sizes = {len(t) for t in self.targets}
        if len(sizes) != 1:
            raise ValueError(f"models have different unit counts: {sorted(sizes)}")
        for i, t in enumerate(self.targets):
            if len(t) and (t.min() < 0 or t.max() >= self.n_merged):
                raise ValueError(f"model {i}: a target outside 0..{self.n_merged - 1}")

    @classmethod
    def from_dense(cls, merge: list[np.ndarray], unmerge: list[np.ndarray], score: float):
        """A Match from given M_i and U_i (kept as given)."""
        match = cls(tuple(u.argmax(axis=1) for u in unmerge), int(unmerge[0].shape[1]), score)
        match.__dict__.update(merge=list(merge), unmerge=list(unmerge))
        return match

    @functools.cached_property
    def unmerge(self) -> list[np.ndarray]:
        out = []
        for t in self.targets:
            u = np.zeros((len(t), self.n_merged))
            u[np.arange(len(t)), t] = 1.0
            out.append(u)
        return out

    @functools.cached_property
    def merge(self) -> list[np.ndarray]:
        sizes = sum(np.bincount(t, minlength=self.n_merged) for t in self.targets)
        scale = 1.0 / (sizes.astype(np.float64) + self.eps)
        out = []
        for t in self.targets:
            m = np.zeros((len(t), self.n_merged))
            m[np.arange(len(t)), t] = scale[t]
            out.append(m)
        return out

    def clusters(self) -> list[list[tuple[int, int]]]:
        """For each merged unit, the (model, unit) pairs mapped into it, in model/unit order."""
        out: list[list[tuple[int, int]]] = [[] for _ in range(self.n_merged)]
        for i, t in enumerate(self.targets):
            for unit, column in enumerate(t.tolist()):
                out[column].append((i, unit))
        return out


Matcher = Callable[..., Match]


def units_per_model(S: np.ndarray, N: int) -> int:
    """Check that `S` is a finite square (N·n, N·n) similarity matrix and return n."""
    if N < 2:
        raise ValueError(f"matching needs at least 2 models, got N={N}")
    if S.ndim != 2 or S.shape[0] != S.shape[1]:
        raise ValueError(f"similarity must be a square matrix, got shape {S.shape}")
    if S.shape[0] % N:
        raise ValueError(f"similarity of size {S.shape[0]} does not split into {N} models")
    if not _all_finite(S):
        raise ValueError("similarity has NaN or infinite entries")
    return S.shape[0] // N


def _all_finite(S: np.ndarray, rows: int = 256) -> bool:
    """np.isfinite(S).all() a block of rows at a time, without a boolean copy of S."""
    for start in range(0, S.shape[0], rows):
        block = S[start : start + rows]
        if block.size and not (-np.inf < block.min() and block.max() < np.inf):
            return False  # a NaN fails both comparisons
    return True


# The submodules import `Match` and `units_per_model` from this package, so they come after.
from graphmerge.passes.matchers.grouped import (
    grouped_permute_match,
    grouped_permute_match_multi,
    grouped_zip_match,
    grouped_zip_match_multi,
)
from graphmerge.passes.matchers.permute import permute_match
from graphmerge.passes.matchers.zip import zip_match

# Plain matchers: f(S, N, **options) -> Match.
MATCHERS: dict[str, Matcher] = {"permute": permute_match, "zip": zip_match}
# Head/group-aware matchers: f(S, N, groups, **options) -> Match.
GROUPED_MATCHERS: dict[str, Matcher] = {
    "permute": grouped_permute_match,
    "zip": grouped_zip_match,
}
# Several unit sets sharing one group pairing: f(blocks, N, groups, **options) -> list[Match].
MULTI_MATCHERS: dict[str, Callable[..., list[Match]]] = {
    "permute": grouped_permute_match_multi,
    "zip": grouped_zip_match_multi,
}


def select_matcher(
    name: str, groups: int = 1, **options: float
) -> Callable[[np.ndarray, int], Match]:
    """The matcher `name` ("permute" or "zip") as f(S, N) -> Match.

    groups > 1 selects the group-aware variant with that many groups; `options` (a, b, r, ...)
    are bound as keywords, so a configured variant is just `select_matcher("zip", a=0.3)`.
    """
    table = MATCHERS if groups <= 1 else GROUPED_MATCHERS
    if name not in table:
        raise KeyError(f"unknown matcher {name!r}; known: {sorted(table)}")
    if groups <= 1:
        return functools.partial(table[name], **options)
    return functools.partial(_with_groups, table[name], groups, options)


def _with_groups(fn: Matcher, groups: int, options: dict, S: np.ndarray, N: int) -> Match:
    return fn(S, N, groups, **options)
