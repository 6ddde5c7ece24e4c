"""Self-supervised training of a backbone, with exact resume and a kNN monitor.

A run on a 2-core CPU takes hours, so it must survive interruption: every ``checkpoint_every``
epochs (and whenever ``max_steps`` stops it) the run writes, atomically, into ``out_dir``:

* ``resume.pt``: everything the next step depends on (model with heads, momentum copies and
  MoCo queue, optimiser, step and epoch counters, the global torch RNG (and CUDA's), the
  augmentation generator, the log so far), read back with ``torch.load(weights_only=True)``;
* ``backbone.safetensors`` with its JSON sidecar, loadable by
  :func:`simattr.models.load_backbone`;
* ``history.json``: one record per epoch (loss, learning rate, seconds, kNN accuracy).

Nothing else carries state between steps: the order of the images in an epoch is a pure function
of ``(seed, epoch)`` and the learning rate a pure function of the step, so a resumed run on the
same device repeats the uninterrupted one bit for bit, even from the middle of an epoch.

The training set is held as one uint8 tensor on the training device and each batch is augmented
there as a whole (:mod:`simattr.ssl.augment`): no data-loader workers, which a 2-core machine
cannot spare. The optimiser is the MoCo v2 CIFAR recipe: SGD, momentum 0.9, weight decay 5e-4,
learning rate ``0.06 * batch_size / 256`` on a cosine schedule, stepped per iteration.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightly.utils.scheduler import cosine_schedule

from simattr._io import (
    check_not_input,
    check_writable,
    lock,
    provenance,
    verify_checksum,
    write_json,
    write_with_sidecar,
)
from simattr._progress import progress_bar
from simattr.data.dataset import ImageDataset
from simattr.errors import CheckpointError, InvalidInputError
from simattr.hashing import digest_bytes, digest_file
from simattr.models.resnet import ARCHITECTURES, build_architecture
from simattr.ssl.augment import AugmentConfig, SSLAugment
from simattr.ssl.knn import knn_monitor
from simattr.ssl.methods import DEFAULT_TEMPERATURE, METHODS, SSLMethod, build_method
from simattr.store import differences
from simattr.validation import check_device

logger = logging.getLogger(__name__)

RESUME_FILE = "resume.pt"
BACKBONE_FILE = "backbone.safetensors"
HISTORY_FILE = "history.json"
CHECKPOINT_FORMAT = "simattr-ssl-resume"
CHECKPOINT_VERSION = 1
SGD_MOMENTUM = 0.9
#: Settings that change the training trajectory: a resume must match them exactly.
_TRAJECTORY_KEYS = (
    "method",
    "arch",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "seed",
    "temperature",
    "queue_size",
    "momentum",
    "input_mean",
    "input_std",
    "augment",
    "data",
    "init_from",
)


@dataclass
class TrainResult:
    """What a call to :func:`train_ssl` produced.

    ``knn_history`` holds ``(epoch, accuracy)`` pairs; ``history`` one record per epoch;
    ``seconds`` counts the training steps only (summed over resumes; kNN monitor and checkpoint
    time excluded); ``finished`` is false when ``max_steps`` stopped the run early;
    ``backbone`` is the trained network itself (on the training device, eval mode), so callers
    need not reload it from ``backbone_path``.
    """

    backbone_path: Path
    knn_history: list[tuple[int, float]]
    epochs_done: int
    seconds: float
    steps_done: int = 0
    finished: bool = True
    history: list[dict[str, Any]] = field(default_factory=list)
    backbone: torch.nn.Module | None = field(default=None, repr=False)


@dataclass
class _State:
    """Counters and logs that travel in the resume file."""

    step: int = 0
    elapsed: float = 0.0
    epoch_loss_sum: float = 0.0
    epoch_seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Run:
    """Everything one training run works with (built once, then mutated by the steps)."""

    model: SSLMethod
    optimizer: torch.optim.Optimizer
    augment: SSLAugment
    generator: torch.Generator
    config: dict[str, Any]
    out_dir: Path
    device: torch.device
    precision: str
    state: _State


def default_lr(batch_size: int) -> float:
    """MoCo v2's CIFAR learning rate, scaled linearly with the batch size."""
    return 0.06 * batch_size / 256


