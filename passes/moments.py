"""Moments: streaming activation statistics of N models' units (MuDSC/ZipIt's statistic).

The statistic is MuDSC's and ZipIt's: Σx, Σxxᵀ over samples of the N·units stacked features,
and from them the Pearson correlation of the population covariance. How it is computed:

- Each batch arrives as one (parts, units, samples) float32 tensor per model, in whichever
  memory order is free: a conv map (B, C, H·W) is B parts with units-major rows, a transformer's
  (tokens, units) one part with units-minor rows. No transposing copy is made.
- The features are shifted by a per-unit constant c (the first batch's mean), so that
  Cov = E[yyᵀ] - E[y]E[y]ᵀ with y = x - c does not cancel (it equals Cov of x exactly).
- Products are float32 BLAS: `ssyrk` for a model with itself (one triangle), `sgemm` across
  models, accumulated in float32 over at most `CHUNK` samples and then added to float64 sums.
- blocks="all" keeps every block (i, j), i <= j (what the zip matcher reads); blocks="cross"
  only the blocks (0, j) and each unit's Σy² (all a permutation matcher reads).

Memory is O((N·units)²) per group, independent of the sample count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.linalg import blas

from graphmerge.distributed import SMALL_BYTES, Team
from graphmerge.errors import InputError
from graphmerge.passes.matchers.similarity import correlation_from_moments, mirror_upper

__all__ = [
    "BLOCKS",
    "CHUNK",
    "Moments",
    "NonFiniteFeatures",
    "blocks_read_by",
    "shared_shift",
    "sum_over_ranks",
]

BLOCKS = ("all", "cross")
# Samples per float32 product (and per float32 sum before a float64 flush): the rounding error
# grows like sqrt(terms)·2^-24, about 2e-6 relative at 1024; the flushes cost ~1% of the products.
CHUNK = 1024


def blocks_read_by(matcher: str) -> str:
    """The similarity blocks `matcher` reads: "cross" for "permute" (model 0 x model i and the
    diagonal), "all" for "zip" (it also merges units within one model)."""
    return "cross" if matcher == "permute" else "all"


class NonFiniteFeatures(ValueError):
    """Features (or their float32 products) are not finite; `models` says whose."""

    def __init__(self, models: tuple[int, ...], overflow: bool):
        self.models, self.overflow = models, overflow
        super().__init__(f"models {models}: {'float32 overflow' if overflow else 'NaN/inf'}")


@dataclass
class Moments:
    """Streaming moments of the stacked features of `n_models` models with `units` each.

    Held (float64): `shifted_total` Σy (N·units,), `square` Σy² (N·units,; "cross" only),
    `pairs[(i, j)]` Σ y_i y_jᵀ (units, units) (the (i, i) blocks hold their upper triangle),
    with y = x - `shift`. `total`, `outer` are the raw Σx, Σxxᵀ; `correlation()` what the
    matchers consume.
    """

    n_models: int
    units: int
    blocks: str = "all"
    count: float = 0.0
    shift: torch.Tensor | None = None  # (N, units) float32, set by the first batch
    shifted_total: np.ndarray = field(init=False, repr=False)
    square: np.ndarray = field(init=False, repr=False)
    pairs: dict[tuple[int, int], np.ndarray] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.blocks not in BLOCKS:
            raise ValueError(f"blocks must be one of {BLOCKS}, got {self.blocks!r}")
        n, u = self.n_models, self.units
        self.shifted_total, self.square = np.zeros(n * u), np.zeros(n * u)
        if self.blocks == "cross":
            keys = [(0, j) for j in range(1, n)]
        else:
            keys = [(i, j) for i in range(n) for j in range(i, n)]
        self.pairs = {k: np.zeros((u, u), order="F") for k in keys}  # as BLAS writes

    def add(self, xs: list[torch.Tensor]) -> None:
        """Add one batch: xs[i] is model i's features, (parts, units, samples) float32, the
        same samples for every model. Raises NonFiniteFeatures on NaN/inf features."""
        if self.shift is None:
            self.shift = self.first_shift(xs)
        ys = [x - self.shift[i][None, :, None] for i, x in enumerate(xs)]
        u = self.units
        for i, y in enumerate(ys):
            self.shifted_total[i * u : (i + 1) * u] += _sums(y, i).double().numpy()
        _accumulate_products(self.pairs, [y.numpy() for y in ys])
        if self.blocks == "cross":
            for i, y in enumerate(ys):
                sq = y.square_().sum((0, 2)).double().numpy()
                self.square[i * u : (i + 1) * u] += sq
        self.count += _samples(xs[0])

    @staticmethod
    def first_shift(xs: list[torch.Tensor]) -> torch.Tensor:
        """The shift `add` takes from its first batch `xs`: each unit's mean there, (N, units)
        float32. Shards that are summed later must share one (set `shift` before adding)."""
        return torch.stack([_sums(x, i) / _samples(x) for i, x in enumerate(xs)])

    def sums(self) -> list[np.ndarray]:
        """The float64 sums that add up across shards of the data (views: adding into them adds
        into the moments): Σy, Σy² and every block of Σ y yᵀ; with `count`, that is all."""
        return [self.shifted_total, self.square, *self.pairs.values()]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.sums())

    def check_finite(self) -> None:
        """NonFiniteFeatures naming the models when a float32 product overflowed."""
        for (i, j), acc in self.pairs.items():
            if not np.isfinite(acc).all():
                raise NonFiniteFeatures(tuple(sorted({i, j})), overflow=True)

    def _shifted_outer(self) -> np.ndarray:
        """Σ y yᵀ, (N·units)²; for "cross" only the blocks [0, i], [i, 0] and the diagonal."""
        n, u = self.n_models, self.units
        out = np.zeros((n * u, n * u))
        for (i, j), acc in self.pairs.items():
            block = out[i * u : (i + 1) * u, j * u : (j + 1) * u]
            block[...] = acc
            if i == j:  # SYRK wrote the upper triangle only
                mirror_upper(block)
            else:
                out[j * u : (j + 1) * u, i * u : (i + 1) * u] = acc.T
        if self.blocks == "cross":
            out[np.diag_indices_from(out)] = self.square
        return out

    def _shift64(self) -> np.ndarray:
        if self.shift is None:
            return np.zeros(self.n_models * self.units)
        return self.shift.double().reshape(-1).numpy()

    @property
    def total(self) -> np.ndarray:
        """Σx over all samples, (N·units,) float64."""
        return self.shifted_total + self.count * self._shift64()

    @property
    def outer(self) -> np.ndarray:
        """Σxxᵀ over all samples, (N·units)² float64; for "cross" only the blocks [0, i], [i, 0]
        and the diagonal (the rest is 0: never computed)."""
        c, s = self._shift64(), self.shifted_total
        out = self._shifted_outer() + np.outer(s, c) + np.outer(c, s) + self.count * np.outer(c, c)
        if self.blocks == "cross":
            _clear_unread(out, self.units)
        return out

    def correlation(self) -> np.ndarray:
        """Pearson correlation (N·units)², as `correlation_from_moments` (population covariance,
        σ_iσ_j clamped at 1e-7, dead units 0). For "cross" only the blocks [model 0, model i],
        their transposes and the diagonal are filled, everything else is 0: a permutation
        matcher reads S[:n, i·n:(i+1)·n] only."""
        outer = self._shifted_outer()
        corr = correlation_from_moments(self.shifted_total, outer, self.count, overwrite=True)
        if self.blocks == "cross":
            _clear_unread(corr, self.units)
        return corr


def shared_shift(team: Team, local: dict | None) -> dict[str, torch.Tensor]:
    """Group -> shift, as the first rank with data computed it from its first batch (`local`:
    this rank's `Moments.first_shift` per group, None for an empty shard): with one shift on
    every rank, each batch's float32 products are those one process over all shards makes."""
    has = team.gather(local is not None)
    if not any(has):
        raise InputError(
            f"the calibration data is empty on all {team.size} ranks: give each rank its "
            "shard of the batches (at least one rank needs one)"
        )
    return team.broadcast(local, has.index(True))


def sum_over_ranks(
    team: Team, moments: dict[str, Moments], owners: dict[str, int]
) -> dict[str, Moments]:
    """Moments summed over every rank's shard, kept by their owners only (`owners`: group ->
    rank): the counts and the small groups' sums in one all-reduce, each large group's sums
    reduced to its owner."""
    small = [n for n, m in moments.items() if m.nbytes <= SMALL_BYTES]
    counts = np.array([m.count for m in moments.values()], dtype=np.float64)
    team.sum_arrays([counts, *(a for n in small for a in moments[n].sums())])
    for m, count in zip(moments.values(), counts, strict=True):
        m.count = float(count)
    for name, m in moments.items():
        if name not in small:
            team.sum_arrays(m.sums(), owner=owners[name])
    return {n: m for n, m in moments.items() if owners[n] == team.rank}


def _samples(x: torch.Tensor) -> int:
    return x.shape[0] * x.shape[2]


def _sums(x: torch.Tensor, model: int) -> torch.Tensor:
    """Per-unit sums over parts and samples (float32, cascade summation); NonFiniteFeatures
    when one is NaN/inf, which any NaN/inf feature makes it."""
    sums = x.sum((0, 2))
    if not torch.isfinite(sums).all():
        raise NonFiniteFeatures((model,), overflow=False)
    return sums


def _clear_unread(mat: np.ndarray, units: int) -> None:
    """Zero, in place, what "cross" does not compute: every block [model i, model j] with
    i, j > 0 or i = j = 0, except the diagonal."""
    diag = mat.diagonal().copy()
    mat[:units, :units] = 0.0
    mat[units:, units:] = 0.0
    mat[np.diag_indices_from(mat)] = diag


def _fortran(m: np.ndarray) -> tuple[np.ndarray, bool]:
    """(a, t) with a Fortran-ordered and op(a) = m when t is False, aᵀ = m when t is True."""
    if m.flags.f_contiguous:
        return m, False
    if m.flags.c_contiguous:
        return m.T, True
    return np.asfortranarray(m), False


def _pieces(y: np.ndarray):
    """The (units, samples) matrices of one model's (parts, units, samples) features, cut into
    at most CHUNK samples (a units-major cut is copied by `_fortran`: rare, large maps only)."""
    for part in y:
        for start in range(0, part.shape[1], CHUNK):
            yield part[:, start : start + CHUNK]


def _accumulate_products(pairs: dict, ys: list[np.ndarray]) -> None:
    """pairs[(i, j)] += Σ y_i y_jᵀ: float32 BLAS per piece, float64 after every CHUNK samples."""
    u = ys[0].shape[1]
    scratch = {key: np.zeros((u, u), dtype=np.float32, order="F") for key in pairs}
    pending = 0
    for pieces in zip(*(_pieces(y) for y in ys)):
        mats = [_fortran(p) for p in pieces]
        beta = 1.0 if pending else 0.0
        for (i, j), c in scratch.items():
            (a, ta), (b, tb) = mats[i], mats[j]
            if i == j:  # trans=0: a aᵀ; trans=1: aᵀ a
                blas.ssyrk(1.0, a, beta=beta, c=c, trans=int(ta), overwrite_c=1)
            else:
                blas.sgemm(
                    1.0, a, b, beta=beta, c=c, trans_a=int(ta), trans_b=int(not tb), overwrite_c=1
                )
        pending += pieces[0].shape[1]
        if pending >= CHUNK:
            for key, c in scratch.items():
                pairs[key] += c
            pending = 0
    if pending:
        for key, c in scratch.items():
            pairs[key] += c
