"""The paper code's options (raw features, ``l2-raw``) and the class-prior control."""

from __future__ import annotations

import numpy as np
from numeric import assert_rankings_agree
from typer.testing import CliRunner

from simattr.attribution import Attributor, load_ranking
from simattr.cli import app


def _features(seed: int = 0, n: int = 120, d: int = 16):
    """Two classes whose rows have very different norms: normalising changes distances."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * rng.uniform(0.2, 5.0, size=(n, 1))
    y = np.arange(n) % 2
    t = rng.normal(size=(6, d)) * rng.uniform(0.2, 5.0, size=(6, 1))
    return x.astype(np.float32), y, t.astype(np.float32), np.arange(6) % 2


def test_l2_raw_is_euclidean_on_raw_features_whatever_normalize_says():
    x, y, t, yt = _features()
    for normalize in (True, False):
        att = Attributor("l2-raw", normalize=normalize).fit(x, y)
        dense = att.score(t, yt)
        for i in range(len(t)):
            pool = np.flatnonzero(y == yt[i])
            expected = -np.linalg.norm(x[pool].astype(np.float64) - t[i], axis=1)
            np.testing.assert_allclose(dense[i, pool], expected, rtol=1e-5, atol=1e-5)
        assert att.describe()["normalize"] is False
    raw, _ = Attributor("l2-raw").fit(x, y).topk(t, yt, 20)
    normalised, distances = Attributor("l2").fit(x, y).topk(t, yt, 20)
    cosine, cosines = Attributor("cosine").fit(x, y).topk(t, yt, 20)
    # on unit rows l2 ranks like cosine (|a - b|^2 = 2 - 2 cos), up to ties: the two formulas
    # round differently, from features normalised in float32
    as_cosines = 1 - distances**2 / 2
    assert_rankings_agree(normalised, as_cosines, cosine, cosines, dtype=np.float32)
    assert not np.array_equal(raw, normalised)  # the paper code's l2knn does not
    no_norm, _ = Attributor("l2", normalize=False).fit(x, y).topk(t, yt, 20)
    assert np.array_equal(raw, no_norm)  # exact: the very same computation (the same scorer)


def test_class_prior_scores_every_pool_image_the_same():
    x, y, t, yt = _features(1)
    att = Attributor("class-prior").fit(x, y)
    dense = att.score(t, yt)
    for i in range(len(t)):
        pool = y == yt[i]
        assert np.all(dense[i, pool] == 1.0)
        assert np.all(np.isneginf(dense[i, ~pool]))
    idx, scores = att.topk(t, yt, 10)
    for i in range(len(t)):  # ties go to the lower row: the pool in row order
        assert np.array_equal(idx[i], np.flatnonzero(y == yt[i])[:10])
    assert np.all(scores == 1.0)


def test_cli_no_normalize_records_it_and_ranks_raw(tmp_path):
    x, y, t, yt = _features(2)
    for name, arr in {"xtr": x, "ytr": y, "xte": t, "yte": yt}.items():
        np.save(tmp_path / f"{name}.npy", arr)
    runner = CliRunner()

    def attribute(out: str, *extra: str) -> np.ndarray:
        args = ["attribute", "--train-features", str(tmp_path / "xtr.npy")]
        args += ["--test-features", str(tmp_path / "xte.npy")]
        args += ["--train-labels", str(tmp_path / "ytr.npy")]
        args += ["--test-labels", str(tmp_path / "yte.npy"), "--topk", "15"]
        result = runner.invoke(app, [*args, "--out", str(tmp_path / out), *extra])
        assert result.exit_code == 0, result.output
        return load_ranking(tmp_path / out)

    raw = attribute("raw.npz", "--method", "l2", "--no-normalize")
    assert raw.metadata["normalize"] is False and raw.metadata["method"] == "l2"
    paper = attribute("paper.npz", "--method", "l2-raw")
    assert np.array_equal(raw.indices, paper.indices)  # exact: the same computation
    default = attribute("default.npz", "--method", "l2")
    assert default.metadata["normalize"] is True
    assert not np.array_equal(default.indices, raw.indices)

    prior = attribute("prior.npz", "--method", "class-prior")
    for row, target in enumerate(prior.targets):
        assert np.array_equal(prior.indices[row], np.flatnonzero(y == yt[target])[:15])