def channel_stats(pixels: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images, in [0, 1] units.

    Computed from a 256-bin histogram per channel, which is exact and needs no float copy of
    the images. On CIFAR-10 it gives the usual (0.4914, 0.4822, 0.4465) / (0.2470, 0.2435,
    0.2616).
    """
    levels = np.arange(256, dtype=np.float64) / 255
    means, stds = [], []
    for c in range(3):
        hist = np.bincount(pixels[..., c].ravel(), minlength=256).astype(np.float64)
        mean = float((hist * levels).sum() / hist.sum())
        var = float((hist * (levels - mean) ** 2).sum() / hist.sum())
        means.append(round(mean, 6))
        stds.append(round(max(math.sqrt(var), 1e-6), 6))
    return tuple(means), tuple(stds)


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the images in ``epoch``: a permutation drawn from ``(seed, epoch)`` alone."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def _data_identity(dataset: ImageDataset) -> dict[str, Any]:
    """Which images the run trains on: source fingerprint, size, and the rows of a view."""
    ident: dict[str, Any] = {
        "name": dataset.name,
        "split": dataset.split,
        "fingerprint": dataset.fingerprint,
        "n": len(dataset),
    }
    if dataset.is_view:
        ident["rows_sha256_16"] = digest_bytes(dataset.source_indices.tobytes(), 16)
    if not dataset.fingerprint:
        ident["pixels_sha256_16"] = digest_bytes(dataset.images.tobytes(), 16)
    return ident


def _resolve_precision(precision: str, device: torch.device) -> str:
    if precision not in ("auto", "fp32", "bf16"):
        raise InvalidInputError(f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def _check_args(
    dataset: ImageDataset, method: str, arch: str, epochs: int, batch_size: int, lr: float
) -> None:
    if method not in METHODS:
        raise InvalidInputError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    if arch not in ARCHITECTURES:
        raise InvalidInputError(
            f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}"
        )
    if epochs < 1:
        raise InvalidInputError(f"epochs must be >= 1, got {epochs}")
    if batch_size < 2:
        raise InvalidInputError(f"batch_size must be >= 2 (batch norm needs it), got {batch_size}")
    if len(dataset) < batch_size:
        raise InvalidInputError(
            f"the dataset has {len(dataset)} images, fewer than one batch of {batch_size}; "
            "lower batch_size"
        )
    if not lr > 0:
        raise InvalidInputError(f"lr must be > 0, got {lr}")


@dataclass(frozen=True)
class SSLConfig:
    """The settings of a self-supervised training run, in one place (see :func:`train_ssl`).

    Attributes:
        method: ``"moco"`` (MoCo v2), ``"simclr"`` or ``"byol"``.
        arch: backbone architecture (:data:`simattr.models.ARCHITECTURES`).
        lr: peak learning rate; default :func:`default_lr` of ``batch_size``.
        seed: seeds the network, the augmentations and the kNN bank.
        checkpoint_every: epochs between checkpoints (a resume restarts from the last one).
        knn_every, knn_train_size, knn_k, knn_temperature: the kNN monitor, run every
            ``knn_every`` epochs (default ``checkpoint_every``) and after the last;
            ``knn_train_size`` caps its bank to a fixed random subset of the training images.
        temperature, queue_size, momentum: method settings
            (:func:`~simattr.ssl.methods.build_method`).
        mean, std: input normalisation stored with the backbone; default: the statistics of
            the training images.
        precision: ``"auto"`` (bf16 autocast on CUDA, fp32 on the CPU), ``"fp32"`` or ``"bf16"``.
        max_steps: stop after this many optimiser steps in all (counting those before a resume),
            leaving a checkpoint as an interruption would; for tests and time-boxed runs.
        init_from: a finished run's folder (or its ``resume.pt``) to warm-start from: the
            network (backbone, heads, momentum copies, MoCo queue) starts from that run's weights
            while the optimiser, the schedule and the counters start afresh, so ``epochs`` counts
            the new epochs only (a warm restart). Method and architecture must match; the source
            file's SHA-256 is recorded in the sidecar.
    """

    method: str = "moco"
    arch: str = "resnet18"
    epochs: int = 200
    batch_size: int = 256
    lr: float | None = None
    device: str | torch.device = "cpu"
    seed: int = 0
    checkpoint_every: int = 5
    knn_every: int | None = None
    knn_train_size: int | None = None
    knn_k: int = 200
    knn_temperature: float = 0.1
    temperature: float | None = None
    queue_size: int = 4096
    momentum: float = 0.99
    weight_decay: float = 5e-4
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    augment: AugmentConfig | None = None
    precision: str = "auto"
    max_steps: int | None = None
    init_from: str | os.PathLike[str] | None = None

    def with_overrides(self, overrides: dict[str, Any]) -> SSLConfig:
        """This config with some settings replaced; an unknown name is refused by name."""
        unknown = sorted(set(overrides) - {f.name for f in fields(self)})
        if unknown:
            raise InvalidInputError(
                f"train_ssl got unknown setting(s) {', '.join(unknown)}; the settings are the "
                "fields of SSLConfig"
            )
        return replace(self, **overrides)


def train_ssl(
    dataset: ImageDataset,
    config: SSLConfig | None = None,
    *,
    out_dir: str | os.PathLike[str],
    resume: bool = False,
    knn_dataset: ImageDataset | None = None,
    progress: bool = True,
    log: Callable[[dict[str, Any]], None] | None = None,
    **settings: Any,
) -> TrainResult:
    """Train a backbone on ``dataset`` with a self-supervised method; see the module doc.

    Args:
        dataset: training images (labels are not used for training, only by the kNN monitor).
        config: the run's settings (:class:`SSLConfig`; default ``SSLConfig()``).
        out_dir: where the resume file, the backbone and the history go.
        resume: continue the run saved in ``out_dir`` (its settings must match); without it, an
            existing resume file is an error rather than silently overwritten.
        knn_dataset: test split for the kNN monitor (``None``: no monitor).
        progress: draw a progress bar.
        log: called with each epoch's record; default: the ``simattr.ssl.train`` logger.
        settings: :class:`SSLConfig` fields overriding ``config``'s, so that
            ``train_ssl(data, out_dir=d, epochs=2)`` reads as before.
    """
    cfg = (config or SSLConfig()).with_overrides(settings)
    (method, arch, epochs, batch_size, device, seed, checkpoint_every) = (
        cfg.method, cfg.arch, cfg.epochs, cfg.batch_size, cfg.device, cfg.seed,
        cfg.checkpoint_every,
    )  # fmt: skip
    max_steps, init_from = cfg.max_steps, cfg.init_from
    lr = default_lr(batch_size) if cfg.lr is None else float(cfg.lr)
    _check_args(dataset, method, arch, epochs, batch_size, lr)
    if checkpoint_every < 1:
        raise InvalidInputError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    if max_steps is not None and max_steps < 0:
        raise InvalidInputError(f"max_steps must be >= 0, got {max_steps}")
    device = check_device(device)
    out = Path(out_dir)
    check_writable(out, "`out_dir`", folder=True)
    if init_from is not None:
        check_not_input({"`out_dir`": out}, {"`init_from`": init_from})
        if Path(init_from).is_file():
            check_not_input({"`out_dir`": out / RESUME_FILE}, {"`init_from`": init_from})
    with lock(out, "`out_dir`"):  # a second run on the same folder is refused while this one lives
        resume_path = out / RESUME_FILE
        if resume_path.exists() and not resume:
            raise InvalidInputError(
                f"{resume_path} already holds a training run; pass resume=True to continue it or "
                "choose another out_dir"
            )
        config = _run_config(
            dataset,
            method=method,
            arch=arch,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=cfg.weight_decay,
            seed=seed,
            temperature=cfg.temperature,
            queue_size=cfg.queue_size,
            momentum=cfg.momentum,
            mean=cfg.mean,
            std=cfg.std,
            augment=cfg.augment or AugmentConfig(),
        )
        init_payload = None
        if init_from is not None:
            init_payload, config["init_from"] = _read_init_source(Path(init_from), config)
        with _fork_rng(device):
            torch.manual_seed(seed)
            run = _build_run(config, out, device, _resolve_precision(cfg.precision, device))
            if init_payload is not None:
                run.model.load_state_dict(init_payload["model"])
            if resume and resume_path.exists():
                _load_checkpoint(run, resume_path)
            elif resume:
                logger.info("no %s in %s: starting a new run", RESUME_FILE, out)
            knn = _KnnMonitor(
                knn_dataset,
                dataset,
                every=cfg.knn_every or checkpoint_every,
                train_size=cfg.knn_train_size,
                k=cfg.knn_k,
                temperature=cfg.knn_temperature,
                seed=seed,
            )
            return _train_loop(
                run,
                dataset,
                checkpoint_every=checkpoint_every,
                knn=knn,
                progress=progress,
                max_steps=max_steps,
                log=log or _log_epoch,
            )


def _run_config(
    dataset: ImageDataset,
    *,
    method: str,
    arch: str,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
    temperature: float | None,
    queue_size: int,
    momentum: float,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    augment: AugmentConfig,
) -> dict[str, Any]:
    """The run's settings as plain JSON-ready values: compared on resume, stored in sidecars."""
    if mean is None or std is None:
        data_mean, data_std = channel_stats(dataset.images)
        mean = data_mean if mean is None else mean
        std = data_std if std is None else std
    if temperature is None:
        temperature = DEFAULT_TEMPERATURE.get(method)
    return {
        "method": method,
        "arch": arch,
        "epochs": int(epochs),
        "batch_size": int(batch_size),
        "lr": float(lr),
        "weight_decay": float(weight_decay),
        "seed": int(seed),
        "temperature": None if temperature is None else float(temperature),
        "queue_size": int(queue_size) if method == "moco" else None,
        "momentum": float(momentum) if method in ("moco", "byol") else None,
        "input_mean": [float(m) for m in mean],
        "input_std": [float(s) for s in std],
        "augment": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(augment).items()},
        "data": _data_identity(dataset),
        "init_from": None,
    }


