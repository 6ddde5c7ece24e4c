"""CLI command of the self-supervised backbones: ``train-ssl``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from simattr.cli._common import (
    BatchSizeOption,
    DataOption,
    DeviceOption,
    OutOption,
    ResumeOption,
    SeedOption,
    SSLMethodName,
    app,
    console,
    err_console,
    friendly_errors,
    load_split,
)
from simattr.errors import SimattrError


@app.command("train-ssl")
@friendly_errors
def train_ssl_command(
    data: DataOption,
    out: OutOption,
    ssl_method: Annotated[SSLMethodName, typer.Option(help="Self-supervised method.")] = (
        SSLMethodName.moco
    ),
    arch: Annotated[
        str, typer.Option(help="resnet18, resnet18-w32 or resnet18-w16 (1/2, 1/4 width).")
    ] = "resnet18",
    epochs: Annotated[
        int, typer.Option(help="Epochs in all (a resumed run counts earlier ones).")
    ] = 200,
    batch_size: BatchSizeOption = 256,
    lr: Annotated[
        float | None, typer.Option(help="Peak learning rate (default 0.06 x B/256).")
    ] = None,
    temperature: Annotated[float | None, typer.Option(help="InfoNCE temperature.")] = None,
    queue_size: Annotated[int, typer.Option(help="MoCo queue of negatives.")] = 4096,
    device: DeviceOption = "cpu",
    precision: Annotated[
        str,
        typer.Option(
            help="auto (bf16 autocast on CUDA, fp32 on the CPU), fp32 or bf16. On a CPU with "
            "AVX-512 BF16 instructions bf16 trains about 1.7x faster; without them it is slower."
        ),
    ] = "auto",
    resume: ResumeOption = True,
    seed: SeedOption = 0,
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
    """Train a self-supervised backbone (MoCo v2, SimCLR or BYOL); resumable.

    --out: the run folder (checkpoints, backbone, history); a rerun continues the run found
    there unless --no-resume. --batch-size images per step, two views each. --seed seeds the
    initialisation, the order and the augmentation.
    """
    import logging

    from simattr.ssl import SSLConfig, train_ssl

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    train, test = _splits(data)
    config = SSLConfig(
        method=ssl_method.value,
        arch=arch,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        temperature=temperature,
        queue_size=queue_size,
        device=device,
        precision=precision,
        seed=seed,
        checkpoint_every=checkpoint_every,
        knn_every=knn_every,
        knn_train_size=knn_train_size,
        max_steps=max_steps,
        init_from=init_from,
    )
    result = train_ssl(train, config, out_dir=out, resume=resume, knn_dataset=test,
                       progress=sys.stderr.isatty())  # fmt: skip
    _print_run(result)


def _print_run(result) -> None:
    knn = f", kNN accuracy {result.knn_history[-1][1]:.4f}" if result.knn_history else ""
    state = "finished" if result.finished else "stopped early (rerun to resume)"
    console.print(
        f"{state} after {result.epochs_done} epoch(s), {result.seconds:.0f} s of training{knn}; "
        f"backbone: {result.backbone_path}"
    )


def _splits(data: str):
    """The training split, and the test split of the kNN monitor (``None`` without one)."""
    train = load_split(data, "train")
    try:
        return train, load_split(data, "test")
    except SimattrError:
        err_console.print("[yellow]note:[/] no test split: the kNN monitor is off")
        return train, None
