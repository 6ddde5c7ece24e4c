"""The attribution estimator: rank the training images responsible for each target prediction.

Modelled on scikit-learn estimators: hyper-parameters in ``__init__``, data in ``fit``, fitted
state in attributes ending with ``_``, and every argument validated up front with an error that
names it. The estimator is model-agnostic: it sees only features, whatever produced them.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from simattr._progress import progress_bar
from simattr.attribution.retrieval import (
    AUTO_THRESHOLD,
    INDEX_KINDS,
    RETRIEVALS,
    CandidateSearch,
    RetrievalStats,
    default_candidates,
    esvm_candidates_topk,
    similarity_candidates_topk,
)
from simattr.attribution.scorers import SCORERS, ExemplarSVMScorer, Scorer
from simattr.errors import InvalidInputError
from simattr.ranking import Ranking
from simattr.validation import (
    check_features,
    check_indices,
    check_labels,
    check_positive_int,
    check_same_width,
    l2_normalize,
)


class Attributor:
    """Score and rank training images for target images, from their features.

    Args:
        method: ``"esvm"`` (exemplar SVM, the default), ``"l2"`` (negative Euclidean distance),
            ``"cosine"`` (cosine similarity) or ``"lda"`` (a closed-form, whitened exemplar that
            approximates the exemplar SVM at the cost of one matrix product; see
            :class:`~simattr.attribution.scorers.WhitenedExemplarScorer`).
        class_conditional: rank only training images whose label equals the target's label (the
            label to explain). ``False`` ranks the whole training set.
        C: ESVM regularisation (DESIGN.md: 0.1).
        solver: ESVM solver: ``"batched"`` (default; many targets at once), ``"newton"`` (one
            target at a time, float64) or ``"reference"`` (scikit-learn's ``LinearSVC``).
        normalize: L2-normalise features before scoring (DESIGN.md; with it, ``l2`` and
            ``cosine`` give the same ranking).
        device: torch device for the ESVM solver (``"cpu"`` or ``"cuda"``).
        block_size: targets scored at once; bounds memory to ``block_size x pool`` scores
            (``block_size x n_candidates`` with retrieval).
        progress: draw a progress bar over targets.
        retrieval: how ``class_conditional=False`` finds candidates (no effect otherwise):
            ``"exact"`` scores every training image (the reference; memory
            ``block_size x n_train``), ``"faiss"`` retrieves the ``n_candidates`` nearest
            training images by cosine with FAISS and scores only those, exactly
            (:mod:`simattr.attribution.retrieval` explains why that is the exact ESVM when the
            candidates cover its active negatives). ``"auto"`` (default) is ``"faiss"`` from
            :data:`~simattr.attribution.retrieval.AUTO_THRESHOLD` (200,000) training images on.
        n_candidates: candidates per target for ``"faiss"`` (default ``max(4 k, 2048)``).
        index: FAISS search, ``"flat"`` (exact brute force, default) or ``"ivf"``
            (inverted file: faster on millions of images, approximate; ``nlist`` cells, default
            ``4 sqrt(n_train)``, ``nprobe`` of them visited per target).

    Attributes (after ``fit``):
        n_train_, n_features_in_: shape of the training features.
        train_labels_: int64 training labels (``None`` when fitted without labels).
        classes_: labels present in the training set.
    """

    def __init__(
        self,
        method: str = "esvm",
        *,
        class_conditional: bool = True,
        C: float = 0.1,
        solver: str = "batched",
        normalize: bool = True,
        device: str = "cpu",
        block_size: int = 256,
        progress: bool = False,
        retrieval: str = "auto",
        n_candidates: int | None = None,
        index: str = "flat",
        nlist: int | None = None,
        nprobe: int = 16,
    ) -> None:
        self.method = method
        self.class_conditional = class_conditional
        self.C = C
        self.solver = solver
        self.normalize = normalize
        self.device = device
        self.block_size = block_size
        self.progress = progress
        self.retrieval = retrieval
        self.n_candidates = n_candidates
        self.index = index
        self.nlist = nlist
        self.nprobe = nprobe

    # -- construction ----------------------------------------------------------------------
    def _make_scorer(self) -> Scorer:
        if self.method not in SCORERS:
            raise InvalidInputError(
                f"unknown attribution method {self.method!r}; choose one of {sorted(SCORERS)}"
            )
        if self.method == "esvm":
            return ExemplarSVMScorer(C=self.C, solver=self.solver, device=self.device)
        return SCORERS[self.method]()

    def fit(self, train_features: object, train_labels: object = None) -> Attributor:
        """Store the (normalised) training features and, per class, the candidate pools."""
        self._scorer = self._make_scorer()
        check_positive_int(self.block_size, "block_size")
        X = _check_train_features(train_features)
        if train_labels is None:
            if self.class_conditional:
                raise InvalidInputError(
                    "class-conditional attribution needs train_labels; pass them, or use "
                    "class_conditional=False (--all-classes) to rank the whole training set"
                )
            self.train_labels_ = None
            self.classes_ = np.array([], dtype=np.int64)
        else:
            y = check_labels(train_labels, len(X), "train_labels", for_what="training features")
            self.train_labels_ = y
            self.classes_ = np.unique(y)
        self.train_features_ = _prepared_features(X, self.normalize, "train_features")
        self.n_train_, self.n_features_in_ = X.shape
        self.retrieval_ = self._resolve_retrieval()
        self.search_: CandidateSearch | None = None
        self.retrieval_stats_ = RetrievalStats()
        if self.retrieval_ == "faiss":
            # Cosine retrieval needs unit rows; with normalize=False only l2 searches the
            # stored rows as they are.
            metric = "l2" if self.method == "l2" else "ip"
            rows = self.train_features_
            if self.method == "cosine" and not self.normalize:
                rows = _prepared_features(X, True, "train_features")
            self.search_ = CandidateSearch.build(
                rows, metric=metric, index=self.index, nlist=self.nlist, nprobe=self.nprobe
            )
        return self

    def _resolve_retrieval(self) -> str:
        """``"exact"`` or ``"faiss"``: what ``retrieval`` means for this training set."""
        if self.retrieval not in RETRIEVALS:
            raise InvalidInputError(
                f"unknown retrieval {self.retrieval!r}; choose one of {list(RETRIEVALS)}"
            )
        if self.index not in INDEX_KINDS:
            raise InvalidInputError(f"unknown retrieval index {self.index!r}; choose {INDEX_KINDS}")
        if self.n_candidates is not None:
            check_positive_int(self.n_candidates, "n_candidates")
        if self.class_conditional:
            return "exact"
        if self.retrieval == "auto":
            choice = "faiss" if self.n_train_ >= AUTO_THRESHOLD else "exact"
        else:
            choice = self.retrieval
        if choice == "faiss" and self.method not in ("esvm", "l2", "cosine"):
            raise InvalidInputError(
                f"retrieval='faiss' supports the esvm, l2 and cosine methods; use "
                f"retrieval='exact' for {self.method!r}"
            )
        if choice == "faiss" and self.method == "esvm" and self.solver != "batched":
            raise InvalidInputError(
                f"retrieval='faiss' scores candidates with the batched ESVM solver; got "
                f"solver={self.solver!r} (use solver='batched' or retrieval='exact')"
            )
        return choice

    # -- validation of targets -------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "train_features_"):
            raise InvalidInputError("this Attributor is not fitted yet: call fit() first")

    def _check_targets(
        self, target_features: object, target_labels: object
    ) -> tuple[np.ndarray, np.ndarray | None]:
        self._check_fitted()
        T = check_features(target_features, "target_features")
        check_same_width(T, self.train_features_, "target_features", "train_features")
        if self.normalize:
            T = l2_normalize(T)
        if not self.class_conditional:
            return T, None
        if target_labels is None:
            raise InvalidInputError(
                "class-conditional attribution needs target_labels (the label to explain of each "
                "target); pass them, or use class_conditional=False"
            )
        y = check_labels(target_labels, len(T), "target_labels", for_what="target features")
        missing = np.setdiff1d(np.unique(y), self.classes_)
        if len(missing):
            row = int(np.flatnonzero(y == missing[0])[0])
            raise InvalidInputError(
                f"target row {row} has label {int(missing[0])}, but no training image has that "
                "label: its class-conditional pool is empty"
            )
        return T, y

    def _pools(
        self, y: np.ndarray | None, n_targets: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(target_rows, pool_indices)`` groups sharing one candidate pool."""
        if y is None:
            yield np.arange(n_targets), np.arange(self.n_train_)
            return
        for label in np.unique(y):
            yield np.flatnonzero(y == label), np.flatnonzero(self.train_labels_ == label)

    def _iter_blocks(
        self, T: np.ndarray, y: np.ndarray | None
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Yield ``(target_rows, pool_indices, scores)`` blocks, ``scores`` of shape rows x pool."""
        with progress_bar(f"attribution ({self.method})", len(T), self.progress) as advance:
            for rows, pool in self._pools(y, len(T)):
                prepared = self._scorer.prepare(self.train_features_[pool])
                for start in range(0, len(rows), self.block_size):
                    block = rows[start : start + self.block_size]
                    yield block, pool, self._scorer.score(prepared, T[block])
                    advance(len(block))

    # -- results ---------------------------------------------------------------------------
    def score(self, target_features: object, target_labels: object = None) -> np.ndarray:
        """Dense scores ``(n_targets, n_train)``; ``-inf`` outside a class-conditional pool.

        Holds the whole matrix in memory: for large training sets use :meth:`topk`.
        """
        T, y = self._check_targets(target_features, target_labels)
        out = np.full((len(T), self.n_train_), -np.inf, dtype=np.float64)
        for rows, pool, scores in self._iter_blocks(T, y):
            out[np.ix_(rows, pool)] = scores
        return out

    def topk(
        self, target_features: object, target_labels: object = None, k: int = 100
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` highest-scoring training images per target.

        Returns:
            ``(indices, scores)``, both ``(n_targets, k)``: int64 rows of the training features
            by descending score (ties broken by lower index), and their float64 scores.
        """
        k = check_positive_int(k, "k")
        T, y = self._check_targets(target_features, target_labels)
        if self.retrieval_ == "faiss":
            return self._retrieval_topk(T, k)
        for rows, pool in self._pools(y, len(T)):
            if k > len(pool):
                where = (
                    f"the pool of label {int(y[rows[0]])} has only {len(pool)} training images"
                    if y is not None
                    else f"the training set has only {len(pool)} images"
                )
                raise InvalidInputError(f"k={k} is larger than the candidate pool: {where}")
        indices = np.empty((len(T), k), dtype=np.int64)
        values = np.empty((len(T), k), dtype=np.float64)
        for rows, pool, scores in self._iter_blocks(T, y):
            order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            indices[rows] = pool[order]
            values[rows] = np.take_along_axis(scores, order, axis=1)
        return indices, values

    def _retrieval_topk(self, T: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """All-class top-``k`` through FAISS candidates, ``block_size`` targets at a time."""
        assert self.search_ is not None
        n = self.n_train_
        if k > n:
            raise InvalidInputError(
                f"k={k} is larger than the candidate pool: the training set has only {n} images"
            )
        if self.method == "esvm":
            wanted = self.n_candidates if self.n_candidates is not None else default_candidates(k)
        else:  # retrieval is already the exact ranking; a margin absorbs float32 near-ties
            wanted = k + 32
        n_cand = min(wanted, n)
        if k > n_cand:
            raise InvalidInputError(
                f"k={k} is larger than n_candidates={n_cand}; raise n_candidates to at least k"
            )
        indices = np.empty((len(T), k), dtype=np.int64)
        values = np.empty((len(T), k), dtype=np.float64)
        X = self.train_features_
        with progress_bar(f"attribution ({self.method}, faiss)", len(T), self.progress) as adv:
            for start in range(0, len(T), self.block_size):
                block = slice(start, start + self.block_size)
                if self.method == "esvm":
                    idx, val = esvm_candidates_topk(
                        T[block],
                        X,
                        self.search_,
                        k,
                        C=self.C,
                        n_candidates=n_cand,
                        device=self.device,
                        stats=self.retrieval_stats_,
                    )
                else:
                    _, ids = self.search_.search(T[block], n_cand)
                    idx, val = similarity_candidates_topk(T[block], X, ids, k, self.method)
                indices[block], values[block] = idx, val
                adv(len(idx))
        return indices, values

    def __repr__(self) -> str:
        return (
            f"Attributor(method={self.method!r}, class_conditional={self.class_conditional}, "
            f"C={self.C}, solver={self.solver!r}, retrieval={self.retrieval!r})"
        )


def _check_train_features(features: object) -> np.ndarray:
    """Training features as a 2-D float array, without a full-size copy for float arrays.

    Finiteness is checked later, chunk by chunk, by :func:`_prepared_features`; other inputs
    (lists, integer arrays) go through :func:`~simattr.validation.check_features`.
    """
    if isinstance(features, np.ndarray) and features.dtype in (np.float16, np.float32, np.float64):
        if features.ndim != 2:
            raise InvalidInputError(
                f"train_features must be a 2-D array (n_images x n_dims), got shape "
                f"{features.shape}"
            )
        if features.shape[0] == 0 or features.shape[1] == 0:
            raise InvalidInputError(f"train_features is empty (shape {features.shape})")
        return features
    return check_features(features, "train_features")


def _prepared_features(X: np.ndarray, normalize: bool, name: str) -> np.ndarray:
    """Validated (finite) and optionally L2-normalised features, built chunk by chunk.

    A memory-mapped ImageNet-size array (1.28 M x 512, float16 on disk) is read in slices of
    65,536 rows into one float32 result, so the peak stays near the size of that result
    instead of several full-size temporaries.
    """
    dtype = np.float64 if X.dtype == np.float64 else np.float32
    if not normalize and X.dtype == dtype and not isinstance(X, np.memmap):
        return X
    out = np.empty(X.shape, dtype=dtype)
    step = 65536
    for start in range(0, len(X), step):
        chunk = np.asarray(X[start : start + step], dtype=dtype)
        finite = np.isfinite(chunk)
        if not finite.all():
            row, col = (int(v[0]) for v in np.nonzero(~finite))
            raise InvalidInputError(
                f"{name} has a non-finite value ({chunk[row, col]}) at row {start + row}, "
                f"column {col}; NaN or infinite features usually come from a diverged backbone "
                "or a corrupt file"
            )
        out[start : start + step] = l2_normalize(chunk) if normalize else chunk
    return out


def rank(
    attributor: Attributor,
    test_features: np.ndarray,
    test_labels: np.ndarray | None,
    targets: np.ndarray,
    k: int,
) -> Ranking:
    """Rank the training images of a fitted ``attributor`` for the chosen test ``targets``."""
    targets = check_indices(targets, len(test_features), "targets")
    labels = None if test_labels is None else np.asarray(test_labels)[targets]
    indices, scores = attributor.topk(np.asarray(test_features)[targets], labels, k)
    return Ranking(targets=targets, indices=indices, scores=scores)
