"""On-disk cache of decoded datasets.

Decoding CIFAR-10's 50,000 JPEGs costs seconds on every run, while reading the decoded uint8
array back costs a fraction of that, so each decoded split is stored once as plain ``.npy`` files
plus a JSON description. An entry is keyed by the source's fingerprint, the split, the image size
and :data:`CACHE_FORMAT_VERSION`, so a changed source, another size or a new storage layout never
reads a stale entry: it simply misses.

Layout of one entry, under ``<cache dir>/datasets/<key>/``::

    pixels.npy   uint8 N x H x W x 3
    labels.npy   int64 N
    meta.json    name, split, fingerprint, class names, shapes, dtypes and CRC-32 of both arrays,
                 and the digest of all of that (``checksum``)

Each file is written atomically and ``meta.json`` last, so it acts as the commit marker: an entry
whose arrays are missing, truncated, of the wrong shape or whose bytes do not match the recorded
CRC-32, or whose ``meta.json`` no longer matches its own checksum (an edited class name would
otherwise name every image's class wrongly), is reported as invalid and rebuilt by the caller
instead of crashing. Arrays are read with
``allow_pickle=False``: a cache directory is never a way to run code.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simattr._io import atomic_write, read_json, write_json
from simattr.data.dataset import ImageDataset
from simattr.errors import InvalidInputError
from simattr.hashing import crc32_array, digest_json

__all__ = [
    "CACHE_FORMAT_VERSION",
    "CacheStats",
    "cache_root",
    "datasets_cache_dir",
    "entry_dir",
    "load_entry",
    "save_entry",
    "stats",
]

log = logging.getLogger(__name__)

#: Bump when the entry layout or the decoding of any source changes, so old entries miss.
CACHE_FORMAT_VERSION = 1

_PIXELS = "pixels.npy"
_LABELS = "labels.npy"
_META = "meta.json"
#: Key of ``meta.json`` holding the digest of its other keys (:func:`_meta_checksum`).
_CHECKSUM = "checksum"


@dataclass
class CacheStats:
    """Counters of this process's cache lookups (tests and benchmarks use them to see hits)."""

    hits: int = 0
    misses: int = 0
    invalid: int = 0
    writes: int = 0

    def reset(self) -> None:
        self.hits = self.misses = self.invalid = self.writes = 0


#: Process-wide counters, updated by :func:`load_entry` and :func:`save_entry`.
stats = CacheStats()


def cache_root() -> Path:
    """simattr's cache directory: ``$SIMATTR_CACHE_DIR`` if set, else the platform's user cache.

    Read at call time (not import time) so that tests and tools can redirect it per call.
    """
    value = os.environ.get("SIMATTR_CACHE_DIR")
    if value:
        return Path(value).expanduser().absolute()
    import platformdirs

    return Path(platformdirs.user_cache_dir("simattr"))


def datasets_cache_dir() -> Path:
    """Folder holding the decoded-dataset entries."""
    return cache_root() / "datasets"


