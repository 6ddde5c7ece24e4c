"""The ``learned`` attribution: a score in logits, fitted on counterfactual (retraining) data.

From models trained on random subsets of a pool (an LDS run: subset masks and every target's
margin under each model) this fits a function of a training image and a target that predicts
how much the training image adds to the target's margin. A score is in logit units and signed
(a negative score marks a harmful image); the sum of the scores of a set is the predicted margin
change for including the set, so removing a set changes the margin by minus that sum. It ranks
images of every class.

The score of training image i (features x_i, label y_i) for target t (features z_t, label c_t)
adds three parts, each linear in its parameters, so the whole is fitted by one ridge regression
of margins on subset sums (the datamodel's linear form, shared across targets through features):

* ``class``: ``A[c_t, y_i]``, a 10 x 10 table: what one more image of class y does to a target
  of class c (the class-count prior, with every class, signed);
* ``kernel``: ``w[same, bin]`` by the image's similarity rank to the target among the pool's
  images of the same class (same = 1) or of the other classes (same = 0), in log-spaced bins:
  the nearest same-class images help, the nearest other-class images hurt;
* ``bilinear``: ``u(x_i)^T B v(z_t)`` on the first ``dim`` principal components of the features
  (of the uncentred pool), a low-rank correction learned across targets;
* ``signals`` (format 2, optional, with any form): learned weights, one for same-class and one
  for other-class images, on per-pair scores that already carry attribution signal: ``cosine``
  (computed here from the features) or any score given by name at fit and score time (a TRAK
  score of the explained model, say). Each signal is divided by its root-mean-square over the
  fitted pairs, so one ridge penalty suits them all; the weights turn it into logits.

``form`` names the largest feature part used (``class`` < ``kernel`` < ``bilinear``).

**Calibration.** A ridge fit on a few tens of subset models overstates its scores: part of what
it fitted is those models' noise, which new models do not repeat (measured: observed margin
change against predicted had slope 0.28 on held-out models). :meth:`LearnedAttribution.calibrate`
measures that slope by cross-validation over the subset models and keeps it as a factor, so the
scores of a calibrated model are expected margin changes on models it never saw.

Stored as safetensors (arrays) + JSON sidecar (settings, ``format`` 3: with the calibration
factor and how it was measured; format 2 files have signals and no calibration, a file without
``format`` is a format-1 model with neither; both load uncalibrated); never pickle.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from simattr.errors import InvalidInputError, MissingFileError

FORMS = ("class", "kernel", "bilinear")
#: Sidecar format written by :meth:`LearnedAttribution.save` (1: no signals; 2: signals;
#: 3: calibration).
FORMAT = 3
#: Signals computed from the features themselves; any other signal name must be given.
BUILTIN_SIGNALS = ("cosine",)
#: Ridge penalties (relative to the Gram matrix's mean diagonal, x 1e-3) that
#: :meth:`LearnedAttribution.calibrate` searches when asked to choose: on CIFAR-10 with 16-80
#: subset models the held-out fit peaked near 1e4-1e5 (benchmarks/results/learned-cpu-v3/).
RIDGE_GRID = (1.0, 10.0, 1e2, 1e3, 1e4, 1e5, 1e6)
#: Upper edges of the similarity-rank bins (rank 1 = nearest); the last bin holds the rest.
RANK_EDGES = (1, 3, 10, 30, 100, 300)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _cells(pool: np.ndarray, pool_labels: np.ndarray, z: np.ndarray, c: int) -> np.ndarray:
    """Kernel cell of every pool image for one target: ``same * n_bins + bin``."""
    sim = pool @ z
    same = pool_labels == c
    cells = np.empty(len(pool), dtype=np.int64)
    n_bins = len(RANK_EDGES) + 1
    for flag in (True, False):
        idx = np.flatnonzero(same == flag)
        order = idx[np.argsort(-sim[idx], kind="stable")]
        ranks = np.empty(len(order), dtype=np.int64)
        ranks[:] = np.searchsorted(RANK_EDGES, np.arange(1, len(order) + 1), side="left")
        cells[order] = int(flag) * n_bins + ranks
    return cells


class _Problem(NamedTuple):
    """Checked fitting inputs (unit features, float masks) and what every fit shares."""

    pool: np.ndarray
    pool_labels: np.ndarray
    masks: np.ndarray
    margins: np.ndarray
    targets: np.ndarray
    target_labels: np.ndarray
    parts: dict[str, np.ndarray]
    rows: dict[str, np.ndarray]


def _slope_r2(sxy: np.ndarray, sxx: np.ndarray, syy: np.ndarray) -> dict[str, float]:
    """Pooled slope through the origin and its R^2 from per-fold sums (0 where undefined)."""
    xy, xx, yy = float(np.sum(sxy)), float(np.sum(sxx)), float(np.sum(syy))
    if xx <= 0 or yy <= 0:
        return {"slope": 0.0, "r2": 0.0}
    return {"slope": xy / xx, "r2": xy * xy / (xx * yy)}


def _calibration_grid(n: int, folds: int, ridges: float | Sequence[float]) -> list[float]:
    """Check :meth:`LearnedAttribution.calibrate`'s folds against ``n`` models; the ridges."""
    if isinstance(folds, bool) or not isinstance(folds, int | np.integer) or folds < 2:
        raise InvalidInputError(f"folds must be an integer >= 2, got {folds!r}")
    if n < 2 * folds:
        raise InvalidInputError(
            f"calibrate needs at least 2 subset models per fold: {n} models cannot fill "
            f"folds={folds}; pass fewer folds or more models"
        )
    grid = [float(ridges)] if np.isscalar(ridges) else [float(r) for r in ridges]
    if not grid or not all(np.isfinite(r) and r >= 0 for r in grid):
        raise InvalidInputError(f"ridges must be finite values >= 0, got {ridges!r}")
    return grid


