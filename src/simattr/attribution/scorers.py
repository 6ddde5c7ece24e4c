"""Scorers: how much each candidate in a pool is responsible for a target, higher = more.

A scorer is a small object with two steps, so that work shared by all targets of one pool
(a Gram matrix, a device copy) is done once per pool and not once per target:

* ``prepare(pool)`` takes the pool's (already normalised) features ``n_pool x D``;
* ``score(prepared, targets)`` returns ``n_targets x n_pool`` scores for a block of targets.

New methods plug in by subclassing :class:`Scorer` and registering in :data:`SCORERS`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from simattr.attribution.esvm import PoolSystem, fit_newton, fit_reference
from simattr.attribution.esvm_batched import BatchedPool, fit_batched
from simattr.errors import InvalidInputError


class Scorer:
    """Base class: subclasses set ``name`` and implement ``prepare`` and ``score``."""

    name: ClassVar[str] = ""

    def prepare(self, pool: np.ndarray) -> Any:
        return pool

    def score(self, prepared: Any, targets: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class L2Scorer(Scorer):
    """Negative Euclidean distance: the nearest candidates score highest."""

    name = "l2"

    def score(self, prepared: np.ndarray, targets: np.ndarray) -> np.ndarray:
        t = torch.as_tensor(targets, dtype=torch.float64)
        p = torch.as_tensor(prepared, dtype=torch.float64)
        return (-torch.cdist(t, p)).numpy()


class CosineScorer(Scorer):
    """Cosine similarity (on normalised features, a plain dot product)."""

    name = "cosine"

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
    """

    name = "esvm"
    solvers: ClassVar[tuple[str, ...]] = ("batched", "newton", "reference")

    def __init__(self, C: float = 0.1, solver: str = "batched", device: str = "cpu") -> None:
        if not (isinstance(C, int | float) and np.isfinite(C) and C > 0):
            raise InvalidInputError(f"C must be a positive number, got {C!r}")
        if solver not in self.solvers:
            raise InvalidInputError(f"unknown ESVM solver {solver!r}; choose one of {self.solvers}")
        self.C = float(C)
        self.solver = solver
        self.device = device

    def prepare(self, pool: np.ndarray) -> Any:
        if self.solver == "reference":
            return np.asarray(pool, dtype=np.float64)
        if self.solver == "batched":
            return BatchedPool.build(pool, C=self.C, device=self.device)
        return PoolSystem.build(pool, device=self.device)

    def score(self, prepared: Any, targets: np.ndarray) -> np.ndarray:
        if self.solver == "batched":
            solution = fit_batched(targets, prepared)
            return solution.decision.double().cpu().numpy()
        if self.solver == "reference":
            fits = [fit_reference(t, prepared, self.C) for t in targets]
            coef = np.stack([f.coef for f in fits])
            intercept = np.array([f.intercept for f in fits])
            return coef @ prepared.T + intercept[:, None]
        fits = [fit_newton(t, prepared, self.C) for t in targets]
        coef = torch.as_tensor(np.stack([f.coef for f in fits]), device=prepared.X.device)
        intercept = torch.as_tensor([f.intercept for f in fits], device=prepared.X.device)
        return (coef @ prepared.X[:, :-1].T + intercept[:, None]).cpu().numpy()


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
    """

    name = "lda"

    #: Measured against LinearSVC on CIFAR-10 class pools (benchmarks/lda_agreement.py):
    #: top-100 overlap 0.85 / Spearman 0.98 on PCA-512 pixel features and 0.87 / 0.99 on the
    #: shipped backbone's features at 0.9 (plain cosine: 0.47-0.54 / 0.83-0.84); agreement
    #: falls off below 0.8 and above 0.95.
    DEFAULT_SHRINKAGE: ClassVar[float] = 0.9

    def __init__(self, shrinkage: float = DEFAULT_SHRINKAGE) -> None:
        if not (isinstance(shrinkage, int | float) and 0 < shrinkage <= 1):
            raise InvalidInputError(f"shrinkage must be in (0, 1], got {shrinkage!r}")
        self.shrinkage = float(shrinkage)

    def prepare(self, pool: np.ndarray) -> Any:
        x = torch.as_tensor(pool, dtype=torch.float64)
        mu = x.mean(dim=0)
        centred = x - mu
        cov = centred.T @ centred / max(1, len(x) - 1)
        scale = torch.trace(cov) / cov.shape[0]
        eye = torch.eye(cov.shape[0], dtype=cov.dtype)
        shrunk = (1 - self.shrinkage) * cov + self.shrinkage * scale * eye
        factor = torch.linalg.cholesky(shrunk)
        whitened = torch.cholesky_solve(centred.T, factor).T  # (x - mu) S^-1, row per candidate
        return mu, whitened

    def score(self, prepared: Any, targets: np.ndarray) -> np.ndarray:
        mu, whitened = prepared
        t = torch.as_tensor(targets, dtype=torch.float64) - mu
        return (t @ whitened.T).numpy()


SCORERS: dict[str, type[Scorer]] = {
    "esvm": ExemplarSVMScorer,
    "l2": L2Scorer,
    "cosine": CosineScorer,
    "lda": WhitenedExemplarScorer,
}
