"""The audit's tables: ``label_issues.csv`` and ``duplicates.csv``, written atomically."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from simattr._io import atomic_write
from simattr.audit.core import AuditResult

LABEL_COLUMNS = ("rank", "row", "path", "given_label", "suggested_label", "score")
DUPLICATE_COLUMNS = ("split_a", "row_a", "path_a", "split_b", "row_b", "path_b", "similarity")


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
