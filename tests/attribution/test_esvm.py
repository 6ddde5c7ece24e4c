"""The attribution core: agreement with scikit-learn's LinearSVC on real CIFAR-10 features,
exactness of the Newton solver, the simple scorers, and every refusal of bad input."""

from __future__ import annotations

import numpy as np
import pytest
from numeric import assert_rankings_agree
from scipy.stats import spearmanr
from sklearn.svm import LinearSVC

from simattr import Attributor, InvalidInputError
from simattr.attribution import SCORERS, SmallPoolWarning
from simattr.attribution.esvm import PoolSystem, balanced_weights, fit_newton, fit_reference

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLASS = 3  # cat: the class whose 5,000 training images form the pool


def _pca_features(images: np.ndarray, basis: np.ndarray, mean: np.ndarray) -> np.ndarray:
    flat = images.reshape(len(images), -1).astype(np.float32) / 255.0
    return (flat - mean) @ basis


@pytest.fixture(scope="module")
def real_pool(cifar_train, cifar_test):
    """512-d PCA features of real CIFAR-10 pixels: one full 5,000-image class pool + targets."""
    from sklearn.decomposition import PCA

    pool_rows = np.flatnonzero(cifar_train.labels == CLASS)
    pool_images = cifar_train.get_images(pool_rows)
    flat = pool_images.reshape(len(pool_rows), -1).astype(np.float32) / 255.0
    pca = PCA(n_components=512, svd_solver="randomized", random_state=0).fit(flat)
    basis, mean = pca.components_.T, pca.mean_
    pool = _pca_features(pool_images, basis, mean)
    target_rows = np.flatnonzero(cifar_test.labels == CLASS)[:6]
    targets = _pca_features(cifar_test.get_images(target_rows), basis, mean)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    targets /= np.linalg.norm(targets, axis=1, keepdims=True)
    return pool.astype(np.float64), targets.astype(np.float64), pool_rows


def _linear_svc_scores(target: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """DESIGN.md section 1's reference, written out independently of simattr."""
    X = np.vstack([target[None], pool])
    y = np.r_[1, np.zeros(len(pool), dtype=int)]
    svm = LinearSVC(C=0.1, class_weight="balanced", tol=1e-6, max_iter=10000).fit(X, y)
    return svm.decision_function(pool)


@pytest.mark.slow
def test_esvm_agrees_with_linear_svc_on_real_cifar_features(real_pool):
    pool, targets, _ = real_pool
    # Train labels: the pool's class, plus a decoy class that must never be ranked.
    rng = np.random.default_rng(0)
    decoys = rng.normal(size=(300, pool.shape[1]))
    features = np.vstack([pool, decoys])
    labels = np.r_[np.full(len(pool), CLASS), np.full(len(decoys), 7)]
    att = Attributor("esvm", C=0.1).fit(features, labels)
    indices, scores = att.topk(targets, np.full(len(targets), CLASS), k=100)
    assert indices.shape == scores.shape == (len(targets), 100)
    dense = att.score(targets, np.full(len(targets), CLASS))
    for i, target in enumerate(targets):
        ref = _linear_svc_scores(target, pool)
        ref_top = np.argsort(-ref, kind="stable")[:100]
        overlap = len(set(ref_top) & set(indices[i])) / 100
        assert overlap >= 0.95, f"target {i}: top-100 overlap {overlap}"
        rho = spearmanr(dense[i, : len(pool)], ref).statistic
        assert rho >= 0.99, f"target {i}: Spearman {rho}"
        # About a tenth of the pool is active at the optimum (DESIGN.md section 1).
        assert 0.02 < np.mean(ref > -1) < 0.5


def _objective(w: np.ndarray, b: float, target: np.ndarray, pool: np.ndarray, C: float) -> float:
    c_pos, c_neg = balanced_weights(len(pool), C)
    return float(
        0.5 * (w @ w + b * b)
        + c_pos * max(0.0, 1 - (target @ w + b)) ** 2
        + c_neg * np.sum(np.maximum(0.0, 1 + pool @ w + b) ** 2)
    )


def test_newton_reaches_the_exact_optimum(real_pool):
    """Our solver's objective is no worse than liblinear's and its gradient vanishes."""
    pool, targets, _ = real_pool
    system = PoolSystem.build(pool)
    for target in targets[:3]:
        fit = fit_newton(target, system, C=0.1)
        X = np.vstack([target[None], pool])
        svm = LinearSVC(C=0.1, class_weight="balanced", tol=1e-6, max_iter=10000).fit(
            X, np.r_[1, np.zeros(len(pool), dtype=int)]
        )
        ours = _objective(fit.coef, fit.intercept, target, pool, 0.1)
        theirs = _objective(svm.coef_[0], svm.intercept_[0], target, pool, 0.1)
        assert ours <= theirs * (1 + 1e-9)
        assert fit.iterations < 30
        # Perturbing the solution in any direction can only increase the objective.
        rng = np.random.default_rng(1)
        for _ in range(3):
            d = rng.normal(size=pool.shape[1]) * 1e-4
            assert _objective(fit.coef + d, fit.intercept, target, pool, 0.1) >= ours


@pytest.fixture()
def toy():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(60, 8))
    labels = np.repeat(np.arange(3), 20)
    tests = rng.normal(size=(5, 8))
    test_labels = np.array([0, 1, 2, 1, 0])
    return train, labels, tests, test_labels


