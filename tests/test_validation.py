"""Argument checks of ``simattr.validation`` that no workflow test reaches on its own."""

from __future__ import annotations

import numpy as np
import pytest

from simattr.errors import InvalidInputError
from simattr.validation import check_threads


def test_check_threads_accepts_none_and_positive_ints_and_names_the_option():
    """``None`` keeps torch's default; anything but an integer >= 1 is refused by the name the
    caller gives (``threads`` when it gives none)."""
    assert check_threads(None) is None
    assert check_threads(np.int64(3)) == 3
    with pytest.raises(InvalidInputError, match=r"^threads must be a positive integer, got 0"):
        check_threads(0)
    with pytest.raises(InvalidInputError, match=r"^--threads must be a positive integer"):
        check_threads(True, "--threads")


def test_check_features_accepts_integers_and_counts_the_bad_rows():
    """Integer features are numbers (read as float32); non-finite values are refused with the
    first position and the number of rows affected."""
    from simattr.validation import check_features

    got = check_features(np.array([[1, 2], [3, 4]]))
    assert got.dtype == np.float32 and got.tolist() == [[1, 2], [3, 4]]
    bad = np.ones((4, 3))
    bad[1, 2] = np.nan
    bad[3, 0] = bad[3, 1] = np.inf
    with pytest.raises(InvalidInputError, match=r"at row 1, column 2 \(2 row\(s\) affected\)"):
        check_features(bad)


def test_check_ranking_arrays_refuses_bad_shapes_types_and_rows_outside_the_pool():
    """Targets must be (n,) integers; with a pool, every ranked row must be in it, also for a
    pool of one row or none."""
    from simattr.validation import check_ranking_arrays

    with pytest.raises(InvalidInputError, match=r"^r: a ranking needs targets \(n,\)"):
        check_ranking_arrays(np.array([[0]]), np.array([[1]]), np.array([[1.0]]), "r")
    with pytest.raises(InvalidInputError, match=r"^r: targets must be integers"):
        check_ranking_arrays(np.array([0.5]), np.array([[1]]), np.array([[1.0]]), "r")
    one = (np.array([0]), np.array([[3, 5]]), np.array([[1.0, 0.5]]))
    check_ranking_arrays(*one[:1], np.array([[3]]), np.array([[1.0]]), pool=np.array([3]))
    for pool, first in ((np.array([3]), 5), (np.array([], dtype=np.int64), 3)):
        pattern = rf"^ranking: training row {first} .*outside the {len(pool)}-image pool"
        with pytest.raises(InvalidInputError, match=pattern):
            check_ranking_arrays(*one, pool=pool)
    with pytest.raises(InvalidInputError, match=r"^ranking: training row 5 is outside"):
        check_ranking_arrays(*one, pool=np.array([3, 4]))  # one row outside: no "(and 0 more)"
    with pytest.raises(InvalidInputError, match=r"^ranking: training row 3 \(and 1 more\) is"):
        check_ranking_arrays(*one, pool=np.array([4]))


def test_target_labels_or_true_checks_the_given_labels():
    """Given labels replace the true ones, checked by name against the number of classes."""
    from simattr.validation import target_labels_or_true

    true, targets = np.array([0, 1, 2, 0]), np.array([3, 1])
    assert target_labels_or_true(true, targets, None, 3).tolist() == [0, 1]
    assert target_labels_or_true(true, targets, [2, 0], 3).tolist() == [2, 0]
    with pytest.raises(InvalidInputError, match=r"^target_labels has label 3 at row 1, outside"):
        target_labels_or_true(true, targets, [2, 3], 3)
