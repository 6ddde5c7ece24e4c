"""Input checks shared by the API and the CLI, in the spirit of scikit-learn's ``check_array``.

Each check turns a bad argument into one :class:`~simattr.errors.InvalidInputError` that names
the argument, the offending row or value and, where it helps, the fix, so that a user never sees
a broadcasting error from deep inside numpy or torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from simattr.errors import InvalidInputError

if TYPE_CHECKING:
    import torch


def check_features(features: object, name: str = "features") -> np.ndarray:
    """Return ``features`` as a finite, two-dimensional float array (float32 or float64),
    refusing values so large that distances between rows overflow (:func:`check_magnitude`)."""
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
    check_magnitude(arr, name, allow_all_zero=True)
    return arr


def check_magnitude(
    features: np.ndarray,
    name: str = "features",
    first_row: int = 0,
    *,
    allow_all_zero: bool = False,
) -> None:
    """Refuse finite features whose squared distances overflow their dtype, or that are all
    zero (unless ``allow_all_zero``).

    Either way every image would get the same score and a ranking would silently be the
    training order (``X * 1e37`` in float32 overflowed into tied scores with only a numpy
    warning). The bound is conservative and cheap: ``4 * D * max|x|^2`` must stay below the
    dtype's largest value (about 4e17 for 512-d float32 features, far above any backbone's).
    ``first_row`` is the row number of ``features[0]`` in the caller's array (chunked checks).
    """
    if features.size == 0 or not np.issubdtype(features.dtype, np.floating):
        return
    top = max(float(features.max()), -float(features.min()))  # no full-size temporary
    if top == 0.0 and not allow_all_zero:
        rows = f"rows {first_row}-{first_row + len(features) - 1} of " if first_row else ""
        raise InvalidInputError(
            f"{rows}{name} are all zeros: every image would get the same score and the ranking "
            "would be the training order; check the backbone or the file"
        )
    limit = float(np.finfo(features.dtype).max)
    if top > np.sqrt(limit / (4.0 * features.shape[1])):
        row = int(np.argmax(np.abs(features).max(axis=1)))
        raise InvalidInputError(
            f"{name} has values up to {top:.3g} (row {first_row + row}): squared distances "
            f"overflow {features.dtype} and every score would tie; rescale the features "
            "(for example divide them by their largest value)"
        )


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
    import torch

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


def check_threads(value: object, name: str = "threads") -> int | None:
    """Torch threads per model: ``None`` (torch's default) or an integer >= 1."""
    if value is None:
        return None
    return check_positive_int(value, name)


def _check_ranking_structure(t: np.ndarray, idx: np.ndarray, sc: np.ndarray, name: str) -> None:
    """Shapes and dtypes: targets (n,) and indices (n, k) integers, scores (n, k) numbers."""
    if t.ndim != 1 or idx.ndim != 2 or idx.shape[0] != len(t) or sc.shape != idx.shape:
        raise InvalidInputError(
            f"{name}: a ranking needs targets (n,), indices (n, k) and scores (n, k); got "
            f"{t.shape}, {idx.shape} and {sc.shape}"
        )
    for arr, what in ((t, "targets"), (idx, "indices")):
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise InvalidInputError(f"{name}: {what} must be integers, got dtype {arr.dtype}")
    if sc.size and not (
        np.issubdtype(sc.dtype, np.floating) or np.issubdtype(sc.dtype, np.integer)
    ):
        raise InvalidInputError(f"{name}: scores must be numbers, got dtype {sc.dtype}")


def _check_ranking_targets(t: np.ndarray, name: str, n_test: int | None) -> None:
    """Targets distinct and inside ``[0, n_test)``."""
    if not len(t):
        return
    bad = (t < 0) | ((t >= n_test) if n_test is not None else False)
    if bad.any():
        row = int(np.argmax(bad))
        where = f"[0, {n_test})" if n_test is not None else "the test split"
        raise InvalidInputError(
            f"{name}: target {int(t[row])} (row {row}) is outside {where}; the ranking was "
            "made for other data"
        )
    if len(np.unique(t)) != len(t):
        raise InvalidInputError(f"{name}: a target is ranked twice (targets must be distinct)")


def _check_ranking_slots(t: np.ndarray, idx: np.ndarray, name: str) -> np.ndarray:
    """Each row's indices distinct, ``-1`` (unranked) only at the end; the ranked-slot mask."""
    ranked = idx >= 0
    if (idx < -1).any():
        row, col = (int(v[0]) for v in np.nonzero(idx < -1))
        raise InvalidInputError(f"{name}: index {int(idx[row, col])} at row {row} is negative")
    # -1 only after the ranked slots: ranked must be non-increasing along each row
    if (np.diff(ranked.astype(np.int8), axis=1) > 0).any():
        row = int(np.nonzero((np.diff(ranked.astype(np.int8), axis=1) > 0).any(axis=1))[0][0])
        raise InvalidInputError(f"{name}: row {row} has an unranked (-1) slot before ranked ones")
    ordered = np.sort(np.where(ranked, idx, -1 - np.arange(idx.shape[1])), axis=1)
    repeats = (np.diff(ordered, axis=1) == 0) & (ordered[:, 1:] >= 0)
    if repeats.any():
        row = int(np.nonzero(repeats.any(axis=1))[0][0])
        image = int(ordered[row, 1:][repeats[row]][0])
        raise InvalidInputError(
            f"{name}: row {row} (target {int(t[row])}) ranks training image {image} more than "
            "once; a ranking's indices must be distinct"
        )
    return ranked


def _check_ranked_rows(
    values: np.ndarray, name: str, n_train: int | None, pool: np.ndarray | None
) -> None:
    """Ranked training rows inside the training split and, when given, inside ``pool``."""
    if not values.size:
        return
    if n_train is not None and values.max() >= n_train:
        raise InvalidInputError(
            f"{name}: index {int(values.max())} is outside the {n_train}-image training split; "
            "the ranking was made for other data"
        )
    if pool is not None:
        pool = np.asarray(pool)
        pos = np.minimum(np.searchsorted(pool, values), max(len(pool) - 1, 0))
        outside = values[pool[pos] != values] if len(pool) else values
        if outside.size:
            more = f" (and {outside.size - 1} more)" if outside.size > 1 else ""
            raise InvalidInputError(
                f"{name}: training row {int(outside[0])}{more} is "
                f"outside the {len(pool)}-image pool these results are for; rank that pool "
                "(`simattr attribute ... --pool RECIPE`)"
            )


def check_ranking_arrays(
    targets: np.ndarray,
    indices: np.ndarray,
    scores: np.ndarray,
    name: str = "ranking",
    *,
    n_test: int | None = None,
    n_train: int | None = None,
    pool: np.ndarray | None = None,
    structure_only: bool = False,
) -> None:
    """Refuse a ranking that cannot be what it claims, before anything trusts it.

    Shapes and dtypes as declared (``targets`` (n,) integers, ``indices`` (n, k) integers,
    ``scores`` (n, k) finite floats), targets distinct and in ``[0, n_test)``, each row's
    indices distinct and in ``[0, n_train)`` or, with ``pool`` (sorted training rows), inside
    the pool. ``-1`` marks an unranked slot (a pool smaller than k) and is allowed only at the
    end of a row. ``name`` is how the caller knows the ranking (its file). ``structure_only``
    checks shapes and dtypes alone (what every :class:`~simattr.ranking.Ranking` satisfies).
    """
    t, idx, sc = np.asarray(targets), np.asarray(indices), np.asarray(scores)
    _check_ranking_structure(t, idx, sc, name)
    if structure_only:
        return
    _check_ranking_targets(t, name, n_test)
    if not idx.size:
        return
    ranked = _check_ranking_slots(t, idx, name)
    _check_ranked_rows(idx[ranked], name, n_train, pool)
    if sc.size and not np.isfinite(sc[ranked]).all():
        raise InvalidInputError(f"{name}: a score of a ranked image is NaN or infinite")


def l2_normalize(features: np.ndarray, name: str = "features", first_row: int = 0) -> np.ndarray:
    """Rows scaled to unit Euclidean norm; a row without a finite, non-zero norm is refused.

    A row whose norm overflows (``X * 1e37`` in float32) would become all zeros and tie with
    every other such row; an all-zero row has no direction, so its cosine and ESVM scores would
    rank by index. Both are one :class:`InvalidInputError` naming ``name`` and the row
    (``first_row`` is the row number of ``features[0]`` in the caller's array).
    """
    with np.errstate(over="ignore", under="ignore"):
        norms = np.linalg.norm(features, axis=1, keepdims=True)
    bad = ~np.isfinite(norms[:, 0]) | (norms[:, 0] == 0)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        values = features[row]
        count = int(bad.sum())
        others = f" ({count - 1} more row(s) like it)" if count > 1 else ""
        if not np.isfinite(norms[row, 0]):
            why = (
                f"its norm overflows {features.dtype} (values up to {np.abs(values).max():.3g}); "
                "rescale the features (for example divide them by their largest value)"
            )
        elif not values.any():
            why = "it is all zeros, with no direction to compare; drop it or check the backbone"
        else:
            why = (
                f"its norm underflows {features.dtype} (values up to {np.abs(values).max():.3g});"
                " rescale the features"
            )
        raise InvalidInputError(
            f"{name} row {first_row + row} cannot be L2-normalised{others}: {why}"
        )
    return features / norms