@pytest.mark.parametrize("method", ["l2", "cosine"])
def test_simple_scorers_match_brute_force(toy, method):
    train, labels, tests, test_labels = toy
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    tr, te = unit(train), unit(tests)
    if method == "l2":
        expected = -np.linalg.norm(te[:, None] - tr[None], axis=2)
    else:
        expected = te @ tr.T
    dense = Attributor(method).fit(train, labels).score(tests, test_labels)
    for i, y in enumerate(test_labels):
        pool = labels == y
        np.testing.assert_allclose(dense[i, pool], expected[i, pool], atol=1e-10)
        assert np.all(np.isneginf(dense[i, ~pool]))
    all_dense = Attributor(method, class_conditional=False).fit(train).score(tests)
    np.testing.assert_allclose(all_dense, expected, atol=1e-10)


@pytest.mark.parametrize("method", ["esvm", "l2", "cosine", "lda"])
def test_topk_is_sorted_within_the_class_pool(toy, method):
    train, labels, tests, test_labels = toy
    att = Attributor(method).fit(train, labels)
    idx, sc = att.topk(tests, test_labels, k=7)
    assert idx.dtype == np.int64 and idx.shape == (5, 7)
    assert np.all(labels[idx] == test_labels[:, None])
    assert np.all(np.diff(sc, axis=1) <= 0)
    dense = att.score(tests, test_labels)
    np.testing.assert_allclose(np.take_along_axis(dense, idx, axis=1), sc)
    # The ranking is the dense ranking's prefix.
    full = np.argsort(-dense, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(full, idx)


def test_all_classes_ranks_the_whole_training_set(toy):
    train, labels, tests, _ = toy
    idx, _ = Attributor("esvm", class_conditional=False).fit(train, labels).topk(tests, k=60)
    assert sorted(idx[0]) == list(range(60))


def test_ties_break_towards_the_lower_index():
    train = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    idx, _ = Attributor("cosine", class_conditional=False).fit(train).topk([[1.0, 0.0]], k=3)
    assert idx.tolist() == [[0, 1, 3]]


@pytest.mark.parametrize(("solver", "atol"), [("batched", 1e-5), ("newton", 1e-12)])
def test_results_do_not_depend_on_block_size(toy, solver, atol):
    """Blocks change the float32 rounding of the batched solver only, never the ranking."""
    train, labels, tests, test_labels = toy
    a = Attributor("esvm", solver=solver, block_size=1).fit(train, labels)
    b = Attributor("esvm", solver=solver, block_size=64).fit(train, labels)
    ia, sa = a.topk(tests, test_labels, k=10)
    ib, sb = b.topk(tests, test_labels, k=10)
    # block sizes change float rounding: indices may swap only among near-ties
    assert_rankings_agree(ia, sa, ib, sb, atol=atol)


def test_reference_solver_gives_the_same_ranking(toy):
    train, labels, tests, test_labels = toy
    a = Attributor("esvm").fit(train, labels).score(tests, test_labels)
    b = Attributor("esvm", solver="reference").fit(train, labels).score(tests, test_labels)
    finite = np.isfinite(a)
    np.testing.assert_allclose(a[finite], b[finite], atol=1e-4)


# -- refusals ------------------------------------------------------------------------------


def test_nan_features_are_refused_naming_the_row(toy):
    train, labels, tests, test_labels = toy
    train = train.copy()
    train[13, 2] = np.nan
    with pytest.raises(InvalidInputError, match=r"row 13, column 2"):
        Attributor().fit(train, labels)
    att = Attributor().fit(toy[0], labels)
    bad = tests.copy()
    bad[4, 0] = np.inf
    with pytest.raises(InvalidInputError, match=r"target_features.*row 4"):
        att.topk(bad, test_labels, k=3)


def test_dimension_mismatch_is_refused(toy):
    train, labels, tests, test_labels = toy
    att = Attributor().fit(train, labels)
    with pytest.raises(InvalidInputError, match=r"7 dimensions.*8"):
        att.topk(tests[:, :7], test_labels, k=3)


def test_label_length_and_range_are_checked(toy):
    train, labels, tests, test_labels = toy
    with pytest.raises(InvalidInputError, match=r"59 entries.*60"):
        Attributor().fit(train, labels[:-1])
    bad = labels.copy()
    bad[5] = -2
    with pytest.raises(InvalidInputError, match=r"-2 at row 5"):
        Attributor().fit(train, bad)
    att = Attributor().fit(train, labels)
    with pytest.raises(InvalidInputError, match=r"4 entries.*5"):
        att.topk(tests, test_labels[:4], k=3)


def test_k_larger_than_pool_returns_the_pool(toy):
    train, labels, tests, test_labels = toy
    with pytest.warns(SmallPoolWarning, match=r"k=21 .*\(20 images\)"):
        idx, _ = Attributor("l2").fit(train, labels).topk(tests, test_labels, k=21)
    assert idx.shape[1] == 20 and (idx >= 0).all()  # every pool has 20: none is padded
    with pytest.raises(InvalidInputError, match=r"k must be a positive integer"):
        Attributor("l2").fit(train, labels).topk(tests, test_labels, k=0)


def test_empty_class_pool_is_refused(toy):
    train, labels, tests, _ = toy
    with pytest.raises(InvalidInputError, match=r"target row 2 has label 5.*pool is empty"):
        Attributor().fit(train, labels).topk(tests, [0, 1, 5, 1, 0], k=3)


def test_unknown_method_and_solver_are_refused(toy):
    train, labels, _, _ = toy
    with pytest.raises(InvalidInputError, match=r"unknown attribution method 'knn'"):
        Attributor("knn").fit(train, labels)
    with pytest.raises(InvalidInputError, match=r"unknown ESVM solver"):
        Attributor("esvm", solver="magic").fit(train, labels)


def test_unfitted_and_label_free_use_are_refused(toy):
    train, labels, tests, test_labels = toy
    with pytest.raises(InvalidInputError, match=r"not fitted"):
        Attributor().topk(tests, test_labels, k=3)
    with pytest.raises(InvalidInputError, match=r"needs `train_labels`"):
        Attributor().fit(train)
    with pytest.raises(InvalidInputError, match=r"needs target_labels"):
        Attributor().fit(train, labels).topk(tests, None, k=3)


def test_lda_scorer_is_the_whitened_exemplar(toy):
    """w = S^-1 (t - mu) with S the pool covariance shrunk towards the identity."""
    from simattr.attribution.scorers import WhitenedExemplarScorer

    train, labels, tests, test_labels = toy
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    tr, te = unit(train), unit(tests)
    dense = Attributor("lda").fit(train, labels).score(tests, test_labels)
    for i, y in enumerate(test_labels):
        pool = tr[labels == y]
        mu = pool.mean(axis=0)
        cov = np.cov(pool, rowvar=False)
        a = WhitenedExemplarScorer.DEFAULT_SHRINKAGE
        shrunk = (1 - a) * cov + a * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
        w = np.linalg.solve(shrunk, te[i] - mu)
        np.testing.assert_allclose(dense[i, labels == y], (pool - mu) @ w, rtol=1e-8)
    # whitening changes the ranking: it is not cosine similarity in disguise
    cos = Attributor("cosine").fit(train, labels).topk(tests, test_labels, 10)[0]
    lda = Attributor("lda").fit(train, labels).topk(tests, test_labels, 10)[0]
    assert not np.array_equal(cos, lda)
    with pytest.raises(InvalidInputError, match="shrinkage"):
        WhitenedExemplarScorer(shrinkage=0.0)


def test_lda_agrees_with_linear_svc_better_than_cosine(real_pool):
    """The closed form approximates the exemplar SVM: closer to it than plain similarity."""
    pool, targets, _ = real_pool
    labels = np.zeros(len(pool), dtype=np.int64)
    lda = Attributor("lda").fit(pool, labels).score(targets, np.zeros(len(targets), int))
    cos = Attributor("cosine").fit(pool, labels).score(targets, np.zeros(len(targets), int))
    rho_lda, rho_cos, top_lda, top_cos = [], [], [], []
    for i, t in enumerate(targets[:3]):
        ref = _linear_svc_scores(t, pool)
        rho_lda.append(spearmanr(lda[i], ref).statistic)
        rho_cos.append(spearmanr(cos[i], ref).statistic)
        best = set(np.argsort(-ref)[:100])
        top_lda.append(len(best & set(np.argsort(-lda[i])[:100])) / 100)
        top_cos.append(len(best & set(np.argsort(-cos[i])[:100])) / 100)
    assert np.mean(rho_lda) > 0.97 and np.mean(rho_lda) > np.mean(rho_cos)
    assert np.mean(top_lda) > np.mean(top_cos) + 0.15


def test_lda_is_refused_with_faiss_retrieval(toy):
    train, _, _, _ = toy
    with pytest.raises(InvalidInputError, match="retrieval='exact'"):
        Attributor("lda", class_conditional=False, retrieval="faiss").fit(train)


def test_a_loaded_ranking_saves_again_with_its_metadata(tmp_path):
    from simattr.attribution import Ranking, load_ranking, save_ranking

    rng = np.random.default_rng(0)
    first = Ranking(
        targets=np.array([3, 7]),
        indices=rng.permutation(20)[:8].reshape(2, 4),
        scores=np.sort(rng.normal(size=(2, 4)))[:, ::-1],
        metadata={"method": "esvm", "note": "first"},
    )
    save_ranking(tmp_path / "a.npz", first)
    loaded = load_ranking(tmp_path / "a.npz")
    assert loaded.metadata["kind"] == "ranking" and loaded.metadata["k"] == 4
    loaded.metadata["note"] = "edited"
    save_ranking(tmp_path / "b.npz", loaded)  # the old header is not repeated
    again = load_ranking(tmp_path / "b.npz")
    np.testing.assert_array_equal(again.indices, first.indices)
    assert again.metadata["note"] == "edited" and again.metadata["method"] == "esvm"
    assert again.metadata["n_targets"] == 2


# -- the scorer contract (simattr.attribution.check_scorer) -----------------------------------


@pytest.mark.parametrize(
    "name", sorted(__import__("simattr.attribution", fromlist=["SCORERS"]).SCORERS)
)
def test_every_registered_scorer_keeps_the_contract(name):
    """check_scorer passes for every registered method, built by name and with its defaults."""
    from simattr.attribution import check_scorer

    check_scorer(SCORERS[name])
    check_scorer(SCORERS[name].contract_example(), seed=3)


def test_check_scorer_refuses_a_broken_scorer():
    """Each clause bites: a transposed score matrix, integer scores, scores that change from
    run to run, and a scorer whose parameters clone() loses are refused by name."""
    from simattr.attribution import CosineScorer, check_scorer
    from simattr.errors import InvalidInputError

    class Transposed(CosineScorer):
        name = "transposed"

        def score(self, prepared, targets):
            return super().score(prepared, targets).T

    class Integers(CosineScorer):
        name = "integers"

        def score(self, prepared, targets):
            return np.rint(super().score(prepared, targets) * 10).astype(np.int64)

    class Drifting(CosineScorer):
        name = "drifting"
        calls = 0

        def score(self, prepared, targets):
            Drifting.calls += 1
            return super().score(prepared, targets) + 1e-3 * Drifting.calls

    class Forgetful(CosineScorer):
        name = "forgetful"

        def __init__(self, scale: float = 1.0) -> None:
            self.scale = scale * 2

    cases = [
        (Transposed, r"scorer transposed .*shape \(48, 6\)"),
        (Integers, r"scorer integers .*dtype int64"),
        (Drifting, r"scorer drifting .*different scores"),
        (Forgetful, r"scorer forgetful .*clone\(\)"),
    ]
    for cls, pattern in cases:
        with pytest.raises(InvalidInputError, match=pattern):
            check_scorer(cls)


# -- the reference fit and the pool system --------------------------------------------------------
# (tests written against mutants that survived: benchmarks/results/mutation_survivors.md)


def _unscaled(seed: int, n: int = 150, d: int = 12):
    rng = np.random.default_rng(seed)
    scale = np.geomspace(0.1, 10.0, d)
    pool = rng.normal(size=(n, d)) * scale + rng.normal(size=d) * 2
    return pool[3] + rng.normal(size=d) * scale * 0.1, pool


def test_reference_fit_reports_its_active_set_and_iterations():
    """n_active counts the pool points inside the margin (decision above -1) of the returned
    SVM, as the Newton solver (an independent code path) counts them at its optimum."""
    target, pool = _unscaled(1)
    fit = fit_reference(target, pool, C=3.0)
    decision = pool @ fit.coef + fit.intercept
    assert fit.intercept < -1  # the sign of the intercept matters for the count below
    # counts of decision values above -1, computed along other paths: they may differ only by
    # values within the solvers' agreement (1e-6) of the margin
    undecided = int((np.abs(decision + 1) < 1e-6).sum())
    assert abs(fit.n_active - int((decision > -1).sum())) <= undecided
    assert 0 < fit.n_active < len(pool)
    newton = fit_newton(target, PoolSystem.build(pool), 3.0).n_active
    assert abs(fit.n_active - newton) <= undecided
    assert isinstance(fit.iterations, int) and fit.iterations >= 1


def test_reference_fit_default_c_is_the_documented_one():
    target, pool = _unscaled(1)
    default, explicit = fit_reference(target, pool), fit_reference(target, pool, C=0.1)
    np.testing.assert_array_equal(default.coef, explicit.coef)
    other = fit_reference(target, pool, C=1.1)
    assert np.abs(other.coef - default.coef).max() > 1e-3


def test_reference_fit_reaches_the_optimum_tightly():
    """LinearSVC with its default tolerance (1e-4) stops early on unscaled data (decision values
    off by 3e-4 of their range here); the reference must agree with the exact optimum (Newton,
    itself checked against scipy in test_references) to 1e-6."""
    target, pool = _unscaled(0)
    ref, newton = (
        fit_reference(target, pool, C=3.0),
        fit_newton(target, PoolSystem.build(pool), 3.0),
    )
    d_ref = pool @ ref.coef + ref.intercept
    d_newton = pool @ newton.coef + newton.intercept
    np.testing.assert_allclose(d_ref, d_newton, rtol=0, atol=1e-6 * np.abs(d_newton).max())


def test_pool_system_lives_on_the_requested_device():
    """Every tensor of the prepared pool is built on the requested device (the shape-only
    ``meta`` device stands in for a GPU), the column of ones included."""
    from simattr.attribution.esvm import PoolSystem

    pool = np.random.default_rng(8).normal(size=(6, 3))
    meta = PoolSystem.build(pool, device="meta")
    assert {meta.X.device.type, meta.gram.device.type, meta.column_sum.device.type} == {"meta"}
    cpu = PoolSystem.build(pool)
    np.testing.assert_array_equal(cpu.X.numpy(), np.c_[pool, np.ones(6)])
    np.testing.assert_allclose(cpu.gram.numpy(), cpu.X.numpy().T @ cpu.X.numpy(), rtol=1e-12)


def test_newton_max_iter_counts_newton_steps():
    """``max_iter=1`` is exactly one Newton step from w = 0 with an exact line search: the
    minimiser of the active set's quadratic, then scipy's 1-D minimum of the objective along
    it; ``iterations`` reports the steps taken."""
    from scipy import optimize

    from simattr.attribution.esvm import balanced_weights

    target, pool = _unscaled(4, n=120, d=6)
    C = 2.0
    c_pos, c_neg = balanced_weights(len(pool), C)
    X, xt = np.c_[pool, np.ones(len(pool))], np.r_[target, 1.0]

    def objective(w):
        return (
            0.5 * w @ w
            + c_pos * max(0.0, 1 - xt @ w) ** 2
            + c_neg * (np.maximum(0.0, 1 + X @ w) ** 2).sum()
        )

    system = np.eye(len(xt)) + 2 * c_neg * X.T @ X + 2 * c_pos * np.outer(xt, xt)
    w_star = np.linalg.solve(system, -2 * c_neg * X.sum(0) + 2 * c_pos * xt)
    line = optimize.minimize_scalar(
        lambda t: objective(t * w_star), bounds=(0, 10), method="bounded", options={"xatol": 1e-12}
    )
    with pytest.warns(RuntimeWarning, match="did not converge in 1 Newton"):
        one = fit_newton(target, PoolSystem.build(pool), C, max_iter=1)
    assert one.iterations == 1
    np.testing.assert_allclose(np.r_[one.coef, one.intercept], line.x * w_star, rtol=1e-6)
    full = fit_newton(target, PoolSystem.build(pool), C)
    assert 2 <= full.iterations < 100
    exact = fit_newton(target, PoolSystem.build(pool), C, max_iter=full.iterations)
    np.testing.assert_array_equal(exact.coef, full.coef)


def test_pool_system_computes_in_float64_from_a_float32_pool():
    """The solver's pool system is float64 whatever the features' dtype, so a float32 pool
    reaches the same optimum as its float64 copy, to float64 rounding."""
    import torch

    pool32 = np.random.default_rng(18).normal(size=(80, 6)).astype(np.float32)
    system = PoolSystem.build(pool32)
    assert system.X.dtype == system.gram.dtype == torch.float64
    target = pool32[3] + 0.2
    a = fit_newton(target, PoolSystem.build(pool32), C=2.0)
    b = fit_newton(target, PoolSystem.build(pool32.astype(np.float64)), C=2.0)
    np.testing.assert_allclose(a.coef, b.coef, rtol=1e-12, atol=1e-12)
    assert a.intercept == pytest.approx(b.intercept, rel=1e-12, abs=1e-12)
