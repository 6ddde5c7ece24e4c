"""A ranking as a table that a person, a spreadsheet or pandas reads: files and class names.

One row per ranked training image of each target, with the columns of :data:`TABLE_COLUMNS`:
the target's test row, its file (source identifier, :func:`~simattr.data.source_ids`) and the
label explained (the class whose pool was ranked: the true label, or the model's prediction
with ``--predictions``), then the rank (1 = most responsible), the training row, its file, its
label and its score. Labels are class names where the dataset has them. Unranked slots (``-1``,
a class pool smaller than k) have no row.

:func:`ranking_rows` returns the rows; :func:`write_ranking_table` writes them as CSV, or as
Parquet when the file name ends in ``.parquet``, atomically.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from simattr._io import atomic_path, check_not_input, check_writable
from simattr.errors import InvalidInputError
from simattr.ranking import Ranking
from simattr.validation import check_labels

if TYPE_CHECKING:
    from simattr.attribution.explain import Explanation

#: The table's columns, in order.
TABLE_COLUMNS = (
    "target",
    "target_path",
    "target_label",
    "rank",
    "train_row",
    "train_path",
    "train_label",
    "score",
)
#: File name endings :func:`write_ranking_table` writes.
TABLE_SUFFIXES = (".csv", ".parquet")

PathLike = str | os.PathLike[str]


def check_table_path(path: PathLike, name: str = "`csv`") -> Path:
    """Refuse, before any work, a table path with another ending or that cannot be written."""
    path = Path(path)
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise InvalidInputError(
            f"{name} {path}: a table is written as .csv, or as Parquet when the name ends in "
            ".parquet; rename it"
        )
    check_writable(path, name)
    return path


def _data_columns(ranking: Ranking, data: str) -> tuple[list[str], list[str], dict[str, Any]]:
    """Source identifiers of the train and test splits of ``data``, and their labels and class
    names; refused when the ranking recorded other files (the paths would be wrong)."""
    from simattr.data import load_dataset, resolve_root, source_ids, source_ids_digest

    root = resolve_root(data)
    train, test = load_dataset(root, "train"), load_dataset(root, "test")
    ranking.check(n_test=len(test), n_train=len(train))
    ids = {"train": source_ids(root, train), "test": source_ids(root, test)}
    recorded = ranking.metadata.get("source_ids") or {}
    for split, found in ids.items():
        digest = recorded.get(split)
        if digest is not None and digest != source_ids_digest(found):
            raise InvalidInputError(
                f"{ranking.name} was made on other files than the {split} split of {data} "
                "(their source identifiers differ: files were added, removed or moved since); "
                "rank the features of these data again"
            )
    labels = {"train": train.labels, "test": test.labels, "class_names": train.class_names}
    return ids["train"], ids["test"], labels


def _names(labels: np.ndarray, class_names: Sequence[str] | None) -> list[str]:
    if class_names is None:
        return [str(int(v)) for v in labels]
    k = len(class_names)
    if len(labels) and int(labels.max()) >= k:
        raise InvalidInputError(
            f"label {int(labels.max())} has no name among the {k} class names {list(class_names)}"
        )
    return [str(class_names[int(v)]) for v in labels]


def ranking_columns(
    ranking: Ranking,
    data: str | None = None,
    *,
    train_labels: np.ndarray | None = None,
    test_labels: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
) -> dict[str, list[Any]]:
    """The table of :func:`ranking_rows` as one list per column (what the writers use).

    Args:
        ranking: a ranking (in memory or from :func:`~simattr.ranking.load_ranking`).
        data: the dataset it was made on (path, ``digits``, ``cifar10``): gives the file paths,
            labels and class names. Without it, paths are empty and labels come from
            ``train_labels`` / ``test_labels`` (indices, or names with ``class_names``).
        train_labels, test_labels: labels of the training and test rows (when no ``data``).
        class_names: names of the classes in label order (default: the dataset's).
    """
    n = len(ranking.targets)
    train_ids: list[str] | None = None
    test_ids: list[str] | None = None
    if data is not None:
        train_ids, test_ids, found = _data_columns(ranking, data)
        train_labels = found["train"] if train_labels is None else train_labels
        test_labels = found["test"] if test_labels is None else test_labels
        class_names = found["class_names"] if class_names is None else class_names
    explained = ranking.metadata.get("target_labels")
    if explained is not None:
        target_labels = check_labels(
            explained, n, "the ranking's target_labels", for_what="targets"
        )
    elif test_labels is not None:
        target_labels = np.asarray(test_labels)[ranking.targets]
    else:
        target_labels = None
    ranked = ranking.indices >= 0
    rows, cols = np.nonzero(ranked)
    train_rows = ranking.indices[rows, cols]
    if train_labels is not None:
        train_labels = np.asarray(train_labels)
        if len(train_rows) and int(train_rows.max()) >= len(train_labels):
            raise InvalidInputError(
                f"{ranking.name} ranks training row {int(train_rows.max())}, but there are only "
                f"{len(train_labels)} training labels"
            )
    targets = ranking.targets[rows]
    target_names = _names(target_labels, class_names) if target_labels is not None else None
    train_names = (
        _names(np.asarray(train_labels)[train_rows], class_names)
        if train_labels is not None
        else [""] * len(rows)
    )
    return {
        "target": targets.tolist(),
        "target_path": [test_ids[t] for t in targets] if test_ids else [""] * len(rows),
        "target_label": [target_names[r] for r in rows] if target_names else [""] * len(rows),
        "rank": (cols + 1).tolist(),
        "train_row": train_rows.tolist(),
        "train_path": [train_ids[i] for i in train_rows] if train_ids else [""] * len(rows),
        "train_label": train_names,
        "score": ranking.scores[rows, cols].astype(np.float64).tolist(),
    }


def ranking_rows(
    ranking: Ranking,
    data: str | None = None,
    *,
    train_labels: np.ndarray | None = None,
    test_labels: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """The ranking as table rows, one dict per ranked training image of each target, keyed by
    :data:`TABLE_COLUMNS`, targets in the ranking's order and ranks ascending. Arguments as
    :func:`ranking_columns`."""
    columns = ranking_columns(
        ranking, data, train_labels=train_labels, test_labels=test_labels, class_names=class_names
    )
    return [
        dict(zip(TABLE_COLUMNS, values, strict=True))
        for values in zip(*columns.values(), strict=True)
    ]


def write_ranking_table(
    path: PathLike,
    ranking: Ranking,
    data: str | None = None,
    *,
    train_labels: np.ndarray | None = None,
    test_labels: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    inputs: dict[str, PathLike | None] | None = None,
) -> Path:
    """Write the table of :func:`ranking_rows` to ``path``: CSV, or Parquet when it ends in
    ``.parquet``; atomically (a failure leaves no file), never over one of ``inputs`` (how the
    caller names each input path, e.g. ``{"`ranking`": ...}``) nor over the ranking's file.
    Returns the path."""
    path = check_table_path(path)
    named: dict[str, PathLike | None] = dict(inputs or {})
    if ranking.source:
        named.setdefault("the ranking", ranking.source)
    check_not_input({"`csv`": path}, named)
    columns = ranking_columns(
        ranking, data, train_labels=train_labels, test_labels=test_labels, class_names=class_names
    )
    return write_columns(path, columns)


def explanation_columns(explanation: Explanation) -> dict[str, list[Any]]:
    """The table of an :class:`~simattr.attribution.Explanation` (``simattr explain``), in the
    columns of :data:`TABLE_COLUMNS`: ``target`` is the position of the file among those
    explained and ``target_path`` the file as given."""
    rows = explanation.rows()
    keys = ("image", "image_path", "label", "rank", "train_row", "train_path", "train_label")
    columns = {
        column: [row[key] for row in rows]
        for column, key in zip(TABLE_COLUMNS, (*keys, "score"), strict=True)
    }
    return columns


def write_explanation_table(
    path: PathLike,
    explanation: Explanation,
    *,
    inputs: dict[str, PathLike | None] | None = None,
) -> Path:
    """Write :func:`explanation_columns` to ``path`` (CSV, or Parquet for ``.parquet``),
    atomically, never over one of ``inputs``. Returns the path."""
    path = check_table_path(path)
    check_not_input({"`csv`": path}, dict(inputs or {}))
    return write_columns(path, explanation_columns(explanation))


def write_columns(path: PathLike, columns: dict[str, list[Any]]) -> Path:
    """Write a table given as one list per column of :data:`TABLE_COLUMNS`: CSV, or Parquet
    when ``path`` ends in ``.parquet``; atomically (a failure leaves no file)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".parquet":
            _write_parquet(tmp, columns)
        else:
            _write_csv(tmp, columns)
    return path


def _write_csv(tmp: Path, columns: dict[str, list[Any]]) -> None:
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(TABLE_COLUMNS)
        scores = [repr(float(s)) for s in columns["score"]]
        values = [columns[c] for c in TABLE_COLUMNS[:-1]] + [scores]
        writer.writerows(zip(*values, strict=True))


def _write_parquet(tmp: Path, columns: dict[str, list[Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {
        "target": pa.int64(),
        "rank": pa.int64(),
        "train_row": pa.int64(),
        "score": pa.float64(),
    }
    table = pa.table(
        {name: pa.array(columns[name], type=types.get(name, pa.string())) for name in TABLE_COLUMNS}
    )
    pq.write_table(table, tmp)
