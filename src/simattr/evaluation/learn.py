"""Fit a calibrated ``learned`` attribution from an LDS folder: the practitioner's path.

``simattr lds`` trains models on random halves of a recipe's pool and stores each target's
margin under each model; :class:`~simattr.attribution.learned.LearnedAttribution` learns from
such data a score, in logits, of a training image for a target. :func:`fit_learned` joins the
two: it reads the LDS folder and the features ``simattr features`` saved for both splits,
checks that they describe the same data (a model fitted on features of other images would
silently score the wrong rows), calibrates the model on held-out subset models (so a score is
the expected margin change on a model the fit never saw) and saves it with a record of what it
was fitted on: the LDS run's identity, the subset models and the targets used. A user who wants
to judge the model on fresh data holds some subsets or targets out (``subsets=``/``targets=``)
and scores them later with ``lds_score``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from simattr.errors import InvalidInputError
from simattr.evaluation.lds import LdsData, load_lds

if TYPE_CHECKING:
    from simattr.attribution.learned import LearnedAttribution

PathLike = str | os.PathLike[str]


def fit_learned(
    lds_dir: PathLike,
    train_features: PathLike,
    test_features: PathLike,
    out: PathLike,
    *,
    form: str = "bilinear",
    dim: int = 16,
    ridge: float | None = None,
    signals: Sequence[str] = ("cosine",),
    folds: int = 4,
    seed: int = 0,
    targets: Sequence[int] | np.ndarray | None = None,
    subsets: Sequence[int] | np.ndarray | None = None,
    data: str | None = None,
) -> LearnedAttribution:
    """Fit a ``learned`` attribution on the trained models of an LDS folder, calibrate it by
    ``folds``-fold cross-validation over those models, and save it to ``out`` (safetensors and
    its JSON sidecar, both written atomically).

    ``train_features``/``test_features``: the ``.npy`` files ``simattr features`` wrote for the
    LDS run's dataset; their sidecars must name the train and test split with the fingerprints
    the LDS folder's manifest records, else they are refused (features of other images would
    be matched to the wrong rows). Labels come from ``data`` (the LDS run's dataset), or, when
    it is not given, from the dataset root the features' sidecars record; either must have the
    LDS run's fingerprints. ``targets`` (test rows of the LDS run) and ``subsets`` (indices of
    its subset models) restrict the fit, so that the rest can judge it later; by default every
    target and every trained model. Models not trained yet are never used.

    ``ridge=None`` (the default) lets the calibration folds choose the penalty from
    :data:`~simattr.attribution.learned.RIDGE_GRID` (the best held-out R^2): the right one
    depends on how many subset models there are, by orders of magnitude.
    ``form``, ``dim``, ``signals``, ``folds`` and ``seed`` are those of
    :class:`~simattr.attribution.learned.LearnedAttribution` and its ``calibrate`` (only the
    signals computed from features, ``cosine``, can be used here). The saved model's ``info``
    records the LDS folder, its manifest's digest, recipe, seed and fingerprints, the subsets
    and targets used, a digest of the margins fitted, and the features files.
    """
    from simattr._io import check_not_input, check_writable

    lds_path, out = Path(lds_dir), Path(out)
    if out.suffix != ".safetensors":
        raise InvalidInputError(f"`out` {out} must end with .safetensors (the model's weights)")
    check_not_input(
        {"`out`": out}, {"`train_features`": train_features, "`test_features`": test_features}
    )
    if lds_path.resolve() in out.resolve().parents:
        raise InvalidInputError(
            f"`out` {out} lies inside the LDS folder {lds_path}; write the model elsewhere"
        )
    check_writable(out)
    _check_settings(signals, folds)
    lds = load_lds(lds_path)
    rows = _subset_rows(lds, subsets, lds_path)
    if len(rows) < 2 * folds:
        raise InvalidInputError(
            f"`folds={folds}` needs {2 * folds} subset models (2 per fold); {lds_path} has "
            f"{len(rows)} trained to fit on: pass fewer `folds` or train more (`simattr lds`)"
        )
    cols = _target_columns(lds, targets, lds_path)
    x_train, y_train = _split_inputs(lds, "train", train_features, data, lds_path)
    x_test, y_test = _split_inputs(lds, "test", test_features, data, lds_path)
    _check_rows(lds.pool, len(x_train), "`train_features`", "pool row", lds_path)
    _check_rows(lds.targets[cols], len(x_test), "`test_features`", "target", lds_path)

    from simattr.attribution.learned import RIDGE_GRID, LearnedAttribution

    tgt = lds.targets[cols]
    masks, margins = lds.masks[rows], lds.margins[np.ix_(rows, cols)]
    grid = RIDGE_GRID if ridge is None else (ridge,)
    model = LearnedAttribution(form=form, dim=dim, ridge=grid[0], signals=tuple(signals))
    model.calibrate(
        x_train[lds.pool], y_train[lds.pool], masks, margins, x_test[tgt], y_test[tgt],
        folds=folds, seed=seed, ridges=grid,
    )  # fmt: skip
    model.info.update(_provenance(lds, lds_path, rows, tgt, margins, train_features, test_features))
    model.save(out)
    return model


def _check_settings(signals: Sequence[str], folds: int) -> None:
    """Refuse, before any file is read, signals that need scores given by hand and a fold
    count that is not an integer >= 2."""
    from simattr.attribution.learned import BUILTIN_SIGNALS

    if isinstance(signals, str):
        raise InvalidInputError(
            f"`signals` must be a sequence of names, got the string {signals!r}"
        )
    other = [s for s in signals if s not in BUILTIN_SIGNALS]
    if other:
        raise InvalidInputError(
            f"`signals` {other[0]!r} is not computed from features; here only "
            f"{', '.join(BUILTIN_SIGNALS)} can be used (fit LearnedAttribution by hand to give "
            "other scores)"
        )
    if isinstance(folds, bool) or not isinstance(folds, int | np.integer) or folds < 2:
        raise InvalidInputError(f"`folds` must be an integer >= 2, got {folds!r}")


def _subset_rows(
    lds: LdsData, subsets: Sequence[int] | np.ndarray | None, where: Path
) -> np.ndarray:
    """Indices of the subset models to fit on: the trained ones, or the given ones (each
    trained, none twice)."""
    from simattr.validation import check_indices

    trained = lds.trained
    if not trained.any():
        raise InvalidInputError(
            f"the LDS folder {where} has no trained subset model yet; let `simattr lds` train "
            "some first"
        )
    if subsets is None:
        return np.flatnonzero(trained)
    rows = check_indices(np.ravel(np.asarray(subsets)), len(lds.masks), "`subsets`")
    if len(np.unique(rows)) != len(rows):
        raise InvalidInputError("`subsets` names a subset model twice")
    missing = rows[~trained[rows]]
    if len(missing):
        raise InvalidInputError(
            f"`subsets` names subset model {int(missing[0])}, which {where} has not trained yet"
        )
    return np.sort(rows)


def _target_columns(
    lds: LdsData, targets: Sequence[int] | np.ndarray | None, where: Path
) -> np.ndarray:
    """Columns of ``lds.margins`` for the chosen targets (test rows of the LDS run)."""
    if targets is None:
        return np.arange(len(lds.targets))
    wanted = np.ravel(np.asarray(targets))
    if wanted.size == 0 or wanted.dtype.kind not in "iu":
        raise InvalidInputError(f"`targets` must be test rows (integers), got {targets!r}")
    column = {int(t): j for j, t in enumerate(lds.targets)}
    absent = [int(t) for t in wanted if int(t) not in column]
    if absent:
        raise InvalidInputError(
            f"`targets` names test row {absent[0]}, which is not a target of the LDS run in {where}"
        )
    cols = np.array([column[int(t)] for t in wanted], dtype=np.int64)
    if len(np.unique(cols)) != len(cols):
        raise InvalidInputError("`targets` names a test row twice")
    return cols


def _split_inputs(
    lds: LdsData, split: str, path: PathLike, data: str | None, where: Path
) -> tuple[np.ndarray, np.ndarray]:
    """The features of one split and its labels, after checking that both are of the data
    the LDS run trained on (the fingerprint its manifest records for that split)."""
    from simattr.features import load_features, load_features_metadata
    from simattr.training.jobs import load_split

    option = f"`{split}_features`"
    expected = lds.manifest.get(f"{split}_fingerprint")
    recorded = (load_features_metadata(path) or {}).get("dataset") or {}
    if not recorded.get("fingerprint"):
        raise InvalidInputError(
            f"{option} {path} records no dataset (no sidecar): nothing says they are of the LDS "
            "run's images; make them with `simattr features`"
        )
    if recorded.get("split") != split:
        raise InvalidInputError(
            f"{option} {path} are features of the {recorded.get('split')!r} split; give the "
            f"{split} split's features"
        )
    if recorded["fingerprint"] != expected:
        raise InvalidInputError(
            f"{option} {path} are features of {recorded.get('name')}/{split} with fingerprint "
            f"{recorded['fingerprint']}, not of the data the LDS run in {where} trained on "
            f"({expected}); make features of that dataset"
        )
    features = load_features(path, option)
    root = data if data is not None else recorded.get("root")
    if root is None:
        raise InvalidInputError(
            f"{option} {path} records no dataset root to read labels from; give `data`"
        )
    dataset = load_split(str(root), split)
    if dataset.fingerprint != expected:
        raise InvalidInputError(
            f"the {split} split of {'`data` ' if data is not None else ''}{root} has fingerprint "
            f"{dataset.fingerprint}, not that of the LDS run in {where} ({expected}); give "
            "the LDS run's dataset"
        )
    return features, np.asarray(dataset.labels, dtype=np.int64)


def _check_rows(rows: np.ndarray, n: int, option: str, what: str, where: Path) -> None:
    if len(rows) and int(rows.max()) >= n:
        raise InvalidInputError(
            f"{option} has {n} rows, but the LDS run in {where} uses {what} {int(rows.max())}; "
            "give features of the whole split"
        )


def _provenance(
    lds: LdsData,
    where: Path,
    rows: np.ndarray,
    targets: np.ndarray,
    margins: np.ndarray,
    train_features: PathLike,
    test_features: PathLike,
) -> dict[str, Any]:
    """What the fit used, for ``model.info``: enough to find the LDS run again, to tell the
    subset models and targets not fitted on (a fair test of the model uses only those), and to
    notice that the folder's margins changed since."""
    from simattr.hashing import digest_array, digest_file, digest_json
    from simattr.store import PROVENANCE_KEYS

    identity = {k: v for k, v in lds.manifest.items() if k not in PROVENANCE_KEYS}
    recipe = lds.manifest.get("recipe")
    return {
        "lds": {
            "folder": str(where.resolve()),
            "manifest_digest": digest_json(identity),
            "recipe": recipe.get("name") if isinstance(recipe, dict) else recipe,
            "seed": lds.manifest.get("seed"),
            "fraction": lds.manifest.get("fraction"),
            "train_fingerprint": lds.manifest.get("train_fingerprint"),
            "test_fingerprint": lds.manifest.get("test_fingerprint"),
            "subsets_in_folder": len(lds.masks),
            "subsets": [int(s) for s in rows],
            "targets": [int(t) for t in targets],
            "margins_digest": digest_array(margins),
        },
        "features": {
            "train": {"path": str(train_features), "sha256": digest_file(train_features, 16)},
            "test": {"path": str(test_features), "sha256": digest_file(test_features, 16)},
        },
    }


__all__ = ["fit_learned"]
