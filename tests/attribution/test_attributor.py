"""Attributor as a scikit-learn estimator; scorers as its configurable, pluggable methods.

Synthetic features only (Gaussian clusters), so these run without the shared datasets.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from numeric import assert_rankings_agree
from sklearn.base import clone
from sklearn.model_selection import ParameterGrid

from simattr.attribution import (
    SCORERS,
    Attributor,
    ExemplarSVMScorer,
    L2Scorer,
    Scorer,
    WhitenedExemplarScorer,
)
from simattr.errors import InvalidInputError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def clusters():
    """Three anisotropic Gaussian classes of 80 training images and 12 targets, 8-d."""
    rng = np.random.default_rng(7)
    means = rng.normal(scale=3.0, size=(3, 8))
    scales = np.exp(rng.normal(scale=0.8, size=(3, 8)))  # unequal variances: whitening matters
    labels = np.repeat(np.arange(3), 80)
    train = means[labels] + rng.normal(size=(len(labels), 8)) * scales[labels]
    test_labels = np.repeat(np.arange(3), 4)
    tests = means[test_labels] + rng.normal(size=(len(test_labels), 8)) * scales[test_labels]
    return train.astype(np.float32), labels, tests.astype(np.float32), test_labels


class ManhattanScorer(Scorer):
    """Negative L1 distance: a method the package does not ship, registered by a test."""

    name = "manhattan"

    def score(self, prepared: np.ndarray, targets: np.ndarray) -> np.ndarray:
        diff = targets[:, None, :].astype(np.float64) - prepared[None, :, :].astype(np.float64)
        return -np.abs(diff).sum(axis=2)


# -- scikit-learn estimator protocol ------------------------------------------------------------
def test_get_params_set_params_and_clone_round_trip():
    att = Attributor("esvm", C=0.5, solver="newton", class_conditional=False, nprobe=4)
    params = att.get_params()
    assert params["method"] == "esvm" and params["C"] == 0.5 and params["solver"] == "newton"
    assert params["class_conditional"] is False and params["nprobe"] == 4
    twin = clone(att)
    assert twin is not att and twin.get_params() == params
    assert twin.set_params(C=0.2, retrieval="exact") is twin
    assert twin.C == 0.2 and twin.retrieval == "exact" and att.C == 0.5
    with pytest.raises(ValueError, match="Invalid parameter"):
        att.set_params(shrinkage=0.5)  # a string method has no nested parameters


def test_scorer_parameters_are_nested_parameters():
    att = Attributor(WhitenedExemplarScorer(shrinkage=0.5), class_conditional=True)
    deep = att.get_params(deep=True)
    assert deep["method__shrinkage"] == 0.5 and isinstance(deep["method"], Scorer)
    assert "method__shrinkage" not in att.get_params(deep=False)
    att.set_params(method__shrinkage=0.7)
    assert att.method.shrinkage == 0.7
    twin = clone(att)
    assert twin.method is not att.method and twin.get_params(deep=True)["method__shrinkage"] == 0.7
    # what a grid search does: clone, set the candidate's parameters, fit
    grid = ParameterGrid({"method__shrinkage": [0.3, 0.9], "normalize": [True, False]})
    tried = [clone(att).set_params(**p).get_params(deep=True) for p in grid]
    assert sorted({t["method__shrinkage"] for t in tried}) == [0.3, 0.9]
    assert att.method.shrinkage == 0.7  # the original is untouched by its clones
    esvm = Attributor(ExemplarSVMScorer(C=1.0, solver="newton")).get_params(deep=True)
    assert (esvm["method__C"], esvm["method__solver"], esvm["method__device"]) == (
        1.0,
        "newton",
        "cpu",
    )


def test_repr_shows_the_changed_parameters():
    assert repr(Attributor()) == "Attributor()"
    assert repr(Attributor("l2", class_conditional=False)) == (
        "Attributor(class_conditional=False, method='l2')"
    )
    assert repr(ExemplarSVMScorer(C=1.0)) == "ExemplarSVMScorer(C=1.0)"
    assert repr(L2Scorer()) == "L2Scorer()"
    assert repr(Attributor(WhitenedExemplarScorer(shrinkage=0.5))) == (
        "Attributor(method=WhitenedExemplarScorer(shrinkage=0.5))"
    )


def test_scorers_store_their_parameters_unchanged():
    """clone() requires it: the constructor must not convert what it is given."""
    scorer = ExemplarSVMScorer(C=1, solver="reference")
    assert scorer.get_params() == {"C": 1, "solver": "reference", "device": "cpu"}
    assert clone(scorer).get_params() == scorer.get_params()
    assert WhitenedExemplarScorer().get_params() == {
        "shrinkage": WhitenedExemplarScorer.DEFAULT_SHRINKAGE
    }
    assert L2Scorer().get_params() == {}


# -- a Scorer instance as the method ------------------------------------------------------------
def test_scorer_instance_ranks_like_the_name_it_configures(clusters):
    train, labels, tests, test_labels = clusters
    by_name = Attributor("esvm", C=0.5).fit(train, labels).topk(tests, test_labels, k=10)
    by_instance = (
        Attributor(ExemplarSVMScorer(C=0.5)).fit(train, labels).topk(tests, test_labels, k=10)
    )
    np.testing.assert_array_equal(by_name[0], by_instance[0])
    np.testing.assert_array_equal(by_name[1], by_instance[1])
    lda = Attributor("lda").fit(train, labels).score(tests, test_labels)
    default = Attributor(WhitenedExemplarScorer()).fit(train, labels).score(tests, test_labels)
    np.testing.assert_array_equal(lda, default)


def test_lda_shrinkage_reaches_the_ranking(clusters):
    """The shrinkage the name "lda" could never set now changes what is ranked first."""
    train, labels, tests, test_labels = clusters
    default = Attributor("lda").fit(train, labels).topk(tests, test_labels, k=20)[0]
    half = Attributor(WhitenedExemplarScorer(shrinkage=0.5)).fit(train, labels)
    ranked = half.topk(tests, test_labels, k=20)[0]
    assert not np.array_equal(default, ranked)
    # still a class-conditional ranking of the same pools
    assert (labels[ranked] == test_labels[:, None]).all()


def test_scorer_instance_with_faiss_retrieval(clusters):
    train, _, tests, _ = clusters
    exact = Attributor("l2", class_conditional=False, retrieval="exact").fit(train)
    faiss = Attributor(L2Scorer(), class_conditional=False, retrieval="faiss").fit(train)
    assert faiss.retrieval_ == "faiss"
    # two kernels (numpy vs FAISS): the same ranking up to near-ties
    assert_rankings_agree(*faiss.topk(tests, k=15), *exact.topk(tests, k=15), dtype=np.float32)
    with pytest.raises(InvalidInputError, match=r"use retrieval='exact' for WhitenedExemplar"):
        Attributor(WhitenedExemplarScorer(), class_conditional=False, retrieval="faiss").fit(train)


# -- a new method: a Scorer subclass and an entry in SCORERS -------------------------------------
def test_custom_registered_scorer_runs_end_to_end(clusters, monkeypatch):
    train, labels, tests, test_labels = clusters
    monkeypatch.setitem(SCORERS, "manhattan", ManhattanScorer)
    att = Attributor("manhattan", normalize=False).fit(train, labels)
    indices, scores = att.topk(tests, test_labels, k=5)
    for i, y in enumerate(test_labels):
        pool = np.flatnonzero(labels == y)
        dist = np.abs(train[pool].astype(np.float64) - tests[i].astype(np.float64)).sum(axis=1)
        order = np.lexsort((pool, dist))[:5]
        # the scorer's sum and numpy's may round differently: agree up to near-ties
        assert_rankings_agree(
            indices[i : i + 1], scores[i : i + 1], pool[order][None], -dist[order][None]
        )
    # the same scorer as an instance, registered or not, and described by its name
    by_instance = Attributor(ManhattanScorer(), normalize=False).fit(train, labels)
    np.testing.assert_array_equal(by_instance.topk(tests, test_labels, k=5)[0], indices)
    assert att.describe()["method"] == by_instance.describe()["method"] == "manhattan"
    # it did not opt in to FAISS candidates, and the refusal says which methods did
    refusal = r"supports the esvm, l2, l2-raw and cosine methods"
    with pytest.raises(InvalidInputError, match=refusal):
        Attributor("manhattan", class_conditional=False, retrieval="faiss").fit(train)


def test_registered_scorer_receives_the_forwarded_parameters_it_takes(clusters, monkeypatch):
    """A registered class gets C/solver/device from the Attributor when its constructor
    takes them, as the exemplar SVM always has, with no branch on its name."""

    class ScaledL1(ManhattanScorer):
        name = "scaled-l1"

        def __init__(self, C: float = 1.0) -> None:
            self.C = C

        def score(self, prepared: np.ndarray, targets: np.ndarray) -> np.ndarray:
            return self.C * super().score(prepared, targets)

    train, labels, tests, test_labels = clusters
    monkeypatch.setitem(SCORERS, "scaled-l1", ScaledL1)
    assert "manhattan" not in SCORERS  # monkeypatch took the previous test's entry back
    scaled = Attributor("scaled-l1", C=3.0).fit(train, labels).score(tests, test_labels)
    base = Attributor(ManhattanScorer()).fit(train, labels).score(tests, test_labels)
    np.testing.assert_allclose(scaled, 3.0 * base)
    assert Attributor("scaled-l1", C=3.0).describe()["C"] == 3.0


# -- refusals ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "kwargs", "message"),
    [
        (ExemplarSVMScorer(C=1.0), {"C": 0.5}, r"C=0\.5 conflicts with method=ExemplarSVMScorer"),
        (
            ExemplarSVMScorer(),
            {"solver": "newton"},
            r"solver='newton' conflicts with .*ExemplarSVMScorer\(solver='newton'\)",
        ),
        (ExemplarSVMScorer(), {"device": "meta"}, r"device='meta' conflicts"),
        (L2Scorer(), {"C": 0.5}, r"C=0\.5 has no effect on method=L2Scorer\(\)"),
        (WhitenedExemplarScorer(), {"solver": "reference"}, r"no parameter 'solver'"),
    ],
)
def test_conflicting_parameters_are_refused_in_one_line(clusters, method, kwargs, message):
    train, labels, _, _ = clusters
    with pytest.raises(InvalidInputError, match=message) as info:
        Attributor(method, **kwargs).fit(train, labels)
    assert "\n" not in str(info.value)


def test_agreeing_or_default_parameters_are_accepted(clusters):
    train, labels, tests, test_labels = clusters
    Attributor(ExemplarSVMScorer(C=0.5), C=0.5).fit(train, labels)  # the same value twice
    Attributor(ExemplarSVMScorer(C=0.5, solver="newton")).fit(train, labels)  # defaults here
    # device only says where to run: harmless for a scorer that has none
    Attributor(L2Scorer(), device="cuda").fit(train, labels).topk(tests, test_labels, k=3)


def test_bad_methods_and_parameters_are_refused(clusters):
    train, labels, _, _ = clusters
    with pytest.raises(InvalidInputError, match=r"pass WhitenedExemplarScorer\(\)"):
        Attributor(WhitenedExemplarScorer).fit(train, labels)
    with pytest.raises(InvalidInputError, match=r"or a Scorer instance, got 3"):
        Attributor(3).fit(train, labels)
    with pytest.raises(InvalidInputError, match=r"unknown attribution method 'knn'"):
        Attributor("knn").fit(train, labels)
    # set_params bypasses the scorer's constructor; fit checks the values again
    att = Attributor(WhitenedExemplarScorer()).set_params(method__shrinkage=2.0)
    with pytest.raises(InvalidInputError, match=r"shrinkage must be in \(0, 1\], got 2\.0"):
        att.fit(train, labels)
    with pytest.raises(InvalidInputError, match="C must be a positive number"):
        Attributor(ExemplarSVMScorer().set_params(C=-1.0)).fit(train, labels)


# -- describe(): the settings resume manifests compare ----------------------------------------
def _described(att: Attributor) -> dict[str, Any]:
    settings = att.describe()
    assert json.loads(json.dumps(settings)) == settings  # JSON-serialisable as it is
    return settings


def test_describe_pins_the_manifest_settings(clusters):
    """The exact dicts resume manifests of existing runs hold; they must never drift."""
    train, labels, _, _ = clusters
    base = {"class_conditional": True, "normalize": True, "retrieval": "exact"}
    esvm = _described(Attributor("esvm").fit(train, labels))
    assert esvm == {"method": "esvm", **base, "C": 0.1, "solver": "batched"}
    assert list(esvm) == ["method", "class_conditional", "normalize", "C", "solver", "retrieval"]
    assert _described(Attributor("l2").fit(train, labels)) == {"method": "l2", **base}
    assert _described(Attributor("lda").fit(train, labels)) == {"method": "lda", **base}
    newton = _described(Attributor("esvm", C=1, solver="newton", device="cpu").fit(train, labels))
    assert newton == {"method": "esvm", **base, "C": 1.0, "solver": "newton"}
    assert isinstance(newton["C"], float)
    faiss = Attributor("esvm", class_conditional=False, retrieval="faiss", n_candidates=64)
    assert _described(faiss.fit(train)) == {
        "method": "esvm",
        "class_conditional": False,
        "normalize": True,
        "C": 0.1,
        "solver": "batched",
        "retrieval": "faiss",
        "n_candidates": 64,
        "index": "flat",
        "nlist": None,
        "nprobe": 16,
    }
    # before fit, retrieval is not resolved yet: "exact", as the manifests have always said
    unfitted = Attributor("esvm", class_conditional=False, retrieval="faiss")
    assert unfitted.describe()["retrieval"] == "exact"


def test_describe_a_scorer_instance_by_its_name_and_params(clusters):
    train, labels, _, _ = clusters
    base = {"class_conditional": True, "normalize": True, "retrieval": "exact"}
    lda = Attributor(WhitenedExemplarScorer(shrinkage=0.5)).fit(train, labels)
    assert _described(lda) == {"method": "lda", **base, "params": {"shrinkage": 0.5}}
    esvm = Attributor(ExemplarSVMScorer(C=1, solver="newton")).fit(train, labels)
    # C as a float like the named form; device says where it ran, not what it ranked
    assert _described(esvm) == {
        "method": "esvm",
        **base,
        "params": {"C": 1.0, "solver": "newton"},
    }
    assert _described(Attributor(L2Scorer()))["params"] == {}


@pytest.mark.parametrize("method", ["esvm", "cosine", "l2"])
def test_class_names_rank_exactly_as_their_integer_codes(method):
    """Labels may be class names, as for scikit-learn classifiers: the same pools, the same
    ranking, and an unknown name is one clear error naming the target."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(60, 6)).astype(np.float32)
    names = np.array(["zebra", "ant", "moth"])[rng.integers(0, 3, size=60)]
    codes = np.searchsorted(np.array(["ant", "moth", "zebra"]), names)
    by_name = Attributor(method).fit(X, names)
    by_code = Attributor(method).fit(X, codes)
    assert by_name.classes_.tolist() == ["ant", "moth", "zebra"]
    idx_n, s_n = by_name.topk(X[:9], names[:9], 5)
    idx_c, s_c = by_code.topk(X[:9], codes[:9], 5)
    np.testing.assert_array_equal(idx_n, idx_c)
    np.testing.assert_allclose(s_n, s_c, rtol=1e-6)
    assert all(np.all(names[row] == names[t]) for t, row in enumerate(idx_n))
    with pytest.raises(InvalidInputError, match="target row 1 has label 'wasp'"):
        by_name.topk(X[:2], np.array(["ant", "wasp"]), 5)


