"""The core checked against references that share none of its code, at non-default settings.

Every other solver test runs at the default ``C = 0.1`` on L2-normalised features, where a
solver that ignores ``C``, skips its line search or takes the wrong class weights can still land
close enough to pass. Here the exemplar-SVM objective, its balanced class weights and its
gradient are written out independently (from the scikit-learn definition: ``class_weight =
n_samples / (n_classes * count)``), the data are unscaled and off-centre, and ``C`` is 1 and 10,
where such mistakes move decision values by whole units. The same goes for the paths default
settings never take (``normalize=False``), for LDS's rank correlation (data where Spearman and
Pearson differ), for what an LDS subset model is trained on, for label-range boundaries and for
which targets may be drawn.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numeric import assert_rankings_agree
from scipy import optimize, stats
from scipy.spatial.distance import cdist

from simattr.attribution import Attributor
from simattr.attribution.esvm import PoolSystem, balanced_weights, fit_newton
from simattr.attribution.esvm_batched import BatchedPool, fit_batched
from simattr.errors import InvalidInputError
from simattr.ranking import Ranking
from simattr.validation import check_labels


def _unscaled_problem(seed: int, n: int = 400, d: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """A target next to a pool point, far from unit scale (per-dimension scales 0.05..20,
    offset mean): ill-conditioned enough that Newton without its line search cycles here
    (checked by hand: decision values off by up to 98 % at C = 10 for both solvers)."""
    rng = np.random.default_rng(seed)
    scale = np.geomspace(0.05, 20.0, d)
    pool = rng.normal(size=(n, d)) * scale + rng.normal(size=d) * 3
    target = pool[rng.integers(n)] + rng.normal(size=d) * scale * 0.05
    return target, pool


def _sklearn_balanced(n_pool: int, C: float) -> tuple[float, float]:
    """Per-sample weights of one positive and ``n_pool`` negatives, as scikit-learn defines
    ``class_weight="balanced"``: ``n_samples / (n_classes * np.bincount(y))``, times ``C``."""
    from sklearn.utils.class_weight import compute_class_weight

    y = np.r_[1, np.zeros(n_pool, dtype=int)]
    w_neg, w_pos = compute_class_weight("balanced", classes=np.array([0, 1]), y=y)
    return C * w_pos, C * w_neg


def _objective(w: np.ndarray, target: np.ndarray, pool: np.ndarray, C: float):
    """Squared-hinge exemplar SVM with a penalised intercept (liblinear's), and its gradient."""
    c_pos, c_neg = _sklearn_balanced(len(pool), C)
    xt = np.r_[target, 1.0]
    X = np.c_[pool, np.ones(len(pool))]
    hp = max(0.0, 1.0 - xt @ w)
    hn = np.maximum(0.0, 1.0 + X @ w)
    f = 0.5 * w @ w + c_pos * hp**2 + c_neg * (hn**2).sum()
    g = w - 2 * c_pos * hp * xt + 2 * c_neg * X.T @ hn
    return f, g


_OPTIMA: dict[tuple[bytes, bytes, float], np.ndarray] = {}


def _reference_optimum(target: np.ndarray, pool: np.ndarray, C: float) -> np.ndarray:
    """The optimum by a general-purpose quasi-Newton method (scipy), to tight tolerance."""
    key = (target.tobytes(), pool.tobytes(), C)
    if key not in _OPTIMA:
        _OPTIMA[key] = _minimise(target, pool, C)
    return _OPTIMA[key]


def _minimise(target: np.ndarray, pool: np.ndarray, C: float) -> np.ndarray:
    w0 = np.zeros(pool.shape[1] + 1)
    res = optimize.minimize(
        _objective,
        w0,
        args=(target, pool, C),
        jac=True,
        method="L-BFGS-B",
        options={"ftol": 1e-15, "gtol": 1e-11, "maxiter": 20_000, "maxcor": 30},
    )
    return res.x


def test_balanced_weights_are_scikit_learns():
    for n, C in ((1, 0.1), (9, 1.0), (4999, 10.0)):
        np.testing.assert_allclose(balanced_weights(n, C), _sklearn_balanced(n, C), rtol=1e-12)


@pytest.mark.parametrize("C", [1.0, 10.0])
@pytest.mark.parametrize("seed", [0, 3])
def test_newton_reaches_the_independent_optimum_at_large_c_on_unscaled_data(C, seed):
    target, pool = _unscaled_problem(seed)
    fit = fit_newton(target, PoolSystem.build(pool), C=C)
    w = np.r_[fit.coef, fit.intercept]
    f, g = _objective(w, target, pool, C)
    _, g0 = _objective(np.zeros_like(w), target, pool, C)
    # first-order optimality of a strongly convex function, with an independent gradient
    assert np.linalg.norm(g) <= 1e-7 * np.linalg.norm(g0)
    ref = _reference_optimum(target, pool, C)
    assert f <= _objective(ref, target, pool, C)[0] * (1 + 1e-12)
    X = np.c_[pool, np.ones(len(pool))]
    np.testing.assert_allclose(X @ w, X @ ref, atol=1e-4 * np.abs(X @ ref).max())


@pytest.mark.parametrize("C", [1.0, 10.0])
@pytest.mark.parametrize(("dtype", "rtol"), [(torch.float64, 3e-4), (torch.float32, 2e-3)])
@pytest.mark.slow
def test_batched_reaches_the_independent_optimum_at_large_c_on_unscaled_data(C, dtype, rtol):
    target, pool = _unscaled_problem(5)
    # the other targets: near other pool points, so every target needs its own active set
    targets = [target, pool[7] * 1.01, pool[123] + 0.1]
    solution = fit_batched(np.stack(targets), BatchedPool.build(pool, C=C, dtype=dtype))
    X = np.c_[pool, np.ones(len(pool))]
    for i, target in enumerate(targets):
        ref = _reference_optimum(target, pool, C)
        decision = solution.decision[i].double().numpy()
        np.testing.assert_allclose(decision, X @ ref, atol=rtol * np.abs(X @ ref).max())


def test_c_changes_the_solution_by_more_than_the_tolerance():
    """The checks above would pass a solver that ignored C only if C did not matter here."""
    target, pool = _unscaled_problem(0)
    X = np.c_[pool, np.ones(len(pool))]
    a, b = (X @ _reference_optimum(target, pool, C) for C in (0.1, 10.0))
    assert np.abs(a - b).max() > 0.1 * np.abs(b).max()


@pytest.mark.parametrize("solver", ["batched", "newton", "reference"])
def test_attributor_ranks_raw_features_by_the_independent_optimum(solver):
    """Through the public API: ``normalize=False`` at C = 10 scores like the reference SVM."""
    target, pool = _unscaled_problem(3, n=160, d=8)
    labels = np.zeros(len(pool), dtype=np.int64)
    att = Attributor("esvm", C=10.0, solver=solver, normalize=False).fit(pool, labels)
    scores = att.score(target[None], np.array([0]))[0]
    ref = np.c_[pool, np.ones(len(pool))] @ _reference_optimum(target, pool, 10.0)
    tol = 2e-3 if solver == "reference" else 1e-4  # liblinear stops at its own tolerance
    np.testing.assert_allclose(scores, ref, atol=tol * np.abs(ref).max())


# -- the normalize=False paths of the similarity scorers ---------------------------------------


@pytest.fixture(scope="module")
def raw():
    rng = np.random.default_rng(5)
    # norms vary by 20x: Euclidean and cosine rankings differ on such features
    train = rng.normal(size=(300, 6)) * rng.uniform(0.1, 2.0, size=(300, 1)) + 0.3
    labels = np.repeat(np.arange(3), 100)
    targets = rng.normal(size=(4, 6)) * 1.3
    return train, labels, targets, np.array([0, 1, 2, 0])


@pytest.mark.parametrize("retrieval", ["exact", "faiss"])
def test_l2_without_normalisation_is_euclidean_on_raw_features(raw, retrieval):
    train, labels, targets, _ = raw
    att = Attributor("l2", normalize=False, class_conditional=False, retrieval=retrieval)
    idx, scores = att.fit(train, labels).topk(targets, None, k=20)
    dist = cdist(targets, train)
    # scipy and torch (or FAISS and a rescoring) compute the distances in other orders:
    # the same ranking up to near-ties
    expected = np.argsort(dist, axis=1, kind="stable")[:, :20]
    expected_scores = -np.take_along_axis(dist, expected, axis=1)
    assert_rankings_agree(idx, scores, expected, expected_scores, rtol=1e-9)
    # and it is not what the normalised default ranks
    unit = Attributor("l2", class_conditional=False).fit(train, labels)
    assert not np.array_equal(unit.topk(targets, None, k=20)[0], idx)


@pytest.mark.parametrize("retrieval", ["exact", "faiss"])
def test_cosine_without_normalisation_is_still_cosine(raw, retrieval):
    train, labels, targets, _ = raw
    att = Attributor("cosine", normalize=False, class_conditional=False, retrieval=retrieval)
    idx, scores = att.fit(train, labels).topk(targets, None, k=20)
    sim = 1.0 - cdist(targets, train, metric="cosine")
    expected = np.argsort(-sim, axis=1, kind="stable")[:, :20]
    expected_scores = np.take_along_axis(sim, expected, axis=1)
    assert_rankings_agree(idx, scores, expected, expected_scores, atol=1e-12)


def test_class_conditional_raw_l2_stays_inside_the_class(raw):
    train, labels, targets, t_labels = raw
    idx, scores = Attributor("l2-raw").fit(train, labels).topk(targets, t_labels, k=10)
    for row, c in enumerate(t_labels):
        members = np.flatnonzero(labels == c)
        dist = cdist(targets[row : row + 1], train[members])[0]
        order = np.argsort(dist, kind="stable")[:10]
        assert_rankings_agree(idx[row], scores[row], members[order], -dist[order], rtol=1e-9)


# -- LDS: a rank correlation, over models trained on their subsets ------------------------------


def test_lds_is_spearman_not_pearson():
    """Margins a monotone but far from linear function of the prediction: LDS exactly 1."""
    from simattr.evaluation.lds import LdsData, lds_score

    rng = np.random.default_rng(0)
    pool = np.arange(40, dtype=np.int64)
    masks = rng.random((30, 40)) < 0.5
    dense = rng.normal(size=(2, 40))
    predicted = masks.astype(float) @ dense.T  # (S, 2)
    margins = np.exp(2.0 * predicted)
    data = LdsData(pool, masks, np.array([3, 7]), margins, manifest={})
    ranking = Ranking(np.array([3, 7]), np.tile(pool, (2, 1)), dense)
    result = lds_score(data, ranking)
    np.testing.assert_allclose(result.per_target, 1.0)
    pearson = [stats.pearsonr(predicted[:, j], margins[:, j])[0] for j in range(2)]
    assert max(pearson) < 0.95  # so a Pearson LDS would fail the line above


def test_each_lds_model_trains_on_its_own_subset(data_root, tmp_path, monkeypatch):
    """The jobs handed to the executor train on ``pool[mask]``, subset by subset."""
    import simattr.evaluation.lds as lds

    captured = {}

    class Stop(Exception):
        pass

    def fake_run_jobs(executor, jobs, save):
        captured.update(jobs)
        raise Stop

    monkeypatch.setattr(lds, "run_jobs", fake_run_jobs)
    with pytest.raises(Stop):
        lds.run_lds(str(data_root / "cifar10"), "tiny", tmp_path, subsets=3, targets=(0, 1))
    data = lds.load_lds(tmp_path)
    assert sorted(captured) == [(0, 0), (1, 0), (2, 0)]
    for (s, _), job in captured.items():
        assert job.subset == tuple(int(r) for r in data.pool[data.masks[s]])
        assert len(job.subset) == data.masks[s].sum() < len(data.pool)
    assert len({job.seed for job in captured.values()}) == 3


# -- boundaries and target selection -------------------------------------------------------------


def test_label_range_boundaries():
    assert check_labels([0, 2, 1], 3, num_classes=3).tolist() == [0, 2, 1]
    with pytest.raises(InvalidInputError, match="label 3 at row 1"):
        check_labels([0, 3, 1], 3, num_classes=3)
    with pytest.raises(InvalidInputError, match="negative label -1 at row 2"):
        check_labels([0, 1, -1], 3, num_classes=3)
    with pytest.raises(InvalidInputError, match="whole numbers"):
        check_labels([0.0, 1.5], 2, num_classes=3)


def test_attributor_refuses_a_target_label_equal_to_the_number_of_classes(raw):
    train, labels, targets, _ = raw
    att = Attributor("cosine").fit(train, labels)
    att.topk(targets[:1], np.array([2]), k=3)
    with pytest.raises(InvalidInputError):
        att.topk(targets[:1], np.array([3]), k=3)


def test_support_targets_are_drawn_only_among_correctly_classified_images():
    from simattr.evaluation.ensemble import Ensemble
    from simattr.evaluation.support import choose_targets

    n_test, n_classes = 60, 3
    labels = np.arange(n_test) % n_classes
    predicted = labels.copy()
    predicted[::2] = (labels[::2] + 1) % n_classes  # every even row is misclassified
    probs = np.eye(n_classes, dtype=np.float32)[predicted][None]
    ensemble = Ensemble(probs=probs, labels=labels, seeds=(0,))
    rows = np.arange(n_test)
    ranking = Ranking(rows, np.tile(np.arange(5), (n_test, 1)), np.ones((n_test, 5)))
    for seed in range(5):
        chosen = choose_targets({"r": ranking}, ensemble, n_targets=30, seed=seed)
        assert len(np.unique(chosen)) == 30 and (chosen % 2 == 1).all()
    with pytest.raises(InvalidInputError, match="only 30"):
        choose_targets({"r": ranking}, ensemble, n_targets=31)


def test_balanced_margin_targets_come_from_the_eligible_rows_evenly():
    from simattr.evaluation.margins import choose_balanced_targets

    labels = np.arange(100) % 4
    eligible = np.flatnonzero(np.arange(100) % 3 != 0)
    chosen = choose_balanced_targets(eligible, labels, 20, seed=2)
    assert np.isin(chosen, eligible).all() and len(np.unique(chosen)) == 20
    assert np.bincount(labels[chosen], minlength=4).tolist() == [5, 5, 5, 5]
    # a larger draw contains the smaller one (the margin benchmark adds batches this way)
    assert np.isin(chosen, choose_balanced_targets(eligible, labels, 40, seed=2)).all()
