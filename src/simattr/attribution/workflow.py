"""Attribute from feature files: the whole ``simattr attribute`` job as one API function.

:func:`attribute` is what the command line runs, usable from Python as it is: it reads the
feature files, resolves the labels to explain (from a dataset, or given arrays), restricts the
candidates to a recipe's pool or to given rows, fits the :class:`Attributor` it is handed and
ranks the targets block by block through :func:`~simattr.attribution.resumable.rank_resumable`
(an interrupted run resumes; a run with other inputs is refused). The settings recorded in the
ranking's sidecar and the resume manifest come from the estimator itself
(:meth:`Attributor.get_params`), so nothing repeats the parameter list by hand.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simattr._io import check_not_input, check_writable, lock, read_npy
from simattr.attribution.attributor import Attributor
from simattr.attribution.resumable import (
    fingerprint_array,
    fingerprint_file,
    parts_dir,
    rank_resumable,
)
from simattr.data.dataset import ImageDataset
from simattr.errors import InvalidInputError
from simattr.features import load_features, load_features_metadata
from simattr.ranking import Ranking, export_paper_npy
from simattr.validation import check_indices, check_labels, check_same_width

PathLike = str | os.PathLike[str]


@dataclass
class AttributionRun:
    """What :func:`attribute` produced: the ranking, the fitted estimator and where it went."""

    ranking: Ranking
    attributor: Attributor
    out: Path
    n_test: int


def _as_array(value: PathLike | np.ndarray | None, name: str) -> np.ndarray | None:
    """An array given as such, or read from a ``.npy`` path."""
    if value is None or isinstance(value, np.ndarray):
        return value
    if isinstance(value, str | os.PathLike):
        return read_npy(value, name)
    return np.asarray(value)


def _splits(data: str) -> tuple[ImageDataset, ImageDataset]:
    from simattr.data import load_dataset, resolve_root

    root = resolve_root(data)
    return load_dataset(root, "train"), load_dataset(root, "test")


def candidate_rows(
    pool: str | None, train_indices: PathLike | np.ndarray | None, data: str | None, n_train: int
) -> np.ndarray | None:
    """Training rows that may be ranked: a recipe's pool, given rows, or all (``None``)."""
    if pool is not None and train_indices is not None:
        raise InvalidInputError("give either `pool` or `train_indices`, not both")
    if pool is not None:
        from simattr.data import load_dataset, resolve_root
        from simattr.training import recipe_pool

        if data is None:
            raise InvalidInputError("`pool` needs `data` (the pool is drawn from its labels)")
        train = load_dataset(resolve_root(data), "train")
        if len(train) != n_train:
            raise InvalidInputError(
                f"`train_features` has {n_train} rows but {data} has {len(train)} training images"
            )
        return recipe_pool(pool, train)
    if train_indices is None:
        return None
    name = (
        "`train_indices`"
        if isinstance(train_indices, np.ndarray)
        else f"`train_indices` {train_indices}"
    )
    rows = check_indices(np.ravel(_as_array(train_indices, "`train_indices`")), n_train, name)
    if len(np.unique(rows)) != len(rows):
        raise InvalidInputError(f"{name} lists a training row twice")
    return np.sort(rows)


def _data_fingerprints(
    data: str | None, train_features: PathLike, test_features: PathLike
) -> dict[str, str | None]:
    """Fingerprints of the splits the features were made from (their sidecars), else of
    ``data``'s splits: what a consumer of the ranking compares with its own data."""
    found: dict[str, str | None] = {}
    for split, path in (("train", train_features), ("test", test_features)):
        meta = load_features_metadata(path) or {}
        found[split] = (meta.get("dataset") or {}).get("fingerprint")
    if data is not None and None in found.values():
        from simattr.data import dataset_fingerprint

        for split in ("train", "test"):
            if found[split] is None:
                found[split] = dataset_fingerprint(data, split)
    return found


def check_features_match_data(data: str, train_features: PathLike, test_features: PathLike) -> None:
    """Refuse feature files whose sidecar records a dataset fingerprint other than ``data``'s
    split now has (files added, removed, changed or moved between class folders since the
    features were made, or features of another dataset): ranking them would name the wrong
    images. The message names the file and the command that rebuilds it. Features without a
    sidecar (a user's own ``.npy``) are not checked: nothing says what they were made from."""
    check_split_features(data, "train", train_features, "`train_features`")
    check_split_features(data, "test", test_features, "`test_features`")


