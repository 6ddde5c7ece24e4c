"""Datasets: one split in memory as uint8 images, labels and class names, from any source.

:func:`load_dataset` reads Parquet exports, torchvision CIFAR-10, ImageNet-style image folders and
scikit-learn's digits into an :class:`ImageDataset`, caching decoded arrays on disk;
:func:`resolve_root` turns the names ``"digits"`` and ``"cifar10"`` into what it reads.
"""

from __future__ import annotations

from simattr.data.dataset import ImageDataset
from simattr.data.provenance import source_ids, source_ids_digest
from simattr.data.sources import (
    DIGITS_SPLIT_SEED,
    DIGITS_TEST_SIZE,
    FOLDER_DEFAULT_IMAGE_SIZE,
    IMAGE_EXTENSIONS,
    dataset_fingerprint,
    load_dataset,
    resolve_root,
)

__all__ = [
    "DIGITS_SPLIT_SEED",
    "DIGITS_TEST_SIZE",
    "FOLDER_DEFAULT_IMAGE_SIZE",
    "IMAGE_EXTENSIONS",
    "ImageDataset",
    "dataset_fingerprint",
    "load_dataset",
    "resolve_root",
    "source_ids",
    "source_ids_digest",
]
