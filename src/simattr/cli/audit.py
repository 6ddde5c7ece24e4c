"""``simattr audit``: near-duplicates, train/test leaks and likely label errors of a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from simattr.cli._common import (
    DataOption,
    Detector,
    Split,
    app,
    console,
    friendly_errors,
    requires_files,
)


@app.command()
@friendly_errors
@requires_files("features", "test_features")
def audit(
    data: DataOption,
    features: Annotated[Path, typer.Option(help="Features .npy of the audited split (n x D).")],
    out: Annotated[
        Path, typer.Option(help="Folder for label_issues.csv, duplicates.csv, audit.html.")
    ],
    split: Annotated[Split, typer.Option(help="The split the features are of.")] = Split.train,
    test_features: Annotated[
        Path | None,
        typer.Option(help="Features .npy of the test split: look for leaks into --split train."),
    ] = None,
    html: Annotated[bool, typer.Option("--html", help="Write the page audit.html.")] = False,
    csv: Annotated[
        bool,
        typer.Option(
            "--csv", help="Write label_issues.csv and duplicates.csv (the default without --html)."
        ),
    ] = False,
    detector: Annotated[
        Detector, typer.Option(help="Label-error score that orders label_issues.csv.")
    ] = Detector.simattr,
    k: Annotated[int, typer.Option("--k", help="Neighbours in the label vote.")] = 50,
    duplicate_threshold: Annotated[
        float, typer.Option(help="Smallest similarity (cosine and pixels) of a reported pair.")
    ] = 0.9,
    threads: Annotated[
        int | None,
        typer.Option(help="Torch and FAISS threads (default: all cores; 1 on a busy machine)."),
    ] = None,
) -> None:
    """Find near-duplicates, train/test leaks and likely label errors from features."""
    from simattr.audit.workflow import run_audit
    from simattr.validation import check_positive_int, check_threads

    check_positive_int(k, "--k")
    if check_threads(threads, "--threads") is not None:
        import faiss
        import torch

        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(threads)
    run = run_audit(
        data,
        features,
        out,
        split=split.value,
        test_features=test_features,
        csv=csv or not html,
        html=html,
        progress=True,
        k=k,
        detector=detector.value,
        duplicate_threshold=duplicate_threshold,
    )
    r = run.result
    d = r.duplicates
    n_leaks = int(d.leaks.sum())
    console.print(
        f"audited {r.n_train} images of {split.value}"
        + (f" against {r.n_test} test images" if r.n_test else "")
        + f": {len(d) - n_leaks} near-duplicate pairs, {n_leaks} leaks; label errors ranked by "
        f"{r.label_issues.detector}"
    )
    for path in run.written:
        console.print(f"wrote {path}")
