"""The paper code's options (raw features, ``l2-raw``) and the class-prior control."""

from __future__ import annotations

import numpy as np
import pytest
from numeric import assert_rankings_agree
from typer.testing import CliRunner

from simattr.attribution import Attributor, load_ranking
from simattr.attribution.retrieval import CandidateSearch
from simattr.attribution.scorers import L2Scorer, Scorer, _join
from simattr.cli import app

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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


# -- scorer settings ------------------------------------------------------------------------------
# (tests written against mutants that survived: benchmarks/results/mutation_survivors.md)


class _Knobs(Scorer):
    """A user scorer whose parameters are of every kind settings() must turn into JSON."""

    name = "knobs"

    def __init__(self, inner=None, weights=(1, 2.5), table=None, scale=None, tag=None, obj=None):
        self.inner = inner
        self.weights = weights
        self.table = table
        self.scale = scale
        self.tag = tag
        self.obj = obj


def test_settings_turn_every_parameter_kind_into_json():
    knobs = _Knobs(
        inner=L2Scorer(),
        weights=(1, 2.5, [np.int64(3)]),
        table={1: (np.float32(0.5), None)},
        scale=np.float64(0.25),
        tag=None,
        obj=range(3),
    )
    assert knobs.settings() == {
        "inner": {"name": "l2", "params": {}},
        "obj": "range(0, 3)",
        "scale": 0.25,
        "table": {"1": [0.5, None]},
        "tag": None,
        "weights": [1, 2.5, [3]],
    }
    # a nested scorer is recorded once, by its own settings, not also as "inner__..." keys
    from simattr.attribution.scorers import ExemplarSVMScorer

    nested = _Knobs(inner=ExemplarSVMScorer(C=2, solver="newton", device="cpu"))
    assert nested.settings()["inner"] == {
        "name": "esvm",
        "params": {"C": 2.0, "solver": "newton"},
    }
    assert sorted(nested.settings()) == ["inner", "obj", "scale", "table", "tag", "weights"]


def test_join_lists_names_in_prose():
    assert _join(["esvm"]) == "esvm"
    assert _join(["esvm", "l2"]) == "esvm and l2"
    assert _join(["esvm", "l2", "cosine"]) == "esvm, l2 and cosine"


def test_esvm_scorer_runs_its_retrieval_on_its_own_device(monkeypatch):
    """The scorer's device reaches the candidate solver (a GPU scorer must not solve on the
    CPU); seen through a spy, so that no GPU is needed."""
    from simattr.attribution import scorers

    seen = {}

    def spy(targets, features, search, k, **kwargs):
        seen.update(kwargs)
        return np.zeros((len(targets), k), dtype=np.int64), np.zeros((len(targets), k))

    monkeypatch.setattr(scorers, "esvm_candidates_topk", spy)
    X = np.random.default_rng(7).normal(size=(50, 4))
    scorer = scorers.ExemplarSVMScorer(C=0.7, device="cuda:1")
    scorer.retrieval_topk(X[:3], X, CandidateSearch.build(X), 5, n_candidates=20)
    assert seen["device"] == "cuda:1" and seen["C"] == 0.7 and seen["n_candidates"] == 20