# -- devices, rank(), FAISS path, labels, progress ------------------------------------------------
# (tests written against mutants that survived: benchmarks/results/mutation_survivors.md)


def _clusters(n: int, dim: int, n_clusters: int, seed: int, spread: float = 0.5):
    rng = np.random.default_rng(seed)
    centres = 4 * rng.normal(size=(n_clusters, dim))
    labels = rng.integers(0, n_clusters, size=n)
    return centres[labels] + spread * rng.normal(size=(n, dim)), labels


_DEVICE_CASES = [
    ("esvm", {}),
    ("esvm", {"solver": "newton"}),
    ("esvm", {"class_conditional": False}),
    ("esvm", {"class_conditional": False, "retrieval": "faiss"}),
    ("l2", {"class_conditional": False, "retrieval": "faiss"}),
    ("cosine", {"class_conditional": False, "retrieval": "faiss"}),
    ("l2", {}),
    ("l2-raw", {}),
    ("cosine", {}),
    ("lda", {}),
    ("class-prior", {}),
]


@pytest.mark.parametrize(("method", "kwargs"), _DEVICE_CASES, ids=lambda c: str(c))
def test_results_do_not_depend_on_torchs_default_device(method, kwargs):
    """A user who set ``torch.set_default_device`` (to a GPU, say) and asks for a CPU attributor
    gets the same rankings: every tensor we create names its device. Checked on this CPU by
    making the shape-only ``meta`` device the default: a tensor created without a device would
    be a meta tensor and could not be read back, so any forgotten ``device=`` fails here."""
    import torch

    from simattr import Attributor

    X, labels = _clusters(240, 8, 4, seed=11, spread=1.5)
    targets, target_labels = X[:5] + 0.1, labels[:5]
    ref = Attributor(method, device="cpu", **kwargs).fit(X, labels)
    ref_idx, ref_val = ref.topk(targets, target_labels, 12)
    ref_dense = ref.score(targets, target_labels)
    with torch.device("meta"):
        att = Attributor(method, device="cpu", **kwargs).fit(X, labels)
        idx, val = att.topk(targets, target_labels, 12)
        dense = att.score(targets, target_labels)
    # exact indices: the same CPU computation on the same inputs, only the default device differs
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(val, ref_val, rtol=1e-12)
    np.testing.assert_allclose(dense, ref_dense, rtol=1e-12, equal_nan=True)


