"""The attribution estimator: rank the training images responsible for each target prediction.

A scikit-learn estimator (``get_params``, ``set_params``, ``clone``, grid search): hyper-
parameters in ``__init__``, stored unchanged; data in ``fit``; fitted state in attributes
ending with ``_``; every argument validated in ``fit`` with an error that names it. The
estimator is model-agnostic: it sees only features, whatever produced them.

What a method computes lives in its :class:`~simattr.attribution.scorers.Scorer`, including
how it ranks from FAISS candidates; this module only cuts the work into pools and blocks, so it
never branches on a method's name and a new method needs no change here.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from simattr._progress import progress_bar
from simattr.attribution.retrieval import (
    AUTO_THRESHOLD,
    INDEX_KINDS,
    RETRIEVALS,
    CandidateSearch,
    RetrievalStats,
)
from simattr.attribution.scorers import SCORERS, Scorer
from simattr.errors import InvalidInputError
from simattr.ranking import Ranking
from simattr.validation import (
    check_features,
    check_indices,
    check_labels,
    check_magnitude,
    check_positive_int,
    check_same_width,
    l2_normalize,
)

#: Attributor parameters that configure a scorer chosen *by name*, kept so that
#: ``Attributor("esvm", C=0.5, solver="newton")`` works as it always has: each is passed to the
#: registered class when its constructor takes a parameter of that name (the exemplar SVM takes
#: all three). A :class:`Scorer` instance carries its own values instead.
FORWARDED_PARAMS = ("C", "solver", "device")


class SmallPoolWarning(UserWarning):
    """k is larger than a candidate pool: the targets of that pool get the whole pool, and
    their rows end in unranked slots (index ``-1``, score NaN)."""


class Attributor(BaseEstimator):
    """Score and rank training images for target images, from their features.

    Args:
        method: a registered name, ``"esvm"`` (exemplar SVM, the default), ``"l2"`` (negative
            Euclidean distance), ``"cosine"`` (cosine similarity) or ``"lda"`` (a closed-form,
            whitened exemplar that approximates the exemplar SVM at the cost of one matrix
            product; see :class:`~simattr.attribution.scorers.WhitenedExemplarScorer`); or a
            configured :class:`~simattr.attribution.scorers.Scorer` instance, such as
            ``WhitenedExemplarScorer(shrinkage=0.5)``, whose own parameters then rule
            (``get_params(deep=True)`` lists them as ``method__shrinkage``).
        class_conditional: rank only training images whose label equals the target's label (the
            label to explain). ``False`` ranks the whole training set.
        C: ESVM regularisation (DESIGN.md: 0.1), for ``method="esvm"`` by name. With a scorer
            instance, set it on the scorer; a different, non-default value here is refused.
        solver: ESVM solver, for ``method="esvm"`` by name: ``"batched"`` (default; many
            targets at once), ``"newton"`` (one target at a time, float64) or ``"reference"``
            (scikit-learn's ``LinearSVC``). Same rule as ``C`` with a scorer instance.
        normalize: L2-normalise features before scoring (DESIGN.md; with it, ``l2`` and
            ``cosine`` give the same ranking). The paper code's scripts do not normalise;
            ``"l2-raw"`` (its ``l2knn``) never does, whatever this says.
        device: torch device for the ESVM solver (``"cpu"`` or ``"cuda"``), for a method by
            name; refused when it contradicts a scorer instance's own ``device``.
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
            Only scorers with ``supports_retrieval`` (esvm, l2, cosine) can use ``"faiss"``.
        n_candidates: candidates per target for ``"faiss"`` (default ``max(4 k, 2048)``).
        index: FAISS search, ``"flat"`` (exact brute force, default) or ``"ivf"``
            (inverted file: faster on millions of images, approximate; ``nlist`` cells, default
            ``4 sqrt(n_train)``, ``nprobe`` of them visited per target).

    Attributes (after ``fit``):
        n_train_, n_features_in_: shape of the training features.
        train_labels_: int64 training labels (``None`` when fitted without labels); for
            labels given as class names, their positions in ``classes_``.
        classes_: labels present in the training set, sorted: integers, or the class names
            when ``fit`` was given names (strings), as scikit-learn classifiers accept them.
    """

    def __init__(
        self,
        method: str | Scorer = "esvm",
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
        """The scorer ``method`` stands for, with its parameters checked.

        A name builds the registered class with the forwarded Attributor parameters it takes;
        an instance is used as it is (scorers keep no fitted state), after checking that no
        forwarded parameter contradicts it, since silently ignoring ``C=0.5`` would rank with
        a C the user did not ask for.
        """
        method = self.method
        if isinstance(method, Scorer):
            self._check_no_conflict(method)
            method.validate()
            return method
        if isinstance(method, type) and issubclass(method, Scorer):
            raise InvalidInputError(
                f"method must be a Scorer instance, not the class {method.__name__}; "
                f"pass {method.__name__}()"
            )
        if not isinstance(method, str):
            raise InvalidInputError(
                f"method must be one of {sorted(SCORERS)} or a Scorer instance, got {method!r}"
            )
        if method not in SCORERS:
            raise InvalidInputError(
                f"unknown attribution method {method!r}; choose one of {sorted(SCORERS)}"
            )
        cls = SCORERS[method]
        accepted = set(cls.param_names())
        return cls(**{p: getattr(self, p) for p in FORWARDED_PARAMS if p in accepted})

    def _check_no_conflict(self, scorer: Scorer) -> None:
        """Refuse a non-default forwarded parameter that a scorer instance would override."""
        params = scorer.get_params(deep=False)
        defaults = _init_defaults()
        for name in FORWARDED_PARAMS:
            value = getattr(self, name)
            if value == defaults[name]:
                continue
            if name not in params:
                if name == "device":  # where to run, not what to compute: harmless to ignore
                    continue
                raise InvalidInputError(
                    f"{name}={value!r} has no effect on method={scorer!r}, which has no "
                    f"parameter {name!r}; leave {name} at its default ({defaults[name]!r})"
                )
            if params[name] != value:
                raise InvalidInputError(
                    f"{name}={value!r} conflicts with method={scorer!r}, whose own "
                    f"{name}={params[name]!r} rules; set it on the scorer "
                    f"({type(scorer).__name__}({name}={value!r})) and leave {name} at its "
                    f"default ({defaults[name]!r})"
                )

    def _method_label(self, scorer: Scorer) -> str:
        """The method as messages name it: the name given, or the scorer's name."""
        return self.method if isinstance(self.method, str) else scorer.label

    def _normalizes(self, scorer: Scorer) -> bool:
        """Whether features are L2-normalised: ``normalize``, unless the scorer is defined on
        raw features (``l2-raw``, the paper code's Euclidean kNN), which overrides it."""
        return bool(self.normalize) and not scorer.raw_features

    def describe(self) -> dict[str, Any]:
        """The settings that determine the ranking, as a JSON-serialisable dict.

        Resume manifests (:mod:`simattr.attribution.resumable`) and ranking sidecars record
        it, and a resumed run refuses to continue when it changed, so for a method given by
        name it is exactly the dict those manifests have always held:

        * ``method`` (the name), ``class_conditional``, ``normalize``;
        * the forwarded parameters the method takes, without ``device`` (where it ran does
          not change what it ranks): ``C`` (a float) and ``solver`` for ``"esvm"``;
        * ``retrieval``: ``"exact"`` or ``"faiss"`` as fitted (``"exact"`` before ``fit``);
          with ``"faiss"`` also ``n_candidates``, ``index``, ``nlist`` and ``nprobe`` as given.

        For a :class:`Scorer` instance, ``method`` is the scorer's name and ``params`` its
        :meth:`~simattr.attribution.scorers.Scorer.settings` (parameters without ``device``),
        in place of the forwarded ones.
        """
        scorer = self._make_scorer()
        settings: dict[str, Any] = {
            "method": self._method_label(scorer),
            "class_conditional": self.class_conditional,
            "normalize": self._normalizes(scorer),
        }
        own = scorer.settings()
        if isinstance(self.method, str):
            settings.update({p: own[p] for p in FORWARDED_PARAMS if p in own})
        else:
            settings["params"] = own
        settings["retrieval"] = getattr(self, "retrieval_", "exact")
        if settings["retrieval"] == "faiss":
            settings.update(
                n_candidates=self.n_candidates,
                index=self.index,
                nlist=self.nlist,
                nprobe=self.nprobe,
            )
        return settings

    def score_meaning(self) -> dict[str, Any]:
        """What the method's scores mean (:meth:`Scorer.score_meaning`): recorded beside a
        ranking, not in :meth:`describe`, so resume manifests keep their settings only."""
        return self._make_scorer().score_meaning()

    def fit(self, train_features: object, train_labels: object = None) -> Attributor:
        """Store the (normalised) training features and, per class, the candidate pools."""
        self._scorer = self._make_scorer()
        check_positive_int(self.block_size, "block_size")
        X = _check_train_features(train_features)
        if train_labels is None:
            if self.class_conditional:
                raise InvalidInputError(
                    "class-conditional attribution needs `train_labels`; pass them, or use "
                    "`class_conditional=False` to rank the whole training set"
                )
            self.train_labels_ = None
            self.classes_ = np.array([], dtype=np.int64)
        elif _are_names(train_labels):
            # class names (strings, or any sortable objects): pools are kept by position in
            # classes_, and target labels are looked up there (an unknown name is an error)
            names = np.asarray(train_labels)
            if names.ndim != 1 or len(names) != len(X):
                raise InvalidInputError(
                    f"train_labels must be one label per training feature ({len(X)}), "
                    f"got shape {names.shape}"
                )
            self.classes_, self.train_labels_ = np.unique(names, return_inverse=True)
            self.train_labels_ = self.train_labels_.astype(np.int64)
        else:
            y = check_labels(train_labels, len(X), "train_labels", for_what="training features")
            self.train_labels_ = y
            self.classes_ = np.unique(y)
        self.normalize_ = self._normalizes(self._scorer)
        self.train_features_ = _prepared_features(X, self.normalize_, "train_features")
        self.n_train_, self.n_features_in_ = X.shape
        self.retrieval_ = self._resolve_retrieval()
        self.search_: CandidateSearch | None = None
        self.retrieval_stats_ = RetrievalStats()
        if self.retrieval_ == "faiss":
            # A cosine-like search needs unit rows; with normalize=False the stored rows are
            # searched as they are otherwise (l2 on raw features, the ESVM's first neighbours).
            rows = self.train_features_
            if self._scorer.retrieval_needs_unit_rows and not self.normalize_:
                rows = _prepared_features(X, True, "train_features")
            self.search_ = CandidateSearch.build(
                rows,
                metric=self._scorer.retrieval_metric,
                index=self.index,
                nlist=self.nlist,
                nprobe=self.nprobe,
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
        if choice == "faiss":
            self._scorer.check_retrieval(self.method)
        return choice

    # -- validation of targets -------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "train_features_"):
            raise InvalidInputError("this Attributor is not fitted yet: call fit() first")

    @property
    def needs_target_labels_(self) -> bool:
        """Whether :meth:`topk` needs the targets' labels: class-conditional pools, or a scorer
        that scores with labels (``learned``) even across all classes."""
        self._check_fitted()
        return self.class_conditional or self._scorer.uses_labels

    def _check_targets(
        self, target_features: object, target_labels: object
    ) -> tuple[np.ndarray, np.ndarray | None]:
        self._check_fitted()
        T = check_features(target_features, "target_features")
        check_same_width(T, self.train_features_, "target_features", "train_features")
        if self.normalize_:
            T = l2_normalize(T, "target_features")
        if not self.class_conditional and not self._scorer.uses_labels:
            return T, None
        if target_labels is None:
            if self._scorer.uses_labels:
                raise InvalidInputError(
                    f"method {self._method_label(self._scorer)!r} scores with labels: pass "
                    "target_labels (the label to explain of each target)"
                )
            raise InvalidInputError(
                "class-conditional attribution needs target_labels (the label to explain of each "
                "target); pass them, or use class_conditional=False"
            )
        if self._by_name():
            return T, self._codes(target_labels, len(T))
        y = check_labels(target_labels, len(T), "target_labels", for_what="target features")
        missing = np.setdiff1d(np.unique(y), self.classes_)
        if len(missing) and self.class_conditional:
            row = int(np.flatnonzero(y == missing[0])[0])
            raise InvalidInputError(
                f"target row {row} has label {int(missing[0])}, but no training image has that "
                "label: its class-conditional pool is empty"
            )
        return T, y

    def _by_name(self) -> bool:
        """Whether the training labels were class names (strings) rather than integers."""
        return self.classes_.dtype.kind not in "iuf"

    def _codes(self, labels: object, n: int) -> np.ndarray:
        """Target class names as positions in ``classes_``; a name no training image has is
        an error naming the first target that asks for it."""
        names = np.asarray(labels)
        if names.ndim != 1 or len(names) != n:
            raise InvalidInputError(
                f"target_labels must be one label per target feature ({n}), got shape {names.shape}"
            )
        codes = np.searchsorted(self.classes_, names).clip(0, len(self.classes_) - 1)
        unknown = self.classes_[codes] != names
        if unknown.any():
            row = int(np.flatnonzero(unknown)[0])
            raise InvalidInputError(
                f"target row {row} has label {str(names[row])!r}, but no training image has that "
                f"label (training classes: {', '.join(map(str, self.classes_[:10]))}"
                f"{', ...' if len(self.classes_) > 10 else ''})"
            )
        return codes.astype(np.int64)

    def _pools(
        self, y: np.ndarray | None, n_targets: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(target_rows, pool_indices)`` groups sharing one candidate pool."""
        if y is None or not self.class_conditional:
            yield np.arange(n_targets), np.arange(self.n_train_)
            return
        for label in np.unique(y):
            yield np.flatnonzero(y == label), np.flatnonzero(self.train_labels_ == label)

    def _iter_blocks(
        self, T: np.ndarray, y: np.ndarray | None
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Yield ``(target_rows, pool_indices, scores)`` blocks, ``scores`` of shape rows x pool."""
        label = f"attribution ({self._method_label(self._scorer)})"
        with progress_bar(label, len(T), self.progress) as advance:
            for rows, pool in self._pools(y, len(T)):
                prepared = self._scorer.prepare(self.train_features_[pool])
                for start in range(0, len(rows), self.block_size):
                    block = rows[start : start + self.block_size]
                    if self._scorer.uses_labels:
                        assert y is not None and self.train_labels_ is not None
                        yield (
                            block,
                            pool,
                            self._scorer.score_labelled(
                                prepared, T[block], y[block], self.train_labels_[pool]
                            ),
                        )
                    else:
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

        A candidate pool smaller than ``k`` (a small class) is returned whole, with one
        :class:`SmallPoolWarning`: the answer is as wide as the largest pool of these targets
        when that is below ``k``, and a row of a smaller pool ends in unranked slots (index
        ``-1``, score NaN), the convention of :class:`~simattr.ranking.Ranking`.

        Returns:
            ``(indices, scores)``, both ``(n_targets, min(k, largest pool))``: int64 rows of
            the training features by descending score (ties broken by lower index), and their
            float64 scores.
        """
        k = check_positive_int(k, "k")
        T, y = self._check_targets(target_features, target_labels)
        width, note = self.topk_width(y, k)
        if note is not None:
            warnings.warn(note, SmallPoolWarning, stacklevel=2)
        if self.retrieval_ == "faiss":
            return self._retrieval_topk(T, width)
        indices = np.full((len(T), width), -1, dtype=np.int64)
        values = np.full((len(T), width), np.nan, dtype=np.float64)
        for rows, pool, scores in self._iter_blocks(T, y):
            order = np.argsort(-scores, axis=1, kind="stable")[:, :width]
            kept = order.shape[1]
            indices[rows, :kept] = pool[order]
            values[rows, :kept] = np.take_along_axis(scores, order, axis=1)
        return indices, values

    def topk_width(self, target_labels: np.ndarray | None, k: int) -> tuple[int, str | None]:
        """How wide a top-``k`` answer for targets of these labels is (``k``, or the largest of
        their pools when that is smaller), and the warning to give when a pool is smaller than
        ``k`` (``None`` when none is). ``target_labels``: validated labels, or ``None`` for
        all-class attribution."""
        self._check_fitted()
        if target_labels is None or not self.class_conditional:
            sizes = {None: self.n_train_}
        else:
            if self._by_name() and np.asarray(target_labels).dtype.kind not in "iu":
                target_labels = self._codes(target_labels, len(np.asarray(target_labels)))
            labels, counts = np.unique(self.train_labels_, return_counts=True)
            known = dict(zip(labels.tolist(), counts.tolist(), strict=True))
            sizes = {int(v): known.get(int(v), 0) for v in np.unique(target_labels)}
        width = min(k, max(sizes.values()))
        short = sorted((n, label) for label, n in sizes.items() if n < k)
        if not short:
            return width, None
        n, label = short[0]
        if label is None:
            where = f"the training set ({n} images)"
        else:
            name = self.classes_[label] if self._by_name() else label
            where = f"the pool of label {name} ({n} images)"
            if len(short) > 1:
                where += f" and {len(short) - 1} other pool(s) of these targets"
        return width, (
            f"k={k} is larger than {where}: their targets get the whole pool, ranked, and rows "
            "shorter than k end in -1 (no image)"
        )

    def _retrieval_topk(self, T: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """All-class top-``k`` through FAISS candidates, ``block_size`` targets at a time."""
        assert self.search_ is not None
        n = self.n_train_
        k = min(k, n)  # topk() warned
        scorer = self._scorer
        n_cand = min(scorer.retrieval_candidates(k, self.n_candidates), n)
        if k > n_cand:
            raise InvalidInputError(
                f"k={k} is larger than n_candidates={n_cand}; raise n_candidates to at least k"
            )
        indices = np.empty((len(T), k), dtype=np.int64)
        values = np.empty((len(T), k), dtype=np.float64)
        X = self.train_features_
        label = f"attribution ({self._method_label(scorer)}, faiss)"
        with progress_bar(label, len(T), self.progress) as adv:
            for start in range(0, len(T), self.block_size):
                block = slice(start, start + self.block_size)
                idx, val = scorer.retrieval_topk(
                    T[block],
                    X,
                    self.search_,
                    k,
                    n_candidates=n_cand,
                    stats=self.retrieval_stats_,
                )
                indices[block], values[block] = idx, val
                adv(len(idx))
        return indices, values


def _init_defaults() -> dict[str, Any]:
    """Default value of each :class:`Attributor` parameter, read from its signature."""
    params = inspect.signature(Attributor.__init__).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def _are_names(labels: object) -> bool:
    """Whether labels are class names (strings, objects) rather than integer class indices."""
    return np.asarray(labels).dtype.kind in "USO"


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
    # Raw in-memory features of the right dtype are used as they are (no copy), but checked
    # all the same: a raw scorer must refuse NaN rows as the normalising path does.
    in_place = not normalize and X.dtype == dtype and not isinstance(X, np.memmap)
    out = X if in_place else np.empty(X.shape, dtype=dtype)
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
        if normalize:  # overflowing, all-zero or all-tied features are refused, not ranked
            chunk = l2_normalize(chunk, name, first_row=start)
        else:
            check_magnitude(chunk, name, first_row=start)
        if not in_place:
            out[start : start + step] = chunk
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
