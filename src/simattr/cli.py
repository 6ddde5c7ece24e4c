"""The ``simattr`` command line: a thin layer over the Python API.

Each command parses its options, calls the API and prints a short summary. Every refusal from
the API (a :class:`~simattr.errors.SimattrError`) becomes one red line on stderr and exit code 1;
outputs are written atomically, so a failed command leaves no file behind.
"""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from simattr import __version__
from simattr.errors import InvalidInputError, MissingFileError, SimattrError

app = typer.Typer(
    name="simattr",
    help="Which training images made an image classifier predict this?",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def _friendly_errors(func: F) -> F:
    """Turn our exceptions into one readable line and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SimattrError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=1) from None

    return wrapper  # type: ignore[return-value]


def _show_warnings() -> None:
    """Print our warnings (e.g. the stand-in backbone) as yellow notes instead of tracebacks."""

    def show(message, category, filename, lineno, file=None, line=None):
        err_console.print(f"[yellow]note:[/] {message}", highlight=False, soft_wrap=True)

    warnings.showwarning = show


class Split(str, Enum):
    train = "train"
    test = "test"


class Method(str, Enum):
    esvm = "esvm"
    l2 = "l2"
    cosine = "cosine"
    lda = "lda"


class Retrieval(str, Enum):
    auto = "auto"
    exact = "exact"
    faiss = "faiss"


class IndexKind(str, Enum):
    flat = "flat"
    ivf = "ivf"


class Solver(str, Enum):
    batched = "batched"
    newton = "newton"
    reference = "reference"


def _version(value: bool) -> None:
    if value:
        console.print(f"simattr {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    _show_warnings()


def _load_split(data: str, split: str, image_size: int | None = None):
    from simattr.data import load_dataset, resolve_root

    return load_dataset(resolve_root(data), split, image_size=image_size)


@app.command()
@_friendly_errors
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
    dataset = _load_split(data, split.value, image_size)
    net = load_backbone(backbone, device=device)
    feats = extract_features(net, dataset, batch_size=batch_size, device=device)
    save_features(out, feats, backbone=net, dataset=dataset)
    console.print(
        f"wrote {out}: {feats.shape[0]} x {feats.shape[1]} features of {dataset.name}/{split.value}"
        f" (backbone {net.name}{'' if net.pretrained else ', randomly initialised'})"
    )


def _parse_targets(targets: str | None, targets_file: Path | None, n_test: int) -> np.ndarray:
    from simattr.validation import check_indices

    if targets is not None and targets_file is not None:
        raise InvalidInputError("give either --targets or --targets-file, not both")
    if targets_file is not None:
        if not targets_file.exists():
            raise MissingFileError(f"--targets-file: no such file {targets_file}")
        try:
            values = np.load(targets_file, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InvalidInputError(
                f"--targets-file {targets_file}: not a .npy array ({exc})"
            ) from None
        return check_indices(np.ravel(values), n_test, f"--targets-file {targets_file}")
    if targets is None:
        return np.arange(n_test, dtype=np.int64)
    try:
        values = [int(v) for v in targets.split(",") if v.strip()]
    except ValueError:
        raise InvalidInputError(
            f"--targets must be comma-separated integers, e.g. 3,17,42; got {targets!r}"
        ) from None
    return check_indices(np.array(values, dtype=np.int64), n_test, "--targets")


def _load_labels(path: Path, option: str) -> np.ndarray:
    if not path.exists():
        raise MissingFileError(f"{option}: no such file {path}")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InvalidInputError(f"{option} {path}: not a .npy array ({exc})") from None


def _candidate_rows(
    pool: str | None, train_indices: Path | None, data: str | None, n_train: int
) -> np.ndarray | None:
    """Training rows that may be ranked: a recipe's pool, a given list, or all (``None``)."""
    from simattr.validation import check_indices

    if pool is not None and train_indices is not None:
        raise InvalidInputError("give either --pool or --train-indices, not both")
    if pool is not None:
        from simattr.evaluation import recipe_pool

        if data is None:
            raise InvalidInputError("--pool needs --data (the pool is drawn from its labels)")
        train = _load_split(data, "train")
        if len(train) != n_train:
            raise InvalidInputError(
                f"--train-features has {n_train} rows but {data} has {len(train)} training images"
            )
        return recipe_pool(pool, train)
    if train_indices is None:
        return None
    rows = check_indices(np.ravel(_load_labels(train_indices, "--train-indices")), n_train,
                         f"--train-indices {train_indices}")  # fmt: skip
    if len(np.unique(rows)) != len(rows):
        raise InvalidInputError(f"--train-indices {train_indices} lists a training row twice")
    return np.sort(rows)


@app.command()
@_friendly_errors
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
        ytr, yte = _load_split(data, "train").labels, _load_split(data, "test").labels
        label_source = data
    elif train_labels is not None and test_labels is not None:
        ytr = _load_labels(train_labels, "--train-labels")
        yte = _load_labels(test_labels, "--test-labels")
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
    chosen = _parse_targets(targets, targets_file, len(xte))
    rows = _candidate_rows(pool, train_indices, data, len(xtr))
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
@_friendly_errors
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


class SSLMethodName(str, Enum):
    moco = "moco"
    simclr = "simclr"
    byol = "byol"


@app.command("train-ssl")
@_friendly_errors
def train_ssl_command(
    data: Annotated[str, typer.Option(help="Dataset: a path, 'digits' or 'cifar10'.")],
    out: Annotated[Path, typer.Option(help="Run folder: checkpoints, backbone, history.")],
    method: Annotated[SSLMethodName, typer.Option(help="Self-supervised method.")] = (
        SSLMethodName.moco
    ),
    arch: Annotated[
        str, typer.Option(help="resnet18, resnet18-w32 or resnet18-w16 (1/2, 1/4 width).")
    ] = "resnet18",
    epochs: Annotated[
        int, typer.Option(help="Epochs in all (a resumed run counts earlier ones).")
    ] = 200,
    batch_size: Annotated[int, typer.Option(help="Images per step (two views each).")] = 256,
    lr: Annotated[
        float | None, typer.Option(help="Peak learning rate (default 0.06 x B/256).")
    ] = None,
    temperature: Annotated[float | None, typer.Option(help="InfoNCE temperature.")] = None,
    queue_size: Annotated[int, typer.Option(help="MoCo queue of negatives.")] = 4096,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    precision: Annotated[
        str,
        typer.Option(
            help="auto (bf16 autocast on CUDA, fp32 on the CPU), fp32 or bf16. On a CPU with "
            "AVX-512 BF16 instructions bf16 trains about 1.7x faster; without them it is slower."
        ),
    ] = "auto",
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of initialisation, order and augmentation.")] = 0,
    checkpoint_every: Annotated[int, typer.Option(help="Epochs between checkpoints.")] = 5,
    knn_every: Annotated[
        int | None, typer.Option(help="Epochs between kNN monitor runs (default: checkpoints).")
    ] = None,
    knn_train_size: Annotated[
        int | None, typer.Option(help="Cap the kNN bank to this many training images.")
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option(help="Stop after this many steps in all (time-boxed runs).")
    ] = None,
    init_from: Annotated[
        Path | None,
        typer.Option(
            help="Warm-start from a finished run's folder: its weights, a new optimiser and "
            "schedule; --epochs counts the new epochs."
        ),
    ] = None,
) -> None:
    """Train a self-supervised backbone (MoCo v2, SimCLR or BYOL); resumable."""
    import logging

    from simattr.ssl import train_ssl

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    train = _load_split(data, "train")
    try:
        test = _load_split(data, "test")
    except SimattrError:
        test = None
        err_console.print("[yellow]note:[/] no test split: the kNN monitor is off")
    result = train_ssl(
        train,
        out_dir=out,
        method=method.value,
        arch=arch,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        temperature=temperature,
        queue_size=queue_size,
        device=device,
        precision=precision,
        resume=resume,
        seed=seed,
        checkpoint_every=checkpoint_every,
        knn_dataset=test,
        knn_every=knn_every,
        knn_train_size=knn_train_size,
        max_steps=max_steps,
        progress=sys.stderr.isatty(),
        init_from=init_from,
    )
    knn = f", kNN accuracy {result.knn_history[-1][1]:.4f}" if result.knn_history else ""
    state = "finished" if result.finished else "stopped early (resume with --resume)"
    console.print(
        f"{state} after {result.epochs_done} epoch(s), {result.seconds:.0f} s of training{knn}; "
        f"backbone: {result.backbone_path}"
    )


# The evaluation commands (support, support-report, recipes) live in their own module; importing
# it registers them on ``app``.
from simattr import cli_evaluation as _cli_evaluation  # noqa: E402, F401


def main() -> None:
    """Entry point of the ``simattr`` script."""
    app()


if __name__ == "__main__":
    # Run the imported module's app: the evaluation commands register themselves on it.
    from simattr.cli import main as _main

    _main()