@dataclass
class LearnedAttribution:
    """A fitted ``learned`` model; :meth:`fit` learns it, :meth:`scores` applies it."""

    form: str = "bilinear"
    dim: int = 16
    ridge: float = 1.0
    n_classes: int = 10
    feature_dim: int = 0
    #: names of per-pair signals with learned weights (``cosine`` or scores given by name)
    signals: tuple[str, ...] = ()
    #: arrays: ``class_table`` (C, C) [target class, image class], ``kernel`` (2 * bins,),
    #: ``bilinear`` (dim, dim), ``mean`` (D,), ``components`` (D, dim)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    #: factor applied to every score: 1.0 until :meth:`calibrate` measures it
    calibration: float = 1.0
    #: how the factor was measured (empty when uncalibrated): see :meth:`calibrate`
    calibration_info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise InvalidInputError(f"form must be one of {', '.join(FORMS)}, got {self.form!r}")
        self.signals = tuple(self.signals)

    @property
    def calibrated(self) -> bool:
        """Whether :meth:`scores` are scaled by a factor measured on held-out subset models
        (:meth:`calibrate`); an uncalibrated model's scores are the raw ridge fit's, too large
        when it was fitted on few models."""
        return bool(self.calibration_info)

    def _signal_rows(
        self,
        given: dict[str, np.ndarray] | None,
        pool: np.ndarray,
        targets: np.ndarray,
    ) -> dict[str, np.ndarray]:
        """Each signal as ``(T, n_pool)`` float64: ``cosine`` from the unit features, the rest
        from ``given`` (refused by name when missing or of another shape)."""
        given = given or {}
        out = {}
        for name in self.signals:
            if name == "cosine":
                out[name] = targets @ pool.T
                continue
            if name not in given:
                raise InvalidInputError(
                    f"this learned model uses the signal {name!r}: pass signals={{{name!r}: "
                    "scores of shape (n_targets, n_pool)}"
                )
            arr = np.asarray(given[name], dtype=np.float64)
            if arr.shape != (len(targets), len(pool)) or not np.isfinite(arr).all():
                raise InvalidInputError(
                    f"signal {name!r} must be finite scores of shape {(len(targets), len(pool))}, "
                    f"got shape {arr.shape}"
                )
            out[name] = arr
        return out

    # -- the design: one column per parameter, summed over a subset ---------------------------
    def _image_parts(self, pool: np.ndarray, pool_labels: np.ndarray) -> dict[str, np.ndarray]:
        onehot = np.zeros((len(pool), self.n_classes))
        onehot[np.arange(len(pool)), pool_labels] = 1.0
        parts = {"onehot": onehot}
        if self.form == "bilinear":
            parts["u"] = (pool - self.arrays["mean"]) @ self.arrays["components"]
        return parts

    def _target_design(
        self,
        masks: np.ndarray,
        parts: dict[str, np.ndarray],
        pool: np.ndarray,
        pool_labels: np.ndarray,
        z: np.ndarray,
        c: int,
        signal_rows: tuple[np.ndarray, ...] = (),
    ) -> np.ndarray:
        """``(S, n_params)``: the subset sums whose weights are the parameters, for one target."""
        n_bins = len(RANK_EDGES) + 1
        cols = [np.zeros((len(masks), self.n_classes * self.n_classes))]
        block = masks @ parts["onehot"]  # (S, C) class counts
        cols[0][:, c * self.n_classes : (c + 1) * self.n_classes] = block
        if self.form in ("kernel", "bilinear"):
            cells = _cells(pool, pool_labels, z, c)
            onehot = np.zeros((len(pool), 2 * n_bins))
            onehot[np.arange(len(pool)), cells] = 1.0
            cols.append(masks @ onehot)
        if self.form == "bilinear":
            v = (z - self.arrays["mean"]) @ self.arrays["components"]
            u_sum = masks @ parts["u"]  # (S, dim); column (a, b) is u_a * v_b
            cols.append((u_sum[:, :, None] * v[None, None, :]).reshape(len(masks), -1))
        same = (pool_labels == c).astype(np.float64)
        for k, row in enumerate(signal_rows):
            row = row / self.arrays["signal_scale"][k]
            cols.append(np.stack([masks @ (row * same), masks @ (row * (1.0 - same))], axis=1))
        return np.hstack(cols)

    def _check_dim(self, x: np.ndarray, what: str) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or (self.feature_dim and x.shape[1] != self.feature_dim):
            raise InvalidInputError(
                f"{what} have {x.shape[-1] if x.ndim else 0} feature dimensions; this learned "
                f"model was fitted on {self.feature_dim}: use the same backbone's features"
            )
        return x

    @contextlib.contextmanager
    def _unchanged_on_error(self) -> Iterator[None]:
        """A refused or failed fit leaves the model as it was (a fitted one still scores)."""
        saved = (self.arrays, self.n_classes, self.feature_dim)
        try:
            yield
        except BaseException:
            self.arrays, self.n_classes, self.feature_dim = saved
            raise

    def _prepare(
        self,
        pool: np.ndarray,
        pool_labels: np.ndarray,
        masks: np.ndarray,
        margins: np.ndarray,
        targets: np.ndarray,
        target_labels: np.ndarray,
        signals: dict[str, np.ndarray] | None,
    ) -> _Problem:
        """Check the inputs and set what does not depend on which subset models are fitted
        (class count, principal components of the pool, signal scales), so that :meth:`fit`
        and every fold of :meth:`calibrate` share them."""
        pool = _unit(self._check_dim(pool, "pool features"))
        self.feature_dim = pool.shape[1]
        targets = _unit(self._check_dim(targets, "target features"))
        masks = np.asarray(masks, dtype=np.float64)
        margins = np.asarray(margins, dtype=np.float64)
        if masks.shape[1] != len(pool) or margins.shape != (len(masks), len(targets)):
            raise InvalidInputError(
                f"masks {masks.shape}, margins {margins.shape}, pool {pool.shape[0]} and "
                f"targets {len(targets)} do not fit together"
            )
        pool_labels = np.asarray(pool_labels, dtype=np.int64)
        target_labels = np.asarray(target_labels, dtype=np.int64)
        self.n_classes = int(max(pool_labels.max(), np.max(target_labels)) + 1)
        if self.form == "bilinear":
            # uncentred: a centred projection cannot express u^T B v's per-image term u^T B mean
            mean = np.zeros(pool.shape[1])
            _, _, vt = np.linalg.svd(pool, full_matrices=False)
            self.arrays = {"mean": mean, "components": vt[: self.dim].T.copy()}
        else:
            self.arrays = {}
        rows = self._signal_rows(signals, pool, targets)
        self.arrays["signal_scale"] = np.array(
            [max(float(np.sqrt(np.mean(rows[n] ** 2))), 1e-12) for n in self.signals]
        )
        parts = self._image_parts(pool, pool_labels)
        return _Problem(pool, pool_labels, masks, margins, targets, target_labels, parts, rows)

    def _designs(self, pr: _Problem) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Each target's design ``(S, n_params)`` over every subset model, with its margins."""
        for j in range(len(pr.targets)):
            d = self._target_design(
                pr.masks,
                pr.parts,
                pr.pool,
                pr.pool_labels,
                pr.targets[j],
                int(pr.target_labels[j]),
                tuple(pr.rows[n][j] for n in self.signals),
            )
            yield d, pr.margins[:, j]

    def _solve(self, gram: np.ndarray, rhs: np.ndarray, ridge: float | None = None) -> np.ndarray:
        # ridge scaled by the mean diagonal, so one value suits every form
        ridge = self.ridge if ridge is None else ridge
        scale = float(np.mean(np.diag(gram))) or 1.0
        return np.linalg.solve(gram + ridge * scale * 1e-3 * np.eye(len(gram)), rhs)

    def _normal_equations(
        self, pr: _Problem, row_sets: list[np.ndarray]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Ridge's ``(gram, rhs)`` for each set of subset models, in one pass over the targets.

        Each target's design and margins are centred over the set's models (the target's own
        intercept), so only differences between subsets teach the scores."""
        acc: list[list[Any]] = [[0.0, 0.0] for _ in row_sets]
        for d, y in self._designs(pr):
            for a, rows in zip(acc, row_sets, strict=True):
                dr = d[rows] - d[rows].mean(axis=0)
                a[0] = a[0] + dr.T @ dr
                a[1] = a[1] + dr.T @ (y[rows] - y[rows].mean())
        return [(g, r) for g, r in acc]

    def fit(
        self,
        pool: np.ndarray,
        pool_labels: np.ndarray,
        masks: np.ndarray,
        margins: np.ndarray,
        targets: np.ndarray,
        target_labels: np.ndarray,
        signals: dict[str, np.ndarray] | None = None,
    ) -> LearnedAttribution:
        """Fit on ``margins`` ``(S, T)`` of models trained on ``masks`` ``(S, n_pool)``.

        ``pool``/``targets`` are features (``(n_pool, D)``, ``(T, D)``); labels are class
        indices; ``signals`` maps each non-builtin name of :attr:`signals` to ``(T, n_pool)``
        scores. Each target's margins are centred over the subsets (its own intercept), so only
        differences between subsets teach the scores. The result is uncalibrated (factor 1.0,
        ``info["calibrated"]`` False): its scores are too large when ``S`` is small, which
        :meth:`calibrate` measures and corrects.
        """
        with self._unchanged_on_error():
            pr = self._prepare(pool, pool_labels, masks, margins, targets, target_labels, signals)
            ((gram, rhs),) = self._normal_equations(pr, [np.arange(len(pr.masks))])
            self._unpack(self._solve(gram, rhs))
        self.calibration, self.calibration_info = 1.0, {}
        self.info = {"fit_subsets": len(pr.masks), "fit_targets": len(pr.targets)}
        self.info["calibrated"] = False
        return self

    def calibrate(
        self,
        pool: np.ndarray,
        pool_labels: np.ndarray,
        masks: np.ndarray,
        margins: np.ndarray,
        targets: np.ndarray,
        target_labels: np.ndarray,
        signals: dict[str, np.ndarray] | None = None,
        *,
        folds: int = 4,
        seed: int = 0,
        ridges: Sequence[float] | None = None,
    ) -> LearnedAttribution:
        """Fit on every subset model, as :meth:`fit` does, and scale the scores so that they
        predict margin changes on models the fit did not see.

        ``ridges``, when given, also chooses the ridge penalty on the same held-out folds: the
        one whose held-out predictions explain the margins best (pooled R^2, among those with a
        positive slope) becomes :attr:`ridge`. Choosing it costs almost nothing more (the folds'
        normal equations do not depend on it), and it matters: with few subset models the
        best penalty is orders of magnitude above the one that suits many.

        Why: a ridge fit on few subset models overstates its scores, because part of what it
        fits is those models' training noise; the sum of its scores over a set then predicts a
        larger margin change than removing the set causes. The factor is the least-squares slope
        of observed on predicted margins of held-out models, measured by cross-validation over
        the subset models (rows of ``masks``/``margins``): they are split into ``folds`` groups
        by ``numpy.random.default_rng(seed).permutation`` (``numpy.array_split`` of it); for each
        group, a model with the same settings is fitted on the other groups, and predicts each
        held-out model's margin of every target as the sum of its scores over the subset. Both
        observed and predicted margins are centred per target over the group's models, which
        removes each target's intercept (the fit never predicts one), so the slope is fitted
        through the origin over all cells (model x target) of all groups. The slope is not
        clipped: it is the measured correction, not a tuning knob; a slope <= 0 (held-out
        predictions that do not follow the margins) is refused, since no positive factor would
        make such scores margin changes and a negative one would invert the ranking.

        The folds' fits see ``(folds - 1) / folds`` of the models, so they overfit a little more
        than the final fit on all of them, and the factor errs small (predicted changes then
        understate rather than overstate): on the synthetic problems of the tests (96 models,
        256 bilinear parameters, ``folds=8``) fresh models' slope went from about 0.55 to about
        1.1. More folds narrow that gap; their cost is small (one ridge system each; the passes
        over the targets stay two). A refused call leaves the model as it was.

        Records :attr:`calibration_info`: ``slope`` (the factor), ``r2`` (of the fit through
        the origin, pooled), ``cells``, ``folds``, ``subsets``, ``targets`` and ``fold_slopes``
        (each group's own slope, to see how stable it is); ``info["calibrated"]`` is True.
        Cost: two passes over the targets (one for the ``folds`` + 1 ridge systems, one for the
        held-out predictions), about twice a :meth:`fit`; measured on one thread with 32 models,
        3,000 targets and a 10,000-image pool (``bilinear``, dim 16, ``cosine``): 21 s of CPU.
        """
        n = len(np.asarray(masks))
        grid = _calibration_grid(n, folds, self.ridge if ridges is None else ridges)
        with self._unchanged_on_error():
            pr = self._prepare(pool, pool_labels, masks, margins, targets, target_labels, signals)
            held = np.array_split(np.random.default_rng(seed).permutation(n), folds)
            train = [np.setdiff1d(np.arange(n), h) for h in held]
            systems = self._normal_equations(pr, [*train, np.arange(n)])
            thetas = [[self._solve(g, r, ridge) for g, r in systems[:-1]] for ridge in grid]
            sxy, sxx, syy = self._held_out_sums(pr, held, thetas)
            search = {grid[i]: _slope_r2(sxy[i], sxx[i], syy) for i in range(len(grid))}
            usable = [i for i in range(len(grid)) if search[grid[i]]["slope"] > 0]
            best = max(usable, key=lambda i: search[grid[i]]["r2"]) if usable else 0
            chosen = grid[best]
            sxy, sxx = sxy[best], sxx[best]
            if sxx.sum() <= 0 or syy.sum() <= 0:
                raise InvalidInputError(
                    "calibrate found no variation in held-out predictions or margins: "
                    "the subsets or margins are all alike"
                )
            slope = float(sxy.sum() / sxx.sum())
            if not slope > 0:
                raise InvalidInputError(
                    f"calibration slope {slope:.3g} <= 0: this learned model does not predict "
                    "margins of subset models it was not fitted on; fit on more models or a "
                    "larger ridge"
                )
            self._unpack(self._solve(*systems[-1], chosen))
        self.ridge = chosen
        self.calibration = slope
        self.calibration_info = {
            "slope": slope,
            "r2": float(sxy.sum() ** 2 / (sxx.sum() * syy.sum())),
            "cells": int(sum(len(h) for h in held) * len(pr.targets)),
            "folds": int(folds),
            "subsets": int(n),
            "targets": len(pr.targets),
            "fold_slopes": [float(a / b) if b > 0 else None for a, b in zip(sxy, sxx, strict=True)],
            "seed": int(seed),
            **({"ridge_search": {str(k): v for k, v in search.items()}} if ridges else {}),
        }
        self.info = {"fit_subsets": n, "fit_targets": len(pr.targets), "calibrated": True}
        return self

    def _held_out_sums(
        self, pr: _Problem, held: list[np.ndarray], thetas: list[list[np.ndarray]]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per ridge and fold, the sums of predicted x observed and predicted^2 over the fold's
        held-out cells (each centred per target), and per fold observed^2. A design row times
        theta is the sum of the scores over the subset (each score is linear in theta), so no
        ``(T, n_pool)`` score matrix is built."""
        sxy = np.zeros((len(thetas), len(held)))
        sxx = np.zeros((len(thetas), len(held)))
        syy = np.zeros(len(held))
        for d, y in self._designs(pr):
            for k, h in enumerate(held):
                obs = y[h] - y[h].mean()
                syy[k] += obs @ obs
                for i, per_fold in enumerate(thetas):
                    pred = d[h] @ per_fold[k]
                    pred = pred - pred.mean()
                    sxy[i, k] += pred @ obs
                    sxx[i, k] += pred @ pred
        return sxy, sxx, syy

    def _unpack(self, theta: np.ndarray) -> None:
        c2 = self.n_classes * self.n_classes
        self.arrays["class_table"] = theta[:c2].reshape(self.n_classes, self.n_classes)
        k = 2 * (len(RANK_EDGES) + 1)
        if self.form in ("kernel", "bilinear"):
            self.arrays["kernel"] = theta[c2 : c2 + k]
        end = c2 + (k if self.form in ("kernel", "bilinear") else 0)
        if self.form == "bilinear":
            self.arrays["bilinear"] = theta[end : end + self.dim**2].reshape(self.dim, self.dim)
            end += self.dim**2
        # (n_signals, 2): weight on same-class and on other-class images, per unit signal_scale
        self.arrays["signal_weights"] = theta[end:].reshape(len(self.signals), 2)

    def scores(
        self,
        pool: np.ndarray,
        pool_labels: np.ndarray,
        targets: np.ndarray,
        target_labels: np.ndarray,
        signals: dict[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """``(T, n_pool)`` signed scores in logits: image i's predicted contribution to target
        t's margin (removing a set changes the margin by minus the sum of its scores).
        ``signals``: as for :meth:`fit`, for these targets. A calibrated model's scores are the
        raw fit's times :attr:`calibration` (see :meth:`calibrate`), expected changes on models
        not fitted on; an uncalibrated one's overstate them when fitted on few models."""
        if "class_table" not in self.arrays:
            raise InvalidInputError("this learned model is not fitted; call fit() or load()")
        pool = _unit(self._check_dim(pool, "pool features"))
        targets = _unit(self._check_dim(targets, "target features"))
        pool_labels = np.asarray(pool_labels, dtype=np.int64)
        out = self.arrays["class_table"][np.asarray(target_labels)][:, pool_labels]
        if self.form in ("kernel", "bilinear"):
            for j in range(len(targets)):
                out[j] += self.arrays["kernel"][
                    _cells(pool, pool_labels, targets[j], int(target_labels[j]))
                ]
        if self.form == "bilinear":
            u = (pool - self.arrays["mean"]) @ self.arrays["components"]
            v = (targets - self.arrays["mean"]) @ self.arrays["components"]
            out += v @ self.arrays["bilinear"].T @ u.T
        rows = self._signal_rows(signals, pool, targets)
        same = np.asarray(target_labels)[:, None] == pool_labels[None, :]
        for k, name in enumerate(self.signals):
            w_same, w_other = self.arrays["signal_weights"][k]
            out += rows[name] / self.arrays["signal_scale"][k] * np.where(same, w_same, w_other)
        if self.calibration != 1.0:
            out *= self.calibration
        return out

    # -- files ---------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``path`` (safetensors: the raw fitted arrays) and ``path.json`` (settings, the
        calibration factor and how it was measured), both atomically."""
        from safetensors.numpy import save_file

        from simattr._io import atomic_write, write_json

        path = Path(path)
        tensors = {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in self.arrays.items()}
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))
        write_json(
            path.with_name(path.name + ".json"),
            {
                "kind": "learned-attribution",
                "format": FORMAT,
                "form": self.form,
                "signals": list(self.signals),
                "dim": self.dim,
                "ridge": self.ridge,
                "n_classes": self.n_classes,
                "feature_dim": self.feature_dim,
                "rank_edges": list(RANK_EDGES),
                "info": self.info,
                "calibration": self.calibration,
                "calibration_info": self.calibration_info,
            },
        )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LearnedAttribution:
        """Read a model written by :meth:`save` (safetensors + JSON; nothing is unpickled)."""
        from safetensors.numpy import load_file

        path = Path(path)
        side = path.with_name(path.name + ".json")
        if not path.exists() or not side.exists():
            raise MissingFileError(f"{path} or its sidecar {side.name} is missing")
        meta = json.loads(side.read_text(encoding="utf-8"))
        if meta.get("kind") != "learned-attribution" or tuple(meta["rank_edges"]) != RANK_EDGES:
            raise InvalidInputError(f"{side} does not describe a learned attribution of this kind")
        model = cls(
            form=meta["form"],
            dim=int(meta["dim"]),
            ridge=float(meta["ridge"]),
            n_classes=int(meta["n_classes"]),
            feature_dim=int(meta["feature_dim"]),
            signals=tuple(meta.get("signals", ())),  # format 1 had none
        )
        if int(meta.get("format", 1)) > FORMAT:
            raise InvalidInputError(
                f"{side} is format {meta['format']}; this simattr reads <= {FORMAT}"
            )
        model.arrays = dict(load_file(str(path)))
        if "signal_weights" not in model.arrays:  # format 1
            model.arrays["signal_weights"] = np.zeros((0, 2))
            model.arrays["signal_scale"] = np.zeros(0)
        model.info = meta.get("info", {})
        # formats 1 and 2 had no calibration: their scores are the raw fit's
        model.calibration = float(meta.get("calibration", 1.0))
        model.calibration_info = dict(meta.get("calibration_info") or {})
        if not np.isfinite(model.calibration) or model.calibration <= 0:
            raise InvalidInputError(
                f"{side} has calibration {model.calibration!r}; a factor must be finite and > 0"
            )
        return model


__all__ = ["BUILTIN_SIGNALS", "FORMAT", "FORMS", "RIDGE_GRID", "LearnedAttribution"]
