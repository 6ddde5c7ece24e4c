"""Input checks shared by the API and the CLI, in the spirit of scikit-learn's ``check_array``.

Each check turns a bad argument into one :class:`~simattr.errors.InvalidInputError` that names
the argument, the offending row or value and, where it helps, the fix, so that a user never sees
a broadcasting error from deep inside numpy or torch.
"""

from __future__ import annotations

import numpy as np
import torch

from simattr.errors import InvalidInputError


def check_features(features: object, name: str = "features") -> np.ndarray:
    """Return ``features`` as a finite, two-dimensional float array (float32 or float64)."""
    try:
        arr = np.asarray(features)
    except Exception as exc:  # ragged lists and the like
        raise InvalidInputError(f"{name} could not be read as an array: {exc}") from None
    if arr.ndim != 2:
        raise InvalidInputError(
            f"{name} must be a 2-D array (n_images x n_dims), got shape {arr.shape}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidInputError(f"{name} is empty (shape {arr.shape})")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InvalidInputError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float32)
    finite = np.isfinite(arr)
    if not finite.all():
        row, col = (int(v[0]) for v in np.nonzero(~finite))
        n_bad = int((~finite.all(axis=1)).sum())
        raise InvalidInputError(
            f"{name} has a non-finite value ({arr[row, col]}) at row {row}, column {col} "
            f"({n_bad} row(s) affected); NaN or infinite features usually come from a diverged "
            "backbone or a corrupt file"
        )
    return arr


def check_same_width(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    """Refuse two feature arrays of different widths: they cannot share one embedding."""
    if a.shape[1] != b.shape[1]:
        raise InvalidInputError(
            f"{name_a} has {a.shape[1]} dimensions but {name_b} has {b.shape[1]}; "
            "both must come from the same backbone"
        )


def check_images(images: object, name: str = "images") -> np.ndarray:
    """Return ``images`` if it is a uint8 array ``N x H x W x 3`` (the in-memory image format)."""
    if (
        not isinstance(images, np.ndarray)
        or images.dtype != np.uint8
        or images.ndim != 4
        or images.shape[-1] != 3
    ):
        raise InvalidInputError(
            f"{name} must be a uint8 array N x H x W x 3, got shape "
            f"{getattr(images, 'shape', None)} dtype {getattr(images, 'dtype', type(images))}"
        )
    return images


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device; CUDA asked for where there is none is a clear error.

    The one place every stage (features, training, TRAK, self-supervised training, the ESVM on
    a GPU) checks its ``--device``, so that a typo or a missing GPU gives the same line
    everywhere instead of a CUDA traceback from the first tensor moved.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidInputError(f"invalid device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"device {str(device)!r} requested but CUDA is not available")
    return dev


def target_labels_or_true(
    true_labels: np.ndarray, targets: np.ndarray, target_labels: object, num_classes: int
) -> np.ndarray:
    """The labels to explain: the given ``target_labels`` (checked), else the true ones."""
    if target_labels is None:
        return np.asarray(true_labels)[targets].astype(np.int64)
    return check_labels(
        target_labels, len(targets), "target_labels", num_classes=num_classes, for_what="targets"
    )


def check_labels(
    labels: object,
    n: int,
    name: str = "labels",
    *,
    num_classes: int | None = None,
    for_what: str = "features",
) -> np.ndarray:
    """Return ``labels`` as int64 of length ``n``, each in ``[0, num_classes)`` when given."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise InvalidInputError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if len(arr) != n:
        raise InvalidInputError(
            f"{name} has {len(arr)} entries but there are {n} {for_what}; "
            "they must match one to one"
        )
    if n == 0:
        return arr.astype(np.int64)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise InvalidInputError(f"{name} must be whole numbers, got dtype {arr.dtype}")
    elif not np.issubdtype(arr.dtype, np.integer):
        raise InvalidInputError(f"{name} must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.min() < 0:
        row = int(np.argmin(arr))
        raise InvalidInputError(f"{name} has negative label {int(arr[row])} at row {row}")
    if num_classes is not None and arr.max() >= num_classes:
        row = int(np.argmax(arr))
        raise InvalidInputError(
            f"{name} has label {int(arr[row])} at row {row}, outside [0, {num_classes})"
        )
    return arr


def check_positive_int(value: object, name: str) -> int:
    """An integer >= 1 (numpy integers accepted, booleans refused)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_indices(indices: object, n: int, name: str) -> np.ndarray:
    """Distinct-or-not integer positions in ``[0, n)``, as int64."""
    arr = np.asarray(indices)
    if arr.ndim != 1:
        raise InvalidInputError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise InvalidInputError(f"{name} must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    bad = (arr < 0) | (arr >= n)
    if bad.any():
        raise InvalidInputError(
            f"{name} contains {int(arr[bad][0])}, outside the valid range [0, {n})"
        )
    return arr


def l2_normalize(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit Euclidean norm (an all-zero row stays zero)."""
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, np.finfo(features.dtype).tiny)
