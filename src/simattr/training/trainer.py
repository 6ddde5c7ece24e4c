"""Train a classifier with a :class:`~simattr.training.recipes.Recipe`, and predict with it.

The support search and LDS train hundreds of models that differ only in a few training rows, so
this trainer is built for two things: speed on small data and exact reproducibility.

* The whole training set lives on the device as ONE uint8 tensor (N x 3 x H x W); a batch is
  gathered by index, converted and normalised there, and augmented as a whole (flip, translate,
  cutout) with tensor ops driven by one seeded :class:`torch.Generator`. No data loader, no
  worker processes, no per-image Python.
* Determinism: the model is initialised under a forked global RNG seeded with ``seed`` (the
  caller's RNG state is untouched) and every random draw of training comes from a generator
  seeded with ``seed``. On the CPU the same seed, data and thread count give bit-identical
  weights; on CUDA cuDNN is put in deterministic mode for the duration of the call and the
  networks avoid ops with nondeterministic CUDA backward passes (a GPU test checks it; no GPU
  was available when this was written). The thread count matters: on a shared 2-core machine
  ONE torch thread per model (and one model per core) is several times faster than two threads
  per model (benchmarks/results/train_speed.json).
* Inputs are normalised with the recipe's fixed mean/std (CIFAR-10's by default), never with
  statistics of the training subset, so every counterfactual model sees identical test inputs.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from simattr._progress import progress_bar
from simattr.data.dataset import ImageDataset
from simattr.errors import InvalidInputError
from simattr.models.classifiers import build_classifier, min_input_size
from simattr.training.recipes import Augment, Recipe, get_recipe
from simattr.validation import check_device, check_images

#: At most this many training images estimate the whitening stem (the covariance of 2x2 patches
#: is settled long before; more only costs time).
WHITEN_IMAGES = 5000


@contextlib.contextmanager
def _deterministic(device: torch.device) -> Iterator[None]:
    """cuDNN's deterministic kernels for this call only (restores the caller's settings)."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (tensor cores, no loss scaling needed); full fp32 on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def normalise_batch(batch_u8: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    """uint8 N x 3 x H x W -> float32, scaled to [0, 1] and standardised per channel."""
    mean = torch.tensor(recipe.mean, device=batch_u8.device, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(recipe.std, device=batch_u8.device, dtype=torch.float32).view(1, 3, 1, 1)
    return (batch_u8.float().div_(255.0) - mean) / std


def to_chw_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 N x H x W x 3 numpy -> uint8 N x 3 x H x W contiguous tensor on ``device``."""
    return (
        torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).contiguous()
    )


def _augment(x: torch.Tensor, aug: Augment, gen: torch.Generator) -> torch.Tensor:
    """Flip, translate (reflect-padded random crop) and cutout a normalised float batch.

    Every image gets its own draw; all of them come from ``gen`` in a fixed order, so the
    augmentation is a function of the seed and the batch alone.
    """
    n, _, h, w = x.shape
    dev = x.device
    if aug.flip:
        flip = torch.rand(n, generator=gen, device=dev) < 0.5
        x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
    t = int(aug.translate)
    if t > 0:
        padded = F.pad(x, (t, t, t, t), mode="reflect")
        dy = torch.randint(0, 2 * t + 1, (n,), generator=gen, device=dev)
        dx = torch.randint(0, 2 * t + 1, (n,), generator=gen, device=dev)
        rows = (torch.arange(h, device=dev).view(1, h) + dy.view(n, 1)).view(n, 1, h, 1)
        cols = (torch.arange(w, device=dev).view(1, w) + dx.view(n, 1)).view(n, 1, 1, w)
        c = x.shape[1]
        idx_n = torch.arange(n, device=dev).view(n, 1, 1, 1)
        idx_c = torch.arange(c, device=dev).view(1, c, 1, 1)
        x = padded[idx_n, idx_c, rows, cols]
    s = int(aug.cutout)
    if s > 0:
        # a square of side s centred anywhere in the image (clipped at the border), set to 0,
        # which after normalisation is the dataset's mean colour
        cy = torch.randint(0, h, (n,), generator=gen, device=dev).view(n, 1, 1, 1)
        cx = torch.randint(0, w, (n,), generator=gen, device=dev).view(n, 1, 1, 1)
        ys = torch.arange(h, device=dev).view(1, 1, h, 1)
        xs = torch.arange(w, device=dev).view(1, 1, 1, w)
        lo = s // 2
        inside = (ys >= cy - lo) & (ys < cy - lo + s) & (xs >= cx - lo) & (xs < cx - lo + s)
        x = x.masked_fill(inside, 0.0)
    return x


