"""How an image of any size becomes a backbone's input: one function for the CLI and the API.

A backbone owns a :class:`Preprocessing` (``Backbone.preprocessing``); whatever hands images to
it (``simattr features``, :func:`simattr.features.extract_features` with a dataset, a list of
files, PIL images or arrays) goes through :meth:`Preprocessing.prepare`, so the same file gives
the same features wherever it enters. Two kinds:

``"cifar"`` (CIFAR-stem backbones)
    square bilinear resize to ``size x size`` (32) with Pillow: what the image-folder loader
    has always done, so folder datasets loaded at the default size are used as they are. Images
    that a dataset loader already decoded (an :class:`~simattr.data.ImageDataset`, a uint8
    ``N x H x W x 3`` array) keep their size, as before: CIFAR-10 is 32x32, digits 8x8.
``"imagenet"`` (ImageNet-stem backbones)
    shorter side resized to ``resize`` (256, bilinear with antialiasing), centre crop
    ``size x size`` (224), with :mod:`torchvision.transforms.v2` on uint8 tensors; a smaller
    ``size`` scales ``resize`` by 256/224 (``size=64``: resize 73). Every image is transformed,
    whatever its size; image-folder datasets are decoded again from their files, so photos are
    not first shrunk to the loader's 32x32.

Both normalise with the backbone's mean and std afterwards (on batches of tensors). JPEG files
that simattr opens itself (paths, encoded bytes) are decoded at reduced scale when they are at
least twice the needed size; decoded arrays handed over by a caller cannot be, so to get the
very pixels of the CLI, hand over file paths.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simattr.errors import InvalidInputError

CIFAR_SIZE = 32
IMAGENET_RESIZE = 256
IMAGENET_CROP = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KINDS = ("cifar", "imagenet")

#: What :meth:`Preprocessing.prepare` takes: a file path, encoded bytes, a PIL image or a uint8
#: ``H x W x 3`` (or ``H x W``) array.
ImageLike = Any


@dataclass(frozen=True)
class Preprocessing:
    """The geometry and normalisation of a backbone's input (see the module docstring)."""

    kind: str
    size: int
    resize: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidInputError(f"unknown preprocessing {self.kind!r}; choose one of {KINDS}")
        if not (1 <= self.size <= self.resize):
            raise InvalidInputError(
                f"preprocessing: crop size {self.size} must be between 1 and the resize "
                f"{self.resize}"
            )

    @classmethod
    def cifar(
        cls,
        mean: Sequence[float],
        std: Sequence[float],
        size: int = CIFAR_SIZE,
    ) -> Preprocessing:
        return cls("cifar", int(size), int(size), _triple(mean), _triple(std))

    @classmethod
    def imagenet(
        cls,
        size: int = IMAGENET_CROP,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> Preprocessing:
        size = int(size)
        resize = round(size * IMAGENET_RESIZE / IMAGENET_CROP)
        return cls("imagenet", size, resize, _triple(mean), _triple(std))

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for sidecars."""
        if self.kind == "cifar":
            geometry = (
                f"image files and single images: square bilinear resize to {self.size}x"
                f"{self.size} (Pillow); decoded datasets and arrays: used at their own size"
            )
        else:
            geometry = (
                f"shorter side resized to {self.resize} (bilinear, antialiased), centre crop "
                f"{self.size}x{self.size} (torchvision.transforms.v2)"
            )
        return {
            "kind": self.kind,
            "size": self.size,
            "resize": self.resize,
            "mean": list(self.mean),
            "std": list(self.std),
            "geometry": geometry,
        }

    # -- geometry ----------------------------------------------------------------------------
    def prepare(self, item: ImageLike) -> np.ndarray:
        """One image of any size -> uint8 ``size x size x 3``, the backbone's input pixels."""
        from PIL import Image

        if isinstance(item, (str, os.PathLike, bytes)):
            image = _open(item, (2 * self.resize, 2 * self.resize))
        elif isinstance(item, Image.Image):
            image = item.convert("RGB") if item.mode != "RGB" else item
        else:
            image = Image.fromarray(_as_rgb_array(item))
        if self.kind == "cifar":
            if image.size != (self.size, self.size):
                image = image.resize((self.size, self.size), Image.Resampling.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
        return self._imagenet(np.asarray(image, dtype=np.uint8))

    def prepare_many(self, items: Sequence[ImageLike]) -> np.ndarray:
        """Several images of any sizes -> uint8 ``N x size x size x 3``."""
        out = np.empty((len(items), self.size, self.size, 3), dtype=np.uint8)
        for i, item in enumerate(items):
            out[i] = self.prepare(item)
        return out

    def prepare_decoded(self, images: np.ndarray) -> np.ndarray:
        """A batch a dataset loader decoded (uint8 ``N x H x W x 3``): kept as it is by
        ``"cifar"`` (see the module docstring), resized and cropped by ``"imagenet"``."""
        if self.kind == "cifar":
            return images
        return self.prepare_many(list(images))

    def _imagenet(self, pixels: np.ndarray) -> np.ndarray:
        import torch
        from torchvision.transforms import v2

        transform = v2.Compose(
            [
                v2.Resize(self.resize, interpolation=v2.InterpolationMode.BILINEAR, antialias=True),
                v2.CenterCrop(self.size),
            ]
        )
        if not pixels.flags.writeable:  # np.asarray of a PIL image is read-only
            pixels = pixels.copy()
        chw = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)
        out = transform(chw)
        return np.ascontiguousarray(out.permute(1, 2, 0).numpy())


def _open(item: str | os.PathLike[str] | bytes, draft: tuple[int, int]) -> Any:
    """A file or encoded bytes decoded as the folder loader decodes them."""
    from simattr.data.sources import open_rgb
    from simattr.errors import DataError, MissingFileError

    if not isinstance(item, bytes):
        item = os.fspath(item)
        if not Path(item).is_file():
            raise MissingFileError(f"{item}: no such image file")
    try:
        return open_rgb(item, draft)
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, ... on bad data
        what = "encoded image bytes" if isinstance(item, bytes) else str(item)
        raise DataError(
            f"{what} cannot be decoded as an image ({type(exc).__name__}: {exc})"
        ) from None


def _as_rgb_array(item: object) -> np.ndarray:
    arr = np.asarray(item)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise InvalidInputError(
            f"an image must be a file path, encoded bytes, a PIL image or a uint8 H x W x 3 "
            f"array; got an array of shape {arr.shape} and dtype {arr.dtype}"
        )
    return np.ascontiguousarray(arr)


def _triple(values: Sequence[float]) -> tuple[float, float, float]:
    out = tuple(float(v) for v in values)
    if len(out) != 3:
        raise InvalidInputError(f"mean and std need three values (R, G, B), got {list(values)}")
    return out  # type: ignore[return-value]


__all__ = [
    "CIFAR_SIZE",
    "IMAGENET_CROP",
    "IMAGENET_MEAN",
    "IMAGENET_RESIZE",
    "IMAGENET_STD",
    "Preprocessing",
]