def test_rank_ranks_the_chosen_rows_with_their_own_labels():
    """``rank`` picks the target rows of the test features and their labels (not the first
    rows, not the unpicked labels) and records which rows it ranked."""
    from simattr import Attributor, InvalidInputError
    from simattr.attribution import rank

    X, labels = _clusters(200, 6, 4, seed=12, spread=1.0)
    test, test_labels = X[::7] + 0.05, labels[::7]
    att = Attributor("esvm").fit(X, labels)
    targets = np.array([5, 2, 9])
    r = rank(att, test, test_labels, targets, 8)
    idx, val = att.topk(test[targets], test_labels[targets], 8)
    np.testing.assert_array_equal(r.targets, targets)
    np.testing.assert_array_equal(r.indices, idx)
    np.testing.assert_allclose(r.scores, val, rtol=1e-12)
    assert (labels[r.indices] == test_labels[targets][:, None]).all()
    unlabeled = rank(Attributor("cosine", class_conditional=False).fit(X), test, None, targets, 4)
    brute = test[targets] / np.linalg.norm(test[targets], axis=1, keepdims=True)
    pool = X / np.linalg.norm(X, axis=1, keepdims=True)
    sims = brute @ pool.T
    expected = np.argsort(-sims, axis=1, kind="stable")[:, :4]
    expected_scores = np.take_along_axis(sims, expected, axis=1)
    assert_rankings_agree(unlabeled.indices, unlabeled.scores, expected, expected_scores)
    with pytest.raises(InvalidInputError, match=r"targets contains 99"):
        rank(att, test, test_labels, np.array([1, 99]), 3)


