"""All-class attribution through FAISS candidates: the same ranking as the exact solver.

Seeded clustered features, small enough to solve the exact all-class problem in the test; the
first candidate sets are deliberately too small to hold the SVM's active negatives, so the
refit rounds (search by the SVM's weight vector, add margin violators) must do their work.
"""

from __future__ import annotations

import numpy as np
import pytest
from numeric import ESVM_BATCHED_ATOL, assert_rankings_agree

from simattr import Attributor, InvalidInputError
from simattr.attribution.esvm import PoolSystem, fit_newton
from simattr.attribution.retrieval import (
    AUTO_THRESHOLD,
    CandidateSearch,
    _order_targets,
    default_candidates,
    esvm_candidates_topk,
    similarity_candidates_topk,
)


def clustered(n: int, dim: int, n_clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim))
    labels = rng.integers(0, n_clusters, size=n)
    return centres[labels] + 0.9 * rng.normal(size=(n, dim)), labels


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    X, _ = clustered(3000, 32, 12, seed=0)
    T, _ = clustered(40, 32, 12, seed=0)  # same centres: targets near the training clusters
    T = T + 0.3 * np.random.default_rng(1).normal(size=T.shape)
    return X, T


def test_faiss_esvm_equals_exact_all_class_esvm(data):
    X, T = data
    exact = Attributor("esvm", class_conditional=False, retrieval="exact").fit(X)
    fast = Attributor(
        "esvm", class_conditional=False, retrieval="faiss", n_candidates=60, block_size=16
    ).fit(X)
    i_ref, s_ref = exact.topk(T, k=50)
    i_new, s_new = fast.topk(T, k=50)
    stats = fast.retrieval_stats_
    assert fast.retrieval_ == "faiss" and stats.uncertified == 0
    assert stats.rounds >= 2  # 60 cosine neighbours do not hold the active set
    assert stats.n_targets >= len(
        T
    ) and stats.as_dict() == {  # targets refit in later rounds count again
        "n_targets": stats.n_targets,
        "n_groups": stats.n_groups,
        "union_rows": stats.union_rows,
        "max_active_fraction": stats.max_active_fraction,
        "unconverged": 0,
        "rounds": stats.rounds,
        "uncertified": 0,
    }
    # Identical rankings except where two scores tie to the batched solver's accuracy (both
    # paths fit float32 SVMs, on other candidate sets).
    assert_rankings_agree(i_new, s_new, i_ref, s_ref, atol=10 * ESVM_BATCHED_ATOL)


def test_one_round_with_too_few_candidates_is_not_certified(data):
    from simattr.attribution.retrieval import RetrievalStats, esvm_candidates_topk

    X, T = data
    att = Attributor("esvm", class_conditional=False, retrieval="faiss").fit(X)
    T_n = T / np.linalg.norm(T, axis=1, keepdims=True)
    stats = RetrievalStats()
    esvm_candidates_topk(
        T_n,
        att.train_features_,
        att.search_,
        20,
        C=0.1,
        n_candidates=60,
        max_rounds=1,
        stats=stats,
    )
    assert stats.uncertified > 0  # what tells a user to raise n_candidates


@pytest.mark.parametrize("method", ["cosine", "l2"])
def test_faiss_similarity_equals_exact(data, method):
    X, T = data
    exact = Attributor(method, class_conditional=False, retrieval="exact").fit(X)
    fast = Attributor(method, class_conditional=False, retrieval="faiss").fit(X)
    i_ref, s_ref = exact.topk(T, k=30)
    i_new, s_new = fast.topk(T, k=30)
    # candidates rescored in float64, by another computation than the exact scorer's
    assert_rankings_agree(i_new, s_new, i_ref, s_ref, atol=1e-9)


