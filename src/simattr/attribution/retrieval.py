"""All-class attribution at scale: FAISS retrieval of candidates, then exact scoring.

Ranking the whole training set (``class_conditional=False``) for ImageNet-size data cannot
score every training image for every target: 50,000 x 1.28 M scores is 256 GB in float32
(DESIGN.md section 4, *Scale*). Two stages keep memory bounded by ``block_size x n_candidates``:

1. **Retrieval.** The ``n_candidates`` training images nearest to each target by cosine
   similarity (inner product of L2-normalised features), found with FAISS, a block of targets
   at a time. The default search is exact brute force (``faiss.knn``, the search of an
   ``IndexFlatIP`` run on our own array, so the 1.28 M x 512 features are not copied a second
   time); ``index="ivf"`` builds an ``IndexIVFFlat`` (``nlist`` cells, ``nprobe`` visited) for
   sets where even brute force is too slow.
2. **Exact scoring.** ``l2`` and ``cosine`` are monotone in the retrieval metric on normalised
   features, so retrieval already returns their exact top-k; the candidates are only rescored
   in float64 so the scores equal the exact scorer's. For ``esvm`` the exemplar SVM of each
   target is fitted with the candidates as its negatives, and the candidates ranked by its
   decision values.

Which of the two a method gets is the method's own business: each
:class:`~simattr.attribution.scorers.Scorer` says whether it supports retrieval, which metric
the search uses (``retrieval_metric``), how many candidates a top-k needs and which of
:func:`esvm_candidates_topk` and :func:`similarity_candidates_topk` ranks them
(``retrieval_topk``); the :class:`~simattr.attribution.Attributor` only asks it.

**Why candidates give the exact ESVM, not an approximation of it.** The all-class exemplar SVM
of a target is the minimiser of ``|w|^2/2 + c_pos l(w.x_t) + c_neg sum_i l(-w.x_i)`` over all
``N`` training images, ``l`` the squared hinge. A negative with decision value ``<= -1`` at the
optimum contributes neither loss nor gradient, so removing it leaves the optimum where it was.
If the candidates contain every *active* negative (decision value above -1) and keep the
class weights of the full problem (``c_pos``, ``c_neg`` computed from ``N``, not from the
number of candidates), the candidate problem has exactly the same optimum (the objective is
strictly convex, so the optimum is unique and the KKT conditions carry over). Cosine
neighbours are where the active negatives concentrate, but not all of them: on 512-d PCA
features of CIFAR-10 (50,000 training images) the SVM has about 950 active negatives per
target, yet covering all of them takes the ~23,000 nearest by cosine (median; max ~36,000;
``benchmarks/retrieval_agreement.py``), because the SVM's weight vector is the target's
direction shifted away from the mean of the negatives. So the candidate set is completed by
the SVM itself: fit on the candidates, search the whole training set by inner product with the
fitted weight vector (the decision value is linear in the features), add every image found
inside the margin, refit; when a search finds no new one, the optimality conditions of the
full problem hold and the result is certified exact. Two to four rounds suffice; measured
against the exact 50,000-image solver: top-100 overlap 1.0, top-1280 overlap 0.9999 (float32
near-ties), scores within 2e-4. At that size the exact solver is faster (5.4 against about 2
targets per second, one thread), hence :data:`AUTO_THRESHOLD`; the candidate path's cost per
target does not grow with the training set beyond the searches.

To share the work of the batched solver (one rotated pool per group of targets,
:class:`~simattr.attribution.esvm_batched.BatchedPool`), a group of similar targets is
solved against the union of their candidate sets: extra negatives are also training images,
scored exactly by the same full-weight problem, so they only make the candidate set larger.
Groups are formed inside each block (targets ordered by a seeded k-means of the block, then
packed while the union stays below ``max_union`` rows), so a target's result depends only on
the block it belongs to, not on how many blocks ran before.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from simattr.attribution.esvm_batched import BatchedPool, fit_batched
from simattr.errors import InvalidInputError

#: ``retrieval="auto"`` uses FAISS for all-class ranking from this many training images on.
#: Below it the exact all-class solver is affordable (CIFAR-10's 50,000 images: about 0.1 s
#: per target) and gives the reference answer.
AUTO_THRESHOLD = 200_000

#: Retrieval index kinds.
INDEX_KINDS = ("flat", "ivf")
#: How ``class_conditional=False`` finds candidates (see :class:`~simattr.attribution.Attributor`).
RETRIEVALS = ("auto", "exact", "faiss")
#: Scores :func:`similarity_candidates_topk` can rescore candidates with.
SIMILARITIES = ("l2", "cosine")


def default_candidates(k: int) -> int:
    """Default ``n_candidates`` for a top-``k`` ranking: ``max(4 k, 2048)``."""
    return max(4 * k, 2048)


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a dependency
        raise InvalidInputError(
            "all-class retrieval needs FAISS: pip install faiss-cpu (or use retrieval='exact')"
        ) from exc
    return faiss


@dataclass
class CandidateSearch:
    """Nearest training rows by inner product (cosine on normalised rows) or Euclidean distance.

    ``features`` are the training rows as a C-contiguous float32 array (shared, not copied,
    by the flat search); ``index`` is a trained FAISS index, or ``None`` for brute force.
    """

    features: np.ndarray
    metric: str = "ip"
    index: object | None = None
    nprobe: int = 16

    @classmethod
    def build(
        cls,
        features: np.ndarray,
        *,
        metric: str = "ip",
        index: str = "flat",
        nlist: int | None = None,
        nprobe: int = 16,
        seed: int = 0,
    ) -> CandidateSearch:
        """Prepare the search over ``features`` (``n x D``).

        ``index="flat"`` searches exhaustively (exact); ``"ivf"`` trains an inverted-file index
        of ``nlist`` k-means cells (default ``4 sqrt(n)``) on a seeded sample and visits
        ``nprobe`` cells per query: faster on millions of rows, approximate.
        """
        faiss = _faiss()
        if metric not in ("ip", "l2"):
            raise InvalidInputError(f"metric must be 'ip' or 'l2', got {metric!r}")
        if index not in INDEX_KINDS:
            raise InvalidInputError(
                f"unknown retrieval index {index!r}; choose one of {INDEX_KINDS}"
            )
        if not (isinstance(nprobe, int) and nprobe >= 1):
            raise InvalidInputError(f"nprobe must be a positive integer, got {nprobe!r}")
        X = np.ascontiguousarray(features, dtype=np.float32)
        if index == "flat":
            return cls(features=X, metric=metric, index=None, nprobe=nprobe)
        n, d = X.shape
        nlist = nlist if nlist is not None else max(1, min(int(4 * math.sqrt(n)), n // 39))
        if not (isinstance(nlist, int) and 1 <= nlist <= n):
            raise InvalidInputError(f"nlist must be an integer in [1, {n}], got {nlist!r}")
        kind = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
        quantizer = faiss.IndexFlatIP(d) if metric == "ip" else faiss.IndexFlatL2(d)
        ivf = faiss.IndexIVFFlat(quantizer, d, nlist, kind)
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(n, size=min(n, 64 * nlist), replace=False))
        ivf.cp.seed = seed
        ivf.train(X[sample])
        for start in range(0, n, 65536):
            ivf.add(X[start : start + 65536])
        ivf.nprobe = min(nprobe, nlist)
        # The IVF index holds its own copy; keep ours for exact rescoring of candidates.
        return cls(features=X, metric=metric, index=ivf, nprobe=nprobe)

    @property
    def n(self) -> int:
        return self.features.shape[0]

    def search(self, targets: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``(similarities, ids)``, both ``(B, n)``, nearest first; ids are training rows."""
        faiss = _faiss()
        if not (1 <= n <= self.n):
            raise InvalidInputError(
                f"cannot retrieve {n} candidates from a training set of {self.n} images"
            )
        q = np.ascontiguousarray(targets, dtype=np.float32)
        if self.index is None:
            kind = faiss.METRIC_INNER_PRODUCT if self.metric == "ip" else faiss.METRIC_L2
            sims, ids = faiss.knn(q, self.features, n, metric=kind)
        else:
            sims, ids = self.index.search(q, n)
        if (ids < 0).any():
            # IVF with too few probed cells can return fewer than n neighbours.
            raise InvalidInputError(
                f"the IVF index found fewer than {n} candidates for some targets; "
                f"raise nprobe (now {self.index.nprobe}) or use index='flat'"
            )
        return sims, ids.astype(np.int64)

    def search_inner(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Training rows with the largest inner product with each query (a weight vector),
        exactly when the search is flat; ``(values, ids)``, both ``(B, n)``."""
        faiss = _faiss()
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if self.index is None or self.metric != "ip":
            vals, ids = faiss.knn(q, self.features, n, metric=faiss.METRIC_INNER_PRODUCT)
        else:
            vals, ids = self.index.search(q, n)
            if (ids < 0).any():
                raise InvalidInputError(
                    f"the IVF index found fewer than {n} rows for some targets; raise nprobe "
                    f"(now {self.index.nprobe}) or use index='flat'"
                )
        return vals, ids.astype(np.int64)


def _order_targets(T: np.ndarray, group: int, seed: int) -> np.ndarray:
    """Targets of a block ordered so that neighbours in the order are similar.

    A seeded k-means with about ``len(T) / group`` centroids; targets sorted by their cell.
    Only speed depends on it (similar targets share candidates, so unions stay small).
    """
    n_cells = len(T) // max(group, 1)
    if n_cells < 2:
        return np.arange(len(T))
    faiss = _faiss()
    km = faiss.Kmeans(T.shape[1], n_cells, niter=10, seed=seed, verbose=False)
    km.cp.min_points_per_centroid = 1
    km.train(np.ascontiguousarray(T, dtype=np.float32))
    _, cell = km.index.search(np.ascontiguousarray(T, dtype=np.float32), 1)
    return np.argsort(cell[:, 0], kind="stable")


def _pack_groups(ids: np.ndarray, order: np.ndarray, max_group: int, max_union: int):
    """Consecutive groups of ``order`` with at most ``max_group`` targets and a union of
    candidate ids of at most ``max_union`` rows (a single target always forms a group)."""
    groups: list[tuple[np.ndarray, np.ndarray]] = []
    current: list[int] = []
    union = np.empty(0, dtype=np.int64)
    for row in order:
        merged = np.union1d(union, ids[row])
        if current and (len(current) >= max_group or len(merged) > max_union):
            groups.append((np.array(current), union))
            current, merged = [], np.unique(ids[row])
        current.append(int(row))
        union = merged
    if current:
        groups.append((np.array(current), union))
    return groups


@dataclass
class RetrievalStats:
    """What the ESVM candidate fits did: a check that the candidate sets were large enough."""

    n_targets: int = 0
    n_groups: int = 0
    union_rows: int = 0
    max_active_fraction: float = 0.0
    unconverged: int = 0
    rounds: int = 0
    uncertified: int = 0

    def as_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)

    def update(self, n: int, union: int, active_fraction: float, unconverged: int) -> None:
        self.n_targets += n
        self.n_groups += 1
        self.union_rows += union
        self.max_active_fraction = max(self.max_active_fraction, active_fraction)
        self.unconverged += unconverged


def esvm_candidates_topk(
    targets: np.ndarray,
    features: np.ndarray,
    search: CandidateSearch,
    k: int,
    *,
    C: float,
    n_candidates: int,
    device: str = "cpu",
    group_size: int = 64,
    max_union: int = 32768,
    max_rounds: int = 6,
    seed: int = 0,
    stats: RetrievalStats | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` training rows per target by its all-class exemplar SVM, from candidates.

    Each target's SVM is fitted against its candidates (first its ``n_candidates`` cosine
    neighbours) with the class weights of the full problem, then the whole training set is
    searched by inner product with the fitted weight vector (the decision value is linear in
    the features, so this finds the training images the SVM scores highest, exactly with a
    flat search). Training images outside the candidates that the SVM leaves inside its
    margin (decision value above -1) are added and the SVM refitted, until none is left: then
    the candidate SVM satisfies the optimality conditions of the full problem and *is* the
    all-class SVM (module docstring). The ranking comes from the last search, over all
    training images. Targets still open after ``max_rounds`` keep their last fit and are
    counted in ``stats.uncertified``.

    Returns ``(indices, scores)``, ``(B, k)`` each, by descending score, ties by lower row.
    """
    B, n = len(targets), search.n
    c_pos, c_neg = _full_weights(n, C)
    _, first = search.search(targets, min(n_candidates, n))
    cands = [first[i] for i in range(B)]
    order = _order_targets(targets, group_size, seed)
    out_idx = np.empty((B, k), dtype=np.int64)
    out_val = np.empty((B, k), dtype=np.float64)
    todo = np.ones(B, dtype=bool)
    width = max(k, min(n_candidates, n))  # how deep each weight-vector search looks
    for round_ in range(max_rounds):
        rows_todo = order[todo[order]]
        coef = np.empty((B, targets.shape[1]), dtype=np.float64)
        intercept = np.empty(B, dtype=np.float64)
        for rows, union in _pack_groups(cands, rows_todo, group_size, max_union):
            pool = BatchedPool.build(features[union], C=C, device=device)
            pool = dataclasses.replace(pool, c_pos=c_pos, c_neg=c_neg)
            solution = fit_batched(targets[rows], pool, decision=False)
            coef[rows] = solution.coef.cpu().numpy()
            intercept[rows] = solution.intercept.cpu().numpy()
            if stats is not None:
                frac = float(solution.n_active.max()) / len(union)
                stats.update(len(rows), len(union), frac, int((~solution.converged).sum()))
        rows = np.flatnonzero(todo)
        depth = min(width, n)
        sims, ids = search.search_inner(coef[rows], depth)
        decision = sims.astype(np.float64) + intercept[rows, None]
        for j, row in enumerate(rows):
            inside = ids[j][decision[j] > -1]
            new = np.setdiff1d(inside, cands[row], assume_unique=False)
            deep = depth < n and decision[j, -1] > -1  # the margin may reach past the search
            if len(new) == 0 and not deep:
                todo[row] = False
            else:
                cands[row] = np.union1d(cands[row], inside)
            # Exact scores of the top of the search, in float64, ties by lower row.
            top = ids[j][: max(k, min(depth, k + 32))]
            val = features[top].astype(np.float64) @ coef[row] + intercept[row]
            key = np.lexsort((top, -val))[:k]
            out_idx[row], out_val[row] = top[key], val[key]
        if stats is not None:
            stats.rounds = max(stats.rounds, round_ + 1)
        if not todo.any():
            break
        if any(len(ids[j]) and decision[j, -1] > -1 for j in range(len(rows))):
            width *= 2
    if stats is not None:
        stats.uncertified += int(todo.sum())
    return out_idx, out_val


def _full_weights(n_total: int, C: float) -> tuple[float, float]:
    from simattr.attribution.esvm import balanced_weights

    return balanced_weights(n_total, float(C))


def similarity_candidates_topk(
    targets: np.ndarray, features: np.ndarray, ids: np.ndarray, k: int, method: str
) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``l2`` / ``cosine`` top-``k`` from retrieved ``ids`` (rescored in float64).

    ``method`` is ``"l2"`` (negative Euclidean distance) or ``"cosine"``; retrieval returns
    the exact top of both, so rescoring the candidates only makes the scores exact.
    """
    if method not in SIMILARITIES:
        raise InvalidInputError(f"unknown similarity {method!r}; choose one of {SIMILARITIES}")
    B = len(targets)
    out_idx = np.empty((B, k), dtype=np.int64)
    out_val = np.empty((B, k), dtype=np.float64)
    for start in range(0, B, 64):
        sl = slice(start, start + 64)
        cand = torch.from_numpy(np.asarray(features[ids[sl]], dtype=np.float64))
        t = torch.from_numpy(np.asarray(targets[sl], dtype=np.float64))[:, None, :]
        if method == "cosine":
            tn = t / t.norm(dim=2, keepdim=True).clamp_min(1e-300)
            cn = cand / cand.norm(dim=2, keepdim=True).clamp_min(1e-300)
            scores = (tn * cn).sum(2)
        else:
            scores = -torch.linalg.vector_norm(cand - t, dim=2)
        s = scores.numpy()
        rows_of = ids[sl]
        key = np.lexsort((rows_of, -s), axis=1)[:, :k]
        out_idx[sl] = np.take_along_axis(rows_of, key, axis=1)
        out_val[sl] = np.take_along_axis(s, key, axis=1)
    return out_idx, out_val
