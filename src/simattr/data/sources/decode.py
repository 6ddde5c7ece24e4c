"""Decoding images to uint8 arrays, shared by the Parquet and image-folder sources: in-process
for small splits, in forked worker processes for large ones, resized or size-checked."""

from __future__ import annotations

import io
import logging
import math
import multiprocessing
import os
import sys
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import numpy as np

from simattr.errors import InvalidInputError

log = logging.getLogger(__name__)

# Fewer images than this decode in-process: starting worker processes would cost more.
_PARALLEL_MIN_IMAGES = 4096


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
