"""What every dataset source shares: the constants, resolving a root, the fingerprint helper,
the decoded result and the source protocol."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from simattr.data import cache as _cache
from simattr.errors import InvalidInputError, MissingFileError
from simattr.hashing import digest_text

#: ``random_state`` of the stratified train/test split of scikit-learn's digits.
DIGITS_SPLIT_SEED = 0
#: Fraction of the 1,797 digits held out as the test split (360 images; 1,437 train).
DIGITS_TEST_SIZE = 0.2
#: Side of the square images an image folder is resized to when ``image_size`` is not given.
FOLDER_DEFAULT_IMAGE_SIZE = 32
#: File suffixes (lower case) read from image folders; other files are ignored.
IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".png",
        ".bmp",
        ".webp",
        ".gif",
        ".tif",
        ".tiff",
        ".ppm",
        ".pgm",
        ".pbm",
    }
)

_TORCHVISION_FOLDER = "cifar-10-batches-py"
_LAYOUTS = (
    "a Parquet export (<root>/train.parquet, <root>/test.parquet, or <root>/data/<split>*.parquet)",
    f"a torchvision CIFAR-10 root (<root>/{_TORCHVISION_FOLDER}/)",
    "ImageNet-style image folders (<root>/train/<class>/<image>, <root>/val/ or <root>/test/)",
)


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


def _fingerprint(kind: str, identity: str, image_size: int | None) -> str:
    """Short hex id of (source kind, source identity, output size)."""
    return digest_text(f"simattr-dataset\n{kind}\n{identity}\n{image_size}", 16)


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