def _lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then linear decay to 0 at ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * max(0.0, (total - step) / max(1, total - warmup))


class _Ema:
    """Exponential moving average of every float tensor of the model (weights and BN stats).

    The effective decay ramps up as ``min(decay, (1 + t) / (10 + t))`` so that a short run is
    not dominated by the random initial weights.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.steps = 0
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.steps += 1
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        for ema_t, t in zip(
            self.shadow.state_dict().values(), model.state_dict().values(), strict=True
        ):
            if ema_t.is_floating_point():
                ema_t.lerp_(t.detach(), 1.0 - d)
            else:
                ema_t.copy_(t)


def _check_dataset(dataset: ImageDataset, recipe: Recipe) -> None:
    if not isinstance(dataset, ImageDataset):
        raise InvalidInputError(
            f"train_classifier needs an ImageDataset, got {type(dataset).__name__}"
        )
    if len(dataset) == 0:
        raise InvalidInputError("cannot train a classifier on an empty dataset (0 images)")
    if len(dataset) < 2:
        raise InvalidInputError("cannot train a classifier on a single image (BatchNorm needs 2)")
    present = np.unique(dataset.labels)
    if present.size < 2:
        raise InvalidInputError(
            f"the training set holds only class {int(present[0])} "
            f"({dataset.class_names[int(present[0])]!r}); a classifier needs at least 2 classes"
        )
    h, w = dataset.image_shape[:2]
    if h < 8 or w < 8:
        raise InvalidInputError(f"images must be at least 8 x 8 pixels, got {h} x {w}")
    side = min_input_size(recipe.arch)
    if min(h, w) < side:
        raise InvalidInputError(
            f"recipe {recipe.name!r} trains {recipe.arch!r}, which needs images of at least "
            f"{side} x {side} pixels; got {h} x {w} (choose a recipe with a ResNet-9, or larger "
            "images)"
        )


def check_trainable(recipe: str | Recipe, dataset: ImageDataset) -> None:
    """Refuse, before any work is written, a dataset the recipe's network cannot train on
    (one class, images smaller than the network needs): the check :func:`train_classifier`
    makes, for the commands that write results folders before their first model."""
    _check_dataset(dataset, get_recipe(recipe))


def train_classifier(
    recipe: str | Recipe,
    dataset: ImageDataset,
    *,
    seed: int,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> nn.Module:
    """Train ``recipe``'s network on every item of ``dataset`` with ``dataset.labels``.

    ``dataset`` is already the counterfactual training set (the recipe's pool, with rows removed
    or relabelled); the pool is *not* applied here. Returns the model in eval mode (its EMA
    weights when the recipe has ``ema``), on ``device``, with ``dataset.num_classes`` outputs.
    """
    recipe = get_recipe(recipe)
    _check_dataset(dataset, recipe)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InvalidInputError(f"seed must be an integer, got {seed!r}")
    seed = int(seed)
    dev = check_device(device)

    with _deterministic(dev):
        return _train(recipe, dataset, seed, dev, progress)


def _train(
    recipe: Recipe, dataset: ImageDataset, seed: int, dev: torch.device, progress: bool
) -> nn.Module:
    n = len(dataset)
    data = to_chw_tensor(dataset.images, dev)  # the one uint8 copy of the training set
    labels = torch.from_numpy(dataset.labels).to(dev)

    devices = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        model = build_classifier(recipe.arch, dataset.num_classes)
    gen = torch.Generator(device=dev).manual_seed(seed)

    init = getattr(model, "init_from", None)
    if callable(init):
        g_cpu = torch.Generator().manual_seed(seed)
        pick = torch.randperm(n, generator=g_cpu)[:WHITEN_IMAGES].sort().values.to(dev)
        init(normalise_batch(data[pick], recipe))

    model = model.to(device=dev, memory_format=torch.channels_last).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(
        params,
        lr=recipe.lr,
        momentum=recipe.momentum,
        nesterov=recipe.nesterov and recipe.momentum > 0,
        weight_decay=recipe.weight_decay,
    )
    ema = _Ema(model, recipe.ema) if recipe.ema is not None else None

    bs = min(recipe.batch_size, n)
    steps_per_epoch = math.ceil(n / bs)
    total = recipe.epochs * steps_per_epoch
    warmup = round(recipe.warmup_epochs * steps_per_epoch)
    step = 0
    with progress_bar(f"train {recipe.name}", total, enabled=progress) as advance:
        for _ in range(recipe.epochs):
            order = torch.randperm(n, generator=gen, device=dev)
            for start in range(0, n, bs):
                idx = order[start : start + bs]
                if len(idx) < 2:  # a trailing batch of one cannot be batch-normalised
                    advance(1)
                    step += 1
                    continue
                x = _augment(normalise_batch(data[idx], recipe), recipe.augment, gen)
                x = x.contiguous(memory_format=torch.channels_last)
                for group in opt.param_groups:
                    group["lr"] = _lr_at(step, total, warmup, recipe.lr)
                with _autocast(dev):
                    out = model(x)
                loss = F.cross_entropy(
                    out.float(), labels[idx], label_smoothing=recipe.label_smoothing
                )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if ema is not None:
                    ema.update(model)
                step += 1
                advance(1)
    final = ema.shadow if ema is not None else model
    return final.eval()


def predict_logits(
    model: nn.Module,
    recipe: str | Recipe,
    images: np.ndarray,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 1024,
) -> np.ndarray:
    """float32 logits ``(N, num_classes)`` of uint8 ``images`` (N x H x W x 3).

    Normalised exactly as in training; averaged with the mirror image when ``recipe.tta_flip``.
    """
    recipe = get_recipe(recipe)
    check_images(images)
    if int(batch_size) < 1:
        raise InvalidInputError(f"batch_size must be positive, got {batch_size}")
    dev = check_device(device)
    model = model.to(dev).eval()
    outs: list[np.ndarray] = []
    with torch.inference_mode(), _autocast(dev):
        for start in range(0, len(images), int(batch_size)):
            x = normalise_batch(to_chw_tensor(images[start : start + int(batch_size)], dev), recipe)
            x = x.contiguous(memory_format=torch.channels_last)
            logits = model(x).float()
            if recipe.tta_flip:
                logits = 0.5 * (logits + model(x.flip(3)).float())
            outs.append(logits.cpu().numpy())
    if not outs:
        k = _num_outputs(model)
        return np.zeros((0, k), dtype=np.float32)
    return np.concatenate(outs).astype(np.float32, copy=False)


def _num_outputs(model: nn.Module) -> int:
    """Output size of the model's last linear layer (for an empty prediction)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else 0


def predict_proba(
    model: nn.Module,
    recipe: str | Recipe,
    images: np.ndarray,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 1024,
) -> np.ndarray:
    """Softmax of :func:`predict_logits` (float32, rows sum to 1)."""
    return softmax(predict_logits(model, recipe, images, device=device, batch_size=batch_size))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(N, C)`` logits, float32, stable for large logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
