"""The torchvision CIFAR-10 source. torchvision checks the MD5 of every batch file against the
official release before it unpickles anything; simattr never unpickles these files itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from simattr.data.sources.base import (
    _TORCHVISION_FOLDER,
    _Decoded,
    _fingerprint,
    _unknown_split,
)
from simattr.data.sources.decode import _resize_pixels
from simattr.errors import DataError, MissingFileError, SimattrError
from simattr.hashing import digest_files


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
        expected = [
            *CIFAR10.train_list,
            *CIFAR10.test_list,
            [CIFAR10.meta["filename"], None],
        ]
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
            for name, md5 in [
                *expected[:-1],
                [CIFAR10.meta["filename"], CIFAR10.meta["md5"]],
            ]
            if not check_integrity(str(folder / name), md5)
        ]
        return DataError(
            f"CIFAR-10 files in {folder} do not match the official release (MD5 mismatch: "
            f"{', '.join(wrong) or 'unknown'}); they were not loaded. {fix}"
        )