def test_ivf_index_visiting_every_cell_is_exact(data):
    X, T = data
    search = CandidateSearch.build(X.astype(np.float32), index="ivf", nlist=8, nprobe=8, seed=0)
    flat = CandidateSearch.build(X.astype(np.float32))
    sims_ivf, ids_ivf = search.search(T, 25)
    sims_flat, ids_flat = flat.search(T, 25)
    # float32 inner products by FAISS's per-vector kernel (IVF) and by a matrix product (flat)
    assert_rankings_agree(ids_ivf, sims_ivf, ids_flat, sims_flat, dtype=np.float32)
    att = Attributor("esvm", class_conditional=False, retrieval="faiss", index="ivf", nprobe=64)
    idx, _ = att.fit(X).topk(T[:5], k=10)
    assert idx.shape == (5, 10)


def test_float16_memmap_features_fit_like_float32(tmp_path, data):
    X, T = data
    path = tmp_path / "train.npy"
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=X.shape)
    mm[:] = X
    mm.flush()
    on_disk = np.load(path, mmap_mode="r")
    a = Attributor("cosine", class_conditional=False, retrieval="faiss").fit(on_disk)
    b = Attributor("cosine", class_conditional=False, retrieval="exact").fit(
        np.asarray(on_disk, dtype=np.float32)
    )
    assert a.train_features_.dtype == np.float32
    # FAISS candidates rescored vs the exact scorer, from the same float32 features
    assert_rankings_agree(*a.topk(T, k=10), *b.topk(T, k=10), dtype=np.float32)


def test_retrieval_choice_and_refusals(data):
    X, T = data
    assert Attributor(class_conditional=False).fit(X).retrieval_ == "exact"  # below threshold
    assert AUTO_THRESHOLD > len(X) and default_candidates(1280) == 5120
    assert Attributor(retrieval="faiss").fit(X, np.zeros(len(X), int)).retrieval_ == "exact"
    with pytest.raises(InvalidInputError, match="unknown retrieval 'fast'"):
        Attributor(class_conditional=False, retrieval="fast").fit(X)
    with pytest.raises(InvalidInputError, match="solver='newton'"):
        Attributor(class_conditional=False, retrieval="faiss", solver="newton").fit(X)
    with pytest.raises(InvalidInputError, match="unknown retrieval index 'hnsw'"):
        Attributor(class_conditional=False, retrieval="faiss", index="hnsw").fit(X)
    att = Attributor(class_conditional=False, retrieval="faiss", n_candidates=20).fit(X)
    with pytest.raises(InvalidInputError, match="k=30 is larger than n_candidates=20"):
        att.topk(T, k=30)
    with pytest.raises(InvalidInputError, match=r"non-finite value .* at row 7, column 3"):
        bad = X.copy()
        bad[7, 3] = np.nan
        Attributor(class_conditional=False, retrieval="faiss").fit(bad)


# -- rescoring, target order, IVF cells -----------------------------------------------------------
# (tests written against mutants that survived: benchmarks/results/mutation_survivors.md)


def _clusters(n: int, dim: int, n_clusters: int, seed: int, spread: float = 0.5):
    rng = np.random.default_rng(seed)
    centres = 4 * rng.normal(size=(n_clusters, dim))
    labels = rng.integers(0, n_clusters, size=n)
    return centres[labels] + spread * rng.normal(size=(n, dim)), labels


def _brute_force_topk(targets, features, ids, k, method):
    out_i = np.empty((len(targets), k), dtype=np.int64)
    out_s = np.empty((len(targets), k))
    f64 = features.astype(np.float64)
    for b, (t, cand) in enumerate(zip(targets.astype(np.float64), ids, strict=True)):
        x = f64[cand]
        if method == "cosine":
            s = x @ t / (np.linalg.norm(x, axis=1) * np.linalg.norm(t))
        else:
            s = -np.sqrt(((x - t) ** 2).sum(axis=1))
        order = sorted(range(len(cand)), key=lambda j: (-s[j], cand[j]))[:k]
        out_i[b], out_s[b] = cand[order], s[order]
    return out_i, out_s