def test_faiss_path_reports_progress_block_by_block_and_accepts_k_equal_to_candidates(
    capsys, monkeypatch
):
    """With ``block_size=16`` and 40 targets the FAISS path ranks three blocks and says so in
    plain progress lines (label, running count, total); ``k`` may equal ``n_candidates``, and
    the result is the exact all-class ranking."""
    import re

    from simattr import Attributor

    monkeypatch.setenv("SIMATTR_PROGRESS_INTERVAL", "0")  # a line per block
    X, _ = _clusters(300, 8, 4, seed=13, spread=1.5)
    T = X[:40] + 0.05
    exact = Attributor("esvm", class_conditional=False, retrieval="exact").fit(X)
    fast = Attributor(
        "esvm",
        class_conditional=False,
        retrieval="faiss",
        n_candidates=20,
        block_size=16,
        progress=True,
    ).fit(X)
    capsys.readouterr()
    idx, val = fast.topk(T, k=20)
    ref_idx, ref_val = exact.topk(T, k=20)
    np.testing.assert_allclose(val, ref_val, atol=1e-6)
    assert (idx == ref_idx).mean() > 0.99
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("attribution")]
    counts = [re.match(r"attribution \(esvm, faiss\): (\d+)/40 ", x) for x in lines]
    assert all(counts), lines
    assert [int(c.group(1)) for c in counts] == [16, 32, 40, 40]  # three blocks, then "done"
    assert lines[-1].split(", ")[-1].startswith("done in")
    fast.set_params(progress=False).topk(T, k=20)
    assert "attribution" not in capsys.readouterr().err  # progress=False keeps quiet


