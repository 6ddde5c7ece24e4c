"""A model's predictions on the test split, read from what a user has: the class to explain.

Attribution explains a label: by default the true one, or, to explain what a model did, the
class it predicted. The ranking never looks at the model; the prediction only chooses which
class's training pool is ranked. :func:`read_predictions` reads

* a ``.npy`` array with one predicted class per test image, in the split's row order (class
  indices, or class names as a string array), or
* a ``.csv`` of ``file,class`` rows (a ``file,class`` header line is optional): ``file`` is
  the image's source identifier (:func:`~simattr.data.source_ids`: the path relative to the
  data root for image folders, ``test:ROW`` for Parquet and CIFAR-10; an absolute path inside
  the root works too), ``class`` a class name or index. Only the listed images get a
  prediction.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from simattr._io import read_npy
from simattr.errors import InvalidInputError, MissingFileError

#: File name endings :func:`read_predictions` reads.
PREDICTION_SUFFIXES = (".npy", ".csv")


def read_predictions(
    path: str | os.PathLike[str],
    *,
    n_test: int,
    class_names: Sequence[str] | None = None,
    test_ids: Sequence[str] | None = None,
    root: str | os.PathLike[str] | None = None,
    name: str = "`predictions`",
) -> tuple[np.ndarray, np.ndarray]:
    """The test rows that have a prediction and the class predicted for each (int64 arrays).

    Args:
        path: a ``.npy`` (one class per test image) or ``.csv`` (``file,class`` rows) file.
        n_test: images in the test split.
        class_names: the dataset's classes in label order (names are looked up here; without
            them only class indices are accepted).
        test_ids: the test split's source identifiers in row order (needed for a CSV).
        root: the data root (lets a CSV name files by absolute path).
        name: how messages name the file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in PREDICTION_SUFFIXES:
        raise InvalidInputError(
            f"{name} {path}: give a .npy of predicted classes (one per test image) or a .csv "
            "of file,class rows"
        )
    if not path.exists():
        raise MissingFileError(f"{name}: no such file {path}")
    classes = _ClassLookup(class_names, f"{name} {path}")
    if suffix == ".npy":
        values = np.ravel(read_npy(path, name))
        if len(values) != n_test:
            raise InvalidInputError(
                f"{name} {path} has {len(values)} predictions but the test split has {n_test} "
                "images; give one predicted class per test image, in the split's row order"
            )
        labels = [classes.index(v, f"row {i}") for i, v in enumerate(values.tolist())]
        return np.arange(n_test, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    if test_ids is None:
        raise InvalidInputError(
            f"{name} {path}: a CSV names test files, so it needs `data` (the dataset whose "
            "test split holds them)"
        )
    rows, labels = _read_csv(path, classes, _FileLookup(test_ids, root), name)
    return np.asarray(rows, dtype=np.int64), np.asarray(labels, dtype=np.int64)


class _ClassLookup:
    """A predicted class, given as a name or an index, as a label."""

    def __init__(self, class_names: Sequence[str] | None, where: str) -> None:
        self.names = None if class_names is None else [str(c) for c in class_names]
        self.by_name = {} if self.names is None else {c: i for i, c in enumerate(self.names)}
        self.where = where

    def index(self, value: object, at: str | None) -> int:
        where = self.where if at is None else f"{self.where}, {at}"
        text = str(value).strip()
        if text in self.by_name:
            return self.by_name[text]
        try:
            number = float(text)
        except ValueError:
            number = None
        if number is not None and math.isfinite(number) and number == int(number):
            label = int(number)
            if label >= 0 and (self.names is None or label < len(self.names)):
                return label
        if self.names is None:
            raise InvalidInputError(
                f"{where}: class {text!r} is not a class index (a whole number >= 0); "
                "give `data` to name classes"
            )
        shown = ", ".join(self.names[:20]) + (", ..." if len(self.names) > 20 else "")
        raise InvalidInputError(
            f"{where}: unknown class {text!r}; the classes are {shown} "
            f"(or their indices 0..{len(self.names) - 1})"
        )


class _FileLookup:
    """A file named in a CSV as its test row: by source identifier, or by its path."""

    def __init__(self, test_ids: Sequence[str], root: str | os.PathLike[str] | None) -> None:
        self.ids = list(test_ids)
        self.rows = {source: row for row, source in enumerate(self.ids)}
        self.root = None if root is None else Path(root).expanduser().absolute()

    def row(self, text: str) -> int | None:
        given = text.strip().replace("\\", "/")
        for candidate in (given, given.removeprefix("./")):
            if candidate in self.rows:
                return self.rows[candidate]
        if self.root is not None and Path(given).is_absolute():
            try:
                relative = Path(given).relative_to(self.root).as_posix()
            except ValueError:
                return None
            return self.rows.get(relative)
        return None


def read_file_class_rows(path: str | os.PathLike[str], where: str) -> list[tuple[str, str, str]]:
    """The ``file,class`` rows of a predictions CSV as ``(line, file, class)``, stripped.

    Blank lines and a ``file,class`` header are skipped; a file that is not UTF-8 text or a row
    without exactly two columns is one error naming ``where`` and the line. Shared by
    ``attribute --predictions`` and ``explain --predictions``, which differ only in how a file
    name is matched.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            records = list(csv.reader(fh))
    except UnicodeDecodeError:
        raise InvalidInputError(f"{where} is not a text CSV file (UTF-8)") from None
    rows = []
    for number, record in enumerate(records, start=1):
        if not record or all(not cell.strip() for cell in record):
            continue
        at = f"line {number}"
        if len(record) != 2:
            raise InvalidInputError(
                f"{where}, {at}: expected two columns file,class; got {len(record)}"
            )
        file, label = (cell.strip() for cell in record)
        if number == 1 and (file.lower(), label.lower()) == ("file", "class"):
            continue  # the header
        rows.append((at, file, label))
    return rows


def class_index(value: object, class_names: Sequence[str] | None, where: str) -> int:
    """A class given by name or index (a whole number) as its index; unknown is one error."""
    return _ClassLookup(class_names, where).index(value, None)


def _read_csv(
    path: Path, classes: _ClassLookup, files: _FileLookup, name: str
) -> tuple[list[int], list[int]]:
    rows: list[int] = []
    labels: list[int] = []
    seen: dict[int, str] = {}
    for at, file, label in read_file_class_rows(path, f"{name} {path}"):
        row = files.row(file)
        if row is None:
            example = files.ids[0] if files.ids else "test/<class>/<image>"
            raise InvalidInputError(
                f"{name} {path}, {at}: {file!r} is no image of the test split; name "
                f"files as the data do (relative to the data root), e.g. {example!r}"
            )
        if row in seen:
            raise InvalidInputError(
                f"{name} {path}, {at}: {file!r} has a prediction already ({seen[row]}); give "
                "one per image"
            )
        seen[row] = at
        rows.append(row)
        labels.append(classes.index(label, at))
    if not rows:
        raise InvalidInputError(f"{name} {path} holds no file,class rows")
    return rows, labels
