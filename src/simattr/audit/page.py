"""The audit's HTML page: likely label errors with their evidence, near-duplicates, leaks and
possible duplicates the pixels do not confirm.

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
    """The page: the ``n_labels`` likeliest label errors (each with its evidence), the first
    ``n_pairs`` near-duplicate pairs, leaks and possible (unconfirmed) pairs, and the duplicate
    search's note (whether the pixel check was used: not below 16x16 pixels)."""
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
    possible = d.possible
    sections = [labels]
    for name, pairs_of, mask, note in (
        (
            "Near-duplicates in the split",
            d,
            ~d.leaks,
            "Pairs of one split that the pixels confirm as one photograph, most similar first.",
        ),
        (
            "Leaks: training images also in the test split",
            d,
            d.leaks,
            "A training image and a test image that are the same photograph.",
        ),
        (
            "Possible duplicates, not confirmed",
            possible,
            None,
            "Pairs the features put very close (cosine at least 0.97) that the pixels do not "
            "confirm: a copy edited beyond what the check searches, or two photographs of one "
            "object. Look before acting; possible_duplicates.csv lists them all.",
        ),
    ):
        if pairs_of is None:
            continue
        chosen = np.arange(len(pairs_of)) if mask is None else np.flatnonzero(mask)
        rows_html = [
            _pair_row(pairs_of, int(i), images, ids, test_images, test_ids)
            for i in chosen[:n_pairs]
        ]
        sections.append(
            Section(name, rows_html, note=note + f" {len(chosen)} in all.", empty="None found.")
        )
    n_possible = 0 if possible is None else len(possible)
    intro = (
        f"{result.n_train} images audited"
        + (f" against {result.n_test} test images" if result.n_test else "")
        + f"; {len(d) - int(d.leaks.sum())} near-duplicate pairs, {int(d.leaks.sum())} leaks, "
        f"{n_possible} possible duplicates (not confirmed); "
        f"{int(issues.flagged.sum())} images flagged as likely mislabelled. "
        + (f"Duplicate search: {d.note}." if d.note else "")
    )
    return gallery_html(title, sections, intro=intro, legend=LEGEND)


def _pair_row(pairs, i: int, images, ids, test_images, test_ids) -> Row:
    """One pair of :class:`~simattr.audit.DuplicatePairs` as a row of two tiles."""
    ra, rb = int(pairs.row_a[i]), int(pairs.row_b[i])
    leak = pairs.split_b[i] == "test"
    img_b = test_images[rb] if leak and test_images is not None else images[rb]
    id_b = test_ids[rb] if leak and test_ids is not None else ids[rb]
    pixel_text = ""
    if pairs.pixel is not None and not np.isnan(pairs.pixel[i]):
        pixel_text = f", pixels {pairs.pixel[i]:.3f}"
    return Row(
        [
            Tile(images[ra], str(ids[ra]), "train"),
            Tile(img_b, str(id_b), "test" if leak else "train"),
        ],
        f"similarity {pairs.similarity[i]:.3f} (cosine {pairs.cosine[i]:.3f}{pixel_text})",
    )