def check_split_features(data: str, split: str, path: PathLike, option: str) -> None:
    """:func:`check_features_match_data` for one split's features (``option`` names them)."""
    from simattr.data import dataset_fingerprint

    meta = load_features_metadata(path) or {}
    recorded = meta.get("dataset") or {}
    fingerprint = recorded.get("fingerprint")
    if not fingerprint:
        return
    size = recorded.get("image_size")
    now = dataset_fingerprint(data, split, image_size=size)
    if now == fingerprint:
        return
    backbone = (meta.get("backbone") or {}).get("name")
    command = " ".join(
        [f"simattr features --data {data} --split {split}"]
        + ([f"--backbone {backbone}"] if backbone else [])
        + ([f"--image-size {size}"] if size is not None else [])
        + [f"--out {path}"]
    )
    raise InvalidInputError(
        f"{option} {path} was made from other data than the {split} split of {data} "
        f"(fingerprint {fingerprint} recorded, {now} now: images were added, removed, "
        f"changed or moved between class folders since); rebuild them with `{command}`"
    )


def _source_ids_record(data: str, ids: dict[str, list[str]]) -> dict[str, Any]:
    """Where the ranked rows come from: the data root and the digest of each split's source
    identifiers (:func:`~simattr.data.source_ids`; the table export names the files)."""
    from simattr.data import resolve_root, source_ids_digest

    record: dict[str, Any] = {"root": str(resolve_root(data))}
    for split, found in ids.items():
        record[split] = source_ids_digest(found)
    return record


