"""Load a dataset split from whatever the user has: Parquet, torchvision CIFAR-10, folders, digits.

Every source ends as the same :class:`~simattr.data.dataset.ImageDataset` (uint8 ``N x H x W x
3``, int64 labels, class names) with a *fingerprint*: a short hex SHA-256 of the source's
identity, so that artifacts computed from a dataset (features, rankings) can say exactly which
bytes they came from, and so that the decoded-array cache (:mod:`simattr.data.cache`) can never
serve stale pixels. The fingerprint includes ``image_size`` because resized pixels differ.

Sources, detected from ``root`` (see :func:`load_dataset`):

* **Parquet** (a Hugging Face ``datasets`` export): ``<root>/<split>.parquet`` (or shards
  ``<split>-00000-of-00002.parquet``; also looked for in ``<root>/data/``). Fingerprint: SHA-256
  of the files' bytes.
* **torchvision CIFAR-10**: ``<root>/cifar-10-batches-py/``. torchvision checks the MD5 of every
  batch file against the official release *before* it unpickles anything; we rely on that and
  never unpickle these files ourselves. Fingerprint: SHA-256 of the split's batch files.
* **Image folders** (ImageNet layout): ``<root>/train/<class>/<image>`` and ``<root>/val/`` or
  ``<root>/test/``. Fingerprint: the sorted list of (relative path, size, mtime) plus the size.
* **digits**: scikit-learn's bundled 8x8 digits, for demos and tests that need nothing on disk.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import multiprocessing
import os
import re
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from simattr.data import cache as _cache
from simattr.data.dataset import ImageDataset
from simattr.errors import DataError, InvalidInputError, MissingFileError, SimattrError
from simattr.hashing import digest_files, digest_text

__all__ = [
    "DIGITS_SPLIT_SEED",
    "DIGITS_TEST_SIZE",
    "FOLDER_DEFAULT_IMAGE_SIZE",
    "IMAGE_EXTENSIONS",
    "dataset_fingerprint",
    "load_dataset",
    "resolve_root",
]

log = logging.getLogger(__name__)

#: ``random_state`` of the stratified train/test split of scikit-learn's digits.
DIGITS_SPLIT_SEED = 0
#: Fraction of the 1,797 digits held out as the test split (360 images; 1,437 train).
DIGITS_TEST_SIZE = 0.2
#: Side of the square images an image folder is resized to when ``image_size`` is not given.
FOLDER_DEFAULT_IMAGE_SIZE = 32
#: File suffixes (lower case) read from image folders; other files are ignored.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)

_TORCHVISION_FOLDER = "cifar-10-batches-py"
_LAYOUTS = (
    "a Parquet export (<root>/train.parquet, <root>/test.parquet, or <root>/data/<split>*.parquet)",
    f"a torchvision CIFAR-10 root (<root>/{_TORCHVISION_FOLDER}/)",
    "ImageNet-style image folders (<root>/train/<class>/<image>, <root>/val/ or <root>/test/)",
)
# Fewer images than this decode in-process: starting worker processes would cost more.
_PARALLEL_MIN_IMAGES = 4096


# ---------------------------------------------------------------------------------------------
# Resolving the root
# ---------------------------------------------------------------------------------------------
def torchvision_cifar10_dir() -> Path:
    """Where ``"cifar10"`` is downloaded by torchvision when no local copy is configured."""
    return _cache.cache_root() / "torchvision-cifar10"


def _env_cifar10_dir() -> Path | None:
    value = os.environ.get("SIMATTR_DATA_ROOT")
    if not value:
        return None
    folder = Path(value).expanduser().absolute() / "cifar10"
    return folder if folder.is_dir() else None


def resolve_root(root: str | os.PathLike[str]) -> str | Path:
    """Turn what a user typed into what :func:`load_dataset` reads; fail early on a missing path.

    * ``"digits"`` stays ``"digits"`` (scikit-learn's bundled data, nothing on disk).
    * ``"cifar10"`` is ``$SIMATTR_DATA_ROOT/cifar10`` when that variable is set and the folder
      exists (the shared copy used by tests, CI and benchmarks), else the torchvision download
      folder ``<cache dir>/torchvision-cifar10`` (``$SIMATTR_CACHE_DIR`` if set, else the user's
      cache directory). That folder may not exist yet: ``load_dataset(..., download=True)``
      creates it.
    * Anything else is a path (``~`` expanded, made absolute). To read a local folder that is
      literally called ``cifar10`` or ``digits``, pass ``./cifar10`` or a :class:`~pathlib.Path`.

    Raises:
        MissingFileError: the path does not exist.
    """
    if isinstance(root, str) and root == "digits":
        return "digits"
    if isinstance(root, str) and root == "cifar10":
        return _env_cifar10_dir() or torchvision_cifar10_dir()
    path = _as_path(root)
    if not path.exists() and path != torchvision_cifar10_dir():
        raise MissingFileError(
            f"dataset root {path} does not exist. Pass an existing folder, 'digits', or "
            "'cifar10' (set SIMATTR_DATA_ROOT to the folder holding cifar10/, or use --download)"
        )
    return path


def _as_path(root: str | os.PathLike[str]) -> Path:
    if not isinstance(root, (str, os.PathLike)):
        raise InvalidInputError(
            f"dataset root must be a string or a path, got {type(root).__name__}"
        )
    return Path(root).expanduser().absolute()


# ---------------------------------------------------------------------------------------------
# Decoding images (shared by Parquet and image folders)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Target:
    """Output size of decoding: resize everything to it, or require every image to have it."""

    height: int
    width: int
    resize: bool


class _WrongSizeError(Exception):
    def __init__(self, width: int, height: int) -> None:
        super().__init__(f"{width}x{height}")
        self.width, self.height = width, height


class _DecodeFailure(Exception):
    """The first image of a batch that could not be decoded (``kind``: corrupt or size).

    Built from positional arguments only, so that it pickles back from a worker process.
    """

    def __init__(self, index: int, kind: str, detail: str) -> None:
        super().__init__(index, kind, detail)
        self.index, self.kind, self.detail = index, kind, detail


def open_rgb(item: bytes | str | os.PathLike[str], draft: tuple[int, int] | None = None) -> Any:
    """Decode one image (encoded bytes or a file path) to an RGB ``PIL.Image``, fully loaded.

    ``draft`` (width, height): let libjpeg decode a JPEG at 1/2..1/8 scale, as long as the
    result stays at least that large (big photos then decode several times faster; a later
    bilinear resize still averages). Other formats ignore it.
    """
    from PIL import Image

    source = io.BytesIO(item) if isinstance(item, bytes) else item
    image = Image.open(source)
    try:
        if draft is not None and image.format == "JPEG":
            image.draft(None, draft)
        image.load()  # reads the pixels and closes the file
    except BaseException:
        image.close()
        raise
    return image.convert("RGB") if image.mode != "RGB" else image


def _decode_one(item: bytes | str, target: _Target | None) -> np.ndarray:
    """Decode one image (encoded bytes or a file path) to ``H x W x 3`` uint8."""
    from PIL import Image

    resize = target is not None and target.resize
    draft = (2 * target.width, 2 * target.height) if resize and target is not None else None
    image = open_rgb(item, draft)
    if target is not None and image.size != (target.width, target.height):
        if not target.resize:
            raise _WrongSizeError(*image.size)
        image = image.resize((target.width, target.height), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def _probe_size(item: bytes | str) -> tuple[int, int]:
    """(width, height) of an image from its header; a failure is reported as row 0."""
    from PIL import Image

    try:
        with Image.open(item if isinstance(item, str) else io.BytesIO(item)) as image:
            return image.size
    except Exception as exc:  # same family of decoder errors as in _decode_chunk
        raise _DecodeFailure(0, "corrupt", f"{type(exc).__name__}: {exc}") from None


def _decode_chunk(
    items: Sequence[bytes | str], target: _Target
) -> tuple[np.ndarray, _DecodeFailure | None]:
    """Decode ``items`` in order; stop at the first failure and report it (never raise).

    Runs in worker processes, so failures travel back as values rather than exceptions whose
    tracebacks would need pickling.
    """
    out = np.empty((len(items), target.height, target.width, 3), dtype=np.uint8)
    for i, item in enumerate(items):
        try:
            out[i] = _decode_one(item, target)
        except _WrongSizeError as exc:
            return out[:i], _DecodeFailure(i, "size", str(exc))
        except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, ... on bad data
            return out[:i], _DecodeFailure(i, "corrupt", f"{type(exc).__name__}: {exc}")
    return out, None


def decode_workers(n_images: int) -> int:
    """Worker processes used to decode ``n_images``; 1 means decode in this process.

    Decoding CIFAR-sized images is dominated by Pillow's Python-level header parsing, which holds
    the GIL, so threads do not help (measured: slower than serial); processes do (CIFAR-10 train +
    test, 60,000 JPEGs on a 2-core machine: 3.0 s serial, 2.3 s with two processes; see
    ``benchmarks/data_load.py``). Worker processes are forked, so they inherit everything without
    re-importing simattr (which would cost more than the decoding); they only run Pillow and
    numpy on the data they are handed. Fork is only used on Linux. ``SIMATTR_DECODE_WORKERS``
    overrides the count (``1`` forces serial decoding).
    """
    if not _can_fork_workers():
        return 1
    value = os.environ.get("SIMATTR_DECODE_WORKERS")
    if value:
        try:
            requested = int(value)
        except ValueError as exc:
            raise InvalidInputError(
                f"SIMATTR_DECODE_WORKERS must be an integer, got {value!r}"
            ) from exc
        return max(1, min(requested, n_images))
    if n_images < _PARALLEL_MIN_IMAGES:
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cpus or 1, 8))


def _can_fork_workers() -> bool:
    """Whether decoding may fork workers: on Linux only, and not from a daemonic process.

    A daemonic process (a job run by a ``multiprocessing`` pool) may not have children.
    """
    return (
        sys.platform.startswith("linux")
        and "fork" in multiprocessing.get_all_start_methods()
        and not multiprocessing.current_process().daemon
    )


def _decode_parallel(
    items: Sequence[bytes | str], target: _Target, workers: int
) -> tuple[list[np.ndarray], _DecodeFailure | None]:
    chunk = max(256, math.ceil(len(items) / (workers * 4)))
    starts = range(0, len(items), chunk)
    parts: list[np.ndarray] = []
    with warnings.catch_warnings():
        # Python >= 3.12 warns that fork() in a multi-threaded process may deadlock the child;
        # our children touch no lock-holding library (only Pillow and numpy on their own data).
        warnings.filterwarnings("ignore", message=r".*fork\(\).*", category=DeprecationWarning)
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = [pool.submit(_decode_chunk, items[s : s + chunk], target) for s in starts]
            for start, future in zip(starts, futures, strict=True):
                part, failure = future.result()
                parts.append(part)
                if failure is not None:
                    pool.shutdown(wait=True, cancel_futures=True)
                    return parts, _DecodeFailure(
                        start + failure.index, failure.kind, failure.detail
                    )
    return parts, None


def decode_images(items: Sequence[bytes | str], target: _Target | None) -> np.ndarray:
    """Decode every item to one uint8 ``N x H x W x 3`` array, in parallel when worth it.

    With ``target=None`` the first image fixes the size and every other image must match it.

    Raises:
        _DecodeFailure: for the first (lowest index) image that is corrupt or of another size;
            the caller turns it into a :class:`DataError` naming the file and row.
    """
    if not items:
        raise InvalidInputError("no images to decode")
    if target is None:
        width, height = _probe_size(items[0])
        target = _Target(height, width, resize=False)
    workers = decode_workers(len(items))
    parts: list[np.ndarray]
    if workers > 1:
        try:
            parts, failure = _decode_parallel(items, target, workers)
        except (BrokenProcessPool, OSError) as exc:
            log.warning("parallel decoding failed (%s); decoding in this process instead", exc)
            workers = 1
    if workers == 1:
        part, failure = _decode_chunk(items, target)
        parts = [part]
    if failure is not None:
        raise failure
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _resize_pixels(pixels: np.ndarray, size: int) -> np.ndarray:
    """Resize already-decoded ``N x H x W x C`` uint8 images to ``size x size`` (bilinear)."""
    from PIL import Image

    if pixels.shape[1:3] == (size, size):
        return pixels
    out = np.empty((len(pixels), size, size, pixels.shape[3]), dtype=np.uint8)
    for i, image in enumerate(pixels):
        mode_input = image[..., 0] if image.shape[-1] == 1 else image
        resized = Image.fromarray(mode_input).resize((size, size), Image.Resampling.BILINEAR)
        out[i] = np.asarray(resized).reshape(size, size, -1)
    return out


# ---------------------------------------------------------------------------------------------
# Fingerprints
# ---------------------------------------------------------------------------------------------
def _fingerprint(kind: str, identity: str, image_size: int | None) -> str:
    """Short hex id of (source kind, source identity, output size)."""
    return digest_text(f"simattr-dataset\n{kind}\n{identity}\n{image_size}", 16)


# ---------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------
@dataclass
class _Decoded:
    pixels: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]


class _Source(Protocol):
    name: str

    def check_split(self, split: str) -> None: ...

    def fingerprint(self, split: str, image_size: int | None) -> str | None: ...

    def decode(self, split: str, image_size: int | None, download: bool) -> _Decoded: ...


def _unknown_split(split: str, where: Path, available: Sequence[str]) -> MissingFileError:
    listed = ", ".join(repr(s) for s in available) or "none"
    return MissingFileError(f"no split {split!r} in {where}; available splits: {listed}")


_SHARD = re.compile(r"^(?P<split>.+?)-\d+-of-\d+(?:-.*)?$")


class _ParquetSource:
    """A Hugging Face ``datasets`` Parquet export: one file (or a few shards) per split."""

    def __init__(self, root: Path, files: dict[str, list[Path]]) -> None:
        self.root = root
        self.name = root.name
        self.files = files

    @staticmethod
    def find(root: Path) -> dict[str, list[Path]]:
        """Parquet files of each split in ``root`` (or ``root/data``), shards in order."""
        for folder in (root, root / "data"):
            found: dict[str, list[Path]] = {}
            for path in sorted(folder.glob("*.parquet")) if folder.is_dir() else []:
                match = _SHARD.match(path.stem)
                found.setdefault(match["split"] if match else path.stem, []).append(path)
            if found:
                return found
        return {}

    def check_split(self, split: str) -> None:
        if split not in self.files:
            raise _unknown_split(split, self.root, sorted(self.files))

    def fingerprint(self, split: str, image_size: int | None) -> str:
        return _fingerprint("parquet", digest_files(self.files[split]), image_size)

    def decode(self, split: str, image_size: int | None, download: bool) -> _Decoded:
        tables = [_ParquetFile.read(path) for path in self.files[split]]
        labels = np.concatenate([t.labels for t in tables])
        class_names, origin = tables[0].class_names, "its 'huggingface' schema metadata"
        if class_names is None:
            class_names, origin = self._manifest_class_names(), f"{self.root / 'manifest.json'}"
        if class_names is None:  # no names anywhere: the classes are the label values
            class_names = tuple(str(i) for i in range(int(labels.max(initial=-1)) + 1))
        for table in tables:
            table.check_labels(len(class_names), origin)
        items = [blob for t in tables for blob in t.blobs]
        if not items:
            raise DataError(f"split {split!r} of {self.root} has no rows")
        target = None if image_size is None else _Target(image_size, image_size, resize=True)
        try:
            pixels = decode_images(items, target)
        except _DecodeFailure as failure:
            raise self._decode_error(tables, failure) from None
        return _Decoded(pixels, labels, tuple(class_names))

    def _manifest_class_names(self) -> tuple[str, ...] | None:
        path = self.root / "manifest.json"
        if not path.is_file():
            return None
        try:
            from simattr._io import read_json

            manifest = read_json(path)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path} is not valid JSON ({exc}); fix or delete it") from exc
        for key in ("class_names", "classes", "names", "label_names"):
            names = manifest.get(key) if isinstance(manifest, dict) else None
            if isinstance(names, list) and all(isinstance(n, str) for n in names):
                return tuple(names)
        return None

    @staticmethod
    def _decode_error(tables: Sequence[_ParquetFile], failure: _DecodeFailure) -> DataError:
        offset = 0
        for table in tables:
            if failure.index < offset + len(table.blobs):
                row = failure.index - offset
                break
            offset += len(table.blobs)
        where = f"{table.path}: row {row}"
        if len(tables) > 1:
            where += f" (row {failure.index} of the split)"
        image_path = table.image_path(row)
        if image_path is not None:
            where += f", image path {image_path!r}"
        if failure.kind == "size":
            first = tables[0].image_path(0)
            return DataError(
                f"{where} is {failure.detail} pixels, unlike the first image ({first!r}); the "
                "images of a split must share one size. Pass image_size=N (--image-size N) to "
                "resize them all"
            )
        return DataError(
            f"{where} cannot be decoded as an image ({failure.detail}). The file is damaged or "
            "the row holds no image: re-export the dataset or restore the file"
        )


@dataclass
class _ParquetFile:
    """The image bytes, labels and class names of one Parquet file, validated."""

    path: Path
    table: Any  # pyarrow.Table with the image and label columns
    image_column: str
    blobs: list[bytes]
    labels: np.ndarray
    class_names: tuple[str, ...] | None

    @classmethod
    def read(cls, path: Path) -> _ParquetFile:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            schema = pq.read_schema(path)
            image_col = _pick_column(path, schema, ("img", "image", "images"), "image")
            label_col = _pick_column(path, schema, ("label", "labels"), "label")
            table = pq.read_table(path, columns=[image_col, label_col])
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"{path} is not a readable Parquet file ({exc})") from exc
        labels = _parquet_labels(path, table.column(label_col), label_col)
        blobs = _parquet_blobs(path, table.column(image_col), image_col)
        names = _hf_class_names(schema.metadata or {}, label_col)
        return cls(path, table, image_col, blobs, labels, names)

    def check_labels(self, n_classes: int, source: str) -> None:
        if len(self.labels) and self.labels.max() >= n_classes:
            row = int(np.flatnonzero(self.labels >= n_classes)[0])
            raise DataError(
                f"{self.path}: row {row} has label {int(self.labels[row])}, but there are only "
                f"{n_classes} classes according to {source}; fix the labels or the class names"
            )

    def image_path(self, row: int) -> str | None:
        column = self.table.column(self.image_column)
        value = column[row].as_py()
        return value.get("path") if isinstance(value, dict) else None


def _pick_column(path: Path, schema: Any, candidates: Sequence[str], what: str) -> str:
    for name in candidates:
        if name in schema.names:
            return name
    raise DataError(
        f"{path} has no {what} column: looked for {', '.join(map(repr, candidates))}, "
        f"found {schema.names}. Export the dataset with an image and a label column"
    )


def _parquet_labels(path: Path, column: Any, name: str) -> np.ndarray:
    import pyarrow as pa

    if not pa.types.is_integer(column.type):
        raise DataError(f"{path}: label column {name!r} has type {column.type}, expected integers")
    if column.null_count:
        row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(f"{path}: row {row} has no label (null in column {name!r})")
    labels = column.to_numpy().astype(np.int64)
    if len(labels) and labels.min() < 0:
        row = int(np.flatnonzero(labels < 0)[0])
        raise DataError(
            f"{path}: row {row} has label {int(labels[row])}; labels must be class indices >= 0"
            " (unlabelled rows, marked -1 in some exports, cannot be used for classification)"
        )
    return labels


def _parquet_blobs(path: Path, column: Any, name: str) -> list[bytes]:
    import pyarrow as pa
    import pyarrow.compute as pc

    column = column.combine_chunks()
    if pa.types.is_struct(column.type):
        if column.type.get_field_index("bytes") < 0:
            raise DataError(f"{path}: image column {name!r} is a struct without a 'bytes' field")
        data = pc.struct_field(column, "bytes")  # a null struct gives null bytes
    elif pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        data = column
    else:
        raise DataError(
            f"{path}: image column {name!r} has type {column.type}; expected encoded image bytes "
            "(a struct {bytes, path} as written by Hugging Face datasets, or binary)"
        )
    missing = data.is_null().to_numpy(zero_copy_only=False)
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise DataError(
            f"{path}: row {row} has no image bytes in column {name!r} (images stored as paths "
            "to external files are not supported; export with the images embedded)"
        )
    return data.to_pylist()


def _hf_class_names(metadata: dict[bytes, bytes], label_col: str) -> tuple[str, ...] | None:
    """Class names from the ``huggingface`` schema metadata (``info.features.<label>.names``)."""
    import json

    raw = metadata.get(b"huggingface")
    if not raw:
        return None
    try:
        names = json.loads(raw)["info"]["features"][label_col]["names"]
    except (ValueError, KeyError, TypeError):
        return None
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        return tuple(names)
    return None


class _TorchvisionCifar10Source:
    """torchvision's CIFAR-10 layout, read (and optionally downloaded) by torchvision itself."""

    name = "cifar10"
    splits = ("train", "test")

    def __init__(self, root: Path) -> None:
        self.root = root

    def check_split(self, split: str) -> None:
        if split not in self.splits:
            raise _unknown_split(split, self.root, self.splits)

    def _files(self, split: str) -> list[Path]:
        from torchvision.datasets import CIFAR10

        batches = CIFAR10.train_list if split == "train" else CIFAR10.test_list
        names = [name for name, _ in batches] + [CIFAR10.meta["filename"]]
        return [self.root / _TORCHVISION_FOLDER / name for name in names]

    def fingerprint(self, split: str, image_size: int | None) -> str | None:
        files = self._files(split)
        if not all(path.is_file() for path in files):
            return None  # not downloaded yet
        return _fingerprint("torchvision-cifar10", digest_files(files), image_size)

    def decode(self, split: str, image_size: int | None, download: bool) -> _Decoded:
        from torchvision.datasets import CIFAR10

        try:
            dataset = CIFAR10(str(self.root), train=split == "train", download=download)
        except RuntimeError as exc:  # raised before anything is unpickled
            raise self._integrity_error() from exc
        except OSError as exc:  # network failures (URLError) during download
            raise DataError(f"could not download CIFAR-10 into {self.root}: {exc}") from exc
        pixels = np.ascontiguousarray(dataset.data, dtype=np.uint8)
        if image_size is not None:
            pixels = _resize_pixels(pixels, image_size)
        labels = np.asarray(dataset.targets, dtype=np.int64)
        return _Decoded(pixels, labels, tuple(dataset.classes))

    def _integrity_error(self) -> SimattrError:
        from torchvision.datasets import CIFAR10
        from torchvision.datasets.utils import check_integrity

        folder = self.root / _TORCHVISION_FOLDER
        expected = [*CIFAR10.train_list, *CIFAR10.test_list, [CIFAR10.meta["filename"], None]]
        missing = [name for name, _ in expected if not (folder / name).is_file()]
        fix = (
            f"Pass download=True (--download) to fetch the official release into {self.root}, "
            f"or delete {folder} and download again"
        )
        if missing:
            return MissingFileError(
                f"CIFAR-10 files missing from {folder}: {', '.join(missing)}. {fix}"
            )
        wrong = [
            name
            for name, md5 in [*expected[:-1], [CIFAR10.meta["filename"], CIFAR10.meta["md5"]]]
            if not check_integrity(str(folder / name), md5)
        ]
        return DataError(
            f"CIFAR-10 files in {folder} do not match the official release (MD5 mismatch: "
            f"{', '.join(wrong) or 'unknown'}); they were not loaded. {fix}"
        )


_SPLIT_ALIASES = {
    "val": ("val", "validation", "test"),
    "validation": ("validation", "val", "test"),
    "test": ("test", "val", "validation"),
}


class _ImageFolderSource:
    """``<root>/<split>/<class>/<image>`` folders; classes are the train folder's subfolders."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.name = root.name
        self.class_names = tuple(sorted(_subfolders(root / "train")))
        self._listings: dict[str, tuple[list[Path], np.ndarray]] = {}

    @staticmethod
    def matches(root: Path) -> bool:
        return (root / "train").is_dir() and bool(_subfolders(root / "train"))

    def available(self) -> list[str]:
        return sorted(d.name for d in _visible(self.root) if d.is_dir() and _subfolders(d))

    def folder(self, split: str) -> Path:
        """The split's folder; ``test`` falls back to ``val`` and back (ImageNet has no test)."""
        for name in _SPLIT_ALIASES.get(split, (split,)):
            candidate = self.root / name
            if candidate.is_dir():
                if name != split:
                    log.info("split %r of %s: using folder %s", split, self.root, candidate)
                return candidate
        raise _unknown_split(split, self.root, self.available())

    def check_split(self, split: str) -> None:
        self.folder(split)

    def _listing(self, split: str) -> tuple[list[Path], np.ndarray]:
        """Files of a split in row order, and their labels (listed once per source)."""
        if split not in self._listings:
            self._listings[split] = self._list(split)
        return self._listings[split]

    def _list(self, split: str) -> tuple[list[Path], np.ndarray]:
        folder = self.folder(split)
        index = {name: i for i, name in enumerate(self.class_names)}
        unknown = sorted(set(_subfolders(folder)) - set(index))
        if unknown:
            raise DataError(
                f"{folder} has class folders {unknown} that are not in {self.root / 'train'} "
                f"(classes: {list(self.class_names)}); every split must use the train classes"
            )
        loose = [p for p in _visible(folder) if p.is_file() and _is_image(p)]
        if loose:
            raise DataError(
                f"{loose[0]} lies directly in {folder}; images must be in one subfolder per "
                "class (<split>/<class>/<image>). Sort them into class folders first"
            )
        files: list[Path] = []
        labels: list[int] = []
        for name in sorted(_subfolders(folder)):
            found = _images_under(folder / name)
            files.extend(found)
            labels.extend([index[name]] * len(found))
        if not files:
            raise DataError(
                f"no images in {folder} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        return files, np.asarray(labels, dtype=np.int64)

    def fingerprint(self, split: str, image_size: int | None) -> str:
        files, _ = self._listing(split)

        def lines() -> Iterator[str]:
            yield "\n".join(self.class_names)
            for path in files:
                st = path.stat()
                relative = path.relative_to(self.root).as_posix()
                yield f"\n{relative}\0{st.st_size}\0{st.st_mtime_ns}"

        return _fingerprint("image-folder", digest_text(lines()), _folder_size(image_size))

    def decode(self, split: str, image_size: int | None, download: bool) -> _Decoded:
        files, labels = self._listing(split)
        size = _folder_size(image_size)
        try:
            pixels = decode_images([str(p) for p in files], _Target(size, size, resize=True))
        except _DecodeFailure as failure:
            raise DataError(
                f"{files[failure.index]} (row {failure.index} of split {split!r}) cannot be "
                f"decoded as an image ({failure.detail}); delete or replace the file"
            ) from None
        return _Decoded(pixels, labels, self.class_names)


def _folder_size(image_size: int | None) -> int:
    return FOLDER_DEFAULT_IMAGE_SIZE if image_size is None else image_size


def _visible(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if not p.name.startswith(".")]


def _subfolders(folder: Path) -> list[str]:
    return [p.name for p in _visible(folder) if p.is_dir()]


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _images_under(folder: Path) -> list[Path]:
    """Image files anywhere below ``folder``, sorted by relative path (stable row order)."""
    found = [p for p in folder.rglob("*") if _is_image(p) and p.is_file()]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


# ---------------------------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------------------------
def _load_digits(split: str, image_size: int | None) -> ImageDataset:
    """scikit-learn's digits, split 80/20 stratified by class with a fixed seed.

    Pixel values 0..16 become ``round(v * 255 / 16)``, replicated to three channels. The split is
    ``train_test_split(test_size=DIGITS_TEST_SIZE, stratify=labels,
    random_state=DIGITS_SPLIT_SEED)``, each split keeping ascending original order: 1,437 train
    and 360 test images, the same on every machine for a given scikit-learn version.
    """
    import sklearn
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if split not in ("train", "test"):
        raise MissingFileError(f"no split {split!r} in digits; available splits: 'train', 'test'")
    bunch = load_digits()
    labels = np.asarray(bunch.target, dtype=np.int64)
    train_rows, test_rows = train_test_split(
        np.arange(len(labels)),
        test_size=DIGITS_TEST_SIZE,
        stratify=labels,
        random_state=DIGITS_SPLIT_SEED,
    )
    rows = np.sort(train_rows if split == "train" else test_rows)
    gray = np.rint(bunch.images[rows] * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[..., None]
    if image_size is not None:
        gray = _resize_pixels(gray, image_size)
    identity = f"sklearn-digits {sklearn.__version__} {split}"
    return ImageDataset(
        pixels=np.ascontiguousarray(np.repeat(gray, 3, axis=-1)),
        labels=labels[rows],
        class_names=tuple(str(i) for i in range(10)),
        name="digits",
        split=split,
        fingerprint=_fingerprint("digits", identity, image_size),
        image_size=image_size,
    )


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------
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
