"""The optional outputs of a ranking or an explanation: a table (``csv``) and a page (``html``).

``simattr attribute`` and ``simattr explain`` (and any script) check them with
:func:`check_ranking_outputs` / :func:`check_explanation_outputs` before any work, so that a
long ranking never fails at its last step on a path it could have refused at the first, and
write them with :func:`write_ranking_outputs` / :func:`write_explanation_outputs` once the
ranking exists. ``inputs`` names every input file (as the caller spells it, a parameter's name
in backticks, e.g. `` `train_features` ``, which the CLI shows as its option): no output may
overwrite one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from simattr._io import check_not_input, read_npy
from simattr.errors import InvalidInputError

if TYPE_CHECKING:
    from simattr.attribution.explain import Explanation
    from simattr.ranking import Ranking

PathLike = str | os.PathLike[str]
Inputs = dict[str, PathLike | None]


class Written(NamedTuple):
    """The table and the page written (``None``: not asked for)."""

    table: Path | None
    page: Path | None


def check_ranking_outputs(
    out: PathLike,
    inputs: Inputs,
    *,
    csv: PathLike | None = None,
    html: PathLike | None = None,
    data: str | None = None,
    export_paper: PathLike | None = None,
) -> None:
    """Refuse, before any work, a table or page path that cannot be written, overwrites an input
    or another output (``out``, ``export_paper``), or a page without the ``data`` whose images
    it shows."""
    from simattr.report.attribution_page import check_page_dir
    from simattr.report.table import check_table_path

    outputs = {"`out`": out, "`export_paper`": export_paper, "`csv`": csv, "`html`": html}
    check_not_input(outputs, inputs, folders=("`html`",))
    if csv is not None:
        check_table_path(csv)
    if html is not None:
        if data is None:
            raise InvalidInputError("`html` shows the images: it needs `data`")
        check_page_dir(html, {**inputs, "`out`": out, "`csv`": csv})


def write_ranking_outputs(
    ranking: Ranking,
    inputs: Inputs,
    *,
    out: PathLike,
    csv: PathLike | None = None,
    html: PathLike | None = None,
    data: str | None = None,
    train_labels: PathLike | None = None,
    test_labels: PathLike | None = None,
) -> Written:
    """Write the table (with file paths when ``data`` is given, labels from ``data`` or the
    label files) and the page of ``ranking``; checked again, as the files may have changed."""
    from simattr.report.table import write_ranking_table

    table = page = None
    if csv is not None:
        table = write_ranking_table(
            csv,
            ranking,
            data,
            train_labels=None if train_labels is None else read_npy(train_labels, "`train_labels`"),
            test_labels=None if test_labels is None else read_npy(test_labels, "`test_labels`"),
            inputs=inputs,
        )
    if html is not None and data is not None:
        from simattr.report.attribution_page import ranking_page

        page = ranking_page(html, ranking, data, inputs={**inputs, "`out`": out, "`csv`": csv})
    return Written(None if table is None else Path(table), page)


def check_explanation_outputs(
    inputs: Inputs, *, csv: PathLike | None = None, html: PathLike | None = None
) -> None:
    """Refuse, before any work, a table or page of ``simattr explain`` that cannot be written or
    would overwrite an input."""
    from simattr.report.attribution_page import check_page_dir
    from simattr.report.table import check_table_path

    check_not_input({"`csv`": csv, "`html`": html}, inputs, folders=("`html`",))
    if csv is not None:
        check_table_path(csv)
    if html is not None:
        check_page_dir(html, {**inputs, "`csv`": csv})


def write_explanation_outputs(
    explanation: Explanation,
    inputs: Inputs,
    *,
    csv: PathLike | None = None,
    html: PathLike | None = None,
) -> Written:
    """Write the table and the page of an explanation of new image files."""
    from simattr.report.attribution_page import explanation_page
    from simattr.report.table import write_explanation_table

    table = None if csv is None else write_explanation_table(csv, explanation, inputs=inputs)
    page = (
        None
        if html is None
        else explanation_page(html, explanation, inputs={**inputs, "`csv`": csv})
    )
    return Written(None if table is None else Path(table), page)


__all__ = [
    "Written",
    "check_explanation_outputs",
    "check_ranking_outputs",
    "write_explanation_outputs",
    "write_ranking_outputs",
]
