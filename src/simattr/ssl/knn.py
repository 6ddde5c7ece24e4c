"""Weighted k-nearest-neighbour accuracy: the standard monitor of self-supervised training.

The loss of a contrastive method says little about how useful its features are; the kNN monitor
of Wu et al. (2018), used by MoCo, SimCLR and lightly's benchmarks, does: embed the training and
test images, find each test image's ``k`` most cosine-similar training images, let each vote for
its label with weight ``exp(similarity / T)``, and count how often the heaviest class is right.
It needs no training, so it can run every few epochs.

Similarities are computed one block of test images at a time, so memory stays at
``block_size x n_train`` however large the test set is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from simattr.data.dataset import ImageDataset
from simattr.errors import InvalidInputError
from simattr.features import extract_features
from simattr.models.backbones import Backbone
from simattr.validation import check_features, check_labels, check_same_width


def _as_tensor(features: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    return torch.from_numpy(np.ascontiguousarray(check_features(features, name), np.float32))


def knn_accuracy(
    train_features: np.ndarray | torch.Tensor,
    train_labels: np.ndarray | torch.Tensor | Sequence[int],
    test_features: np.ndarray | torch.Tensor,
    test_labels: np.ndarray | torch.Tensor | Sequence[int],
    k: int = 200,
    temperature: float = 0.1,
    *,
    block_size: int = 1024,
    device: str | torch.device = "cpu",
) -> float:
    """Fraction of test images whose weighted kNN vote over the training images is correct.

    Features are L2-normalised (cosine similarity); each of the ``k`` nearest training images
    (fewer if the training set is smaller) votes for its label with weight
    ``exp(similarity / temperature)``; ties go to the lower class index.
    """
    if k < 1:
        raise InvalidInputError(f"k must be >= 1, got {k}")
    if temperature <= 0:
        raise InvalidInputError(f"temperature must be > 0, got {temperature}")
    train = _as_tensor(train_features, "train_features")
    test = _as_tensor(test_features, "test_features")
    check_same_width(train, test, "train_features", "test_features")
    y_train = torch.from_numpy(check_labels(np.asarray(train_labels), len(train), "train_labels"))
    y_test = torch.from_numpy(check_labels(np.asarray(test_labels), len(test), "test_labels"))
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    device = torch.device(device)
    bank = nn.functional.normalize(train.to(device), dim=1)
    y_bank = y_train.to(device)
    k = min(k, len(bank))
    correct = 0
    for start in range(0, len(test), block_size):
        block = nn.functional.normalize(test[start : start + block_size].to(device), dim=1)
        pred = _vote(block @ bank.T, y_bank, k, temperature, num_classes)
        correct += int((pred.cpu() == y_test[start : start + block_size]).sum())
    return correct / len(test)


def _vote(
    sim: torch.Tensor, labels: torch.Tensor, k: int, temperature: float, num_classes: int
) -> torch.Tensor:
    """Predicted class per row of the similarity block ``sim`` (n_block x n_train)."""
    top_sim, top_idx = sim.topk(k, dim=1)
    weights = (top_sim / temperature).exp()
    scores = torch.zeros(len(sim), num_classes, device=sim.device, dtype=weights.dtype)
    scores.scatter_add_(1, labels[top_idx], weights)
    return scores.argmax(dim=1)


def knn_monitor(
    backbone_module: nn.Module,
    train_ds: ImageDataset,
    test_ds: ImageDataset,
    mean: Sequence[float],
    std: Sequence[float],
    device: str | torch.device = "cpu",
    batch_size: int = 512,
    *,
    k: int = 200,
    temperature: float = 0.1,
    progress: bool = False,
) -> float:
    """kNN accuracy of ``backbone_module``'s embeddings: ``train_ds`` is the bank, ``test_ds``
    is scored. The module is run in eval mode and put back in the mode it was in."""
    was_training = backbone_module.training
    wrapped = Backbone(
        module=backbone_module,
        arch="training",
        name="knn-monitor",
        mean=tuple(float(m) for m in mean),  # type: ignore[arg-type]
        std=tuple(float(s) for s in std),  # type: ignore[arg-type]
    )
    try:
        opts = {"batch_size": batch_size, "device": device, "progress": progress}
        train_features = extract_features(wrapped, train_ds, **opts)
        test_features = extract_features(wrapped, test_ds, **opts)
    finally:
        backbone_module.train(was_training)
    return knn_accuracy(
        train_features,
        train_ds.labels,
        test_features,
        test_ds.labels,
        k=k,
        temperature=temperature,
        device=device,
    )
