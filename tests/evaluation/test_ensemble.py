"""Ensembles (:mod:`simattr.evaluation.ensemble`): real tiny training on scikit-learn's bundled
digits."""

from __future__ import annotations

import numpy as np
import pytest
from digitskit import digits_recipe

from simattr.errors import InvalidInputError, SimattrError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_ensemble_trains_once_and_derives_correctness_and_flip_classes(tmp_path, digits):
    from simattr.evaluation.ensemble import train_ensemble

    _, test = digits
    recipe = digits_recipe()
    ens = train_ensemble("digits", recipe, n_models=2, cache_dir=tmp_path / "ens", threads=1)
    assert ens.probs.shape == (2, len(test), 10) and ens.seeds == (0, 1)
    np.testing.assert_allclose(ens.probs.sum(axis=2), 1.0, atol=1e-4)
    assert not np.array_equal(ens.probs[0], ens.probs[1])  # two seeds, two models
    np.testing.assert_array_equal(ens.correct, ens.mean.argmax(1) == test.labels)
    assert ens.accuracy > 0.4  # chance is 0.1
    assert np.all(ens.flip_class != test.labels)
    runner_up = np.argsort(ens.mean, axis=1)[:, -2]
    wrong = ~ens.correct
    np.testing.assert_array_equal(ens.flip_class[ens.correct], runner_up[ens.correct])
    np.testing.assert_array_equal(ens.flip_class[wrong], ens.predicted[wrong])
    files = sorted((tmp_path / "ens").glob("seed-*.npy"))
    stamps = [f.stat().st_mtime_ns for f in files]
    assert len(files) == 2
    again = train_ensemble("digits", recipe, n_models=2, cache_dir=tmp_path / "ens", threads=1)
    np.testing.assert_array_equal(again.probs, ens.probs)
    assert [f.stat().st_mtime_ns for f in files] == stamps  # read back, not retrained
    with pytest.raises(SimattrError):
        train_ensemble("digits", digits_recipe(epochs=1), n_models=1,
                       cache_dir=tmp_path / "ens", threads=1)  # fmt: skip
    with pytest.raises(InvalidInputError, match="at least one"):
        train_ensemble("digits", recipe, n_models=0, cache_dir=tmp_path / "none")
