"""Similarity matrices the matchers consume: activation and weight correlations, raw costs.

- `correlation_from_moments`: Pearson correlation of activations from accumulated moments
  (MuDSC/ZipIt activation similarity).
- `weight_correlation`: Pearson correlation between per-unit weight vectors (MuDSC weight
  similarity).
- `inner_product_cost`: raw inner products between two models' unit vectors (Git Re-Basin
  weight matching).

Correlations clamp σ_i·σ_j at 1e-7, so a unit with zero variance correlates 0 with everything
(itself included) instead of producing NaN.
"""

from __future__ import annotations

import numpy as np

__all__ = ["correlation_from_moments", "inner_product_cost", "mirror_upper", "weight_correlation"]

_MIN_STD_PRODUCT = 1e-7
_BAND = 512  # rows per in-place step: temporaries stay (512, d)


def _normalize_covariance(cov: np.ndarray) -> np.ndarray:
    """Covariance (d, d) → Pearson correlation with σ_iσ_j clamped at 1e-7, NaN → 0."""
    std = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    corr = cov / np.maximum(np.outer(std, std), _MIN_STD_PRODUCT)
    return np.nan_to_num(corr, nan=0.0, posinf=0.0, neginf=0.0)


def correlation_from_moments(
    sum_x: np.ndarray, sum_xxT: np.ndarray, count: float, overwrite: bool = False
) -> np.ndarray:
    """Pearson correlation (d, d) of d units from their accumulated first and second moments.

    Takes sum_x (d,) = Σ x, sum_xxT (d, d) = Σ x xᵀ over `count` samples (sums may be weighted,
    with `count` the total weight). Uses the population covariance E[xxᵀ] − E[x]E[x]ᵀ and
    C_ij = Cov_ij / max(σ_iσ_j, 1e-7); dead units give 0, never NaN. Computed in float64, a band
    of rows at a time; `overwrite`: sum_xxT (float64) is a temporary the result may take over.

    Example:
        >>> x = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]])  # (units, samples)
        >>> correlation_from_moments(x.sum(1), x @ x.T, 3).round(6).tolist()
        [[1.0, 1.0], [1.0, 1.0]]
    """
    if count <= 0:
        raise ValueError(f"count must be positive, got {count}")
    sum_x = np.asarray(sum_x, dtype=np.float64)
    own = overwrite and isinstance(sum_xxT, np.ndarray) and sum_xxT.dtype == np.float64
    out = sum_xxT if own else np.array(sum_xxT, dtype=np.float64)
    d = sum_x.shape[0]
    if sum_x.ndim != 1 or out.shape != (d, d):
        raise ValueError(f"expected sum_x (d,) and sum_xxT (d, d), got {sum_x.shape}, {out.shape}")
    mean = np.nan_to_num(sum_x / count)
    var = np.nan_to_num(out.diagonal() / count) - mean * mean
    std = np.sqrt(np.clip(var, 0.0, None))
    for lo in range(0, d, _BAND):
        rows = out[lo : lo + _BAND]
        rows /= count
        _finite(rows)
        rows -= np.outer(mean[lo : lo + _BAND], mean)
        rows /= np.maximum(np.outer(std[lo : lo + _BAND], std), _MIN_STD_PRODUCT)
        _finite(rows)
    return out


def _finite(rows: np.ndarray) -> None:
    """NaN/inf -> 0 in place (one read when everything is finite, the common case)."""
    if not np.isfinite(rows).all():
        np.nan_to_num(rows, copy=False, nan=0.0, posinf=0.0, neginf=0.0)


def weight_correlation(vectors: np.ndarray) -> np.ndarray:
    """Pearson correlation (U, U) between the rows of `vectors` (U units, L weights each).

    Each row is centred over its own elements, then C_ij = Cov_ij / max(σ_iσ_j, 1e-7) with
    population statistics, i.e. a cosine of the centred rows unless a row is (nearly) constant,
    which then correlates 0 with everything. Computed in float64.
    """
    x = np.nan_to_num(np.asarray(vectors, dtype=np.float64))
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"expected vectors of shape (units, length), got {x.shape}")
    centred = x - x.mean(axis=1, keepdims=True)
    return _normalize_covariance(centred @ centred.T / x.shape[1])


def inner_product_cost(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Raw inner products (n, n) between the unit vectors of two models (Git Re-Basin).

    Takes a (n, L) and b (n, L), the weights of model A and model B per unit with the other axes
    already permuted and flattened; returns cost[j, k] = ⟨a_j, b_k⟩, with no centring or scaling.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or a.shape[1:] != b.shape[1:]:
        raise ValueError(f"expected a (n, L) and b (m, L), got {a.shape} and {b.shape}")
    return a @ b.T


def mirror_upper(m: np.ndarray, band: int = 512) -> None:
    """In place: the lower triangle of the square `m` := the transpose of its upper one."""
    for lo in range(0, m.shape[0], band):
        hi = min(lo + band, m.shape[0])
        m[lo:hi, :lo] = m[:lo, lo:hi].T
        block = m[lo:hi, lo:hi]
        lower = np.tril_indices(hi - lo, -1)
        block[lower] = block.T[lower]
