"""``simattr report``: why is my model wrong? A page and a table from a folder and predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from simattr.cli._common import DataOption, app, console, friendly_errors, requires_files


@app.command()
@friendly_errors
@requires_files("predictions")
def report(
    data: DataOption,
    predictions: Annotated[
        Path, typer.Option(help="The model's predictions: file,class rows (.csv) or a .npy.")
    ],
    out: Annotated[Path, typer.Option(help="Folder for index.html, why_wrong.csv/.parquet.")],
    backbone: Annotated[str, typer.Option(help="Backbone of the features (cached).")] = "default",
    image_size: Annotated[int | None, typer.Option(help="Resize folder images to this.")] = None,
    topk: Annotated[int, typer.Option(help="Training images per class side.")] = 10,
    per_page: Annotated[int, typer.Option(help="Wrong predictions per page.")] = 100,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
) -> None:
    """Explain every wrong prediction: the training images behind it, badged by the audit."""
    from simattr.audit.why_wrong import report as run

    found, written = run(
        data, predictions, out, per_page=per_page, backbone=backbone, image_size=image_size,
        k=topk, device=device, progress=True,
    )  # fmt: skip
    console.print(repr(found))
    for path in written:
        console.print(f"wrote {path}")