@pytest.mark.parametrize("method", ["cosine", "l2"])
def test_similarity_rescoring_matches_float64_brute_force_over_several_blocks(method):
    """150 targets (three blocks of 64, the last partial), float32 rows with norms far from
    1 (0.01 to 0.5): indices int64, scores equal to float64 brute force to 1e-12."""
    rng = np.random.default_rng(3)
    features = (rng.normal(size=(400, 8)) * rng.uniform(0.01, 0.5, size=(400, 1))).astype(
        np.float32
    )
    targets = (rng.normal(size=(150, 8)) * 0.05).astype(np.float32)
    ids = np.stack([rng.choice(400, size=30, replace=False) for _ in range(150)])
    idx, val = similarity_candidates_topk(targets, features, ids, 10, method)
    ref_i, ref_s = _brute_force_topk(targets, features, ids, 10, method)
    assert idx.dtype == np.int64 and val.dtype == np.float64
    np.testing.assert_allclose(val, ref_s, rtol=1e-12, atol=1e-15)
    assert_rankings_agree(idx, val, ref_i, ref_s, rtol=1e-12)  # ties may swap, nothing else


def test_targets_are_ordered_by_cluster():
    T, labels = _clusters(48, 6, 3, seed=4, spread=0.2)
    order = _order_targets(T, group=4, seed=0)  # 12 k-means cells
    assert sorted(order.tolist()) == list(range(48))
    changes = int((np.diff(labels[order]) != 0).sum())
    assert changes <= 11  # each of the 12 cells lies inside one cluster (~32 changes at random)
    np.testing.assert_array_equal(_order_targets(T, group=64, seed=0), np.arange(48))


def test_esvm_retrieval_with_k_means_grouping_equals_the_exact_all_class_svm():
    """Small groups (so the targets are ordered by k-means and packed in several groups):
    the ranking is still that of the exact SVM on the whole training set."""
    X, _ = _clusters(600, 10, 6, seed=5, spread=1.0)
    T, _ = _clusters(24, 10, 6, seed=5, spread=1.0)
    T = T + 0.2 * np.random.default_rng(6).normal(size=T.shape)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    Tn = T / np.linalg.norm(T, axis=1, keepdims=True)
    search = CandidateSearch.build(Xn)
    idx, val = esvm_candidates_topk(
        Tn, Xn, search, 15, C=0.5, n_candidates=80, group_size=3, max_union=400
    )
    system = PoolSystem.build(Xn)
    for b in range(len(Tn)):
        fit = fit_newton(Tn[b], system, 0.5)
        s = Xn @ fit.coef + fit.intercept
        ref = np.lexsort((np.arange(len(s)), -s))[:15]
        np.testing.assert_allclose(val[b], s[ref], atol=1e-6)
        assert (idx[b] == ref).mean() >= 0.9  # float32 search near-ties aside


def test_ivf_index_accepts_as_many_cells_as_points_and_no_more():
    """``nlist`` may be anything from 1 to the number of points: at ``nlist = n`` (one point
    per cell, every cell visited) the index still finds each point's exact neighbours."""
    from simattr.errors import InvalidInputError

    X = np.random.default_rng(17).normal(size=(40, 5)).astype(np.float32)
    search = CandidateSearch.build(X, index="ivf", nlist=40, nprobe=40)
    sims, ids = search.search(X[:6], 3)
    brute_sims = X[:6] @ X.T
    brute = np.argsort(-brute_sims, axis=1, kind="stable")[:, :3]
    # float32 inner products by FAISS's kernel and numpy's: the same neighbours up to ties
    expected = np.take_along_axis(brute_sims, brute, axis=1)
    assert_rankings_agree(ids, sims, brute, expected, dtype=np.float32)
    with pytest.raises(InvalidInputError, match=r"nlist must be an integer in \[1, 40\], got 41"):
        CandidateSearch.build(X, index="ivf", nlist=41)
