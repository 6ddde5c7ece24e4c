"""The in-memory dataset type shared by every stage, and its zero-copy views.

An :class:`ImageDataset` is one split of a dataset: uint8 pixels ``N x H x W x 3``, int64 labels
and the class names. Counterfactual evaluation trains hundreds of models on the same split minus
(or with relabelled) a few hundred images, so derived datasets are *views*: they keep a reference
to the parent's pixel array plus a row map and their own labels, and never copy pixels until a
batch is asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from simattr.errors import InvalidInputError
from simattr.validation import check_images


def _as_index_array(indices: object, n: int, what: str) -> np.ndarray:
    """Validate ``indices`` as distinct positions in ``[0, n)``; return them as int64."""
    arr = np.asarray(indices)
    if arr.ndim != 1:
        raise InvalidInputError(f"{what} must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise InvalidInputError(f"{what} must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    bad = (arr < 0) | (arr >= n)
    if bad.any():
        first = int(arr[bad][0])
        raise InvalidInputError(
            f"{what} contains {first}, outside the valid range [0, {n}) of this dataset"
        )
    return arr


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """One split of an image classification dataset.

    Attributes:
        pixels: the uint8 array ``N0 x H x W x 3`` this dataset reads from (shared by views).
        rows: for a view, the rows of ``pixels`` it holds, in order; ``None`` means all rows.
        labels: int64 labels, one per item of this dataset (not of ``pixels``).
        class_names: names of the classes, in label order.
        name, split: where the data came from (for sidecars and messages).
        fingerprint: hash of the source, identical for identical bytes on disk.
        image_size: the side images were resized to on loading (``None``: the source's own
            size); the fingerprint depends on it, so a consumer recomputes it with this size.
        files: for an image-folder dataset, the image file of each row of ``pixels`` (absolute
            paths), so that a backbone with its own preprocessing (an ImageNet-stem network at
            224 pixels) decodes the files again instead of using the loader's small pixels;
            ``None`` for other sources.
    """

    pixels: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    name: str = "dataset"
    split: str = "train"
    fingerprint: str = ""
    rows: np.ndarray | None = field(default=None)
    image_size: int | None = None
    files: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        px = check_images(self.pixels)
        if self.files is not None and len(self.files) != px.shape[0]:
            raise InvalidInputError(
                f"{self.name}/{self.split}: {len(self.files)} files for {px.shape[0]} images"
            )
        n = px.shape[0] if self.rows is None else len(self.rows)
        labels = np.asarray(self.labels)
        if labels.ndim != 1 or len(labels) != n:
            raise InvalidInputError(
                f"{self.name}/{self.split}: {len(labels) if labels.ndim == 1 else labels.shape} "
                f"labels for {n} images; there must be exactly one label per image"
            )
        if n and not np.issubdtype(labels.dtype, np.integer):
            raise InvalidInputError(f"labels must be integers, got dtype {labels.dtype}")
        labels = labels.astype(np.int64, copy=False)
        k = len(self.class_names)
        if n and (labels.min() < 0 or labels.max() >= k):
            bad = int(np.flatnonzero((labels < 0) | (labels >= k))[0])
            raise InvalidInputError(
                f"{self.name}/{self.split}: label {int(labels[bad])} at row {bad} is outside "
                f"[0, {k}) for the {k} classes {list(self.class_names)}"
            )
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))

    # -- basic accessors -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.pixels.shape[1:])  # type: ignore[return-value]

    @property
    def source_indices(self) -> np.ndarray:
        """For each item, its row in the original split (what rankings index)."""
        if self.rows is None:
            return np.arange(self.pixels.shape[0], dtype=np.int64)
        return self.rows

    @property
    def is_view(self) -> bool:
        return self.rows is not None

    @property
    def images(self) -> np.ndarray:
        """All images as ``N x H x W x 3`` uint8. Free for a full split; a copy for a view."""
        return self.pixels if self.rows is None else self.pixels[self.rows]

    def get_images(self, positions: Sequence[int] | np.ndarray | slice) -> np.ndarray:
        """Gather a batch of images by position in this dataset (copies only that batch)."""
        if isinstance(positions, slice):
            if self.rows is None:
                return self.pixels[positions]
            return self.pixels[self.rows[positions]]
        pos = np.asarray(positions, dtype=np.int64)
        return self.pixels[pos] if self.rows is None else self.pixels[self.rows[pos]]

    def class_counts(self) -> np.ndarray:
        """Number of items of each class, length ``num_classes``."""
        return np.bincount(self.labels, minlength=self.num_classes)

    def get_files(self, positions: slice) -> list[str] | None:
        """The image files of a batch of positions, or ``None`` when the source has none."""
        if self.files is None:
            return None
        rows = self.source_indices[positions]
        return [self.files[int(r)] for r in rows]

    # -- views -----------------------------------------------------------------------------
    def _view(self, positions: np.ndarray, labels: np.ndarray) -> ImageDataset:
        rows = self.source_indices[positions]
        return ImageDataset(
            pixels=self.pixels,
            labels=labels,
            class_names=self.class_names,
            name=self.name,
            split=self.split,
            fingerprint=self.fingerprint,
            rows=rows,
            image_size=self.image_size,
            files=self.files,
        )

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageDataset:
        """A view holding only the items at ``indices`` (positions in this dataset), in order."""
        pos = _as_index_array(indices, len(self), "subset indices")
        return self._view(pos, self.labels[pos])

    def remove(self, indices: Sequence[int] | np.ndarray) -> ImageDataset:
        """A view without the items at ``indices``; the others keep their order."""
        pos = _as_index_array(indices, len(self), "indices to remove")
        keep = np.ones(len(self), dtype=bool)
        keep[pos] = False
        kept = np.flatnonzero(keep)
        return self._view(kept, self.labels[kept])

    def relabel(
        self, indices: Sequence[int] | np.ndarray, new_label: int | np.ndarray
    ) -> ImageDataset:
        """A view where the items at ``indices`` carry ``new_label`` (one, or one per item)."""
        pos = _as_index_array(indices, len(self), "indices to relabel")
        new = np.broadcast_to(np.asarray(new_label), pos.shape)
        if not np.issubdtype(new.dtype, np.integer):
            raise InvalidInputError(f"new labels must be integers, got {new.dtype}")
        if new.size and (new.min() < 0 or new.max() >= self.num_classes):
            raise InvalidInputError(
                f"new label {int(new[(new < 0) | (new >= self.num_classes)][0])} is outside "
                f"[0, {self.num_classes})"
            )
        labels = self.labels.copy()
        labels[pos] = new
        return self._view(np.arange(len(self), dtype=np.int64), labels)

    def __repr__(self) -> str:
        kind = "view of " if self.is_view else ""
        return (
            f"ImageDataset({kind}{self.name}/{self.split}: {len(self)} images "
            f"{'x'.join(map(str, self.image_shape))}, {self.num_classes} classes)"
        )
