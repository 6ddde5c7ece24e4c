"""Control rankings (:mod:`simattr.baselines.controls`) on synthetic labels."""

from __future__ import annotations

import numpy as np
import pytest

from simattr.errors import InvalidInputError


def test_random_ranking_draws_from_the_targets_class_and_pool_seeded_per_target():
    from simattr.baselines.controls import random_ranking

    rng = np.random.default_rng(0)
    train_labels = rng.integers(0, 3, 200)
    test_labels = rng.integers(0, 3, 20)
    candidates = np.sort(rng.choice(200, 120, replace=False))
    targets = np.array([3, 7, 11])
    r = random_ranking(train_labels, test_labels, targets, 10, candidates=candidates, seed=5)
    assert r.indices.shape == r.scores.shape == (3, 10) and r.indices.dtype == np.int64
    assert np.isin(r.indices, candidates).all()
    assert (train_labels[r.indices] == test_labels[targets][:, None]).all()
    assert all(len(np.unique(row)) == 10 for row in r.indices)
    assert np.all(np.diff(r.scores, axis=1) < 0)
    # a target's order depends on the seed and the target only, not on the other targets
    alone = random_ranking(train_labels, test_labels, [7], 10, candidates=candidates, seed=5)
    np.testing.assert_array_equal(alone.indices[0], r.indices[1])
    other = random_ranking(train_labels, test_labels, [7], 10, candidates=candidates, seed=6)
    assert not np.array_equal(other.indices[0], alone.indices[0])
    # all classes: any candidate may appear
    free = random_ranking(train_labels, test_labels, targets, 60, candidates=candidates,
                          class_conditional=False)  # fmt: skip
    assert np.isin(free.indices, candidates).all()
    assert len(np.unique(train_labels[free.indices])) > 1
    smallest = int(np.bincount(train_labels[candidates], minlength=3).min())
    with pytest.raises(InvalidInputError, match="larger"):
        random_ranking(
            train_labels, test_labels, np.arange(20), smallest + 1, candidates=candidates
        )