def _read_init_source(path: Path, config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read the run ``init_from`` names; refuse one of another method, architecture or data."""
    if path.is_dir():
        path = path / RESUME_FILE
    if not path.is_file():
        raise InvalidInputError(
            f"init_from: {path} does not exist (expected a run's {RESUME_FILE})"
        )
    payload = _read_resume_file(path)
    source = payload["config"]
    for key in ("method", "arch", "data"):
        if source.get(key) != config.get(key):
            raise InvalidInputError(
                f"init_from: {path} was trained with {key}={source.get(key)!r}, this run has "
                f"{config.get(key)!r}"
            )
    digest = digest_file(path)
    prior = int(payload["step"]) // max(1, source["data"]["n"] // source["batch_size"])
    settings = {k: v for k, v in source.items() if k != "data"}
    return payload, {"path": str(path), "sha256": digest, "epochs": prior, "settings": settings}


@contextlib.contextmanager
def _fork_rng(device: torch.device) -> Iterator[None]:
    """Use the global torch RNG for the run without disturbing the caller's."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


def _build_run(config: dict[str, Any], out: Path, device: torch.device, precision: str) -> _Run:
    backbone = build_architecture(config["arch"])
    model = build_method(
        config["method"],
        backbone,
        temperature=config["temperature"],
        queue_size=config["queue_size"] or 4096,
        momentum=config["momentum"] if config["momentum"] is not None else 0.99,
    )
    model = model.to(device=device, memory_format=torch.channels_last).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(
        params, lr=config["lr"], momentum=SGD_MOMENTUM, weight_decay=config["weight_decay"]
    )
    aug_cfg = AugmentConfig(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in config["augment"].items()}
    )
    return _Run(
        model=model,
        optimizer=optimizer,
        augment=SSLAugment(config["input_mean"], config["input_std"], aug_cfg),
        generator=torch.Generator().manual_seed(config["seed"]),
        config=config,
        out_dir=out,
        device=device,
        precision=precision,
        state=_State(),
    )


