"""Atomic writes and JSON sidecars.

Every artifact simattr writes goes through these helpers: the bytes land in a temporary file
in the destination directory and are renamed into place only once complete, so an interrupted
run or a failed validation never leaves a half-written file behind. Each array artifact gets a
JSON sidecar (``<file>.json``) saying what produced it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from simattr._version import __version__
from simattr.errors import InvalidInputError, MissingFileError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds.

    The temporary file keeps the destination's suffix so that libraries which append or check
    extensions (``np.save``, ``savefig``) behave as they would on the real name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.chmod(0o666 & ~_umask())  # mkstemp makes 0600; artifacts get the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and atomically move the result to ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """The JSON sidecar of an artifact: ``features.npy`` -> ``features.npy.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """Write ``payload`` as indented JSON, atomically."""
    text = json.dumps(payload, indent=2, sort_keys=False, default=_json_default) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a JSON object written by :func:`write_json`."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def read_npy(path: str | os.PathLike[str], name: str) -> np.ndarray:
    """A user's ``.npy`` array (labels, rows, targets), never unpickled.

    ``name`` is how the caller knows the file (``--train-labels``, ``train_indices``) so that a
    missing or damaged file is one line naming both the option and the path.
    """
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{name}: no such file {path}")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InvalidInputError(f"{name} {path}: not a .npy array ({exc})") from None


def provenance(**fields: Any) -> dict[str, Any]:
    """Common header of every sidecar: package version and creation time, then ``fields``."""
    header = {
        "simattr_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    header.update(fields)
    return header


def append_jsonl(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Append one JSON record as a line and flush it to disk before returning.

    A process killed in the middle of a write leaves at most one partial last line, which
    :func:`read_jsonl` ignores; every earlier record is intact. That is what lets long runs
    resume after ``kill -9``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, default=_json_default, separators=(",", ":")) + "\n"
    with open(path, "a+b") as fh:
        fh.seek(0, os.SEEK_END)
        if fh.tell() > 0:  # a torn last line from a killed writer: start a fresh line
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                fh.write(b"\n")
        fh.write(line.encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read the records of a JSON Lines file, skipping a torn line left by a killed writer."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # only a write cut short by a kill can produce this
            if isinstance(record, dict):
                records.append(record)
    return records
