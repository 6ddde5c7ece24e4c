"""Supervised-feature similarity: the baseline that explains a classifier with its own features.

The paper's claim is that *self-supervised* features, which never saw the classifier, attribute
as well as methods that use the model. The natural control is the same similarity search on the
features of the classifier itself: its penultimate layer (the input of its final linear layer),
for a model trained by the evaluation's recipe. This module extracts those features and ranks the
recipe's pool with :class:`~simattr.attribution.attributor.Attributor` (``cosine`` or ``l2``),
class-conditionally by default, and returns rows of the full training split.

Features are those of the image itself (no test-time flip), normalised exactly as the trainer
normalises its inputs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from simattr.attribution.attributor import Attributor
from simattr.errors import InvalidInputError
from simattr.ranking import Ranking
from simattr.training.classifier_io import check_compatible, load_classifier
from simattr.training.recipes import Recipe, get_recipe, recipe_pool
from simattr.training.trainer import normalise_batch, to_chw_tensor
from simattr.validation import (
    check_device,
    check_images,
    check_indices,
    check_positive_int,
    target_labels_or_true,
)

METRICS = ("cosine", "l2")


def head_layer(model: nn.Module) -> nn.Linear:
    """The classifier's final linear layer: the last ``nn.Linear`` registered in ``model``.

    Every network of :mod:`simattr.models.classifiers` ends with one (possibly followed by a
    parameter-free scaling), so its input is the penultimate representation.
    """
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise InvalidInputError(
            f"{type(model).__name__} has no nn.Linear layer; penultimate features are the input "
            "of a classifier's final linear layer"
        )
    return linears[-1]


@torch.no_grad()
def penultimate_features(
    model: nn.Module,
    recipe: str | Recipe,
    images: np.ndarray,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 512,
) -> np.ndarray:
    """float32 ``(N, in_features)`` inputs of ``model``'s final linear layer for uint8 ``images``.

    Captured with a forward hook rather than by rebuilding the network without its head, so it
    works for any architecture whose head is its last ``nn.Linear``; the hook is removed even if
    the forward pass fails.
    """
    recipe = get_recipe(recipe)
    check_images(images)
    batch_size = check_positive_int(batch_size, "batch_size")
    dev = check_device(device)
    model = model.to(dev).eval()
    head = head_layer(model)
    captured: list[torch.Tensor] = []

    def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
        captured.append(inputs[0].detach().float().reshape(len(inputs[0]), -1).cpu())

    handle = head.register_forward_hook(hook)
    try:
        outs = []
        for start in range(0, len(images), batch_size):
            x = normalise_batch(to_chw_tensor(images[start : start + batch_size], dev), recipe)
            captured.clear()
            model(x.contiguous(memory_format=torch.channels_last))
            if len(captured) != 1:
                raise InvalidInputError(
                    f"the final linear layer of {type(model).__name__} ran {len(captured)} times "
                    "in one forward pass; cannot tell which input is the penultimate feature"
                )
            outs.append(captured[0].numpy())
    finally:
        handle.remove()
    if not outs:
        return np.zeros((0, head.in_features), dtype=np.float32)
    return np.concatenate(outs).astype(np.float32, copy=False)


def supervised_ranking(
    data: str,
    recipe: str | Recipe,
    targets: Sequence[int] | np.ndarray,
    k: int,
    *,
    checkpoint: str | os.PathLike[str],
    metric: str = "cosine",
    class_conditional: bool = True,
    target_labels: Sequence[int] | np.ndarray | None = None,
    device: str = "cpu",
    batch_size: int = 512,
) -> Ranking:
    """Rank ``recipe``'s pool for test ``targets`` by similarity of a classifier's features.

    Args:
        data: dataset root as :func:`simattr.training.jobs.load_split` takes it.
        recipe: decides the pool (candidates) and the input normalisation.
        targets: rows of the test split.
        k: rows per target.
        checkpoint: a classifier saved by :func:`~simattr.training.classifier_io.save_classifier`
            (e.g. one of :func:`~simattr.training.classifier_io.train_checkpoints`).
        metric: ``"cosine"`` (cosine similarity) or ``"l2"`` (negative Euclidean distance of the
            raw, unnormalised features: normalising would make it rank like cosine).
        class_conditional: rank only pool rows of the label explained (default, as the paper's
            method); ``False``: the whole pool.
        target_labels: the label explained per target (default: the true test labels).
    """
    from simattr.training.jobs import load_split

    if metric not in METRICS:
        raise InvalidInputError(f"unknown metric {metric!r}; choose one of {METRICS}")
    recipe = get_recipe(recipe)
    k = check_positive_int(k, "k")
    train, test = load_split(data, "train"), load_split(data, "test")
    targets = check_indices(targets, len(test), "targets")
    t_labels = target_labels_or_true(test.labels, targets, target_labels, train.num_classes)
    model, meta = load_classifier(checkpoint, device=device)
    check_compatible(meta, recipe, checkpoint)
    pool = recipe_pool(recipe, train)
    pool_labels = train.labels[pool].astype(np.int64)
    if class_conditional:
        counts = np.bincount(pool_labels, minlength=train.num_classes)
        short = [int(c) for c in np.unique(t_labels) if counts[c] < k]
        if short:
            raise InvalidInputError(
                f"k={k} is larger than the {int(counts[short[0]])} pool rows of class "
                f"{short[0]} (recipe {recipe.name!r})"
            )
    elif k > len(pool):
        raise InvalidInputError(f"k={k} is larger than the pool of {len(pool)} rows")
    kw = {"device": device, "batch_size": batch_size}
    x_pool = penultimate_features(model, recipe, train.get_images(pool), **kw)
    x_targets = penultimate_features(model, recipe, test.get_images(targets), **kw)
    attributor = Attributor(
        metric, class_conditional=class_conditional, normalize=(metric == "cosine")
    ).fit(x_pool, pool_labels if class_conditional else None)
    positions, scores = attributor.topk(x_targets, t_labels if class_conditional else None, k)
    return Ranking(
        targets=targets,
        # a class pool smaller than k ends its row in -1 (Attributor.topk): kept as -1
        indices=np.where(positions >= 0, pool[np.maximum(positions, 0)], -1),
        scores=scores,
        metadata={
            "method": "supervised",
            "metric": metric,
            "class_conditional": bool(class_conditional),
            "recipe": recipe.name,
            "checkpoint": str(checkpoint),
            "feature_dim": int(x_pool.shape[1]),
        },
    )