# -- the loop ------------------------------------------------------------------------------


@dataclass
class _KnnMonitor:
    """When and on what the kNN monitor runs (``test`` None: never)."""

    test: ImageDataset | None
    train: ImageDataset
    every: int
    train_size: int | None
    k: int
    temperature: float
    seed: int

    def due(self, epoch: int, last_epoch: int) -> bool:
        return self.test is not None and ((epoch + 1) % self.every == 0 or epoch + 1 == last_epoch)

    def bank(self) -> ImageDataset:
        """The training images the test images are compared with (a fixed subset if capped)."""
        if self.train_size is None or self.train_size >= len(self.train):
            return self.train
        rows = np.random.default_rng([self.seed, 7919]).choice(
            len(self.train), self.train_size, replace=False
        )
        return self.train.subset(np.sort(rows))


def _train_loop(
    run: _Run,
    dataset: ImageDataset,
    *,
    checkpoint_every: int,
    knn: _KnnMonitor,
    progress: bool,
    max_steps: int | None,
    log: Callable[[dict[str, Any]], None],
) -> TrainResult:
    cfg, state = run.config, run.state
    steps_per_epoch = len(dataset) // cfg["batch_size"]
    total_steps = steps_per_epoch * cfg["epochs"]
    stop_at = total_steps if max_steps is None else min(max_steps, total_steps)
    pixels = torch.from_numpy(np.ascontiguousarray(dataset.images)).to(run.device)
    dirty = False
    with progress_bar(
        f"{cfg['method']} {cfg['arch']}", max(stop_at - state.step, 0), progress
    ) as advance:
        while state.step < stop_at:
            epoch, first = divmod(state.step, steps_per_epoch)
            order = torch.from_numpy(epoch_order(cfg["seed"], epoch, len(dataset)))
            tick = time.perf_counter()
            last = min(steps_per_epoch, first + stop_at - state.step)
            loss_sum = _run_steps(run, pixels, order, range(first, last), total_steps, advance)
            if not math.isfinite(loss_sum):
                raise InvalidInputError(
                    f"the {cfg['method']} loss became {loss_sum} before step {state.step}; "
                    "lower the learning rate (lr) or check the input normalisation"
                )
            seconds = time.perf_counter() - tick
            state.epoch_loss_sum += loss_sum
            state.epoch_seconds += seconds
            state.elapsed += seconds
            dirty = True
            if last == steps_per_epoch:
                _end_epoch(run, epoch, steps_per_epoch, knn, log)
                state.epoch_loss_sum, state.epoch_seconds = 0.0, 0.0
                if (epoch + 1) % checkpoint_every == 0 or epoch + 1 == cfg["epochs"]:
                    _save_all(run)
                    dirty = False
    if dirty or not (run.out_dir / BACKBONE_FILE).exists():
        _save_all(run)
    return _result(run, steps_per_epoch, total_steps)


