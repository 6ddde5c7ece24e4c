"""CLI commands of the attribution: ``features``, ``attribute``, ``explain`` and ``demo``.

They parse options and call the Python API (:mod:`simattr.features`, :mod:`simattr.attribution`,
:mod:`simattr.demo`), then print a short summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.markup import escape
from rich.table import Table

from simattr._io import check_not_input, check_writable, read_npy
from simattr.cli._common import (
    IndexKind,
    Method,
    Retrieval,
    Solver,
    Split,
    app,
    console,
    err_console,
    friendly_errors,
    load_split,
    parse_targets,
    requires_files,
)
from simattr.errors import InvalidInputError
from simattr.validation import check_device, check_positive_int


@app.command()
@friendly_errors
def features(
    data: Annotated[str, typer.Option(help="Dataset: a path, 'digits' or 'cifar10'.")],
    out: Annotated[Path, typer.Option(help="Output .npy file (a .npy.json sidecar is added).")],
    split: Annotated[Split, typer.Option(help="Which split to embed.")] = Split.train,
    backbone: Annotated[
        str,
        typer.Option(
            help="'default' (shipped CIFAR-10 MoCo backbone), 'shipped:NAME', "
            "'random[:ARCH][:SEED]' (ARCH: resnet18, resnet18-w32, resnet18-w16, "
            "resnet18-imagenet, resnet50-imagenet), or a weights file (ours, torchvision, MoCo "
            "v1/v2/v3, DINO, lightly, solo-learn; never unpickled; architecture inferred); "
            "append @SIZE for another input size of an ImageNet-stem backbone."
        ),
    ] = "default",
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 256,
    image_size: Annotated[
        int | None, typer.Option(help="Resize images of folder datasets to this size.")
    ] = None,
) -> None:
    """Embed every image of a split with a backbone and save the features."""
    if out.suffix != ".npy":
        raise InvalidInputError(f"--out must end with .npy, got {out}")
    check_writable(out)  # before the expensive part, not after a whole split is embedded
    backbone_file = Path(backbone) if Path(backbone).suffix else None
    check_not_input({"--out": out}, {"--backbone": backbone_file})
    check_positive_int(batch_size, "--batch-size")
    dataset = load_split(data, split.value, image_size)
    check_device(device)  # imports torch: after the checks that need nothing
    from simattr.features import extract_features, save_features  # torch: after the checks
    from simattr.models import load_backbone

    net = load_backbone(backbone, device=device)
    feats = extract_features(net, dataset, batch_size=batch_size, device=device)
    save_features(out, feats, backbone=net, dataset=dataset, root=data)
    console.print(
        f"wrote {out}: {feats.shape[0]} x {feats.shape[1]} features of {dataset.name}/{split.value}"
        f" (backbone {net.name}{'' if net.pretrained else ', randomly initialised'})"
    )


@app.command()
@friendly_errors
@requires_files(
    "train_features",
    "test_features",
    "train_labels",
    "test_labels",
    "targets_file",
    "train_indices",
    "predictions",
)
def attribute(
    train_features: Annotated[Path, typer.Option(help="Training features .npy (n_train x D).")],
    test_features: Annotated[Path, typer.Option(help="Test features .npy (n_test x D).")],
    out: Annotated[Path, typer.Option(help="Output ranking .npz (targets, indices, scores).")],
    data: Annotated[
        str | None, typer.Option(help="Dataset to take the labels from (path, digits, cifar10).")
    ] = None,
    train_labels: Annotated[Path | None, typer.Option(help="Training labels .npy.")] = None,
    test_labels: Annotated[Path | None, typer.Option(help="Test labels .npy.")] = None,
    method: Annotated[Method, typer.Option(help="Scoring method.")] = Method.esvm,
    all_classes: Annotated[
        bool, typer.Option("--all-classes", help="Rank the whole training set, not the class.")
    ] = False,
    targets: Annotated[
        str | None, typer.Option(help="Comma-separated test rows, e.g. 3,17,42 (default: all).")
    ] = None,
    targets_file: Annotated[Path | None, typer.Option(help="A .npy of test rows.")] = None,
    topk: Annotated[int, typer.Option(help="Training images kept per target.")] = 100,
    C: Annotated[float, typer.Option("--C", help="ESVM regularisation.")] = 0.1,
    solver: Annotated[Solver, typer.Option(help="ESVM solver.")] = Solver.batched,
    device: Annotated[str, typer.Option(help="cpu or cuda (ESVM solver).")] = "cpu",
    normalize: Annotated[
        bool,
        typer.Option(
            "--normalize/--no-normalize",
            help="L2-normalise features before scoring (the paper code's scripts do not).",
        ),
    ] = True,
    export_paper_npy: Annotated[
        Path | None, typer.Option(help="Also write the paper's (n_test, k) index matrix here.")
    ] = None,
    block_size: Annotated[
        int, typer.Option(help="Targets per saved block (OUT.npz.parts/); a crash loses one.")
    ] = 1024,
    resume: Annotated[
        bool,
        typer.Option("--resume/--no-resume", help="Reuse finished blocks of an interrupted run."),
    ] = True,
    retrieval: Annotated[
        Retrieval,
        typer.Option(
            help="--all-classes: 'faiss' scores FAISS candidates only (exact ESVM, certified), "
            "'exact' every training image; 'auto': faiss from 200,000 training images."
        ),
    ] = Retrieval.auto,
    candidates: Annotated[
        int | None,
        typer.Option(help="--all-classes with faiss: candidates per target (max(4k, 2048))."),
    ] = None,
    index: Annotated[
        IndexKind, typer.Option(help="FAISS search: flat (exact) or ivf (approximate).")
    ] = IndexKind.flat,
    nprobe: Annotated[int, typer.Option(help="IVF cells visited per target.")] = 16,
    pool: Annotated[
        str | None,
        typer.Option(help="Rank only the training pool of this recipe (for `simattr support`)."),
    ] = None,
    train_indices: Annotated[
        Path | None, typer.Option(help="Rank only these training rows (a .npy of ints).")
    ] = None,
    predictions: Annotated[
        Path | None,
        typer.Option(
            help="Explain a model's predicted classes, not the true labels: a .npy of one class "
            "per test image, or a .csv of file,class rows (files as the data name them). The "
            "ranking never looks at the model; the class only chooses the pool ranked.",
        ),
    ] = None,
    csv: Annotated[
        Path | None,
        typer.Option(
            "--csv",
            help="Also write the ranking as a table (target, target_path, target_label, rank, "
            "train_row, train_path, train_label, score); Parquet if it ends in .parquet.",
        ),
    ] = None,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html",
            help="Also write DIR/index.html: each target and its top images (thumbnails, files, "
            "labels, scores), one self-contained page; needs --data.",
        ),
    ] = None,
) -> None:
    """Rank the training images responsible for each target test image (resumable)."""
    from simattr.report.table import check_table_path, write_ranking_table

    inputs = {
        "--targets-file": targets_file,
        "--train-features": train_features,
        "--test-features": test_features,
        "--train-labels": train_labels,
        "--test-labels": test_labels,
        "--train-indices": train_indices,
        "--predictions": predictions,
    }
    outputs = {"--out": out, "--export-paper-npy": export_paper_npy, "--csv": csv, "--html": html}
    check_not_input(outputs, inputs, folders=("--html",))  # --html equal to --out: refused now
    if csv is not None:
        check_table_path(csv)
    if html is not None:
        from simattr.report.attribution_page import check_page_dir

        if data is None:
            raise InvalidInputError("--html shows the images: it needs --data ROOT")
        check_page_dir(html, {**inputs, "--out": out, "--csv": csv})
    check_positive_int(topk, "--topk")
    check_device(device)
    n_test = _n_rows(test_features)
    from simattr.attribution import Attributor  # torch, scikit-learn: after the cheap checks
    from simattr.attribution.workflow import attribute as run_attribute

    attributor = Attributor(
        method.value,
        class_conditional=not all_classes,
        C=C,
        solver=solver.value,
        normalize=normalize,
        device=device,
        retrieval=retrieval.value,
        n_candidates=candidates,
        index=index.value,
        nprobe=nprobe,
    )
    run = run_attribute(
        train_features,
        test_features,
        out,
        attributor=attributor,
        data=data,
        train_labels=train_labels,
        test_labels=test_labels,
        targets=None
        if n_test is None or (targets is None and targets_file is None)
        else parse_targets(targets, targets_file, n_test),
        k=topk,
        pool=pool,
        train_indices=train_indices,
        export_paper=export_paper_npy,
        block_size=block_size,
        resume=resume,
        progress=True,  # a bar on a terminal, plain lines in a log
        predictions=predictions,
    )
    stats = run.attributor.retrieval_stats_
    if run.attributor.retrieval_ == "faiss" and stats.uncertified:
        err_console.print(
            f"[yellow]note:[/] {stats.uncertified} target(s) not certified exact after the "
            "candidate rounds; raise --candidates",
            highlight=False,
        )
    # every output is written before anything is printed: a reader that closes the pipe
    # (`simattr attribute ... | head`) cannot stop the run short of its outputs
    if csv is not None:
        write_ranking_table(
            csv,
            run.ranking,
            data,
            train_labels=None if train_labels is None else read_npy(train_labels, "--train-labels"),
            test_labels=None if test_labels is None else read_npy(test_labels, "--test-labels"),
            inputs=inputs,
        )
    page = None
    if html is not None and data is not None:
        from simattr.report.attribution_page import ranking_page

        page = ranking_page(html, run.ranking, data, inputs={**inputs, "--out": out, "--csv": csv})
    explained = ", predicted classes" if predictions is not None else ""
    console.print(
        f"wrote {out}: top-{topk} of {len(run.ranking.targets)} target(s) by {method.value}"
        f" ({'all classes' if all_classes else 'class-conditional'}{explained})"
    )
    if csv is not None:
        paths = ", with file paths" if data is not None else " (no --data: no file paths)"
        console.print(f"wrote {csv}: one row per ranked training image{paths}")
    if page is not None:
        console.print(f"wrote {page}: open it in a browser")


@app.command()
@friendly_errors
@requires_files("train_features", "predictions", images="{path}: no such image file")
def explain(
    images: Annotated[list[Path], typer.Argument(help="Image files to explain (any size).")],
    data: Annotated[str, typer.Option(help="The dataset the training features were made from.")],
    train_features: Annotated[
        Path, typer.Option(help="Training features .npy (`simattr features --split train`).")
    ],
    backbone: Annotated[
        str | None,
        typer.Option(help="Backbone to embed the images (default: the features' sidecar's)."),
    ] = None,
    label: Annotated[
        str | None, typer.Option(help="Class to explain every image with (name or index).")
    ] = None,
    predictions: Annotated[
        Path | None,
        typer.Option(help="Or a model's predictions: a .csv of file,class rows, one per image."),
    ] = None,
    topk: Annotated[int, typer.Option(help="Training images kept per image.")] = 10,
    method: Annotated[Method, typer.Option(help="Scoring method.")] = Method.esvm,
    C: Annotated[float, typer.Option("--C", help="ESVM regularisation.")] = 0.1,
    normalize: Annotated[
        bool,
        typer.Option("--normalize/--no-normalize", help="L2-normalise features before scoring."),
    ] = True,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    csv: Annotated[
        Path | None,
        typer.Option(
            "--csv", help="Also write the table (CSV, or Parquet if it ends in .parquet)."
        ),
    ] = None,
    html: Annotated[
        Path | None,
        typer.Option("--html", help="Also write DIR/index.html: the images and their top images."),
    ] = None,
) -> None:
    """Explain new image files: the training images of their class that explain each one."""
    from simattr.report.attribution_page import check_page_dir, explanation_page
    from simattr.report.table import check_table_path, write_explanation_table

    inputs: dict[str, Path | None] = {
        "--train-features": train_features,
        "--predictions": predictions,
        **{f"image {p}": p for p in images},
    }
    backbone_file = Path(backbone) if backbone is not None and Path(backbone).suffix else None
    inputs["--backbone"] = backbone_file
    check_not_input({"--csv": csv, "--html": html}, inputs, folders=("--html",))
    if csv is not None:
        check_table_path(csv)
    if html is not None:
        check_page_dir(html, {**inputs, "--csv": csv})
    check_device(device)
    check_positive_int(topk, "--topk")
    from simattr.attribution import Attributor  # torch, scikit-learn: after the cheap checks
    from simattr.attribution import explain as run_explain

    result = run_explain(
        images,
        train_features,
        data=data,
        backbone=backbone,
        label=label,
        predictions=predictions,
        attributor=Attributor(method.value, C=C, normalize=normalize, device=device),
        k=topk,
        device=device,
    )
    # outputs first, then the tables: a closed pipe cannot stop the run short of its files
    if csv is not None:
        write_explanation_table(csv, result, inputs=inputs)
    page = None if html is None else explanation_page(html, result, inputs={**inputs, "--csv": csv})
    names = result.class_names
    for t, image in enumerate(result.images):
        # file and class names are the user's: printed as text, never read as rich markup
        console.print(
            f"[bold]{escape(image)}[/]: explained as {escape(names[int(result.labels[t])])} "
            f"(top-{topk} by {method.value})",
            highlight=False,
        )
        table = Table()
        table.add_column("rank", justify="right")
        table.add_column("score", justify="right")
        table.add_column("label")
        table.add_column("training file", overflow="fold")
        for row in (r for r in result.rows() if r["image"] == t):
            table.add_row(
                str(row["rank"]),
                f"{row['score']:+.3f}",
                escape(row["train_label"]),
                escape(row["train_path"]),
            )
        console.print(table)
    ranked = (result.ranking.indices >= 0).sum(axis=1)
    if len(ranked) and int(ranked.min()) < topk:
        err_console.print(
            f"[yellow]note:[/] a class pool holds fewer than --topk {topk} training images "
            f"(the smallest: {int(ranked.min())}); it is ranked whole",
            highlight=False,
        )
    console.print(f"backbone: {result.backbone.get('name')}; labels from {result.label_source}")
    if csv is not None:
        console.print(f"wrote {csv}: one row per ranked training image")
    if page is not None:
        console.print(f"wrote {page}: open it in a browser")


def _n_rows(features: Path) -> int | None:
    """Rows of a features file from its header alone (``None``: let the API name the fault)."""
    try:
        return int(np.load(features, mmap_mode="r", allow_pickle=False).shape[0])
    except (OSError, ValueError, EOFError, IndexError):
        return None


@app.command()
@friendly_errors
def demo(
    out: Annotated[Path, typer.Option(help="Folder for features, ranking and pictures.")] = Path(
        "simattr-demo"
    ),
    targets: Annotated[int, typer.Option(help="Number of random test images to explain.")] = 4,
    topk: Annotated[int, typer.Option(help="Training images shown per target.")] = 8,
    seed: Annotated[int, typer.Option(help="Seed of the target draw.")] = 0,
) -> None:
    """Run the whole pipeline on scikit-learn's digits: nothing to download."""
    from simattr.demo import run_demo

    result = run_demo(out, n_targets=targets, k=topk, seed=seed, progress=True)
    names = result.class_names
    table = Table(title=f"top-{topk} training images per target (exemplar SVM, digits)")
    table.add_column("target", justify="right")
    table.add_column("label")
    table.add_column("top training images (row: label, score)")
    for row, target in enumerate(result.ranking.targets):
        cells = [
            f"{i}:{names[result.train_labels[i]]} {s:+.2f}"
            for i, s in zip(result.ranking.indices[row], result.ranking.scores[row], strict=True)
        ]
        table.add_row(str(target), names[result.test_labels[target]], "  ".join(cells))
    console.print(table)
    console.print(f"backbone: {result.backbone_note}")
    for grid in result.grids:
        console.print(f"picture: {grid}")
    console.print(f"done in {result.seconds:.1f} s; outputs in {out}/")
