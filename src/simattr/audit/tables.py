"""The audit's tables: ``label_issues.csv``, ``duplicates.csv`` and ``possible_duplicates.csv``,
written atomically."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from simattr._io import atomic_write
from simattr.audit.core import PAIR_COLUMNS, AuditResult

LABEL_COLUMNS = ("rank", "row", "path", "given_label", "suggested_label", "score")
DUPLICATE_COLUMNS = ("split_a", "row_a", "path_a", "split_b", "row_b", "path_b", "similarity")
#: Columns of ``possible_duplicates.csv``: the pairs' files and classes, the feature cosine
#: that proposed them and the pixel score that did not confirm them (empty where the pixel
#: check was not used).
POSSIBLE_COLUMNS = PAIR_COLUMNS


def write_label_issues_csv(
    path: str | os.PathLike[str],
    result: AuditResult,
    ids: Sequence[str],
    class_names: Sequence[str],
) -> Path:
    """Every row of the split, most likely label error first (rank 1)."""
    issues = result.label_issues

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            out = csv.writer(fh)
            out.writerow(LABEL_COLUMNS)
            for rank, row in enumerate(issues.order, start=1):
                out.writerow(
                    (
                        rank,
                        int(row),
                        ids[row],
                        class_names[issues.given[row]],
                        class_names[issues.suggested[row]],
                        f"{issues.score[row]:.6f}",
                    )
                )

    return atomic_write(path, write)


def write_duplicates_csv(
    path: str | os.PathLike[str],
    result: AuditResult,
    ids: Sequence[str],
    test_ids: Sequence[str] | None = None,
) -> Path:
    """Every reported pair, most similar first; ``split_b`` is ``test`` for a leak."""
    d = result.duplicates

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            out = csv.writer(fh)
            out.writerow(DUPLICATE_COLUMNS)
            for sa, ra, sb, rb, s in zip(
                d.split_a, d.row_a, d.split_b, d.row_b, d.similarity, strict=False
            ):
                pb = (test_ids if sb == "test" else ids)[rb] if (sb != "test" or test_ids) else ""
                out.writerow((sa, int(ra), ids[ra], sb, int(rb), pb, f"{s:.6f}"))

    return atomic_write(path, write)


def write_possible_csv(path: str | os.PathLike[str], result: AuditResult) -> Path:
    """The candidates the features put very close but the pixels do not confirm (possible, not
    confirmed), most similar first, named by :attr:`AuditResult.ids` and class names (paths
    relative to the data root where the result knows them): one header line when there are
    none. Kept apart from ``duplicates.csv`` so that a reader never takes them for copies."""
    rows = result.pair_rows(result.duplicates.possible)

    def cell(value: object) -> object:
        if isinstance(value, float):
            return "" if value != value else f"{value:.6f}"  # NaN: not checked
        return value

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            out = csv.writer(fh)
            out.writerow(POSSIBLE_COLUMNS)
            for row in rows:
                out.writerow([cell(row[c]) for c in POSSIBLE_COLUMNS])

    return atomic_write(path, write)