def _run_steps(
    run: _Run,
    pixels: torch.Tensor,
    order: torch.Tensor,
    batches: range,
    total_steps: int,
    advance: Callable[[int], None],
) -> float:
    """Train on the given batches of an epoch's ``order``; returns the summed loss."""
    batch_size = run.config["batch_size"]
    loss_sum = torch.zeros((), device=run.device)
    for b in batches:
        rows = order[b * batch_size : (b + 1) * batch_size]
        loss_sum += _train_step(run, pixels[rows.to(run.device)], total_steps)
        advance(1)
    return float(loss_sum)  # one device sync per epoch, not per step


def _train_step(run: _Run, images: torch.Tensor, total_steps: int) -> torch.Tensor:
    """One optimiser step on a uint8 batch; returns the detached loss."""
    state = run.state
    lr = cosine_schedule(state.step, total_steps, run.config["lr"], 0.0)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    view_a = run.augment(images, run.generator)
    view_b = run.augment(images, run.generator)
    with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.precision == "bf16"):
        loss = run.model.training_step(view_a, view_b, step=state.step, total_steps=total_steps)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    state.step += 1
    return loss.detach().float()


def _end_epoch(
    run: _Run,
    epoch: int,
    steps_per_epoch: int,
    knn: _KnnMonitor,
    log: Callable[[dict[str, Any]], None],
) -> None:
    """Append the epoch's record (and the kNN monitor when due) to the history, then log it."""
    cfg, state = run.config, run.state
    n_images = steps_per_epoch * cfg["batch_size"]
    record: dict[str, Any] = {
        "epoch": epoch + 1,
        "loss": state.epoch_loss_sum / steps_per_epoch,
        "lr": run.optimizer.param_groups[0]["lr"],
        "seconds": round(state.epoch_seconds, 3),
        "images_per_second": round(n_images / max(state.epoch_seconds, 1e-9), 1),
    }
    if knn.due(epoch, cfg["epochs"]):
        tick = time.perf_counter()
        record["knn_accuracy"] = knn_monitor(
            run.model.backbone,
            knn.bank(),
            knn.test,  # type: ignore[arg-type]
            cfg["input_mean"],
            cfg["input_std"],
            run.device,
            k=knn.k,
            temperature=knn.temperature,
        )
        record["knn_seconds"] = round(time.perf_counter() - tick, 3)
    state.history.append(record)
    log(record)


