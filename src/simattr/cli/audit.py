"""``simattr audit``: near-duplicates, train/test leaks and likely label errors of a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from simattr.cli._common import (
    DataOption,
    Detector,
    OptionalTestFeaturesOption,
    OutOption,
    Split,
    SplitOption,
    ThreadsOption,
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
    out: OutOption,
    split: SplitOption = Split.train,
    test_features: OptionalTestFeaturesOption = None,
    page: Annotated[bool, typer.Option("--page", help="Write the page audit.html.")] = False,
    tables: Annotated[
        bool,
        typer.Option(
            "--tables",
            help="Write label_issues.csv and duplicates.csv (the default without --page).",
        ),
    ] = False,
    detector: Annotated[
        Detector, typer.Option(help="Label-error score that orders label_issues.csv.")
    ] = Detector.simattr,
    neighbours: Annotated[int, typer.Option(help="Neighbours in the label vote.")] = 50,
    duplicate_threshold: Annotated[
        float,
        typer.Option(
            help="Smallest pixel score of a confirmed pair (shifts, resampling, JPEG, mirrors, "
            "colour, crops to 70 % searched); unconfirmed pairs at cosine 0.97+ are possible."
        ),
    ] = 0.9,
    threads: ThreadsOption = None,
) -> None:
    """Find near-duplicates, train/test leaks and likely label errors from features.

    --out: the folder for label_issues.csv, duplicates.csv and audit.html. With
    --test-features, also the leaks of the test split into --split train. --threads sets the
    torch and FAISS threads (1 on a busy machine).
    """
    from simattr.audit.workflow import run_audit
    from simattr.validation import check_positive_int, check_threads

    check_positive_int(neighbours, "--neighbours")
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
        csv=tables or not page,
        html=page,
        progress=True,
        k=neighbours,
        detector=detector.value,
        duplicate_threshold=duplicate_threshold,
    )
    _print_audit(run, split.value)


def _print_audit(run, split: str) -> None:
    """What the audit found, and the files it wrote."""
    r = run.result
    d = r.duplicates
    n_leaks = int(d.leaks.sum())
    console.print(
        f"audited {r.n_train} images of {split}"
        + (f" against {r.n_test} test images" if r.n_test else "")
        + f": {len(d) - n_leaks} near-duplicate pairs, {n_leaks} leaks; label errors ranked by "
        f"{r.label_issues.detector}"
    )
    if d.possible is not None and len(d.possible):
        console.print(f"{len(d.possible)} possible duplicate pairs, not confirmed by the pixels")
    if d.note:
        console.print(f"duplicates: {d.note}", markup=False)
    for path in run.written:
        console.print(f"wrote {path}")
