"""CLI commands of the attribution: ``features``, ``attribute``, ``explain`` and ``demo``.

They parse options and call the Python API (:mod:`simattr.features`, :mod:`simattr.attribution`,
:mod:`simattr.report.outputs`, :mod:`simattr.demo`), then print a short summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    import numpy as np

from simattr.cli._common import (
    BackboneOption,
    BatchSizeOption,
    COption,
    CsvOption,
    DataOption,
    DeviceOption,
    HtmlOption,
    ImageSizeOption,
    IndexKind,
    LearnedModelOption,
    Method,
    MethodOption,
    NormalizeOption,
    NTargetsOption,
    OptionalDataOption,
    OptionalOutOption,
    OutOption,
    PredictionsOption,
    ResumeOption,
    Retrieval,
    SeedOption,
    Solver,
    Split,
    SplitOption,
    TargetsOption,
    TestFeaturesOption,
    TopkOption,
    TrainFeaturesOption,
    app,
    check_device,
    check_not_input,
    check_positive_int,
    check_writable,
    console,
    err_console,
    friendly_errors,
    load_split,
    method_for,
    parse_targets,
    requires_files,
)
from simattr.errors import InvalidInputError

#: What ``demo`` does without --out and --n-targets.
DEMO_OUT, DEMO_TARGETS = Path("simattr-demo"), 4


@app.command()
@friendly_errors
def features(
    data: DataOption,
    out: OutOption,
    split: SplitOption = Split.train,
    backbone: BackboneOption = None,
    device: DeviceOption = "cpu",
    batch_size: BatchSizeOption = 256,
    image_size: ImageSizeOption = None,
) -> None:
    """Embed every image of a split with a backbone and save the features.

    --out: the features .npy (a .npy.json sidecar is added beside it). Without --backbone, the
    shipped CIFAR-10 MoCo backbone ('default').
    """
    if out.suffix != ".npy":
        raise InvalidInputError(f"--out must end with .npy, got {out}")
    check_writable(out)  # before the expensive part, not after a whole split is embedded
    backbone = backbone or "default"
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
    "learned_model",
)
def attribute(
    train_features: TrainFeaturesOption,
    test_features: TestFeaturesOption,
    out: OutOption,
    data: OptionalDataOption = None,
    train_labels: Annotated[Path | None, typer.Option(help="Training labels .npy.")] = None,
    test_labels: Annotated[Path | None, typer.Option(help="Test labels .npy.")] = None,
    method: MethodOption = Method.esvm,
    all_classes: Annotated[
        bool, typer.Option("--all-classes", help="Rank the whole training set, not the class.")
    ] = False,
    targets: TargetsOption = None,
    targets_file: Annotated[Path | None, typer.Option(help="A .npy of test rows.")] = None,
    topk: TopkOption = 10,
    C: COption = 0.1,
    solver: Annotated[Solver, typer.Option(help="ESVM solver.")] = Solver.batched,
    device: DeviceOption = "cpu",
    normalize: NormalizeOption = True,
    export_paper_npy: Annotated[
        Path | None, typer.Option(help="Also write the paper's (n_test, k) index matrix here.")
    ] = None,
    block_size: Annotated[
        int, typer.Option(help="Targets per saved block (OUT.npz.parts/); a crash loses one.")
    ] = 1024,
    resume: ResumeOption = True,
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
    predictions: PredictionsOption = None,
    learned_model: LearnedModelOption = None,
    csv: CsvOption = None,
    html: HtmlOption = None,
) -> None:
    """Rank the training images responsible for each target test image (resumable).

    --out: the ranking .npz (targets, indices, scores), its finished blocks kept in
    OUT.npz.parts/ until the end. The labels come from --data, or from --train-labels and
    --test-labels; --data also gives the table its file paths and is needed by --html. Without
    --targets or --targets-file, every test row is a target.
    """
    from simattr.report.outputs import check_ranking_outputs, write_ranking_outputs

    inputs = {
        "--targets-file": targets_file,
        "--train-features": train_features,
        "--test-features": test_features,
        "--train-labels": train_labels,
        "--test-labels": test_labels,
        "--train-indices": train_indices,
        "--predictions": predictions,
    }
    check_ranking_outputs(out, inputs, csv=csv, html=html, data=data, export_paper=export_paper_npy)
    check_positive_int(topk, "--topk")
    check_device(device)
    chosen = _chosen_targets(targets, targets_file, test_features)
    from simattr.attribution.workflow import attribute as run_attribute  # torch: after checks

    attributor = _attributor(method_for(method.value, learned_model), all_classes, C, solver,
                             normalize, device, retrieval, candidates, index, nprobe)  # fmt: skip
    run = run_attribute(
        train_features, test_features, out, attributor=attributor, data=data,
        train_labels=train_labels, test_labels=test_labels, targets=chosen, k=topk, pool=pool,
        train_indices=train_indices, export_paper=export_paper_npy, block_size=block_size,
        resume=resume, progress=True, predictions=predictions,
    )  # fmt: skip
    # every output is written before anything is printed: a reader that closes the pipe
    # (`simattr attribute ... | head`) cannot stop the run short of its outputs
    written = write_ranking_outputs(run.ranking, inputs, out=out, csv=csv, html=html, data=data,
                                    train_labels=train_labels, test_labels=test_labels)  # fmt: skip
    _print_attribution(run, out, written, topk=topk, data=data, predictions=predictions)


def _attributor(
    method: Any,
    all_classes: bool,
    C: float,
    solver: Solver,
    normalize: bool,
    device: str,
    retrieval: Retrieval,
    candidates: int | None,
    index: IndexKind,
    nprobe: int,
):
    """The estimator ``attribute``'s options describe."""
    from simattr.attribution import Attributor  # torch, scikit-learn

    return Attributor(
        method,
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


def _chosen_targets(
    targets: str | None, targets_file: Path | None, test_features: Path
) -> np.ndarray | None:
    """The test rows --targets or --targets-file name (``None``: every row, or let the API name
    an unreadable features file)."""
    n_test = _n_rows(test_features)
    if n_test is None or (targets is None and targets_file is None):
        return None
    return parse_targets(targets, targets_file, n_test)


def _print_attribution(run, out: Path, written, *, topk: int, data, predictions) -> None:
    """The summary of ``attribute``: what was ranked and which files were written."""
    stats = run.attributor.retrieval_stats_
    if run.attributor.retrieval_ == "faiss" and stats.uncertified:
        err_console.print(
            f"[yellow]note:[/] {stats.uncertified} target(s) not certified exact after the "
            "candidate rounds; raise --candidates",
            highlight=False,
        )
    explained = ", predicted classes" if predictions is not None else ""
    pools = "class-conditional" if run.attributor.class_conditional else "all classes"
    console.print(
        f"wrote {out}: top-{topk} of {len(run.ranking.targets)} target(s) by "
        f"{run.attributor.method} ({pools}{explained})"
    )
    _print_meaning(run.ranking)
    if written.table is not None:
        paths = ", with file paths" if data is not None else " (no --data: no file paths)"
        console.print(f"wrote {written.table}: one row per ranked training image{paths}")
    if written.page is not None:
        console.print(f"wrote {written.page}: open it in a browser")


@app.command()
@friendly_errors
@requires_files(
    "train_features", "predictions", "learned_model", images="{path}: no such image file"
)
def explain(
    images: Annotated[list[Path], typer.Argument(help="Image files to explain (any size).")],
    data: DataOption,
    train_features: TrainFeaturesOption,
    backbone: BackboneOption = None,
    label: Annotated[
        str | None, typer.Option(help="Class to explain every image with (name or index).")
    ] = None,
    predictions: PredictionsOption = None,
    learned_model: LearnedModelOption = None,
    topk: TopkOption = 10,
    method: MethodOption = Method.esvm,
    C: COption = 0.1,
    normalize: NormalizeOption = True,
    device: DeviceOption = "cpu",
    csv: CsvOption = None,
    html: HtmlOption = None,
) -> None:
    """Explain new image files: the training images of their class that explain each one.

    --data is the dataset the training features were made from. The class comes from --label
    (one for every image) or --predictions (a .csv of file,class rows, one per image).
    """
    from simattr.report.outputs import check_explanation_outputs, write_explanation_outputs

    backbone_file = Path(backbone) if backbone is not None and Path(backbone).suffix else None
    inputs: dict[str, Path | None] = {
        "--train-features": train_features,
        "--predictions": predictions,
        "--backbone": backbone_file,
        **{f"image {p}": p for p in images},
    }
    check_explanation_outputs(inputs, csv=csv, html=html)
    check_device(device)
    check_positive_int(topk, "--topk")
    from simattr.attribution import Attributor  # torch, scikit-learn: after the cheap checks
    from simattr.attribution import explain as run_explain

    scorer = method_for(method.value, learned_model)
    attributor = Attributor(scorer, C=C, normalize=normalize, device=device)
    result = run_explain(images, train_features, data=data, backbone=backbone, label=label,
                         predictions=predictions, attributor=attributor, k=topk,
                         device=device)  # fmt: skip
    # outputs first, then the tables: a closed pipe cannot stop the run short of its files
    written = write_explanation_outputs(result, inputs, csv=csv, html=html)
    _print_explanation(result, topk=topk, method=method.value)
    if written.table is not None:
        console.print(f"wrote {written.table}: one row per ranked training image")
    if written.page is not None:
        console.print(f"wrote {written.page}: open it in a browser")


def _print_meaning(ranking) -> None:
    """What ``attribute``'s scores mean, for a learned model: calibrated, the expected margin
    change for removing each target's top-k (the first targets; the page has each image's);
    uncalibrated, a note that its scores overstate changes."""
    from simattr.report import score_meaning as meaning

    if meaning.is_uncalibrated(ranking.metadata):
        err_console.print(f"[yellow]note:[/] {meaning.legend(ranking.metadata)}", highlight=False)
    if not meaning.shows_margin_change(ranking.metadata):
        return
    changes = [
        meaning.set_change(ranking.metadata, s, i)
        for s, i in zip(ranking.scores, ranking.indices, strict=True)
    ]
    first = ", ".join(f"{t}: {c:+.3f}" for t, c in zip(ranking.targets[:5], changes, strict=False))
    more = ", ..." if len(changes) > 5 else ""
    console.print(
        f"calibrated learned scores: {meaning.MARGIN_HEADING} = minus the score, in logits; "
        f"removing each target's top-{ranking.k} together, expected margin change "
        f"(test row: logits) {first}{more}; mean {sum(changes) / len(changes):+.3f}",
        highlight=False,
    )


def _print_explanation(result, *, topk: int, method: str) -> None:
    """One table per explained image: its top training images, their scores (a calibrated
    learned model's as expected margin changes if removed, with the list's sum), labels, files.
    """
    from simattr.report import score_meaning as meaning

    names = result.class_names
    for t, image in enumerate(result.images):
        # file and class names are the user's: printed as text, never read as rich markup
        console.print(
            f"[bold]{escape(image)}[/]: explained as {escape(names[int(result.labels[t])])} "
            f"(top-{topk} by {method})",
            highlight=False,
        )
        table = Table()
        table.add_column("rank", justify="right")
        table.add_column(meaning.score_heading(result.ranking.metadata), justify="right")
        table.add_column("label")
        table.add_column("training file", overflow="fold")
        for row in (r for r in result.rows() if r["image"] == t):
            table.add_row(
                str(row["rank"]),
                f"{meaning.shown_value(result.ranking.metadata, row['score']):+.3f}",
                escape(row["train_label"]),
                escape(row["train_path"]),
            )
        console.print(table)
        ranking = result.ranking
        note = meaning.set_note(ranking.metadata, ranking.scores[t], ranking.indices[t])
        if note:
            console.print(note, highlight=False)
    ranked = (result.ranking.indices >= 0).sum(axis=1)
    if len(ranked) and int(ranked.min()) < topk:
        err_console.print(
            f"[yellow]note:[/] a class pool holds fewer than --topk {topk} training images "
            f"(the smallest: {int(ranked.min())}); it is ranked whole",
            highlight=False,
        )
    name, _, value = result.label_source.partition("=")  # the API's `label=cat`: --label cat
    given = f"--{name} {value}"
    console.print(f"backbone: {result.backbone.get('name')}; labels from {given}")


def _n_rows(features: Path) -> int | None:
    """Rows of a features file from its header alone (``None``: let the API name the fault)."""
    import numpy as np

    try:
        return int(np.load(features, mmap_mode="r", allow_pickle=False).shape[0])
    except (OSError, ValueError, EOFError, IndexError):
        return None


@app.command()
@friendly_errors
def demo(
    out: OptionalOutOption = None,
    n_targets: NTargetsOption = None,
    topk: TopkOption = 10,
    seed: SeedOption = 0,
) -> None:
    """Run the whole pipeline on scikit-learn's digits: nothing to download.

    --out: the folder for features, ranking and pictures (default ./simattr-demo). It explains
    --n-targets random test images (default 4).
    """
    from simattr.demo import run_demo

    out = DEMO_OUT if out is None else out
    n_targets = DEMO_TARGETS if n_targets is None else n_targets
    result = run_demo(out, n_targets=n_targets, k=topk, seed=seed, progress=True)
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
