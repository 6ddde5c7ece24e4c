"""The image-folder source (ImageNet layout): ``<root>/<split>/<class>/<image>``."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from simattr.data.sources.base import (
    FOLDER_DEFAULT_IMAGE_SIZE,
    IMAGE_EXTENSIONS,
    _Decoded,
    _fingerprint,
    _unknown_split,
)
from simattr.data.sources.decode import _DecodeFailure, _Target, decode_images
from simattr.errors import DataError
from simattr.hashing import digest_text

log = logging.getLogger(__name__)


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
        """Class names, then each file's relative path, size and content digest
        (:func:`content_digest`): a file edited, or two same-size files swapped, with their
        modification times put back, still changes it."""
        files, _ = self._listing(split)

        def lines() -> Iterator[str]:
            yield "\n".join(self.class_names)
            for path in files:
                relative = path.relative_to(self.root).as_posix()
                size, digest = content_digest(path)
                yield f"\n{relative}\0{size}\0{digest}"

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


#: Files up to this size are hashed whole; larger ones on :data:`SAMPLE_BYTES` at each of
#: the start, middle and end (a photo's header, scan data and trailer), to bound the cost.
FULL_DIGEST_MAX = 1 << 20
SAMPLE_BYTES = 1 << 16


def content_digest(path: Path) -> tuple[int, str]:
    """Size and BLAKE2b-128 of a file's bytes (whole up to :data:`FULL_DIGEST_MAX`, else
    three spaced samples): what makes the folder fingerprint see content, not only times."""
    with open(path, "rb", buffering=0) as fh:
        size = os.fstat(fh.fileno()).st_size
        h = hashlib.blake2b(digest_size=16)
        if size <= FULL_DIGEST_MAX:
            h.update(fh.read())
        else:
            for offset in (0, (size - SAMPLE_BYTES) // 2, size - SAMPLE_BYTES):
                fh.seek(offset)
                h.update(fh.read(SAMPLE_BYTES))
    return size, h.hexdigest()


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
