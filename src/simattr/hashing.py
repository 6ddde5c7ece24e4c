"""Every digest simattr computes, in one place.

Stored results carry digests of what they were made from (DESIGN.md section 4, identity and
integrity): dataset fingerprints, classifier pool fingerprints, job keys, TRAK store names,
backbone checksums. Those strings are written into committed results and users' caches and
compared on every reuse, so each function here reproduces, bit for bit, a formula that existed
before it was gathered here: the same algorithm, the same input encoding and the same
truncation. Change one and every stored result it names stops matching; add a new function
rather than changing an old one.

* SHA-256, hex, optionally truncated: :func:`digest_bytes`, :func:`digest_text`,
  :func:`digest_json` (canonical JSON), :func:`digest_file` (streamed), :func:`digest_files`
  (several files with their names and sizes);
* BLAKE2b-128 of an array's shape, dtype and bytes, sampled above a size: :func:`digest_array`;
* CRC-32 of an array's bytes, the cheap integrity check of cache entries: :func:`crc32_array`.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

#: Bytes read at a time from a file (large files are never read whole).
CHUNK = 1 << 20
#: Arrays above this many bytes are fingerprinted on evenly spaced rows (:func:`digest_array`).
ARRAY_SAMPLE_BYTES = 64 << 20

Buffer = bytes | bytearray | memoryview | np.ndarray


def _hex(h: Any, length: int | None) -> str:
    return h.hexdigest() if length is None else h.hexdigest()[:length]


def digest_bytes(data: Buffer | Iterable[Buffer], length: int | None = None) -> str:
    """SHA-256 of ``data`` in hex, its first ``length`` digits (all 64 when ``None``).

    ``data`` may be an iterable of byte strings, hashed in order as if concatenated, so that
    several parts (a fingerprint, a split name, row indices) need not be joined in memory. An
    array counts as its bytes in C order (``a.tobytes()``), without the copy.
    """
    h = hashlib.sha256()
    for part in [data] if isinstance(data, Buffer) else data:
        h.update(np.ascontiguousarray(part) if isinstance(part, np.ndarray) else part)
    return _hex(h, length)


def digest_text(text: str | Iterable[str], length: int | None = None) -> str:
    """SHA-256 of ``text`` encoded as UTF-8 (an iterable: the pieces, in order)."""
    if isinstance(text, str):
        return digest_bytes(text.encode(), length)
    return digest_bytes((piece.encode() for piece in text), length)


def digest_json(
    obj: Any, length: int | None = 16, *, default: Callable[[Any], Any] | None = None
) -> str:
    """SHA-256 of ``obj`` as canonical JSON: keys sorted, no spaces (``","`` and ``":"``).

    Two equal JSON-ready objects give the same digest whatever their key order. ``default`` is
    passed to :func:`json.dumps` for values JSON cannot hold; without it they are an error.
    """
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=default)
    return digest_text(text, length)


def digest_file(path: str | os.PathLike[str], length: int | None = None) -> str:
    """SHA-256 of a file's bytes (what ``sha256sum`` prints), read in chunks of :data:`CHUNK`."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return _hex(h, length)


def digest_files(paths: Sequence[str | os.PathLike[str]], length: int | None = None) -> str:
    """SHA-256 over several files in order, each preceded by ``"<name>\\0<size>\\0"``.

    The base name and size make a renamed or re-split file set change the digest even when the
    concatenated bytes do not. This is the identity of Parquet and CIFAR-10 dataset files.
    """
    h = hashlib.sha256()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    for path in paths:
        h.update(f"{os.path.basename(path)}\0{os.stat(path).st_size}\0".encode())
        with open(path, "rb", buffering=0) as fh:
            while n := fh.readinto(buffer):
                h.update(view[:n])
    return _hex(h, length)


def digest_array(a: np.ndarray | None, max_bytes: int = ARRAY_SAMPLE_BYTES) -> str | None:
    """A content hash of an array: BLAKE2b-128 of ``"<shape>|<dtype>"`` and its bytes (C order).

    Arrays larger than ``max_bytes`` are hashed on evenly spaced rows (up to ``max_bytes`` of
    them, always including the first and last), so fingerprinting a 2.6 GB feature matrix
    takes a fraction of a second; a change confined to unsampled rows is not seen (identities
    of input files add size and modification time for that). ``None`` gives ``None``.
    """
    if a is None:
        return None
    arr = np.asarray(a)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{arr.shape}|{arr.dtype.str}".encode())
    if arr.nbytes <= max_bytes or arr.ndim == 0:
        h.update(np.ascontiguousarray(arr).tobytes())
    else:
        row_bytes = max(arr.nbytes // len(arr), 1)
        n_rows = max(2, max_bytes // row_bytes)
        rows = np.unique(np.linspace(0, len(arr) - 1, n_rows).astype(np.int64))
        for start in range(0, len(rows), 4096):
            h.update(np.ascontiguousarray(arr[rows[start : start + 4096]]).tobytes())
    return h.hexdigest()


def crc32_array(a: np.ndarray) -> int:
    """CRC-32 of an array's bytes in C order: a fast check that stored bytes read back intact."""
    return zlib.crc32(memoryview(np.ascontiguousarray(a)).cast("B"))


__all__ = [
    "ARRAY_SAMPLE_BYTES",
    "crc32_array",
    "digest_array",
    "digest_bytes",
    "digest_file",
    "digest_files",
    "digest_json",
    "digest_text",
]