def test_describe_records_the_index_settings_as_given():
    """What a manifest records about the FAISS index is what the user asked for."""
    from simattr import Attributor

    X, _ = _clusters(300, 8, 4, seed=15)
    att = Attributor(
        "cosine", class_conditional=False, retrieval="faiss", index="ivf", nlist=7, nprobe=3
    )
    d = att.fit(X).describe()
    assert (d["retrieval"], d["index"], d["nlist"], d["nprobe"]) == ("faiss", "ivf", 7, 3)


def test_class_name_labels_refuse_a_wrong_shape_and_an_unknown_name_after_every_class():
    """Target class names must be one per target; a name sorting after every training class
    is an unknown label named by its row, not an index error."""
    from simattr import Attributor
    from simattr.errors import InvalidInputError

    X, labels = _clusters(60, 4, 3, seed=14)
    names = np.array(["bird", "cat", "dog"])[labels]
    att = Attributor("cosine").fit(X, names)
    with pytest.raises(InvalidInputError, match=r"one label per target feature \(3\)"):
        att.topk(X[:3], names[:3].reshape(3, 1), 2)
    with pytest.raises(InvalidInputError, match=r"target row 1 has label 'zebra'"):
        att.topk(X[:3], np.array(["cat", "zebra", "dog"]), 2)
    with pytest.raises(InvalidInputError, match=r"target row 0 has label 'ant'"):
        att.topk(X[:1], np.array(["ant"]), 2)


