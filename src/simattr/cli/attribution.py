"""CLI commands of the attribution: ``features``, ``attribute`` and ``demo``.

They parse options and call the Python API (:mod:`simattr.features`, :mod:`simattr.attribution`,
:mod:`simattr.demo`), then print a short summary.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from simattr.cli._common import (
    IndexKind,
    Method,
    Retrieval,
    Solver,
    Split,
    app,
    candidate_rows,
    console,
    err_console,
    friendly_errors,
    load_labels,
    load_split,
    parse_targets,
)
from simattr.errors import InvalidInputError


@app.command()
@friendly_errors
def features(
    data: Annotated[str, typer.Option(help="Dataset: a path, 'digits' or 'cifar10'.")],
    out: Annotated[Path, typer.Option(help="Output .npy file (a .npy.json sidecar is added).")],
    split: Annotated[Split, typer.Option(help="Which split to embed.")] = Split.train,
    backbone: Annotated[
        str,
        typer.Option(
            help="'default' (shipped CIFAR-10 MoCo backbone), 'random[:SEED]', or a weights file "
            "(ours, MoCo v1/v2/v3, lightly, solo-learn or torchvision; never unpickled)."
        ),
    ] = "default",
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 256,
    image_size: Annotated[
        int | None, typer.Option(help="Resize images of folder datasets to this size.")
    ] = None,
) -> None:
    """Embed every image of a split with a backbone and save the features."""
    from simattr.features import extract_features, save_features
    from simattr.models import load_backbone

    if out.suffix != ".npy":
        raise InvalidInputError(f"--out must end with .npy, got {out}")
    dataset = load_split(data, split.value, image_size)
    net = load_backbone(backbone, device=device)
    feats = extract_features(net, dataset, batch_size=batch_size, device=device)
    save_features(out, feats, backbone=net, dataset=dataset)
    console.print(
        f"wrote {out}: {feats.shape[0]} x {feats.shape[1]} features of {dataset.name}/{split.value}"
        f" (backbone {net.name}{'' if net.pretrained else ', randomly initialised'})"
    )


@app.command()
@friendly_errors
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
) -> None:
    """Rank the training images responsible for each target test image (resumable)."""
    from simattr.attribution import Attributor, rank_resumable
    from simattr.attribution import export_paper_npy as export
    from simattr.attribution.resumable import fingerprint_array, fingerprint_file
    from simattr.features import load_features, load_features_metadata
    from simattr.validation import check_same_width

    if out.suffix != ".npz":
        raise InvalidInputError(f"--out must end with .npz, got {out}")
    if export_paper_npy is not None and export_paper_npy.suffix != ".npy":
        raise InvalidInputError(f"--export-paper-npy must end with .npy, got {export_paper_npy}")
    xtr = load_features(train_features, "--train-features")
    xte = load_features(test_features, "--test-features")
    check_same_width(xtr, xte, "--train-features", "--test-features")
    if data is not None and (train_labels is not None or test_labels is not None):
        raise InvalidInputError("give either --data or --train-labels/--test-labels, not both")
    if data is not None:
        ytr, yte = load_split(data, "train").labels, load_split(data, "test").labels
        label_source = data
    elif train_labels is not None and test_labels is not None:
        ytr = load_labels(train_labels, "--train-labels")
        yte = load_labels(test_labels, "--test-labels")
        label_source = f"{train_labels}, {test_labels}"
    elif all_classes:
        ytr = yte = None
        label_source = None
    else:
        raise InvalidInputError(
            "class-conditional attribution needs labels: give --data ROOT, or --train-labels "
            "and --test-labels (or use --all-classes)"
        )
    if yte is not None:
        from simattr.validation import check_labels

        ytr = check_labels(ytr, len(xtr), "training labels", for_what="training features")
        yte = check_labels(yte, len(xte), "test labels", for_what="test features")
    chosen = parse_targets(targets, targets_file, len(xte))
    rows = candidate_rows(pool, train_indices, data, len(xtr))
    if rows is not None:
        xtr = xtr[rows]
        ytr = None if ytr is None else ytr[rows]
    attributor = Attributor(
        method.value,
        class_conditional=not all_classes,
        C=C,
        solver=solver.value,
        device=device,
        retrieval=retrieval.value,
        n_candidates=candidates,
        index=index.value,
        nprobe=nprobe,
    ).fit(xtr, ytr if not all_classes else None)
    inputs = {
        "train_features": fingerprint_file(train_features),
        "test_features": fingerprint_file(test_features),
        "train_labels": fingerprint_array(None if all_classes else ytr),
        "test_labels": fingerprint_array(None if all_classes else yte),
    }
    metadata = dict(
        method=method.value,
        class_conditional=not all_classes,
        C=C if method is Method.esvm else None,
        solver=solver.value if method is Method.esvm else None,
        retrieval=attributor.retrieval_,
        labels=label_source,
        train_features=str(train_features),
        test_features=str(test_features),
        train_features_meta=load_features_metadata(train_features),
        test_features_meta=load_features_metadata(test_features),
        pool=pool,
        train_indices=None if train_indices is None else str(train_indices),
    )
    if attributor.retrieval_ == "faiss":
        metadata.update(n_candidates=candidates, index=index.value, nprobe=nprobe)
    ranking = rank_resumable(
        attributor,
        xte,
        None if all_classes else yte,
        chosen,
        topk,
        out,
        block_size=block_size,
        resume=resume,
        progress=sys.stderr.isatty(),
        inputs=inputs,
        metadata=metadata,
        train_rows=rows,
    )
    if attributor.retrieval_ == "faiss" and attributor.retrieval_stats_.uncertified:
        err_console.print(
            f"[yellow]note:[/] {attributor.retrieval_stats_.uncertified} target(s) not "
            "certified exact after the candidate rounds; raise --candidates",
            highlight=False,
        )
    if export_paper_npy is not None:
        export(export_paper_npy, ranking, len(xte))
    console.print(
        f"wrote {out}: top-{topk} of {len(chosen)} target(s) by {method.value}"
        f" ({'all classes' if all_classes else 'class-conditional'})"
    )


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

    result = run_demo(out, n_targets=targets, k=topk, seed=seed, progress=sys.stderr.isatty())
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
