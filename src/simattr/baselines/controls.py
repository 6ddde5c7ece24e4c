"""Reference rankings that any attribution method must beat.

``random_ranking`` orders the candidate training images of each target's class at random: the
floor of the support curves (DESIGN.md section 2). It is seeded per target, so the same seed
gives the same ranking whatever the other targets are.
"""

from __future__ import annotations

import numpy as np

from simattr.errors import InvalidInputError
from simattr.ranking import Ranking
from simattr.validation import check_indices, check_labels, check_positive_int


def random_ranking(
    train_labels: np.ndarray,
    test_labels: np.ndarray,
    targets: np.ndarray,
    k: int,
    *,
    candidates: np.ndarray | None = None,
    class_conditional: bool = True,
    seed: int = 0,
) -> Ranking:
    """``k`` random training rows per target, from its class (or from all ``candidates``).

    Args:
        train_labels: labels of the whole training split (rankings index its rows).
        test_labels: labels of the whole test split.
        targets: test rows to rank for.
        candidates: training rows allowed (a recipe's pool); default all.
        seed: with the target row, decides the order.
    """
    k = check_positive_int(k, "k")
    train_labels = check_labels(train_labels, len(train_labels), "train_labels")
    test_labels = check_labels(test_labels, len(test_labels), "test_labels")
    targets = check_indices(targets, len(test_labels), "targets")
    rows = (
        np.arange(len(train_labels), dtype=np.int64)
        if candidates is None
        else check_indices(candidates, len(train_labels), "candidates")
    )
    indices = np.empty((len(targets), k), dtype=np.int64)
    for i, t in enumerate(targets):
        pool = rows[train_labels[rows] == test_labels[t]] if class_conditional else rows
        if len(pool) < k:
            raise InvalidInputError(
                f"k={k} is larger than the {len(pool)} candidates of target {int(t)}"
            )
        rng = np.random.default_rng([seed, int(t)])
        indices[i] = rng.choice(pool, k, replace=False)
    scores = np.broadcast_to(-np.arange(k, dtype=np.float64), indices.shape).copy()
    return Ranking(
        targets=targets,
        indices=indices,
        scores=scores,
        metadata={"method": "random", "class_conditional": class_conditional, "seed": seed},
    )
