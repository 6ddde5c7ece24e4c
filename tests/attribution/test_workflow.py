"""The attribution workflow's steps (:mod:`simattr.attribution.workflow`) tested on their own."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- prediction-driven targets --------------------------------------------------------------------
# (tests written against mutants that survived: benchmarks/results/mutation_survivors.md)


def test_explain_predictions_uses_the_predicted_class_and_only_rows_with_one(tmp_path):
    """Predictions replace the true label row by row; targets default to the rows that have a
    prediction (sorted), and a chosen target without one is refused by row and file."""
    from simattr.attribution.workflow import _explain_predictions
    from simattr.errors import InvalidInputError

    true = np.array([0, 1, 2, 0, 1], dtype=np.int64)
    names = ("cat", "dog", "ship")
    ids = [f"test/img{i}.png" for i in range(5)]
    explained, chosen = _explain_predictions(
        np.array([2, 2, 0, 1, 0]), true, None, 5, names, ids, None
    )
    np.testing.assert_array_equal(explained, [2, 2, 0, 1, 0])
    np.testing.assert_array_equal(chosen, np.arange(5))
    assert true.tolist() == [0, 1, 2, 0, 1]  # the caller's labels are not written over

    csv = tmp_path / "preds.csv"
    csv.write_text("file,class\ntest/img3.png,ship\ntest/img1.png,cat\n")
    explained, chosen = _explain_predictions(csv, true, None, 5, names, ids, None)
    np.testing.assert_array_equal(explained, [0, 0, 2, 2, 1])
    np.testing.assert_array_equal(chosen, [1, 3])
    explained, chosen = _explain_predictions(csv, None, np.array([3]), 5, names, ids, None)
    np.testing.assert_array_equal(explained, [0, 0, 0, 2, 0])
    np.testing.assert_array_equal(chosen, [3])
    with pytest.raises(InvalidInputError, match=r"test row 2 \(test/img2.png\) is a target"):
        _explain_predictions(csv, true, np.array([1, 2]), 5, names, ids, None)
    with pytest.raises(InvalidInputError, match=r"targets contains 5, outside"):
        _explain_predictions(
            np.ones(5, dtype=np.int64), true, np.array([4, 5]), 5, names, None, None
        )
