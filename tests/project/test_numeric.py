"""The tolerance helpers of tests/numeric.py accept what the policy allows and nothing more."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from numeric import (
    assert_close,
    assert_rankings_agree,
    assert_ties_by_lower_row,
    default_rtol,
    dyadic_unit_rows,
)


def test_assert_close_accepts_reordering_error_and_refuses_more():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 40))
    y = rng.normal(size=(40, 30))
    # correctly rounded sums: another order of summation than any BLAS kernel's
    reordered = np.array([[math.fsum(r * c) for c in y.T] for r in x])
    assert_close(reordered, x @ y, what="GEMM vs Python sums")
    with pytest.raises(AssertionError, match="GEMM"):
        assert_close((x @ y) * (1 + 1e-9), x @ y, what="GEMM")
    # float32 data: the float32 tolerance, whatever dtype holds the result
    assert_close(np.float64(np.float32(1.1)), 1.1, dtype=np.float32)
    with pytest.raises(AssertionError):
        assert_close(np.float64(np.float32(1.1)), 1.1)


def test_assert_close_floor_judges_cancellation_by_the_size_of_the_terms():
    expected = np.array([1.0, 1e-17])
    assert_close(np.array([1.0, 3e-16]), expected)  # 3e-16 off a sum of unit terms
    with pytest.raises(AssertionError):
        assert_close(np.array([1.0, 1e-10]), expected)
    # one value picked out of a result: the floor at the size of its terms, given as scale
    with pytest.raises(AssertionError):
        assert_close(1e-2 + 1e-15, 1e-2)
    assert_close(1e-2 + 1e-15, 1e-2, scale=5.0)


def test_assert_close_units_in_the_last_place_and_explicit_tolerances():
    one = np.float64(1.0)
    assert_close(np.nextafter(np.nextafter(one, 2), 2), one, ulps=2)
    with pytest.raises(AssertionError, match="ulps"):
        assert_close(np.nextafter(np.nextafter(one, 2), 2), one, ulps=1)
    assert_close([1.0, 2.0], [1.0 + 5e-6, 2.0], atol=1e-5)
    with pytest.raises(AssertionError):
        assert_close([1.0, 2.0], [1.0 + 5e-6, 2.0], atol=1e-6)
    with pytest.raises(ValueError):
        assert_close(1.0, 1.0, ulps=1, atol=1.0)


def test_assert_close_non_finite_values_and_shapes():
    assert_close([np.nan, -np.inf, 1.0], [np.nan, -np.inf, 1.0])
    assert_close(torch.tensor([1.0, 2.0]), np.array([1.0, 2.0], dtype=np.float32))
    for bad in ([1.0, -np.inf, 1.0], [np.nan, np.inf, 1.0], [np.nan, -np.inf]):
        with pytest.raises(AssertionError):
            assert_close(bad, [np.nan, -np.inf, 1.0])
    assert default_rtol(np.float32) == 64 * 2.0**-23


def test_rankings_may_swap_near_ties_only():
    scores = np.array([[3.0, 2.0, 2.0 + 1e-15, 1.0]])
    assert_rankings_agree([[0, 2, 1, 3]], scores, [[0, 1, 2, 3]], scores)
    with pytest.raises(AssertionError, match="rank"):
        assert_rankings_agree([[1, 0, 2, 3]], [[3.0, 2.0, 2.0, 1.0]], [[0, 1, 2, 3]])
    # at the cut of a top-k, a row tied with the last one may be traded for another
    assert_rankings_agree([[0, 1, 7]], [[3.0, 2.0, 1.0]], [[0, 1, 5]], [[3.0, 2.0, 1.0]])
    with pytest.raises(AssertionError, match="missing"):
        assert_rankings_agree([[7, 1, 0]], [[3.0, 2.0, 1.0]], [[5, 1, 0]], [[3.0, 2.0, 1.0]])
    with pytest.raises(AssertionError, match="unranked"):
        assert_rankings_agree([[0, -1]], [[1.0, np.nan]], [[0, 1]], [[1.0, 0.5]])
    assert_rankings_agree([[0, 1]], [[1.0, 0.5]], [[0, 1]], [[1.0 + 4e-6, 0.5]], atol=1e-5)
    with pytest.raises(AssertionError, match="scores by rank"):
        assert_rankings_agree([[0, 1]], [[1.0, 0.5]], [[0, 1]], [[1.1, 0.5]], atol=1e-5)


def test_tie_rule_checker():
    assert_ties_by_lower_row([[2, 5, 1, -1]], [[1.0, 1.0, 0.5, np.nan]])
    with pytest.raises(AssertionError, match="tie"):
        assert_ties_by_lower_row([[5, 2, 1]], [[1.0, 1.0, 0.5]])
    with pytest.raises(AssertionError, match="rises"):
        assert_ties_by_lower_row([[1, 2]], [[0.5, 1.0]])


def test_dyadic_rows_are_exact_in_any_order_of_summation():
    rows = dyadic_unit_rows(np.random.default_rng(0), 40, 12)
    assert rows.dtype == np.float32
    np.testing.assert_array_equal(np.linalg.norm(rows, axis=1), 1.0)
    gram32 = rows @ rows.T
    gram64 = rows.astype(np.float64) @ rows.astype(np.float64).T
    by_hand = np.array([[sum(map(float, a * b)) for b in rows] for a in rows])
    np.testing.assert_array_equal(gram32, gram64)
    np.testing.assert_array_equal(gram64, by_hand)
    np.testing.assert_array_equal(gram64 * 16, np.round(gram64 * 16))
