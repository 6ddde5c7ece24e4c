"""Training recipes for counterfactual retraining: what a "model trained on this data" means.

The support search and LDS train hundreds of classifiers on slightly different training sets, so a
recipe fixes everything except the data and the seed: architecture, optimiser, schedule,
augmentation, epochs, batch size and the *pool* (the rows of the training split it trains on).
The same recipe runs unchanged on the CPU or on CUDA.

Recipes (see :data:`RECIPES`):

* ``paper-resnet9``: the paper's ResNet-9 recipe (DESIGN.md section 2), for fidelity;
* ``fast``: a fast CIFAR-10 trainer in the airbench spirit (whitened patch stem, label smoothing,
  weight averaging, flip + translate, test-time flip), for GPUs;
* ``cpu-mini``: a fixed, documented pool of CIFAR-10 and a small network that train in seconds on
  a 2-core CPU;
* ``tiny``: a few seconds per model, for tests.

A pool is drawn per class with a fixed seed, so every process (and every machine) that asks for a
recipe's pool of the same dataset gets the same rows; rankings used with a pooled recipe must rank
rows of that pool only (``simattr attribute --pool NAME``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from simattr.data.dataset import ImageDataset
from simattr.errors import InvalidInputError

#: Fixed per-channel statistics of CIFAR-10's training split (pixels in [0, 1]). Inputs are
#: normalised with the recipe's constants, never with the statistics of the training subset, so
#: that every counterfactual model sees identical inputs.
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class PoolSpec:
    """``per_class`` training rows of each class drawn with ``seed``; ``None``: the whole split."""

    per_class: int | None = None
    seed: int = 0


@dataclass(frozen=True)
class Augment:
    """Batch augmentation applied on tensors: horizontal flip, translation (pixels), cutout."""

    flip: bool = True
    translate: int = 0
    cutout: int = 0


@dataclass(frozen=True)
class Recipe:
    """Everything but the data and the seed that decides how a classifier is trained.

    ``arch`` names a classifier in :mod:`simattr.models.classifiers`; the learning rate rises
    linearly to ``lr`` over ``warmup_epochs`` and falls linearly to 0 at the end (the schedule of
    the paper's recipe); ``ema`` is the decay of a weight average used for prediction (``None``:
    the raw weights); ``tta_flip`` averages predictions over the image and its mirror;
    ``mean``/``std`` normalise the pixels (scaled to [0, 1]) in training and prediction alike.
    """

    name: str
    arch: str
    epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    augment: Augment = field(default_factory=Augment)
    tta_flip: bool = False
    ema: float | None = None
    pool: PoolSpec = field(default_factory=PoolSpec)
    description: str = ""
    mean: tuple[float, float, float] = CIFAR10_MEAN
    std: tuple[float, float, float] = CIFAR10_STD

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready settings (stored with every result the recipe produced)."""
        return asdict(self)


#: The built-in recipes by name. Numbers of ``cpu-mini`` and ``tiny`` are measured in
#: ``benchmarks/train_speed.py``; the others follow their sources (see the module doc).
RECIPES: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    """Add ``recipe`` to :data:`RECIPES` (a user's own recipes go through here too)."""
    if recipe.epochs < 1 or recipe.batch_size < 1 or recipe.lr <= 0:
        raise InvalidInputError(
            f"recipe {recipe.name!r}: epochs, batch_size and lr must be positive"
        )
    RECIPES[recipe.name] = recipe
    return recipe


def get_recipe(name: str | Recipe) -> Recipe:
    """The recipe called ``name`` (a :class:`Recipe` passes through)."""
    if isinstance(name, Recipe):
        return name
    try:
        return RECIPES[name]
    except KeyError:
        raise InvalidInputError(
            f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}"
        ) from None


def recipe_pool(recipe: str | Recipe, train: ImageDataset) -> np.ndarray:
    """Rows of the full training split ``train`` that ``recipe`` trains on (sorted int64).

    Deterministic: the same dataset and recipe give the same rows in every process.
    """
    spec = get_recipe(recipe).pool
    if train.is_view:
        raise InvalidInputError("recipe_pool needs the full training split, not a view of it")
    if spec.per_class is None:
        return np.arange(len(train), dtype=np.int64)
    counts = train.class_counts()
    short = np.flatnonzero(counts < spec.per_class)
    if short.size:
        c = int(short[0])
        raise InvalidInputError(
            f"recipe {get_recipe(recipe).name!r} draws {spec.per_class} images per class but class "
            f"{c} ({train.class_names[c]!r}) of {train.name}/{train.split} has {int(counts[c])}"
        )
    rows = [
        np.random.default_rng([spec.seed, c]).choice(
            np.flatnonzero(train.labels == c), spec.per_class, replace=False
        )
        for c in range(train.num_classes)
    ]
    return np.sort(np.concatenate(rows)).astype(np.int64)