def _log_epoch(record: dict[str, Any]) -> None:
    knn = f", knn {record['knn_accuracy']:.4f}" if "knn_accuracy" in record else ""
    logger.info(
        "epoch %d: loss %.4f, lr %.4g, %.1f s (%.0f img/s)%s",
        record["epoch"],
        record["loss"],
        record["lr"],
        record["seconds"],
        record["images_per_second"],
        knn,
    )


def _knn_history(history: list[dict[str, Any]]) -> list[tuple[int, float]]:
    return [(r["epoch"], r["knn_accuracy"]) for r in history if "knn_accuracy" in r]


def _result(run: _Run, steps_per_epoch: int, total_steps: int) -> TrainResult:
    state = run.state
    return TrainResult(
        backbone_path=run.out_dir / BACKBONE_FILE,
        knn_history=_knn_history(state.history),
        epochs_done=state.step // steps_per_epoch,
        seconds=state.elapsed,
        steps_done=state.step,
        finished=state.step >= total_steps,
        history=list(state.history),
        backbone=run.model.backbone.eval(),
    )


# -- checkpoints ---------------------------------------------------------------------------


def _save_all(run: _Run) -> None:
    """Backbone + sidecar, history, then the resume file (last: it is what a restart trusts)."""
    run.out_dir.mkdir(parents=True, exist_ok=True)
    save_backbone(run)
    write_json(run.out_dir / HISTORY_FILE, {"epochs": run.state.history})
    _save_checkpoint(run, run.out_dir / RESUME_FILE)


