"""The batched exemplar-SVM solver: the same optimum as the exact single-target Newton solver
and as scikit-learn's LinearSVC on real CIFAR-10 features, independent of how the targets are
blocked and ordered, robust on degenerate pools, and strict about its input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.svm import LinearSVC

from simattr import InvalidInputError
from simattr.attribution.esvm import PoolSystem, balanced_weights, fit_newton
from simattr.attribution.esvm_batched import BatchedPool, fit_batched

CLASS = 5  # dog: the class whose 5,000 training images form the pool
N_TARGETS = 6


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def real_pool(cifar_train, cifar_test):
    """512-d PCA features of real CIFAR-10 pixels (one full class pool) and a few targets.

    The PCA is a seeded randomised SVD in torch: about a second, where scikit-learn's PCA
    takes most of the file's time budget.
    """
    pool_rows = np.flatnonzero(cifar_train.labels == CLASS)
    flat = cifar_train.get_images(pool_rows).reshape(len(pool_rows), -1).astype(np.float32) / 255
    target_rows = np.flatnonzero(cifar_test.labels == CLASS)[:N_TARGETS]
    tflat = cifar_test.get_images(target_rows).reshape(len(target_rows), -1).astype(np.float32)
    X = torch.from_numpy(flat)
    mean = X.mean(0)
    torch.manual_seed(0)
    _, _, basis = torch.svd_lowrank(X - mean, q=512, niter=1)
    pool = ((X - mean) @ basis).double().numpy()
    targets = ((torch.from_numpy(tflat) / 255 - mean) @ basis).double().numpy()
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    targets /= np.linalg.norm(targets, axis=1, keepdims=True)
    return pool, targets


@pytest.fixture(scope="module")
def systems(real_pool):
    pool, _ = real_pool
    return BatchedPool.build(pool), PoolSystem.build(pool)


@pytest.fixture(scope="module")
def newton_scores(real_pool, systems):
    """Decision values of the exact single-target solver, target by target."""
    pool, targets = real_pool
    exact = systems[1]
    return np.stack([pool @ f.coef + f.intercept for f in (fit_newton(t, exact) for t in targets)])


def _top(scores: np.ndarray, k: int = 100) -> set[int]:
    return set(np.argsort(-scores, kind="stable")[:k].tolist())


def test_reaches_the_exact_newton_optimum(real_pool, systems, newton_scores):
    pool, targets = real_pool
    sol = fit_batched(targets, systems[0])
    assert sol.decision.shape == (len(targets), len(pool))
    assert bool(sol.converged.all())
    assert int(sol.iterations.max()) <= 10
    ours = sol.decision.double().numpy()
    assert np.abs(ours - newton_scores).max() < 5e-5
    # coef / intercept describe the same function as the decision values.
    again = pool @ sol.coef.numpy().T + sol.intercept.numpy()
    assert np.abs(again.T - ours).max() < 1e-5
    # About a tenth of the pool is active at the optimum (DESIGN.md section 1).
    assert np.all(
        (sol.n_active.numpy() > 0.02 * len(pool)) & (sol.n_active.numpy() < 0.5 * len(pool))
    )
    # the active set is the Newton solver's, except for negatives whose decision value lies
    # within the two solvers' agreement of the margin -1 (either side is right there)
    undecided = (np.abs(newton_scores + 1) < 5e-5).sum(1)
    assert np.all(np.abs(sol.n_active.numpy() - (newton_scores > -1).sum(1)) <= undecided)


def test_float64_pool_reaches_the_optimum_to_rounding(real_pool):
    """In float64 the same method agrees with the exact solver to ~1e-9: the float32 gap of
    the previous test is rounding, not an approximation."""
    pool, targets = real_pool
    pool = pool[:2500]
    exact = PoolSystem.build(pool)
    refs = np.stack(
        [pool @ f.coef + f.intercept for f in (fit_newton(t, exact) for t in targets[:2])]
    )
    sol = fit_batched(targets[:2], BatchedPool.build(pool, dtype=torch.float64), tol=1e-11)
    assert bool(sol.converged.all())
    assert np.abs(sol.decision.numpy() - refs).max() < 1e-7


def test_agrees_with_linear_svc(real_pool, systems):
    pool, targets = real_pool
    sol = fit_batched(targets[:3], systems[0])
    for i, target in enumerate(targets[:3]):
        X = np.vstack([target[None], pool])
        y = np.r_[1, np.zeros(len(pool), dtype=int)]
        svm = LinearSVC(C=0.1, class_weight="balanced", tol=1e-6, max_iter=10000).fit(X, y)
        ref = svm.decision_function(pool)
        ours = sol.decision[i].double().numpy()
        overlap = len(_top(ref) & _top(ours)) / 100
        assert overlap >= 0.95, f"target {i}: top-100 overlap {overlap}"
        rho = spearmanr(ours, ref).statistic
        assert rho >= 0.99, f"target {i}: Spearman {rho}"


def test_independent_of_block_size_and_target_order(real_pool, systems, newton_scores):
    _, targets = real_pool
    bp = systems[0]
    base = fit_batched(targets, bp, block_size=64).decision.double().numpy()
    small = fit_batched(targets, bp, block_size=2, chunk_size=1).decision.double().numpy()
    order = np.random.default_rng(1).permutation(len(targets))
    shuffled = fit_batched(targets[order], bp, block_size=4, chunk_size=3).decision.double()
    back = np.empty_like(base)
    back[order] = shuffled.numpy()
    assert np.abs(small - base).max() < 2e-5
    assert np.abs(back - base).max() < 2e-5
    # Each target on its own gives the same answer as in any block.
    alone = fit_batched(targets[4], bp).decision.double().numpy()
    assert np.abs(alone[0] - base[4]).max() < 2e-5


def _objective_gradient(w: np.ndarray, b: float, target: np.ndarray, pool: np.ndarray) -> float:
    """Norm of the gradient of the primal objective (intercept penalised, as liblinear)."""
    c_pos, c_neg = balanced_weights(len(pool), 0.1)
    X = np.hstack([pool, np.ones((len(pool), 1))])
    xt = np.r_[target, 1.0]
    wf = np.r_[w, b]
    slack_neg = np.maximum(0.0, 1 + X @ wf)
    slack_pos = max(0.0, 1 - xt @ wf)
    grad = wf + 2 * c_neg * X.T @ slack_neg - 2 * c_pos * slack_pos * xt
    return float(np.linalg.norm(grad))


@pytest.mark.parametrize("case", ["far", "duplicate"])
def test_degenerate_pools_still_converge(real_pool, systems, case):
    """A positive far from every negative, and one identical to a negative."""
    pool, _ = real_pool
    if case == "far":
        target = -pool.mean(0)
        target /= np.linalg.norm(target)
    else:
        target = pool[17].copy()
    sol = fit_batched(target, systems[0])
    assert bool(sol.converged.all())
    exact = fit_newton(target, systems[1])
    ref = pool @ exact.coef + exact.intercept
    ours = sol.decision[0].double().numpy()
    assert np.abs(ours - ref).max() < 5e-5
    grad = _objective_gradient(sol.coef[0].double().numpy(), float(sol.intercept[0]), target, pool)
    assert grad < 1e-3
    if case == "duplicate":
        # Positive and negative copy pull the same margin both ways; the positive's larger
        # weight wins, so the copy scores highest of the whole pool.
        assert int(np.argmax(ours)) == 17
        assert ours[17] < 1


def test_small_pool_and_zero_initial_guess():
    """Tiny problems (fewer points than dimensions) and the plain ridge start also work."""
    rng = np.random.default_rng(0)
    pool = rng.normal(size=(30, 8))
    targets = rng.normal(size=(5, 8))
    bp, exact = BatchedPool.build(pool), PoolSystem.build(pool)
    refs = [(lambda f: pool @ f.coef + f.intercept)(fit_newton(t, exact)) for t in targets]
    for init in (0.0, 0.5):
        sol = fit_batched(targets, bp, init_active=init)
        assert bool(sol.converged.all())
        assert np.abs(sol.decision.double().numpy() - np.stack(refs)).max() < 5e-5
    # An iteration budget that is too small is reported, not hidden.
    capped = fit_batched(targets, bp, init_active=0.0, max_iter=1)
    assert not bool(capped.converged.all())
    assert int(capped.iterations.max()) <= 1


def test_rejects_bad_input(real_pool, systems):
    pool, targets = real_pool
    bp = systems[0]
    with pytest.raises(InvalidInputError, match="dimensions"):
        fit_batched(targets[:, :100], bp)
    bad = targets.copy()
    bad[1, 3] = np.nan
    with pytest.raises(InvalidInputError, match="row 1"):
        fit_batched(bad, bp)
    bad_pool = pool[:50].copy()
    bad_pool[7, 0] = np.inf
    with pytest.raises(InvalidInputError, match="row 7"):
        BatchedPool.build(bad_pool)
    with pytest.raises(InvalidInputError, match="C must be"):
        BatchedPool.build(pool[:50], C=0.0)
    with pytest.raises(InvalidInputError, match="BatchedPool"):
        fit_batched(targets, pool)
    with pytest.raises(InvalidInputError, match="block_size"):
        fit_batched(targets, bp, block_size=0)
    with pytest.raises(InvalidInputError, match="empty"):
        BatchedPool.build(np.zeros((0, 4)))


@pytest.mark.gpu
def test_cuda_matches_cpu(real_pool, systems):
    pool, targets = real_pool
    cpu = fit_batched(targets, systems[0]).decision.double().numpy()
    gpu = fit_batched(targets, BatchedPool.build(pool, device="cuda")).decision
    assert gpu.device.type == "cuda"
    assert np.abs(gpu.double().cpu().numpy() - cpu).max() < 2e-5


def test_batched_line_search_is_exact():
    """The breakpoint-jumping line search finds the same minimiser as sorting the breakpoints
    (the line search of ``fit_newton``), row by row, including from far-off starts."""
    from simattr.attribution.esvm import _exact_line_search
    from simattr.attribution.esvm_batched import _line_search

    rng = np.random.default_rng(3)
    n, d, B = 300, 6, 12
    X = torch.tensor(rng.normal(size=(n, d)))
    xt = torch.tensor(rng.normal(size=(B, d)))
    W = (
        torch.tensor(rng.normal(size=(B, d)))
        * torch.logspace(-2, 1, B, dtype=torch.float64)[:, None]
    )
    c_pos, c_neg = balanced_weights(n, 0.1)
    m, mt = W @ X.T, (xt * W).sum(1)
    grad = (
        W + 2 * c_neg * ((1 + m).clamp_min(0)) @ X - 2 * c_pos * (1 - mt).clamp_min(0)[:, None] * xt
    )
    D = -grad * torch.tensor(rng.uniform(0.01, 3.0, size=(B, 1)))  # descent, of varied length
    dm, dt = D @ X.T, (xt * D).sum(1)
    wd, dd = (W * D).sum(1), (D * D).sum(1)
    ours = _line_search(wd, dd, (1 - mt, dt, 2 * c_pos), (1 + m, -dm, 2 * c_neg))
    weights = torch.cat([torch.tensor([c_pos]), torch.full((n,), c_neg, dtype=torch.float64)])
    for b in range(B):
        u = torch.cat([(1 - mt[b]).reshape(1), 1 + m[b]])
        v = torch.cat([dt[b].reshape(1), -dm[b]])
        ref = float(_exact_line_search(wd[b], dd[b], u, v, weights))
        assert float(ours[b]) == pytest.approx(ref, rel=1e-7, abs=1e-12)