def pool_dataset(recipe: str | Recipe, train: ImageDataset) -> ImageDataset:
    """The view of ``train`` that ``recipe`` trains on (the full split when it has no pool)."""
    rows = recipe_pool(recipe, train)
    return train if len(rows) == len(train) else train.subset(rows)


def shrunk(
    recipe: str | Recipe, *, epochs: int | None = None, per_class: int | None = None
) -> Recipe:
    """A copy of ``recipe`` with fewer epochs and/or a smaller pool (same seed of the pool).

    For smoke tests and speed probes of the GPU recipes on the CPU; the copy's name says what
    was changed so its results are never mistaken for the full recipe's.
    """
    base = get_recipe(recipe)
    changes: dict[str, Any] = {}
    tags = []
    if epochs is not None:
        changes["epochs"] = int(epochs)
        changes["warmup_epochs"] = min(base.warmup_epochs, int(epochs) / 4)
        tags.append(f"epochs={int(epochs)}")
    if per_class is not None:
        changes["pool"] = PoolSpec(int(per_class), base.pool.seed)
        tags.append(f"per_class={int(per_class)}")
    if not tags:
        return base
    out = replace(base, name=f"{base.name}[{','.join(tags)}]", **changes)
    if out.epochs < 1:
        raise InvalidInputError(f"epochs must be at least 1, got {out.epochs}")
    return out


register(
    Recipe(
        name="paper-resnet9",
        arch="resnet9",
        epochs=24,
        batch_size=512,
        lr=0.5,
        momentum=0.9,
        # the FFCV CIFAR example the paper's models come from uses plain (heavy-ball) momentum
        nesterov=False,
        weight_decay=5e-4,
        warmup_epochs=5,
        label_smoothing=0.1,
        augment=Augment(flip=True, translate=2, cutout=8),
        tta_flip=True,
        pool=PoolSpec(None),
        description=(
            "The paper's CIFAR-10 recipe (DESIGN.md section 2): ResNet-9, 24 epochs, batch 512, "
            "SGD momentum 0.9, wd 5e-4, lr peaking at 0.5 at epoch 5 then linear to 0, label "
            "smoothing 0.1, flip + 2-px translate + 8-px cutout, full training split. About 36 s "
            "per model on an A100; hours per model on a 2-core CPU."
        ),
    )
)

register(
    Recipe(
        name="fast",
        arch="whiten",
        epochs=12,
        batch_size=512,
        lr=1.0,
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,
        warmup_epochs=1.5,
        label_smoothing=0.2,
        augment=Augment(flip=True, translate=2, cutout=0),
        tta_flip=True,
        ema=0.99,
        pool=PoolSpec(None),
        description=(
            "A GPU recipe in the airbench spirit: a fixed 2x2 patch-whitening stem computed from "
            "the training images, conv groups 64-256-256 with BatchNorm and GELU, label "
            "smoothing 0.2, nesterov SGD with a short warm-up, an EMA of the weights, flip + "
            "2-px translate, test-time flip; full training split, 12 epochs. Not verified on a "
            "GPU yet (benchmarks/train_speed.py --device cuda measures it)."
        ),
    )
)

register(
    Recipe(
        name="cpu-mini",
        arch="whiten-mini",
        epochs=6,
        batch_size=125,
        lr=0.3,
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,
        warmup_epochs=0.5,
        label_smoothing=0.2,
        augment=Augment(flip=True, translate=2, cutout=0),
        tta_flip=True,
        pool=PoolSpec(1000, 0),
        description=(
            "For retraining on a 2-core CPU: a fixed pool of 1,000 CIFAR-10 training images per "
            "class (10,000 rows, drawn with seed 0), the stride-2 whitened net 32-64-128, 6 "
            "epochs of batch 125, nesterov SGD lr 0.3, label smoothing 0.2, flip + 2-px "
            "translate, test-time flip. Measured: 22 s per model (median of 3) on ONE torch thread "
            "(232 s on two threads of the shared machine), 0.68 accuracy on the full test split "
            "(benchmarks/results/train_speed.json)."
        ),
    )
)

register(
    Recipe(
        name="tiny",
        arch="whiten-tiny",
        epochs=4,
        batch_size=50,
        lr=0.2,
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,
        warmup_epochs=0.5,
        label_smoothing=0.2,
        augment=Augment(flip=True, translate=0, cutout=0),
        tta_flip=True,
        pool=PoolSpec(100, 0),
        description=(
            "For tests: 100 images per class (seed 0), the stride-2 whitened net 16-32-64, 4 "
            "epochs of batch 50. About 0.6 s per model on one CPU thread, 0.36 test accuracy."
        ),
    )
)