def _prior_epochs(config: dict[str, Any]) -> int:
    """Epochs trained before this run by the chain of ``init_from`` runs it started from."""
    init = config.get("init_from")
    return 0 if not init else int(init["epochs"]) + _prior_epochs(init["settings"])


def save_backbone(run: _Run) -> Path:
    """Write the backbone as fp32 safetensors plus the sidecar :func:`load_backbone` reads."""
    from safetensors.torch import save_file

    path = run.out_dir / BACKBONE_FILE
    state = {
        k: v.detach().to("cpu").contiguous() for k, v in run.model.backbone.state_dict().items()
    }
    cfg, history = run.config, run.state.history
    knn = _knn_history(history)
    epochs_done = len(history)
    prior = _prior_epochs(cfg)
    meta = provenance(
        kind="backbone",
        arch=cfg["arch"],
        method=cfg["method"],
        epochs=epochs_done,
        knn_accuracy=knn[-1][1] if knn else None,
        knn_epoch=knn[-1][0] if knn else None,
        input_mean=cfg["input_mean"],
        input_std=cfg["input_std"],
        pretrained=True,
        prior_epochs=prior,
        note=f"{cfg['method']} self-supervised training, {epochs_done}/{cfg['epochs']} epochs"
        + (f" after {prior} warm-start epochs" if prior else ""),
        data=cfg["data"],
        training={k: v for k, v in cfg.items() if k != "data"},
        steps=run.state.step,
        seconds=round(run.state.elapsed, 1),
        precision=run.precision,
    )
    # the sidecar carries the checksum of the weights, checked by every load
    write_with_sidecar(
        path, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}), meta
    )
    return path


def _save_checkpoint(run: _Run, path: Path) -> None:
    state = run.state
    rng: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "augment": run.generator.get_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "config": run.config,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "step": state.step,
        "elapsed": state.elapsed,
        "epoch_loss_sum": state.epoch_loss_sum,
        "epoch_seconds": state.epoch_seconds,
        "history": state.history,
        "rng": rng,
    }
    meta = provenance(kind="ssl-resume", step=state.step, epochs_done=len(state.history))
    write_with_sidecar(path, lambda tmp: torch.save(payload, tmp), meta)


def _settings_diff(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Every trajectory setting that differs, down to the nested key (``data.n``)."""
    found = differences(
        {k: saved.get(k) for k in _TRAJECTORY_KEYS}, {k: current.get(k) for k in _TRAJECTORY_KEYS}
    )
    found.sort(key=lambda d: _TRAJECTORY_KEYS.index(d[0].split(".")[0]))  # stable: settings order
    return [f"{key}: checkpoint has {old!r}, this call has {new!r}" for key, old, new in found]


def _read_resume_file(path: Path) -> dict[str, Any]:
    verify_checksum(path)  # a damaged resume file is refused, never resumed from silently
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise CheckpointError(f"{path} is not a readable simattr resume file: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a simattr self-supervised training checkpoint")
    return payload


def _load_checkpoint(run: _Run, path: Path) -> None:
    """Restore ``run`` from a resume file, refusing one written with other settings."""
    payload = _read_resume_file(path)
    diff = _settings_diff(payload["config"], run.config)
    if diff:
        raise InvalidInputError(
            f"cannot resume {path}: the settings differ from the checkpoint's ("
            + "; ".join(diff)
            + "). Pass the checkpoint's settings, or choose a new out_dir for a new run"
        )
    run.model.load_state_dict(payload["model"])
    run.optimizer.load_state_dict(payload["optimizer"])
    run.state = _State(
        step=int(payload["step"]),
        elapsed=float(payload["elapsed"]),
        epoch_loss_sum=float(payload["epoch_loss_sum"]),
        epoch_seconds=float(payload["epoch_seconds"]),
        history=list(payload["history"]),
    )
    rng = payload["rng"]
    torch.set_rng_state(rng["torch"])
    run.generator.set_state(rng["augment"])
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    logger.info("resumed %s at step %d", path, run.state.step)
