"""The entry points: detect the source of a root, load a split (through the decoded-array
cache), and give a split's fingerprint without decoding."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path

import numpy as np

from simattr.data import cache as _cache
from simattr.data.dataset import ImageDataset
from simattr.data.sources.base import (
    _LAYOUTS,
    _TORCHVISION_FOLDER,
    _as_path,
    _Source,
    resolve_root,
    torchvision_cifar10_dir,
)
from simattr.data.sources.cifar import _TorchvisionCifar10Source
from simattr.data.sources.digits import _load_digits
from simattr.data.sources.folder import _ImageFolderSource
from simattr.data.sources.parquet import _ParquetSource
from simattr.errors import DataError, InvalidInputError, MissingFileError

log = logging.getLogger(__name__)


def _detect(path: Path, download: bool) -> _Source:
    """The source reading ``path``, or a :class:`DataError` listing the layouts looked for."""
    if not path.exists():
        if download or path == torchvision_cifar10_dir():
            return _TorchvisionCifar10Source(path)
        raise MissingFileError(f"dataset root {path} does not exist")
    if not path.is_dir():
        raise DataError(
            f"dataset root {path} is a file; expected a folder holding one of: "
            + "; ".join(_LAYOUTS)
        )
    if path.name == _TORCHVISION_FOLDER:
        return _TorchvisionCifar10Source(path.parent)
    parquet = _ParquetSource.find(path)
    if parquet:
        return _ParquetSource(path, parquet)
    if (path / _TORCHVISION_FOLDER).is_dir() or download:
        return _TorchvisionCifar10Source(path)
    if _ImageFolderSource.matches(path):
        return _ImageFolderSource(path)
    raise DataError(
        f"{path} matches no known dataset layout. Looked for: "
        + "; ".join(_LAYOUTS)
        + ". Or pass 'digits', or 'cifar10' with download=True (--download)"
    )


def _check_arguments(split: object, image_size: object) -> None:
    if not isinstance(split, str) or not split:
        raise InvalidInputError(f"split must be a non-empty string such as 'train', got {split!r}")
    if image_size is not None and (
        isinstance(image_size, bool)
        or not isinstance(image_size, (int, np.integer))
        or image_size < 1
    ):
        raise InvalidInputError(
            f"image_size must be a positive integer or None, got {image_size!r}"
        )


def load_dataset(
    root: str | os.PathLike[str],
    split: str = "train",
    *,
    image_size: int | None = None,
    cache: bool = True,
    download: bool = False,
) -> ImageDataset:
    """Load one split of a dataset as uint8 ``N x H x W x 3`` images with labels and class names.

    Args:
        root: ``"digits"``, ``"cifar10"`` (see :func:`resolve_root`), or a folder holding a
            Parquet export, a torchvision CIFAR-10 root or ImageNet-style image folders.
        split: ``"train"`` or ``"test"`` (image folders: any split folder; ``test`` falls back
            to ``val`` and ``val`` to ``test`` when only one exists, ``split`` on the result
            keeps the name asked for).
        image_size: resize every image to ``image_size x image_size`` (bilinear). ``None`` keeps
            the source's size (image folders: 32, since photos differ in size). A Parquet split
            whose images differ in size needs it.
        cache: read and store decoded arrays in the cache (``$SIMATTR_CACHE_DIR/datasets``), so
            only the first load decodes images. The key includes the fingerprint, so a changed
            source is decoded again. ``digits`` is never cached (it is instant).
        download: let torchvision download CIFAR-10 when the files are missing.

    Raises:
        MissingFileError: the root or the split does not exist, or CIFAR-10 files are missing.
        DataError: unknown layout, a corrupt image (the message names the file and row),
            invalid labels, or CIFAR-10 files that do not match the official release.
    """
    _check_arguments(split, image_size)
    size = None if image_size is None else int(image_size)
    resolved = resolve_root(root) if not download else _resolve_for_download(root)
    if resolved == "digits":
        return _load_digits(split, size)
    assert isinstance(resolved, Path)
    source = _detect(resolved, download)
    source.check_split(split)
    return _load_source(source, split, size, cache=cache, download=download)


def dataset_fingerprint(
    root: str | os.PathLike[str], split: str = "train", *, image_size: int | None = None
) -> str:
    """The fingerprint :func:`load_dataset` would give ``split`` of ``root`` now, without
    decoding a single image (image folders: a listing and ``stat`` calls; Parquet and
    torchvision files: a hash of their bytes). What a consumer compares with the fingerprint a
    features file or a ranking recorded, to refuse results of data that changed since."""
    _check_arguments(split, image_size)
    size = None if image_size is None else int(image_size)
    resolved = resolve_root(root)
    if resolved == "digits":
        return _load_digits(split, size).fingerprint
    assert isinstance(resolved, Path)
    source = _detect(resolved, False)
    source.check_split(split)
    found = source.fingerprint(split, size)
    if found is None:  # torchvision files missing: let the loader say what to do
        return load_dataset(resolved, split, image_size=size).fingerprint
    return found


def _resolve_for_download(root: str | os.PathLike[str]) -> str | Path:
    """Like :func:`resolve_root`, but a missing folder is fine: torchvision will create it."""
    if isinstance(root, str) and root in ("digits", "cifar10"):
        return resolve_root(root)
    return _as_path(root)


def _load_source(
    source: _Source, split: str, image_size: int | None, *, cache: bool, download: bool
) -> ImageDataset:
    fingerprint = source.fingerprint(split, image_size)
    if cache and fingerprint is not None:
        hit = _cache.load_entry(source.name, split, fingerprint, image_size)
        if hit is not None:
            return _with_files(hit, source, split)
    started = time.perf_counter()
    decoded = source.decode(split, image_size, download)
    if fingerprint is None:  # torchvision files that were only just downloaded
        fingerprint = source.fingerprint(split, image_size)
    dataset = ImageDataset(
        pixels=decoded.pixels,
        labels=decoded.labels,
        class_names=decoded.class_names,
        name=source.name,
        split=split,
        fingerprint=fingerprint or "",
        image_size=image_size,
    )
    log.info(
        "decoded %d images of %s/%s in %.1f s",
        len(dataset),
        source.name,
        split,
        time.perf_counter() - started,
    )
    if cache and fingerprint:
        _cache.save_entry(dataset, image_size)
    return _with_files(dataset, source, split)


def _with_files(dataset: ImageDataset, source: _Source, split: str) -> ImageDataset:
    """``dataset`` with the image file of each row when it comes from image folders."""
    if not isinstance(source, _ImageFolderSource):
        return dataset
    files, _ = source._listing(split)
    return dataclasses.replace(dataset, files=tuple(str(p) for p in files))
