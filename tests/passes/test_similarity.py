"""Tests for the similarity matrices: activation/weight Pearson correlation and raw costs."""

from __future__ import annotations

import numpy as np
import pytest

from graphmerge.passes.matchers.similarity import (
    correlation_from_moments,
    inner_product_cost,
    weight_correlation,
)


def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(Σ x, Σ x xᵀ, count) of features x (units, samples)."""
    return x.sum(axis=1), x @ x.T, float(x.shape[1])


def test_correlation_from_moments_matches_corrcoef():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 500)) * rng.uniform(0.5, 3, (6, 1)) + rng.uniform(-2, 2, (6, 1))
    x[3] = 0.7 * x[1] + 0.3 * x[3]
    C = correlation_from_moments(*_moments(x))
    np.testing.assert_allclose(C, np.corrcoef(x), atol=1e-10)
    np.testing.assert_allclose(C, C.T)


def test_correlation_from_moments_accumulates_batches():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 300))
    batches = [x[:, :100], x[:, 100:250], x[:, 250:]]
    sum_x = sum(b.sum(axis=1) for b in batches)
    sum_xxT = sum(b @ b.T for b in batches)
    np.testing.assert_allclose(correlation_from_moments(sum_x, sum_xxT, 300), np.corrcoef(x))


def test_correlation_from_moments_dead_unit_is_zero():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 200))
    x[2] = 2.5  # constant: zero variance
    x[0] = 0.0  # dead at zero
    C = correlation_from_moments(*_moments(x))
    assert np.isfinite(C).all()
    np.testing.assert_allclose(C[[0, 2]], 0.0, atol=1e-6)
    np.testing.assert_allclose(C[:, [0, 2]], 0.0, atol=1e-6)
    np.testing.assert_allclose(C[np.ix_([1, 3], [1, 3])], np.corrcoef(x[[1, 3]]), atol=1e-10)


def test_correlation_from_moments_float32_and_bad_input():
    x = np.random.default_rng(3).standard_normal((3, 50)).astype(np.float32)
    C = correlation_from_moments(*_moments(x))
    assert C.dtype == np.float64
    np.testing.assert_allclose(C, np.corrcoef(x.astype(np.float64)), atol=1e-5)
    with pytest.raises(ValueError, match="count"):
        correlation_from_moments(np.zeros(2), np.zeros((2, 2)), 0)
    with pytest.raises(ValueError, match="expected"):
        correlation_from_moments(np.zeros(2), np.zeros((3, 3)), 1)


def test_weight_correlation_matches_corrcoef_rows():
    rng = np.random.default_rng(4)
    v = rng.standard_normal((8, 40)) + rng.uniform(-5, 5, (8, 1))
    np.testing.assert_allclose(weight_correlation(v), np.corrcoef(v), atol=1e-12)


def test_weight_correlation_constant_row_is_zero():
    v = np.random.default_rng(5).standard_normal((3, 10))
    v[1] = 4.0
    C = weight_correlation(v)
    assert np.isfinite(C).all()
    assert (C[1] == 0).all() and (C[:, 1] == 0).all()
    assert C[0, 0] == pytest.approx(1.0)


def test_inner_product_cost_is_raw():
    a = np.array([[1.0, 2.0], [0.0, 1.0]])
    b = np.array([[3.0, 1.0], [1.0, 1.0], [2.0, 0.0]])
    np.testing.assert_array_equal(inner_product_cost(a, b), [[5, 3, 2], [1, 1, 0]])
    with pytest.raises(ValueError):
        inner_product_cost(a, np.ones((2, 3)))
