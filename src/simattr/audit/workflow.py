"""The audit of a dataset on disk: what ``simattr audit`` runs.

:func:`run_audit` loads a split and its features (and a test split with its features, for
leaks), runs :func:`~simattr.audit.audit` with the images for the pixel check, and writes into
one folder ``label_issues.csv``, ``duplicates.csv`` and ``possible_duplicates.csv`` (candidates
the pixels do not confirm; :mod:`simattr.audit.tables`) and/or
``audit.html`` (:mod:`simattr.audit.page`). Everything is checked before the work starts (an
output that would overwrite an input, a folder that cannot be written, features of another
split or size, a second run on the same folder), and the files appear together at the end: a
refused or failed run leaves no new file behind. Neighbour-search blocks are kept in
``OUT/.audit-parts`` while it runs, so an interrupted run resumes there, and removed after.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from simattr._io import atomic_path, check_not_input, check_writable, lock
from simattr.audit.core import AuditResult, audit
from simattr.errors import InvalidInputError

PathLike = str | os.PathLike[str]

#: The files an audit writes into its folder.
LABELS_FILE, DUPLICATES_FILE, HTML_FILE = "label_issues.csv", "duplicates.csv", "audit.html"
POSSIBLE_FILE = "possible_duplicates.csv"
PARTS_DIR = ".audit-parts"


@dataclass
class AuditRun:
    """What :func:`run_audit` found and wrote."""

    result: AuditResult
    written: list[Path] = field(default_factory=list)


def _load(data: str, split: str, path: PathLike, option: str):
    """The split, its features and its source identifiers; refused, as ``attribute`` and
    ``explain`` refuse them, when the features were made from other data: another split,
    another row count, another dataset fingerprint (files added, removed, changed or moved
    between class folders since) or other source identifiers. An audit of such features would
    name the wrong files, so the message gives the command that rebuilds them."""
    from simattr.attribution.workflow import check_split_features
    from simattr.data import load_dataset, resolve_root, source_ids, source_ids_digest
    from simattr.features import load_features, load_features_metadata

    features = load_features(path, option)
    recorded = (load_features_metadata(path) or {}).get("dataset") or {}
    size = recorded.get("image_size")
    rebuild = f"simattr features --data {data} --split {split}" + (
        f" --image-size {size}" if size is not None else ""
    )
    if recorded.get("split") not in (None, split):
        raise InvalidInputError(
            f"{option} {path} holds features of the {recorded['split']} split, not {split}; "
            f"make them with `{rebuild} --out FILE`"
        )
    check_split_features(data, split, path, option)
    dataset = load_dataset(resolve_root(data), split, image_size=size)
    if len(features) != len(dataset):
        raise InvalidInputError(
            f"{option} {path} has {len(features)} rows but the {split} split of {data} has "
            f"{len(dataset)} images; make them with `{rebuild} --out FILE`"
        )
    ids = source_ids(data, dataset)
    digest = recorded.get("source_ids_digest")
    if digest is not None and digest != source_ids_digest(ids):
        raise InvalidInputError(
            f"{option} {path} was made from other files than the {split} split of {data} "
            f"(their source identifiers differ: files were renamed, added, removed or moved "
            f"since); rebuild them with `{rebuild} --out {path}`"
        )
    return dataset, features, ids


def run_audit(
    data: str,
    features: PathLike,
    out: PathLike,
    *,
    split: str = "train",
    test_features: PathLike | None = None,
    csv: bool = True,
    html: bool = False,
    progress: bool = False,
    n_html: int = 50,
    **options: object,
) -> AuditRun:
    """Audit the ``split`` of ``data`` from its ``features``; write the tables (``csv``) and
    the page (``html``) into the folder ``out``. ``options`` go to :func:`~simattr.audit.audit`
    (``k``, ``detector``, ``duplicate_threshold``, ...)."""
    from simattr.audit.page import audit_html
    from simattr.audit.tables import (
        write_duplicates_csv,
        write_label_issues_csv,
        write_possible_csv,
    )

    if split not in ("train", "test"):
        raise InvalidInputError(f"--split must be train or test, got {split!r}")
    if test_features is not None and split != "train":
        raise InvalidInputError(
            "--test-features looks for leaks of a test split into the training split: "
            "audit --split train with it"
        )
    if not (csv or html):
        raise InvalidInputError(
            "nothing to write: set csv, html or both (the command line: --tables, --page)"
        )
    out = Path(out)
    tables = [LABELS_FILE, DUPLICATES_FILE, POSSIBLE_FILE]
    names = (tables if csv else []) + ([HTML_FILE] if html else [])
    outputs = {f"--out {out}/{name}": out / name for name in names}
    inputs = {"--features": features, "--test-features": test_features}
    check_not_input(outputs, inputs)
    check_not_input({"--out": out}, inputs)
    check_writable(out, "--out", folder=True)
    with lock(out, "--out"):
        dataset, X, ids = _load(data, split, features, "--features")
        test = T = test_ids = None
        if test_features is not None:
            test, T, test_ids = _load(data, "test", test_features, "--test-features")
        parts = out / PARTS_DIR
        result = audit(
            X,
            dataset.labels,
            num_classes=dataset.num_classes,
            test_features=T,
            images=dataset.get_images,
            test_images=None if test is None else test.get_images,
            parts_dir=parts,
            progress=progress,
            **options,  # type: ignore[arg-type]
        )
        result.ids, result.class_names = list(ids), tuple(dataset.class_names)
        result.test_ids = None if test_ids is None else list(test_ids)
        result.test_labels = None if test is None else test.labels
        page = None
        if html:
            page = audit_html(
                result,
                _LazyImages(dataset),
                ids,
                dataset.class_names,
                test_images=None if test is None else _LazyImages(test),
                test_ids=test_ids,
                n_labels=n_html,
            )
        written = [out / name for name in names]
        with contextlib.ExitStack() as stack:
            tmp = {name: stack.enter_context(atomic_path(out / name)) for name in names}
            if csv:
                write_label_issues_csv(tmp[LABELS_FILE], result, ids, dataset.class_names)
                write_duplicates_csv(tmp[DUPLICATES_FILE], result, ids, test_ids)
                write_possible_csv(tmp[POSSIBLE_FILE], result)
            if page is not None:
                tmp[HTML_FILE].write_text(page, encoding="utf-8")
        shutil.rmtree(parts, ignore_errors=True)
    return AuditRun(result, written)


class _LazyImages:
    """``images[row]`` of a dataset without copying the whole split."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __getitem__(self, row: int):
        return self.dataset.get_images([int(row)])[0]
