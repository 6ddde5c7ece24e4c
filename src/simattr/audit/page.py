"""The audit's HTML page: likely label errors with their evidence, near-duplicates and leaks.

Built from :mod:`simattr.report.html` galleries (every string escaped, images embedded).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from simattr.audit.core import AuditResult
from simattr.report.html import Row, Section, Tile, gallery_html

LEGEND = (
    ("flagged", "image flagged as likely mislabelled", "#d62728"),
    (
        "evidence",
        "training images of the suggested class that support it (exemplar SVM)",
        "#2ca02c",
    ),
    ("train", "training image", "#1f77b4"),
    ("test", "test image (a leak)", "#ff7f0e"),
)


def audit_html(
    result: AuditResult,
    images: np.ndarray,
    ids: Sequence[str],
    class_names: Sequence[str],
    *,
    test_images: np.ndarray | None = None,
    test_ids: Sequence[str] | None = None,
    n_labels: int = 50,
    n_pairs: int = 100,
    title: str = "simattr dataset audit",
) -> str:
    """The page: the ``n_labels`` likeliest label errors (each with its evidence) and the first
    ``n_pairs`` near-duplicate pairs and leaks."""
    issues = result.label_issues
    rows = []
    for rank, row in enumerate(issues.order[:n_labels], start=1):
        given, suggested = class_names[issues.given[row]], class_names[issues.suggested[row]]
        tiles = [
            Tile(images[row], f"{ids[row]}: {given}", "flagged", title=str(ids[row])),
        ]
        for e in issues.evidence.get(int(row), []):
            tiles.append(Tile(images[e], f"{ids[e]}: {suggested}", "evidence", title=str(ids[e])))
        rows.append(
            Row(
                tiles,
                f"#{rank} row {int(row)}: labelled {given}, looks like {suggested} "
                f"(score {issues.score[row]:.3f})",
            )
        )
    labels = Section(
        "Likely label errors",
        rows,
        note=f"Most likely error first ({issues.detector} score: one minus the out-of-sample "
        "probability of the given label). Every row of the split is ranked in label_issues.csv.",
        empty="No image in the split.",
    )
    d = result.duplicates
    sections = [labels]
    for name, mask, note in (
        ("Near-duplicates in the split", ~d.leaks, "Pairs of one split, most similar first."),
        (
            "Leaks: training images also in the test split",
            d.leaks,
            "A training image and a test image that are the same photograph.",
        ),
    ):
        pairs = []
        for i in np.flatnonzero(mask)[:n_pairs]:
            ra, rb = int(d.row_a[i]), int(d.row_b[i])
            leak = d.split_b[i] == "test"
            img_b = test_images[rb] if leak and test_images is not None else images[rb]
            id_b = test_ids[rb] if leak and test_ids is not None else ids[rb]
            pairs.append(
                Row(
                    [
                        Tile(images[ra], str(ids[ra]), "train"),
                        Tile(img_b, str(id_b), "test" if leak else "train"),
                    ],
                    f"similarity {d.similarity[i]:.3f}",
                )
            )
        sections.append(
            Section(name, pairs, note=note + f" {int(mask.sum())} in all.", empty="None found.")
        )
    intro = (
        f"{result.n_train} images audited"
        + (f" against {result.n_test} test images" if result.n_test else "")
        + f"; {len(d) - int(d.leaks.sum())} near-duplicate pairs, {int(d.leaks.sum())} leaks."
    )
    return gallery_html(title, sections, intro=intro, legend=LEGEND)