@pytest.mark.parametrize("retrieval", ["exact", "faiss"])
def test_cosine_scores_of_short_vectors_are_cosines(retrieval):
    """Unnormalised features shorter than 1 (here of norm about 0.003) still score their
    cosine, not a cosine scaled by the target's length."""
    from scipy.spatial.distance import cdist

    from simattr import Attributor

    X, labels = _clusters(120, 6, 3, seed=16)
    X, T = 1e-3 * X, 1e-3 * (X[:4] + 0.3)
    att = Attributor("cosine", normalize=False, class_conditional=False, retrieval=retrieval)
    idx, scores = att.fit(X, labels).topk(T, None, k=15)
    sim = 1.0 - cdist(T, X, metric="cosine")
    expected = np.argsort(-sim, axis=1, kind="stable")[:, :15]
    expected_scores = np.take_along_axis(sim, expected, axis=1)
    assert_rankings_agree(idx, scores, expected, expected_scores, atol=1e-12)
    dense = att.score(T, None)
    np.testing.assert_allclose(dense, sim, atol=1e-12)


def test_exact_path_reports_progress_and_refusals_name_the_parameter(capsys, monkeypatch):
    """The exact path says what it ranks as it goes (label and running count); a bad
    ``block_size`` or ``train_labels`` is refused by the name the user wrote."""
    from simattr import Attributor
    from simattr.errors import InvalidInputError

    monkeypatch.setenv("SIMATTR_PROGRESS_INTERVAL", "0")
    X, labels = _clusters(90, 4, 3, seed=19)
    att = Attributor("l2", block_size=4, progress=True).fit(X, labels)
    capsys.readouterr()
    att.topk(X[:6], labels[:6], 3)
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("attribution (l2)")]
    assert lines and lines[-1].startswith("attribution (l2): 6/6 (100%), done in")
    with pytest.raises(InvalidInputError, match=r"^block_size must be a positive integer, got 0"):
        Attributor("l2", block_size=0).fit(X, labels)
    with pytest.raises(InvalidInputError, match=r"^train_labels"):
        Attributor("l2").fit(X, labels[:-1])


def test_auto_retrieval_switches_to_faiss_at_its_threshold():
    """``retrieval="auto"`` ranks exactly below AUTO_THRESHOLD training images and through
    FAISS from it on (all-class methods; class-conditional ranking is always exact)."""
    from simattr import Attributor
    from simattr.attribution.retrieval import AUTO_THRESHOLD

    X = np.random.default_rng(20).normal(size=(AUTO_THRESHOLD, 2)).astype(np.float32)
    at = Attributor("cosine", class_conditional=False, retrieval="auto").fit(X)
    below = Attributor("cosine", class_conditional=False, retrieval="auto").fit(X[:-1])
    assert (at.retrieval_, below.retrieval_) == ("faiss", "exact")
    assert at.describe()["retrieval"] == "faiss"