def _explain_predictions(
    predictions: PathLike | np.ndarray,
    true_labels: np.ndarray | None,
    targets: np.ndarray | None,
    n_test: int,
    class_names: tuple[str, ...] | None,
    test_ids: list[str] | None,
    root: str | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The labels to explain (the predicted class where there is a prediction) and the
    targets (default: every test image with a prediction); a target without one is refused."""
    from simattr.data.predictions import read_predictions

    if isinstance(predictions, np.ndarray):
        rows = np.arange(n_test, dtype=np.int64)
        predicted = check_labels(
            np.ravel(predictions),
            n_test,
            "predictions",
            num_classes=None if class_names is None else len(class_names),
            for_what="test images",
        )
        where = "predictions"
    else:
        rows, predicted = read_predictions(
            predictions, n_test=n_test, class_names=class_names, test_ids=test_ids, root=root
        )
        where = f"`predictions` {predictions}"
    explained = np.zeros(n_test, dtype=np.int64) if true_labels is None else true_labels.copy()
    explained[rows] = predicted
    has = np.zeros(n_test, dtype=bool)
    has[rows] = True
    if targets is None:
        return explained, np.sort(rows)
    chosen = check_indices(targets, n_test, "targets")
    lacking = chosen[~has[chosen]]
    if len(lacking):
        row = int(lacking[0])
        named = f" ({test_ids[row]})" if test_ids else ""
        raise InvalidInputError(
            f"test row {row}{named} is a target but {where} has no prediction for it; add it "
            "to the file or leave it out of `targets`"
        )
    return explained, chosen


def _scores_with_labels(attributor: Attributor) -> bool:
    """Whether the run needs the labels: class-conditional pools, or a scorer that scores with
    them (``learned``: its weights differ for same-class and other-class images) in any mode."""
    from simattr.attribution.scorers import SCORERS

    method = attributor.method
    scorer = SCORERS.get(method) if isinstance(method, str) else method
    return bool(attributor.class_conditional or getattr(scorer, "uses_labels", False))


def attribute(
    train_features: PathLike,
    test_features: PathLike,
    out: PathLike,
    *,
    attributor: Attributor | None = None,
    data: str | None = None,
    train_labels: PathLike | np.ndarray | None = None,
    test_labels: PathLike | np.ndarray | None = None,
    targets: np.ndarray | None = None,
    k: int = 100,
    pool: str | None = None,
    train_indices: PathLike | np.ndarray | None = None,
    export_paper: PathLike | None = None,
    block_size: int = 1024,
    resume: bool = True,
    progress: bool = False,
    predictions: PathLike | np.ndarray | None = None,
) -> AttributionRun:
    """Rank the training images responsible for each target test image, from feature files.

    Args:
        train_features, test_features: ``.npy`` feature files (``simattr features`` writes
            them; any float ``N x D`` array of the same width works).
        out: the ranking ``.npz`` (a ``.json`` sidecar beside it); finished blocks wait in
            ``OUT.npz.parts/`` until the end, and a rerun resumes from them.
        attributor: an unfitted :class:`Attributor` carrying the method and its settings
            (default ``Attributor()``: the class-conditional exemplar SVM). It is fitted here.
        data: a dataset (path, ``digits``, ``cifar10``) whose train/test labels are the labels
            to explain; or give ``train_labels`` and ``test_labels`` (arrays or ``.npy``
            paths). ``class_conditional=False`` needs neither.
        targets: test rows to rank (default: every test row).
        k: training images kept per target.
        pool: rank only the training pool of this recipe (what ``simattr support`` retrains).
        train_indices: rank only these training rows (array or ``.npy`` path).
        export_paper: also write the paper code's dense ``(n_test, k)`` index matrix here.
        block_size, resume, progress: see :func:`~simattr.attribution.resumable.rank_resumable`.
        predictions: explain a model's predicted classes instead of the true labels: a ``.npy``
            of one class per test image, a ``.csv`` of ``file,class`` rows (files named as
            :func:`~simattr.data.source_ids` names them, classes by name or index; needs
            ``data``; only its files are targets unless ``targets`` says otherwise), or an
            array of class indices. The ranking does not look at the model: the prediction
            only chooses the class whose training pool is ranked. ``test_labels`` may then be
            left out.
    """
    attributor = Attributor() if attributor is None else attributor
    out = Path(out)
    class_conditional = bool(attributor.class_conditional)
    labelled = _scores_with_labels(attributor)
    _check_outputs(
        out,
        export_paper,
        train_features,
        test_features,
        train_labels,
        test_labels,
        train_indices,
        predictions,
    )
    if predictions is not None and not class_conditional:
        raise InvalidInputError(
            "`predictions` choose the class pool each target is explained with; with "
            "`class_conditional=False` there is no pool to choose: leave one of the two out"
        )
    xtr = load_features(train_features, "`train_features`")
    xte = load_features(test_features, "`test_features`")
    check_same_width(xtr, xte, "`train_features`", "`test_features`")
    if data is not None:
        check_features_match_data(data, train_features, test_features)
    labels = resolve_labels(
        data, train_labels, test_labels, predictions, labelled, len(xtr), len(xte)
    )
    chosen = _choose_targets(labels, predictions, targets, data, len(xte))
    rows = candidate_rows(pool, train_indices, data, len(xtr))
    ytr = labels.train
    if rows is not None:
        xtr = xtr[rows]
        ytr = None if ytr is None else ytr[rows]
    attributor.fit(xtr, ytr if labelled else None)
    yte = labels.test if labelled else None
    if yte is not None:  # named by test row here; the Attributor only sees its block's rows
        absent = ~np.isin(np.asarray(yte)[chosen], attributor.classes_)
        if absent.any():
            row = int(chosen[int(np.argmax(absent))])
            label = np.asarray(yte)[row].item()
            among = "the ranked training rows" if rows is not None else "the training set"
            named = "`targets` names test row" if targets is not None else "test row"
            raise InvalidInputError(
                f"{named} {row}, whose label {label!r} no image of {among} has; choose other "
                "targets, or rank a pool that holds that class"
            )
    inputs = _input_fingerprints(
        train_features, test_features, ytr if labelled else None, yte, predictions
    )
    metadata = _ranking_metadata(
        attributor,
        labels,
        chosen,
        train_features=train_features,
        test_features=test_features,
        data=data,
        pool=pool,
        train_indices=train_indices,
        predictions=predictions,
        inputs=inputs,
    )
    with lock(out):
        ranking = rank_resumable(
            attributor,
            xte,
            yte,
            chosen,
            k,
            out,
            block_size=block_size,
            resume=resume,
            progress=progress,
            inputs=inputs,
            metadata=metadata,
            train_rows=rows,
        )
        if export_paper is not None:
            export_paper_npy(export_paper, ranking, len(xte))
    return AttributionRun(ranking=ranking, attributor=attributor, out=out, n_test=len(xte))


def _check_outputs(
    out: Path,
    export_paper: PathLike | None,
    train_features: PathLike,
    test_features: PathLike,
    train_labels: PathLike | np.ndarray | None,
    test_labels: PathLike | np.ndarray | None,
    train_indices: PathLike | np.ndarray | None,
    predictions: PathLike | np.ndarray | None,
) -> None:
    """Refuse, before any work, outputs of the wrong kind, outputs that name an input and
    outputs that cannot be written: a long ranking must not fail at its last step."""
    if out.suffix != ".npz":
        raise InvalidInputError(f"`out` must end with .npz, got {out}")
    if export_paper is not None and Path(export_paper).suffix != ".npy":
        raise InvalidInputError(f"`export_paper` must end with .npy, got {export_paper}")

    def path_or_none(value: object) -> Any:
        return value if isinstance(value, str | os.PathLike) else None

    check_not_input(
        {"`out`": out, "`export_paper`": export_paper, "`out`'s parts folder": parts_dir(out)},
        {
            "`train_features`": train_features,
            "`test_features`": test_features,
            "`train_labels`": path_or_none(train_labels),
            "`test_labels`": path_or_none(test_labels),
            "`train_indices`": path_or_none(train_indices),
            "`predictions`": path_or_none(predictions),
        },
    )
    check_writable(out, "`out`")
    if export_paper is not None:
        check_writable(export_paper, "`export_paper`")


@dataclass
class Labels:
    """The labels a run explains and where they came from (recorded in the sidecar)."""

    train: np.ndarray | None
    test: np.ndarray | None
    source: str | None
    ids: dict[str, list[str]]
    class_names: tuple[str, ...] | None = None


def resolve_labels(
    data: str | None,
    train_labels: PathLike | np.ndarray | None,
    test_labels: PathLike | np.ndarray | None,
    predictions: PathLike | np.ndarray | None,
    class_conditional: bool,
    n_train: int,
    n_test: int,
) -> Labels:
    """The training and test labels, from ``data``'s splits or from given arrays or ``.npy``
    paths, checked against the feature row counts; none when ranking across all classes."""
    if data is not None and (train_labels is not None or test_labels is not None):
        raise InvalidInputError("give either `data` or `train_labels`/`test_labels`, not both")
    if data is not None:
        from simattr.data import source_ids

        splits = _splits(data)
        labels = Labels(
            splits[0].labels,
            splits[1].labels,
            data,
            {split.split: source_ids(data, split) for split in splits},
            splits[0].class_names,
        )
    elif train_labels is not None and (test_labels is not None or predictions is not None):
        labels = Labels(
            _as_array(train_labels, "`train_labels`"),
            None if test_labels is None else _as_array(test_labels, "`test_labels`"),
            "arrays"
            if isinstance(train_labels, np.ndarray)
            else ", ".join(str(p) for p in (train_labels, test_labels) if p is not None),
            {},
        )
    elif not class_conditional:
        return Labels(None, None, None, {})
    else:
        raise InvalidInputError(
            "class-conditional attribution needs labels: give `data`, or `train_labels` "
            "and `test_labels` (or `class_conditional=False`)"
        )
    labels.train = check_labels(
        labels.train, n_train, "training labels", for_what="training features"
    )
    if labels.test is not None:
        labels.test = check_labels(labels.test, n_test, "test labels", for_what="test features")
    return labels


def _choose_targets(
    labels: Labels,
    predictions: PathLike | np.ndarray | None,
    targets: np.ndarray | None,
    data: str | None,
    n_test: int,
) -> np.ndarray:
    """The test rows to rank; with ``predictions``, the labels to explain become the
    predicted classes (``labels`` is updated in place, its source says so)."""
    if predictions is None:
        if targets is None:
            return np.arange(n_test, dtype=np.int64)
        return check_indices(targets, n_test, "targets")
    labels.test, chosen = _explain_predictions(
        predictions,
        labels.test,
        targets,
        n_test,
        labels.class_names,
        labels.ids.get("test"),
        None if data is None else str(data),
    )
    if not isinstance(predictions, np.ndarray):
        labels.source = f"{labels.source}; predicted classes from {predictions}"
    return chosen


def _input_fingerprints(
    train_features: PathLike,
    test_features: PathLike,
    train_labels: np.ndarray | None,
    test_labels: np.ndarray | None,
    predictions: PathLike | np.ndarray | None,
) -> dict[str, Any]:
    """What the resume manifest compares: a rerun with other inputs is refused."""
    return {
        "train_features": fingerprint_file(train_features),
        "test_features": fingerprint_file(test_features),
        "train_labels": fingerprint_array(train_labels),
        "test_labels": fingerprint_array(test_labels),
        "predictions": None
        if predictions is None or isinstance(predictions, np.ndarray)
        else fingerprint_file(predictions),
    }


def _ranking_metadata(
    attributor: Attributor,
    labels: Labels,
    chosen: np.ndarray,
    *,
    train_features: PathLike,
    test_features: PathLike,
    data: str | None,
    pool: str | None,
    train_indices: PathLike | np.ndarray | None,
    predictions: PathLike | np.ndarray | None,
    inputs: dict[str, Any],
) -> dict[str, Any]:
    """The ranking's sidecar: the estimator's own description, then what it was run on."""
    class_conditional = bool(attributor.class_conditional)
    explained = None
    if class_conditional:
        explained = "true labels" if predictions is None else "predicted classes"
    meaning = attributor.score_meaning()  # learned: units and calibration, for the pages
    return dict(
        attributor.describe(),
        **({"score_meaning": meaning} if meaning else {}),
        labels=labels.source,
        train_features=str(train_features),
        test_features=str(test_features),
        train_features_meta=load_features_metadata(train_features),
        test_features_meta=load_features_metadata(test_features),
        pool=pool,
        train_indices=None
        if train_indices is None or isinstance(train_indices, np.ndarray)
        else str(train_indices),
        data_fingerprints=_data_fingerprints(data, train_features, test_features),
        target_labels=None if labels.test is None else labels.test[chosen].tolist(),
        source_ids=None if data is None else _source_ids_record(data, labels.ids),
        explained=explained,
        input_digests={
            "train_features": inputs["train_features"]["sha256"],
            "test_features": inputs["test_features"]["sha256"],
        },
    )
