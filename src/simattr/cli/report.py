"""``simattr report``: why is my model wrong? A page and a table from a folder and predictions."""

from __future__ import annotations

from typing import Annotated

import typer

from simattr.cli._common import (
    BackboneOption,
    DataOption,
    DeviceOption,
    ImageSizeOption,
    OutOption,
    RequiredPredictionsOption,
    TopkOption,
    app,
    console,
    friendly_errors,
    requires_files,
)


@app.command()
@friendly_errors
@requires_files("predictions")
def report(
    data: DataOption,
    predictions: RequiredPredictionsOption,
    out: OutOption,
    backbone: BackboneOption = None,
    image_size: ImageSizeOption = None,
    topk: TopkOption = 10,
    per_page: Annotated[int, typer.Option(help="Wrong predictions per page.")] = 100,
    device: DeviceOption = "cpu",
) -> None:
    """Explain every wrong prediction: the training images behind it, badged by the audit.

    --out: the folder for index.html and why_wrong.csv/.parquet. --topk training images are
    shown on each class side. The features are computed once with --backbone and cached.
    """
    from simattr.audit.why_wrong import report as run

    found, written = run(
        data, predictions, out, per_page=per_page, backbone=backbone or "default",
        image_size=image_size, k=topk, device=device, progress=True,
    )  # fmt: skip
    console.print(repr(found))
    for path in written:
        console.print(f"wrote {path}")
