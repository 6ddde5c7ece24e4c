"""Load a dataset split from whatever the user has: Parquet, torchvision CIFAR-10, folders, digits.

Every source ends as the same :class:`~simattr.data.dataset.ImageDataset` (uint8 ``N x H x W x
3``, int64 labels, class names) with a *fingerprint*: a short hex SHA-256 of the source's
identity, so that artifacts computed from a dataset (features, rankings) can say exactly which
bytes they came from, and so that the decoded-array cache (:mod:`simattr.data.cache`) can never
serve stale pixels. The fingerprint includes ``image_size`` because resized pixels differ.

One module per source, detected from ``root`` by :mod:`~simattr.data.sources.load`:

* **Parquet** (:mod:`~simattr.data.sources.parquet`, a Hugging Face ``datasets`` export):
  ``<root>/<split>.parquet`` (or shards ``<split>-00000-of-00002.parquet``; also looked for in
  ``<root>/data/``). Fingerprint: SHA-256 of the files' bytes.
* **torchvision CIFAR-10** (:mod:`~simattr.data.sources.cifar`): ``<root>/cifar-10-batches-py/``.
  torchvision checks the MD5 of every batch file against the official release *before* it
  unpickles anything; we rely on that and never unpickle these files ourselves. Fingerprint:
  SHA-256 of the split's batch files.
* **Image folders** (:mod:`~simattr.data.sources.folder`, ImageNet layout):
  ``<root>/train/<class>/<image>`` and ``<root>/val/`` or ``<root>/test/``. Fingerprint: the
  sorted list of (relative path, size, content digest) plus the size.
* **digits** (:mod:`~simattr.data.sources.digits`): scikit-learn's bundled 8x8 digits, for demos
  and tests that need nothing on disk.

Decoding (shared by Parquet and folders) lives in :mod:`~simattr.data.sources.decode`. This
module is the facade: the names below stay importable from ``simattr.data.sources``.
"""

from __future__ import annotations

from simattr.data.sources.base import (
    DIGITS_SPLIT_SEED,
    DIGITS_TEST_SIZE,
    FOLDER_DEFAULT_IMAGE_SIZE,
    IMAGE_EXTENSIONS,
    resolve_root,
    torchvision_cifar10_dir,
)
from simattr.data.sources.decode import decode_images, decode_workers, open_rgb
from simattr.data.sources.folder import _ImageFolderSource
from simattr.data.sources.load import _detect, dataset_fingerprint, load_dataset
from simattr.data.sources.parquet import _ParquetFile

__all__ = [
    "DIGITS_SPLIT_SEED",
    "DIGITS_TEST_SIZE",
    "FOLDER_DEFAULT_IMAGE_SIZE",
    "IMAGE_EXTENSIONS",
    "_ImageFolderSource",
    "_ParquetFile",
    "_detect",
    "dataset_fingerprint",
    "decode_images",
    "decode_workers",
    "load_dataset",
    "open_rgb",
    "resolve_root",
    "torchvision_cifar10_dir",
]
