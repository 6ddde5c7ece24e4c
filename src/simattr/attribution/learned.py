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

``form`` names the largest feature part used (``class`` < ``kernel`` < ``bilinear``). Stored as
safetensors (arrays) + JSON sidecar (settings, ``format`` 2; a file without ``format`` is a
format-1 model and loads with no signals); never pickle.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from simattr.errors import InvalidInputError, MissingFileError

FORMS = ("class", "kernel", "bilinear")
#: Sidecar format written by :meth:`LearnedAttribution.save` (1: no signals; 2: signals).
FORMAT = 2
#: Signals computed from the features themselves; any other signal name must be given.
BUILTIN_SIGNALS = ("cosine",)
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

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise InvalidInputError(f"form must be one of {', '.join(FORMS)}, got {self.form!r}")
        self.signals = tuple(self.signals)

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
        differences between subsets teach the scores.
        """
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
        self.n_classes = int(max(pool_labels.max(), np.max(target_labels)) + 1)
        if self.form == "bilinear":
            # uncentred: a centred projection cannot express u^T B v's per-image term u^T B mean
            mean = np.zeros(pool.shape[1])
            _, _, vt = np.linalg.svd(pool, full_matrices=False)
            self.arrays = {"mean": mean, "components": vt[: self.dim].T.copy()}
        rows = self._signal_rows(signals, pool, targets)
        self.arrays["signal_scale"] = np.array(
            [max(float(np.sqrt(np.mean(rows[n] ** 2))), 1e-12) for n in self.signals]
        )
        parts = self._image_parts(pool, pool_labels)
        gram, rhs = None, None
        for j in range(len(targets)):
            d = self._target_design(
                masks,
                parts,
                pool,
                pool_labels,
                targets[j],
                target_labels[j],
                tuple(rows[n][j] for n in self.signals),
            )
            d = d - d.mean(axis=0)
            y = margins[:, j] - margins[:, j].mean()
            gram = d.T @ d if gram is None else gram + d.T @ d
            rhs = d.T @ y if rhs is None else rhs + d.T @ y
        assert gram is not None and rhs is not None
        # ridge scaled by the mean diagonal, so one value suits every form
        scale = float(np.mean(np.diag(gram))) or 1.0
        theta = np.linalg.solve(gram + self.ridge * scale * 1e-3 * np.eye(len(gram)), rhs)
        self._unpack(theta)
        self.info = {"fit_subsets": len(masks), "fit_targets": len(targets)}
        return self

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
        ``signals``: as for :meth:`fit`, for these targets."""
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
        return out

    # -- files ---------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``path`` (safetensors) and ``path.json`` (settings), both atomically."""
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
        return model


__all__ = ["BUILTIN_SIGNALS", "FORMAT", "FORMS", "LearnedAttribution"]
