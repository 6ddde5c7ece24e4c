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
from simattr.attribution.retrieval import AUTO_THRESHOLD, CandidateSearch, default_candidates


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
