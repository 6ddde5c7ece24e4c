"""Scorers: how much each candidate in a pool is responsible for a target, higher = more.

A scorer is a small object with two steps, so that work shared by all targets of one pool
(a Gram matrix, a device copy) is done once per pool and not once per target:

* ``prepare(pool)`` takes the pool's (already normalised) features ``n_pool x D``;
* ``score(prepared, targets)`` returns ``n_targets x n_pool`` scores for a block of targets.

A scorer is also a small scikit-learn estimator: its constructor arguments are its parameters
(``get_params``, ``set_params``, ``clone`` and an informative ``repr`` come with it), so that
:class:`~simattr.attribution.Attributor` can take a configured scorer as its ``method`` and a
grid search can tune it (``method__C``). A scorer keeps no fitted state: whatever a pool needs
is what ``prepare`` returns, so one instance serves any number of pools and attributors.

A scorer also owns its all-class retrieval behaviour (:mod:`simattr.attribution.retrieval`):
whether FAISS candidates can serve it, which metric the search uses, how many candidates a
top-k needs and how the candidates are scored. The :class:`~simattr.attribution.Attributor`
asks the scorer and never branches on method names, so a new method is a :class:`Scorer`
subclass plus an entry in :data:`SCORERS` (the CLI builds its ``--method`` choices from it).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator

from simattr.attribution.esvm import PoolSystem, fit_newton, fit_reference
from simattr.attribution.esvm_batched import BatchedPool, fit_batched
from simattr.attribution.retrieval import (
    CandidateSearch,
    RetrievalStats,
    default_candidates,
    esvm_candidates_topk,
    similarity_candidates_topk,
)
from simattr.errors import InvalidInputError


class Scorer(BaseEstimator):
    """Base class: subclasses set ``name`` and implement ``prepare`` and ``score``.

    Parameters are the constructor's keyword arguments, stored unchanged under their own
    names (the scikit-learn convention that makes ``get_params`` and ``clone`` work); checks
    belong in :meth:`validate`, which the constructor and ``Attributor.fit`` both call, because
    ``set_params`` bypasses the constructor.

    Retrieval (all-class ranking through FAISS candidates) is off by default: a subclass opts
    in by setting ``supports_retrieval`` and implementing :meth:`retrieval_candidates` and
    :meth:`retrieval_topk`, or by deriving from a scorer that has them.
    """

    #: Registered name (the key in :data:`SCORERS`); used in messages and descriptions.
    name: ClassVar[str] = ""
    #: Whether ``retrieval="faiss"`` can rank with this scorer.
    supports_retrieval: ClassVar[bool] = False
    #: FAISS search metric for the first candidates: ``"ip"`` (inner product; cosine on unit
    #: rows) or ``"l2"`` (Euclidean).
    retrieval_metric: ClassVar[str] = "ip"
    #: Whether the search must run on unit rows even when the attributor keeps raw features
    #: (``normalize=False``): true for scorers whose ranking is cosine-like.
    retrieval_needs_unit_rows: ClassVar[bool] = False
    #: Whether the scorer is defined on unnormalised features: the attributor then skips its
    #: L2 normalisation whatever ``normalize`` says (``l2-raw``).
    raw_features: ClassVar[bool] = False
    #: Parameters that choose where the scorer runs, not what it computes: left out of
    #: :meth:`settings` (a resumed run may move to another device).
    runtime_params: ClassVar[tuple[str, ...]] = ()
    #: Whether scores depend on labels (``learned``: its class table spans every class): the
    #: attributor then calls :meth:`score_labelled`, in both modes, and needs every label.
    uses_labels: ClassVar[bool] = False

    @property
    def label(self) -> str:
        """Short name for messages and progress bars: ``name``, else the class name."""
        return self.name or type(self).__name__

    @classmethod
    def param_names(cls) -> list[str]:
        """The constructor's parameter names, sorted (what ``get_params`` returns)."""
        return list(cls._get_param_names())

    def validate(self) -> None:
        """Refuse invalid parameter values with an :class:`InvalidInputError` naming them."""

    def prepare(self, pool: np.ndarray) -> Any:
        """Work shared by every target of one pool (``n_pool x D`` normalised features)."""
        return pool

    def score(self, prepared: Any, targets: np.ndarray) -> np.ndarray:
        """Scores ``n_targets x n_pool`` of a block of targets against a prepared pool."""
        raise NotImplementedError

    def score_labelled(
        self, prepared: Any, targets: np.ndarray, target_labels: np.ndarray, labels: np.ndarray
    ) -> np.ndarray:
        """:meth:`score` given the block's target labels and the pool's ``labels`` (called
        instead of :meth:`score` when :attr:`uses_labels`)."""
        return self.score(prepared, targets)

    @classmethod
    def contract_example(cls) -> Scorer:
        """An instance for :func:`~simattr.attribution.check_scorer`: the defaults, unless a
        scorer needs a file its defaults cannot name (``learned``)."""
        return cls()

    def score_meaning(self) -> dict[str, Any]:
        """What a score means, for rankings and the pages that show them: empty for a score
        with no unit (only the order within a target counts); ``learned`` says its unit and
        whether its scores are calibrated margin changes."""
        return {}

    def settings(self) -> dict[str, Any]:
        """JSON-serialisable parameters that determine the scores (for manifests, sidecars)."""
        params = self.get_params(deep=False)
        return {k: _json_value(v) for k, v in params.items() if k not in self.runtime_params}

    # -- all-class retrieval -----------------------------------------------------------------
    def check_retrieval(self, method: object) -> None:
        """Refuse ``retrieval="faiss"`` when this scorer cannot rank from FAISS candidates.

        ``method`` is the attributor's ``method`` argument, named in the message as given.
        """
        if not self.supports_retrieval:
            raise InvalidInputError(
                f"retrieval='faiss' supports the {_join(retrieval_methods())} methods; use "
                f"retrieval='exact' for {method!r}"
            )

    def retrieval_candidates(self, k: int, n_candidates: int | None) -> int:
        """How many FAISS candidates a top-``k`` needs (``n_candidates``: the user's choice)."""
        raise NotImplementedError(f"{self.label} does not support retrieval")

    def retrieval_topk(
        self,
        targets: np.ndarray,
        features: np.ndarray,
        search: CandidateSearch,
        k: int,
        *,
        n_candidates: int,
        stats: RetrievalStats | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` over all ``features`` for a block of targets, from candidates.

        Returns ``(indices, scores)``, ``(B, k)`` each, by descending score, ties by lower row.
        """
        raise NotImplementedError(f"{self.label} does not support retrieval")


class _SimilarityRetrieval(Scorer):
    """Retrieval for scores monotone in the search metric: the search *is* the ranking.

    The candidates are only rescored in float64 so that the scores equal the exact scorer's;
    a margin of 32 candidates beyond ``k`` absorbs float32 near-ties of the search.
    """

    supports_retrieval = True
    #: What :func:`~simattr.attribution.retrieval.similarity_candidates_topk` rescores with.
    similarity: ClassVar[str] = ""

    def retrieval_candidates(self, k: int, n_candidates: int | None) -> int:
        return k + 32

    def retrieval_topk(
        self,
        targets: np.ndarray,
        features: np.ndarray,
        search: CandidateSearch,
        k: int,
        *,
        n_candidates: int,
        stats: RetrievalStats | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        _, ids = search.search(targets, n_candidates)
        return similarity_candidates_topk(targets, features, ids, k, self.similarity)


class L2Scorer(_SimilarityRetrieval):
    """Negative Euclidean distance: the nearest candidates score highest."""

    name = "l2"
    retrieval_metric = "l2"
    similarity = "l2"

    def score(self, prepared: np.ndarray, targets: np.ndarray) -> np.ndarray:
        # on the CPU by name, whatever torch's default device is: the result goes to numpy
        t = torch.as_tensor(targets, dtype=torch.float64, device="cpu")
        p = torch.as_tensor(prepared, dtype=torch.float64, device="cpu")
        return (-torch.cdist(t, p)).numpy()


class RawL2Scorer(L2Scorer):
    """Negative Euclidean distance on the features as they are, never normalised.

    The paper code's ``l2knn``: its scripts rank by Euclidean distance on raw backbone
    features, where simattr normalises by default (and its ``l2`` then ranks like ``cosine``).
    On raw features the norm of an embedding matters: images the backbone embeds with small
    norms are near everything.
    """

    name = "l2-raw"
    raw_features = True


class CosineScorer(_SimilarityRetrieval):
    """Cosine similarity (on normalised features, a plain dot product)."""

    name = "cosine"
    retrieval_metric = "ip"
    retrieval_needs_unit_rows = True
    similarity = "cosine"

    def score(self, prepared: np.ndarray, targets: np.ndarray) -> np.ndarray:
        t = targets / np.maximum(np.linalg.norm(targets, axis=1, keepdims=True), 1e-300)
        p = prepared / np.maximum(np.linalg.norm(prepared, axis=1, keepdims=True), 1e-300)
        return t.astype(np.float64) @ p.astype(np.float64).T


class ExemplarSVMScorer(Scorer):
    """Decision value of an exemplar SVM fitted with the target against the pool.

    Solvers, all reaching the optimum of the problem DESIGN.md section 1 defines:

    * ``"batched"`` (default): many targets of one pool at once
      (:func:`simattr.attribution.esvm_batched.fit_batched`), float32 pool products, decision
      values within about 1e-5 of the exact optimum; tens of times faster than the others.
    * ``"newton"``: one target at a time, float64, to machine precision
      (:func:`simattr.attribution.esvm.fit_newton`).
    * ``"reference"``: scikit-learn's ``LinearSVC`` per target, as DESIGN.md defines the method.

    Retrieval: the first candidates are the target's cosine neighbours, completed by the SVM's
    own searches until the candidate SVM is certified to be the all-class one
    (:func:`~simattr.attribution.retrieval.esvm_candidates_topk`; batched solver only).
    """

    name = "esvm"
    solvers: ClassVar[tuple[str, ...]] = ("batched", "newton", "reference")
    supports_retrieval = True
    retrieval_metric = "ip"
    runtime_params = ("device",)

    def __init__(self, C: float = 0.1, solver: str = "batched", device: str = "cpu") -> None:
        self.C = C
        self.solver = solver
        self.device = device
        self.validate()

    def validate(self) -> None:
        C = self.C
        if not (isinstance(C, int | float) and np.isfinite(C) and C > 0):
            raise InvalidInputError(f"C must be a positive number, got {C!r}")
        if self.solver not in self.solvers:
            raise InvalidInputError(
                f"unknown ESVM solver {self.solver!r}; choose one of {self.solvers}"
            )

    def settings(self) -> dict[str, Any]:
        # C as a float, as resume manifests have always recorded it (C=1 and C=1.0 agree).
        return {"C": float(self.C), "solver": self.solver}

    def prepare(self, pool: np.ndarray) -> Any:
        if self.solver == "reference":
            return np.asarray(pool, dtype=np.float64)
        if self.solver == "batched":
            return BatchedPool.build(pool, C=float(self.C), device=self.device)
        return PoolSystem.build(pool, device=self.device)

    def score(self, prepared: Any, targets: np.ndarray) -> np.ndarray:
        C = float(self.C)
        if self.solver == "batched":
            solution = fit_batched(targets, prepared)
            return solution.decision.double().cpu().numpy()
        if self.solver == "reference":
            fits = [fit_reference(t, prepared, C) for t in targets]
            coef = np.stack([f.coef for f in fits])
            intercept = np.array([f.intercept for f in fits])
            return coef @ prepared.T + intercept[:, None]
        fits = [fit_newton(t, prepared, C) for t in targets]
        coef = torch.as_tensor(np.stack([f.coef for f in fits]), device=prepared.X.device)
        intercept = torch.as_tensor([f.intercept for f in fits], device=prepared.X.device)
        return (coef @ prepared.X[:, :-1].T + intercept[:, None]).cpu().numpy()

    def check_retrieval(self, method: object) -> None:
        super().check_retrieval(method)
        if self.solver != "batched":
            raise InvalidInputError(
                f"retrieval='faiss' scores candidates with the batched ESVM solver; got "
                f"solver={self.solver!r} (use solver='batched' or retrieval='exact')"
            )

    def retrieval_candidates(self, k: int, n_candidates: int | None) -> int:
        # The SVM completes its own candidate set, so this is only where it starts.
        return n_candidates if n_candidates is not None else default_candidates(k)

    def retrieval_topk(
        self,
        targets: np.ndarray,
        features: np.ndarray,
        search: CandidateSearch,
        k: int,
        *,
        n_candidates: int,
        stats: RetrievalStats | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        return esvm_candidates_topk(
            targets,
            features,
            search,
            k,
            C=self.C,
            n_candidates=n_candidates,
            device=self.device,
            stats=stats,
        )


class WhitenedExemplarScorer(Scorer):
    """Closed-form exemplar: the target's direction from the pool mean, whitened by the pool.

    An LDA-style approximation of the exemplar SVM: with one positive (the target ``t``) and the
    pool as negatives modelled by a Gaussian, the discriminant is ``w = S^-1 (t - mu)``, where
    ``mu`` and ``S`` are the pool's mean and covariance (shrunk towards a multiple of the
    identity by ``shrinkage``: heavy shrinkage, because the exemplar SVM's weight vector sits
    much closer to the plain target direction than a fully whitened one). A candidate's
    score is ``w . (x - mu)``. The pool is whitened once, so scoring a block of targets is one
    matrix product: orders of magnitude cheaper than fitting SVMs, at the cost of agreement
    with the exact exemplar SVM (``benchmarks/lda_agreement.py`` measures it).

    No retrieval: the whitening depends on the whole pool, so nearest neighbours by any fixed
    metric are not its candidates.
    """

    name = "lda"

    #: Measured against LinearSVC on CIFAR-10 class pools (benchmarks/lda_agreement.py):
    #: top-100 overlap 0.85 / Spearman 0.98 on PCA-512 pixel features and 0.87 / 0.99 on the
    #: shipped backbone's features at 0.9 (plain cosine: 0.47-0.54 / 0.83-0.84); agreement
    #: falls off below 0.8 and above 0.95.
    DEFAULT_SHRINKAGE: ClassVar[float] = 0.9

    def __init__(self, shrinkage: float = DEFAULT_SHRINKAGE) -> None:
        self.shrinkage = shrinkage
        self.validate()

    def validate(self) -> None:
        shrinkage = self.shrinkage
        if not (isinstance(shrinkage, int | float) and 0 < shrinkage <= 1):
            raise InvalidInputError(f"shrinkage must be in (0, 1], got {shrinkage!r}")

    def prepare(self, pool: np.ndarray) -> Any:
        shrinkage = float(self.shrinkage)
        # on the CPU by name, whatever torch's default device is (as L2Scorer)
        x = torch.as_tensor(pool, dtype=torch.float64, device="cpu")
        mu = x.mean(dim=0)
        centred = x - mu
        cov = centred.T @ centred / max(1, len(x) - 1)
        scale = torch.trace(cov) / cov.shape[0]
        if not bool(torch.isfinite(scale)) or float(scale) <= 0:
            # one image, or identical images: no spread to whiten; fall back to the identity
            scale = torch.ones((), dtype=cov.dtype, device=cov.device)
        eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
        shrunk = (1 - shrinkage) * cov + shrinkage * scale * eye
        try:
            factor = torch.linalg.cholesky(shrunk)
        except torch.linalg.LinAlgError as exc:
            raise InvalidInputError(
                f"lda: the pool's covariance cannot be factored ({exc}); raise the shrinkage "
                "or use the esvm method"
            ) from None
        whitened = torch.cholesky_solve(centred.T, factor).T  # (x - mu) S^-1, row per candidate
        return mu, whitened

    def score(self, prepared: Any, targets: np.ndarray) -> np.ndarray:
        mu, whitened = prepared
        t = torch.as_tensor(targets, dtype=torch.float64, device=mu.device) - mu
        return (t @ whitened.T).numpy()


class ClassPriorScorer(Scorer):
    """A control, not a method: every candidate of the pool scores 1.

    What a ranking that knows only the target's class predicts. In LDS it predicts a subset's
    margin by how many images of the target's class the subset holds, which alone correlates
    with the margin (DESIGN.md section 2, controls); in removal its order is the pool's row order
    (ties go to the lower row), an arbitrary same-class order like ``random``'s. Any method's
    figure is read against it.
    """

    name = "class-prior"

    def score(self, prepared: np.ndarray, targets: np.ndarray) -> np.ndarray:
        return np.ones((len(targets), len(prepared)), dtype=np.float64)


class LearnedScorer(Scorer):
    """``learned``: signed scores in logits from a model fitted on retraining data.

    ``model_path`` names a file written by
    :meth:`~simattr.attribution.learned.LearnedAttribution.save`; the features given to the
    attributor must be the ones it was fitted on. A score is image i's predicted contribution
    to the target's margin (removing a set changes it by minus the sum of its scores). Models
    that fuse a given score (TRAK) cannot be applied from features alone and are refused; use
    ``LearnedAttribution.scores(..., signals=...)`` for them.
    """

    name = "learned"
    uses_labels = True

    def __init__(self, model_path: str | None = None) -> None:
        self.model_path = model_path
        self.validate()

    def validate(self) -> None:
        # None is accepted here (a clone or set_params may fill it later) and refused when a
        # pool is prepared, with the remedy
        if self.model_path is not None and not isinstance(self.model_path, str | os.PathLike):
            raise InvalidInputError(f"model_path must be a path, got {self.model_path!r}")

    def prepare(self, pool: np.ndarray) -> Any:
        from simattr.attribution.learned import BUILTIN_SIGNALS, LearnedAttribution

        if self.model_path is None:
            raise InvalidInputError(
                "method 'learned' needs model_path=FILE (a model written by "
                "LearnedAttribution.save); pass LearnedScorer(model_path=...)"
            )
        model = LearnedAttribution.load(self.model_path)
        given = [s for s in model.signals if s not in BUILTIN_SIGNALS]
        if given:
            raise InvalidInputError(
                f"{self.model_path} fuses the given score(s) {given}, which features alone "
                "cannot supply; use LearnedAttribution.scores(..., signals=...)"
            )
        return model, pool

    def score(self, prepared: Any, targets: np.ndarray) -> np.ndarray:
        raise InvalidInputError("method 'learned' needs labels: use it through an Attributor")

    def score_meaning(self) -> dict[str, Any]:
        """Scores in logits; ``calibrated`` when the file's model was fitted with
        :meth:`~simattr.attribution.learned.LearnedAttribution.calibrate`: each score is then
        minus the expected margin change if the image is removed (and a set's sum, the set's),
        which the pages show; an uncalibrated model's scores overstate it, and say so."""
        from simattr.attribution.learned import LearnedAttribution

        if self.model_path is None:
            return {}
        model = LearnedAttribution.load(self.model_path)
        meaning: dict[str, Any] = {"unit": "logits", "calibrated": model.calibrated}
        if model.calibrated:
            meaning["calibration"] = model.calibration
            meaning["calibration_info"] = model.calibration_info
        return meaning

    def score_labelled(
        self, prepared: Any, targets: np.ndarray, target_labels: np.ndarray, labels: np.ndarray
    ) -> np.ndarray:
        model, pool = prepared
        return model.scores(pool, labels, targets, target_labels)

    @classmethod
    def contract_example(cls) -> Scorer:
        """A model fitted on seeded synthetic retraining data, in a temporary file."""
        import atexit
        import shutil
        import tempfile
        from pathlib import Path

        from simattr.attribution.learned import LearnedAttribution

        rng = np.random.default_rng(0)
        pool, tg = rng.normal(size=(48, 8)), rng.normal(size=(12, 8))
        masks = rng.random((24, 48)) < 0.5
        margins = rng.normal(size=(24, 12))
        model = LearnedAttribution(form="bilinear", dim=4, signals=("cosine",)).fit(
            pool, np.arange(48) % 3, masks, margins, tg, np.arange(12) % 3
        )
        folder = Path(tempfile.mkdtemp(prefix="simattr-learned-"))
        # clones of the scorer read the file too: it goes when the process ends, not before
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        return cls(model_path=str(model.save(folder / "contract.safetensors")))


SCORERS: dict[str, type[Scorer]] = {
    "esvm": ExemplarSVMScorer,
    "l2": L2Scorer,
    "l2-raw": RawL2Scorer,
    "cosine": CosineScorer,
    "lda": WhitenedExemplarScorer,
    "class-prior": ClassPriorScorer,
    "learned": LearnedScorer,
}
"""Registered methods: ``Attributor(method=name)`` builds ``SCORERS[name]``."""


def retrieval_methods() -> list[str]:
    """Registered method names that ``retrieval="faiss"`` supports, in registration order."""
    return [name for name, cls in SCORERS.items() if cls.supports_retrieval]


def _join(names: list[str]) -> str:
    """``["a", "b", "c"]`` -> ``"a, b and c"``."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _json_value(value: Any) -> Any:
    """A parameter value as JSON can store it: numpy scalars unwrapped, sequences as lists,
    nested estimators as their name and settings, anything else by its ``repr``."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, Scorer):
        return {"name": value.label, "params": value.settings()}
    return repr(value)
