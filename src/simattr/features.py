"""Feature extraction: images -> one embedding per image, saved as ``.npy`` plus a JSON sidecar.

Images stay uint8 in memory; each batch goes through the backbone's own preprocessing
(:attr:`Backbone.preprocessing <simattr.models.Backbone.preprocessing>`, see
:mod:`simattr.data.preprocess`: 32x32 for CIFAR-stem networks, shorter side 256 and centre crop
224 for ImageNet-stem ones), is normalised with the backbone's input statistics and run in eval
mode, so a feature depends only on its image (not on its neighbours, nor on whether it came
through ``simattr features`` or the Python API; a batch of another size may differ by float
rounding). The sidecar records the backbone (including whether it is a trained or a randomly
initialised stand-in) and its preprocessing, the dataset fingerprint and split, so that a
features file can always be traced back to what produced it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simattr._io import provenance, read_sidecar, verify_checksum, write_with_sidecar
from simattr._progress import progress_bar
from simattr.data.dataset import ImageDataset
from simattr.data.preprocess import ImageLike, Preprocessing
from simattr.errors import InvalidInputError, MissingFileError
from simattr.models.backbones import Backbone
from simattr.validation import check_device, check_features, check_images, check_positive_int


def images_to_tensor(
    images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
) -> torch.Tensor:
    """uint8 ``N x H x W x 3`` -> normalised float ``N x 3 x H x W`` (channels-last memory)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device, non_blocking=True)
    x = x.permute(0, 3, 1, 2).float().div_(255)
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=device).view(1, 3, 1, 1)
    return ((x - m) / s).contiguous(memory_format=torch.channels_last)


def _batches(
    data: ImageDataset | np.ndarray | Sequence[ImageLike] | ImageLike, prep: Preprocessing
) -> tuple[int, Callable[[slice], np.ndarray]]:
    """How many images ``data`` holds, and a function from a slice of them to the backbone's
    input pixels (uint8 ``B x H x W x 3``)."""
    if isinstance(data, ImageDataset):
        dataset = data

        def from_dataset(rows: slice) -> np.ndarray:
            # photos of an image folder are decoded again at the backbone's own size
            files = dataset.get_files(rows) if prep.kind == "imagenet" else None
            if files is not None:
                return prep.prepare_many(files)
            return prep.prepare_decoded(dataset.get_images(rows))

        return len(dataset), from_dataset
    if isinstance(data, np.ndarray) and data.ndim == 4:
        images = check_images(data)
        return len(images), lambda rows: prep.prepare_decoded(images[rows])
    if isinstance(data, (str, os.PathLike, bytes, np.ndarray)) or not isinstance(data, Sequence):
        items: list[ImageLike] = [data]  # one image: a path, bytes, a PIL image or an array
    else:
        items = list(data)
    return len(items), lambda rows: prep.prepare_many(items[rows])


@torch.inference_mode()
def extract_features(
    backbone: Backbone,
    data: ImageDataset | np.ndarray | Sequence[ImageLike] | ImageLike,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> np.ndarray:
    """Embed every image of ``data`` with ``backbone``; returns float32 ``N x D``.

    ``data``: an :class:`ImageDataset`; a uint8 ``N x H x W x 3`` array (decoded images); a
    sequence of images of any sizes (file paths, encoded bytes, PIL images, uint8 ``H x W x
    3`` arrays); or one such image (one row). Everything goes through
    ``backbone.preprocessing`` (:mod:`simattr.data.preprocess`), the function ``simattr
    features`` uses too: an ImageNet-stem backbone decodes the files of an image-folder
    dataset again at its own size (shorter side 256, centre crop 224), so the same file gives
    the same feature through the CLI and through this function.
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    device = check_device(device)
    prep = backbone.preprocessing
    n, get = _batches(data, prep)
    module = backbone.module.to(device).eval().to(memory_format=torch.channels_last)
    chunks: list[np.ndarray] = []
    with progress_bar("features", n, progress) as advance:
        for start in range(0, n, batch_size):
            batch = get(slice(start, min(start + batch_size, n)))
            x = images_to_tensor(batch, prep.mean, prep.std, device)
            chunks.append(module(x).float().cpu().numpy())
            advance(len(batch))
    if not chunks:
        raise InvalidInputError("no images to embed: the dataset is empty")
    return np.concatenate(chunks)


def save_features(
    path: str | os.PathLike[str],
    features: np.ndarray,
    *,
    backbone: Backbone | None = None,
    dataset: ImageDataset | None = None,
    root: str | os.PathLike[str] | None = None,
    **extra: Any,
) -> Path:
    """Write ``features`` to ``path`` (``.npy``) and its sidecar, both atomically.

    The sidecar records the backbone and the dataset: its name, split, fingerprint, image size
    and class names; with ``root`` (where ``dataset`` was loaded from) also that root and the
    digest of the rows' source identifiers (:func:`~simattr.data.source_ids`), so that
    ``attribute`` can refuse these features once the data changed, and name their files.
    """
    features = check_features(features, "features")
    path = Path(path)
    if path.suffix != ".npy":
        raise InvalidInputError(f"features are written as .npy; got output path {path}")
    if dataset is not None and len(dataset) != len(features):
        raise InvalidInputError(
            f"{len(features)} feature rows for the {len(dataset)} images of "
            f"{dataset.name}/{dataset.split}; give the dataset the features were made from"
        )
    described: dict[str, Any] | None = None
    if dataset is not None:
        described = {
            "name": dataset.name,
            "split": dataset.split,
            "fingerprint": dataset.fingerprint,
            "image_size": dataset.image_size,
            "n": len(dataset),
            "class_names": list(dataset.class_names),
        }
        if root is not None:
            from simattr.data import resolve_root, source_ids, source_ids_digest

            described["root"] = str(resolve_root(root))
            described["source_ids_digest"] = source_ids_digest(source_ids(root, dataset))
    meta = provenance(
        kind="features",
        shape=list(features.shape),
        dtype=str(features.dtype),
        normalized=False,
        backbone=backbone.describe() if backbone is not None else None,
        preprocessing=backbone.preprocessing.describe() if backbone is not None else None,
        dataset=described,
        **extra,
    )
    write_with_sidecar(path, lambda tmp: np.save(tmp, features, allow_pickle=False), meta)
    return path


def load_features(path: str | os.PathLike[str], name: str | None = None) -> np.ndarray:
    """Read a features ``.npy`` (never pickled objects), validated as finite 2-D floats."""
    path = Path(path)
    label = name or str(path)
    if not path.exists():
        raise MissingFileError(f"{label}: no such file {path}")
    if path.is_dir():
        raise InvalidInputError(f"{label}: {path} is a folder, not a .npy file")
    verify_checksum(path, read_sidecar(path), label if name else "")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InvalidInputError(f"{path} is not a readable .npy array: {exc}") from None
    return check_features(arr, f"{label} ({path.name})")


def load_features_metadata(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The sidecar of a features file, or ``None`` when it has none (user-provided features)."""
    meta = read_sidecar(path)
    return meta or None