def _safe(text: str) -> str:
    """A file-name-safe version of ``text`` (folder names can hold anything)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:48] or "dataset"


def entry_dir(name: str, split: str, fingerprint: str, image_size: int | None) -> Path:
    """The folder of one entry. The name is only there to help a human browsing the cache."""
    size = "native" if image_size is None else f"{int(image_size)}px"
    key = f"{_safe(name)}-{_safe(split)}-{fingerprint}-{size}-v{CACHE_FORMAT_VERSION}"
    return datasets_cache_dir() / key


def _meta_checksum(meta: dict[str, Any]) -> str:
    """Digest of every key of ``meta`` but the checksum itself (canonical JSON)."""
    return digest_json({k: v for k, v in meta.items() if k != _CHECKSUM})


def _describe(array: np.ndarray) -> dict[str, Any]:
    return {"shape": list(array.shape), "dtype": str(array.dtype), "crc32": crc32_array(array)}


def save_entry(dataset: ImageDataset, image_size: int | None) -> Path | None:
    """Store a full (non-view) dataset; return the entry folder, or ``None`` if it failed.

    A failure to write (read-only or full disk) is logged, not raised: the cache only saves time,
    and the caller already holds the decoded data.
    """
    if dataset.is_view:
        raise InvalidInputError("only a full split can be cached, not a view")
    where = entry_dir(dataset.name, dataset.split, dataset.fingerprint, image_size)
    pixels = np.ascontiguousarray(dataset.pixels)
    labels = np.ascontiguousarray(dataset.labels, dtype=np.int64)
    meta = {
        "format_version": CACHE_FORMAT_VERSION,
        "name": dataset.name,
        "split": dataset.split,
        "fingerprint": dataset.fingerprint,
        "image_size": None if image_size is None else int(image_size),
        "class_names": [str(c) for c in dataset.class_names],
        "pixels": _describe(pixels),
        "labels": _describe(labels),
    }
    meta[_CHECKSUM] = _meta_checksum(meta)
    try:
        atomic_write(where / _PIXELS, lambda tmp: np.save(tmp, pixels, allow_pickle=False))
        atomic_write(where / _LABELS, lambda tmp: np.save(tmp, labels, allow_pickle=False))
        write_json(where / _META, meta)  # last: its presence marks a complete entry
    except OSError as exc:
        log.warning("could not write the dataset cache entry %s: %s", where, exc)
        return None
    stats.writes += 1
    log.debug("cached %s/%s in %s", dataset.name, dataset.split, where)
    return where


def _read_array(path: Path, expected: dict[str, Any]) -> np.ndarray:
    """Load one array and check it against the shape, dtype and CRC-32 recorded for it."""
    array = np.load(path, allow_pickle=False)
    if list(array.shape) != list(expected["shape"]) or str(array.dtype) != expected["dtype"]:
        raise ValueError(
            f"{path.name} holds {array.dtype} {array.shape}, "
            f"expected {expected['dtype']} {tuple(expected['shape'])}"
        )
    if crc32_array(array) != expected["crc32"]:
        raise ValueError(f"{path.name} does not match its recorded CRC-32")
    return array


def _read_entry(
    where: Path, name: str, split: str, fingerprint: str, image_size: int | None
) -> ImageDataset:
    meta = read_json(where / _META)
    if not isinstance(meta, dict) or meta.get(_CHECKSUM) != _meta_checksum(meta):
        raise ValueError("meta.json does not match its recorded checksum (or has none)")
    wanted = {
        "format_version": CACHE_FORMAT_VERSION,
        "split": split,
        "fingerprint": fingerprint,
        "image_size": image_size,
    }
    for key, value in wanted.items():
        if meta.get(key) != value:
            raise ValueError(f"meta.json has {key}={meta.get(key)!r}, expected {value!r}")
    pixels = _read_array(where / _PIXELS, meta["pixels"])
    labels = _read_array(where / _LABELS, meta["labels"])
    return ImageDataset(
        pixels=pixels,
        labels=labels,
        class_names=tuple(meta["class_names"]),
        name=name,
        split=split,
        fingerprint=fingerprint,
        image_size=image_size,
    )


def load_entry(
    name: str, split: str, fingerprint: str, image_size: int | None
) -> ImageDataset | None:
    """The cached dataset, or ``None`` on a miss. An invalid entry is deleted and misses."""
    where = entry_dir(name, split, fingerprint, image_size)
    if not (where / _META).is_file():
        stats.misses += 1
        return None
    try:
        dataset = _read_entry(where, name, split, fingerprint, image_size)
    except (OSError, ValueError, KeyError, TypeError, InvalidInputError) as exc:
        # ValueError covers np.load on a truncated file and JSON decoding errors.
        log.warning("dataset cache entry %s is invalid (%s); rebuilding it", where, exc)
        stats.invalid += 1
        stats.misses += 1
        shutil.rmtree(where, ignore_errors=True)
        return None
    stats.hits += 1
    log.debug("loaded %s/%s from the cache %s", name, split, where)
    return dataset
