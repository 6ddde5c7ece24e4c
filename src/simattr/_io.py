"""Atomic writes, JSON sidecars with checksums, output locks and output checks.

Every artifact simattr writes goes through these helpers: the bytes land in a temporary file
in the destination directory and are renamed into place only once complete, so an interrupted
run or a failed validation never leaves a half-written file behind. Each array artifact gets a
JSON sidecar (``<file>.json``) saying what produced it.

Integrity and safety of outputs (DESIGN.md section 4), by construction rather than case by case:

* :func:`write_with_sidecar` records the SHA-256 of the bytes it wrote in the sidecar, and
  :func:`verify_checksum` (called by every loader of our files) refuses a file whose bytes no
  longer match, naming it; :func:`read_json` turns damaged JSON into one such error.
* :func:`lock` guards a resumable output with ``<output>.lock``: an advisory kernel lock
  (released by the kernel when its holder dies, even by ``kill -9``, so a stale lock file is
  simply taken over) plus the holder's pid and host for the message of a refused second run.
* :func:`check_not_input` refuses an output path that is (resolved, or by inode) one of the
  run's inputs; :func:`check_writable` checks, before any expensive work, that an output can be
  written where it was asked for.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from simattr._version import __version__
from simattr.errors import DamagedFileError, InvalidInputError, LockedError, MissingFileError
from simattr.hashing import digest_bytes, digest_file


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
    mode = 0o666 & ~_umask()
    tmp.chmod(mode)  # mkstemp makes 0600; artifacts get the usual permissions
    try:
        try:
            yield tmp
            # again: a writer may replace the file with one of its own (safetensors' save_file
            # makes a new 0600 file), and every artifact gets the same permissions
            tmp.chmod(mode)
            os.replace(tmp, path)
        except OSError as exc:
            raise _naming(exc, path, tmp) from exc
    finally:
        if tmp.exists():
            tmp.unlink()


def _naming(exc: OSError, path: Path, tmp: Path | None = None) -> OSError:
    """``exc``, a failed write of ``path`` (or of its temporary ``tmp``), as an ``OSError``
    naming ``path``: numpy reports a full disk as "N requested and M written", with neither the
    file nor the cause. An error about another file (an input read while writing) is kept."""
    if exc.filename not in (None, str(path), str(tmp) if tmp is not None else None):
        return exc
    code, reason = exc.errno, exc.strerror or str(exc) or type(exc).__name__
    if code is None:
        with contextlib.suppress(OSError):
            if shutil.disk_usage(path.parent).free == 0:
                code, reason = errno.ENOSPC, f"No space left on device ({reason})"
    return OSError(code or errno.EIO, f"cannot write: {reason}", str(path))


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
    """Read a JSON object written by :func:`write_json`; damaged JSON is one
    :class:`~simattr.errors.DamagedFileError` naming the file (a ``ValueError``)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DamagedFileError(
            f"{path} is damaged: not valid JSON ({exc}); regenerate it, or delete it and rerun"
        ) from None


def read_sidecar(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The sidecar of ``path`` as a dictionary (empty when there is none); damaged: an error."""
    side = sidecar_path(path)
    if not side.exists():
        return {}
    meta = read_json(side)
    if not isinstance(meta, dict):
        raise DamagedFileError(f"{side} is damaged: it holds no JSON object; regenerate it")
    return meta


#: Sidecar key of the SHA-256 of the artifact's bytes, written by :func:`write_with_sidecar`.
CHECKSUM_KEY = "sha256"


def write_with_sidecar(
    path: str | os.PathLike[str], write: Callable[[Path], None], meta: Mapping[str, Any]
) -> Path:
    """Write ``path`` atomically through ``write(tmp)`` and its sidecar ``meta`` with the
    SHA-256 and size of the bytes written (:data:`CHECKSUM_KEY`, ``bytes``).

    The old sidecar is removed before the new file is renamed into place, so a run killed
    between the two renames leaves a file without a sidecar (read as a user's file, no check),
    never a file with the checksum of another.
    """
    path = Path(path)
    side = sidecar_path(path)
    with atomic_path(path) as tmp:
        write(tmp)
        record = {**meta, CHECKSUM_KEY: digest_file(tmp), "bytes": tmp.stat().st_size}
        side.unlink(missing_ok=True)
    write_json(side, record)
    return path


def verify_checksum(
    path: str | os.PathLike[str], meta: Mapping[str, Any] | None = None, name: str = ""
) -> None:
    """Refuse ``path`` when its bytes differ from the checksum its sidecar recorded.

    ``meta`` is the sidecar (read here when ``None``); a sidecar without a checksum (a file
    made elsewhere, or by an older simattr) is not checked. ``name`` is how the caller knows
    the file (`` `ranking` ``, a parameter's name in backticks, which the CLI shows as its
    option), put before its path in the message.
    """
    path = Path(path)
    if meta is None:
        meta = read_sidecar(path)
    expected = meta.get(CHECKSUM_KEY) if isinstance(meta, Mapping) else None
    if not expected:
        return
    size = meta.get("bytes")
    actual_size = path.stat().st_size
    what = f"{name} {path}" if name else str(path)
    if size is not None and size != actual_size:
        found = f"{actual_size} bytes, not the {size} written"
    elif digest_file(path) != expected:
        found = "bytes that do not match the SHA-256 recorded when it was written"
    else:
        return
    raise DamagedFileError(
        f"{what} is damaged: it has {found} (see {sidecar_path(path).name}); regenerate it, "
        "or delete its sidecar if you changed the file on purpose"
    )


# -- outputs: inputs never overwritten, folders writable, locks ------------------------------


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name the same file: equal once resolved, or the same inode."""
    pa, pb = Path(a), Path(b)
    try:
        if pa.resolve() == pb.resolve():
            return True
        return pa.exists() and pb.exists() and os.path.samefile(pa, pb)
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        return False


def check_not_input(
    outputs: Mapping[str, str | os.PathLike[str] | None],
    inputs: Mapping[str, str | os.PathLike[str] | None],
    *,
    folders: Iterable[str] = (),
) -> None:
    """Refuse an output (or its sidecar) that is one of the inputs, two outputs that are one,
    or an output under another output that is a file: checked before any work, so a run never
    writes one output and then fails on the next (``html`` equal to ``out``).

    ``outputs`` and ``inputs`` map how the user named each path (`` `out` ``, `` `ranking` ``:
    parameter names in backticks, which the CLI turns into its options)
    to the path; ``None`` entries are skipped. ``folders`` names the outputs that are folders
    (`` `html` ``): other outputs may lie inside those.
    """
    outs = [(n, Path(p)) for n, p in outputs.items() if p is not None]
    ins = [(n, Path(p)) for n, p in inputs.items() if p is not None]
    for oname, out in outs:
        for iname, given in ins:
            for written in (out, sidecar_path(out)):
                if same_file(written, given):
                    raise InvalidInputError(
                        f"{oname} {out} would overwrite the input {iname} {given}; "
                        "choose another output path"
                    )
    for i, (a, pa) in enumerate(outs):
        for b, pb in outs[i + 1 :]:
            if same_file(pa, pb):
                raise InvalidInputError(f"{a} and {b} both name {pa}; give them different paths")
    folder_names = set(folders)
    for a, pa in outs:
        for b, pb in outs:
            if a != b and b not in folder_names and _inside(pa, pb):
                raise InvalidInputError(
                    f"{a} {pa} lies inside {b} {pb}, which is written as a file; "
                    "give them different paths"
                )


def _inside(inner: Path, outer: Path) -> bool:
    """Whether ``inner`` lies strictly below ``outer`` (paths resolved)."""
    try:
        return outer.resolve() in inner.resolve().parents
    except (OSError, RuntimeError):
        return False


def check_writable(path: str | os.PathLike[str], name: str = "`out`", folder: bool = False) -> None:
    """Refuse, before any work, an output that cannot be written: a file path that is a folder
    (or the reverse), or a destination under a file or in a folder without write permission or
    that takes no new file (``/proc``; tried by creating and removing one)."""
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        kind = "a folder" if path.is_dir() else "a file"
        want = "a folder" if folder else "a file path"
        raise InvalidInputError(f"{name} {path} is {kind}; give {want}")
    probe = path if folder else path.parent
    probe = probe.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise InvalidInputError(f"cannot write {name} {path}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InvalidInputError(
            f"cannot write {name} {path}: no permission to write in {probe}; "
            "choose a folder you can write to"
        )
    # Permission bits are not the whole story (/proc, a read-only mount, a full inode table,
    # root on a network share): create and remove a file there, before the expensive part.
    try:
        fd, made = tempfile.mkstemp(prefix=".simattr-probe-", dir=probe)
    except OSError as exc:
        raise InvalidInputError(
            f"cannot write {name} {path}: {probe} takes no new files "
            f"({exc.strerror or exc}); choose a folder you can write to"
        ) from None
    os.close(fd)
    os.unlink(made)


#: The name :func:`atomic_path` gives a temporary: ``.<name>.<8 random characters>.tmp<suffix>``.
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp(\.[^./]*)?$")


def remove_stale_temporaries(target: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporaries a killed writer left in output ``target``; return them.

    Called by :func:`lock` once the lock is held: no live simattr writer can be using them then.
    A folder output is searched whole; a file output, for temporaries of its own name beside it
    and inside its companion folders (``ranking.npz.parts/``). ``kill -9`` in the middle of an
    atomic write leaves such a file (the rename never happened); a resumed run must not.
    """
    target = Path(target)
    found: list[Path] = []
    if target.is_dir():
        found = [p for p in target.rglob(".*") if _TEMPORARY.match(p.name) and p.is_file()]
    elif target.parent.is_dir():
        for p in target.parent.iterdir():
            match = _TEMPORARY.match(p.name)
            if match and match["name"] == target.name and p.is_file():
                found.append(p)
            elif p.is_dir() and p.name.startswith(target.name + "."):
                found += [q for q in p.rglob(".*") if _TEMPORARY.match(q.name) and q.is_file()]
    for p in found:
        p.unlink(missing_ok=True)
    return found


def lock_path(target: str | os.PathLike[str]) -> Path:
    """The lock file of an output: ``results.jsonl`` -> ``results.jsonl.lock`` beside it."""
    target = Path(target)
    return target.with_name(target.name + ".lock")


#: Locks this process holds (absolute target path -> depth), so nested calls re-enter.
_HELD: dict[str, int] = {}


@contextlib.contextmanager
def lock(target: str | os.PathLike[str], name: str = "`out`") -> Iterator[Path]:
    """Hold the lock of output ``target`` (a file or folder) for the block.

    A second run on the same output, while this one lives, is refused with one
    :class:`~simattr.errors.LockedError` naming the holder's pid and host. The lock is an
    advisory ``flock`` on ``<target>.lock``: the kernel releases it when its holder dies, even
    by ``kill -9``, so a lock file left behind by a dead run is stale and simply taken over.
    Folders created to hold the lock file are removed again when the block leaves them empty,
    so a refused run leaves nothing behind. Re-entrant within one process.
    """
    import fcntl

    target = Path(target).absolute()
    key = str(target)
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield lock_path(target)
        finally:
            _HELD[key] -= 1
        return
    created = _make_parents(target.parent)
    path = lock_path(target)
    fd = -1
    try:
        fd = _acquire(path, target, name, fcntl)
        _HELD[key] = 1
        remove_stale_temporaries(target)
        try:
            yield path
        finally:
            del _HELD[key]
            path.unlink(missing_ok=True)  # unlink before unlocking: a waiter re-checks the inode
    finally:
        if fd >= 0:
            os.close(fd)
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and missing parents; return those created, outermost first."""
    missing = []
    probe = folder
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    missing.reverse()
    for m in missing:
        try:
            m.mkdir()
        except FileExistsError:
            pass
        except OSError as exc:
            raise InvalidInputError(f"cannot create the folder {m}: {exc.strerror}") from None
    return missing


def _acquire(path: Path, target: Path, name: str, fcntl: Any) -> int:
    for _ in range(20):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise InvalidInputError(
                f"cannot lock {name} {target}: cannot create {path} ({exc.strerror})"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise InvalidInputError(f"cannot lock {name} {target}: {exc.strerror}") from None
            raise LockedError(
                f"{name} {target} is being written by another simattr run "
                f"({_describe_holder(path)}); wait for it to finish, or use another output"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the holder removed the file between our open and our lock: retry
            os.close(fd)
            continue
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv[:3]),
        }
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(holder) + "\n").encode())
        return fd
    raise LockedError(f"{name} {target}: could not take its lock {path}; try again")


def _describe_holder(path: Path) -> str:
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
        return f"pid {holder['pid']} on {holder['host']} since {holder['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return f"lock file {path}"


def read_npy(path: str | os.PathLike[str], name: str) -> np.ndarray:
    """A user's ``.npy`` array (labels, rows, targets), never unpickled.

    ``name`` is how the caller knows the file (`` `train_labels` ``, `` `train_indices` ``) so
    that a missing or damaged file is one line naming both the parameter and the path.
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


#: Each JSON Lines record ends with its own CRC-32: ``{..., "_crc32": "89abcdef"}``.
_CRC_KEY = "_crc32"
_CRC_TAIL = re.compile(r'(,?)"_crc32":"([0-9a-f]{8})"}$')
#: The checksum of a line, its last key: the key and eight hex digits (then ``"}``).
_CRC_VALUE = re.compile(rf'"{_CRC_KEY}":"[0-9a-f]{{8}}')
_NUMBER_PREFIX = re.compile(r"-?[0-9]*\.?[0-9]*(?:[eE][+-]?[0-9]*)?")
#: A line whose checksum is complete but whose last byte changed is damaged, not cut short.
_WHOLE_TAIL = re.compile(r'"_crc32":"[0-9a-f]{8}".{1,2}$')


def _jsonl_line(record: dict[str, Any]) -> str:
    """``record`` as one line ending in the CRC-32 of the line as it would be without it."""
    body = json.dumps(record, default=_json_default, separators=(",", ":"))
    crc = zlib.crc32(body.encode("utf-8"))
    return body[:-1] + ("," if len(body) > 2 else "") + f'"{_CRC_KEY}":"{crc:08x}"}}'


def append_jsonl(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Append one JSON record as a line and flush it to disk before returning.

    The line carries the CRC-32 of its content, so that :func:`read_jsonl` can tell a record
    changed on disk (refused) from one a kill cut short (skipped). A process killed in the
    middle of a write leaves at most one partial line; every earlier record is intact. That is
    what lets long runs resume after ``kill -9``.
    """
    if _CRC_KEY in record:
        raise ValueError(f"a record may not use the key {_CRC_KEY!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = _jsonl_line(record) + "\n"
    try:
        with open(path, "a+b") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() > 0:  # a torn last line from a killed writer: start a fresh line
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    fh.write(b"\n")
            fh.write(line.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise _naming(exc, path) from exc


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read the records of a JSON Lines file, skipping a line a killed writer cut short.

    A line whose JSON ends before its text does (no closing bracket yet) and that has no
    complete checksum is a write cut short by a kill: it was never acknowledged, and it is
    skipped. Any other line that does not parse, or whose CRC-32 no longer matches, was changed
    after it was written: a :class:`DamagedFileError` naming the file and the line, never a
    record silently dropped or used.

    A whole line without a checksum is refused too (deleting the checksum and editing a value
    would otherwise pass for a record of old), except inside the results committed before lines
    carried checksums: :data:`UNCHECKED_RESULTS` lists each such file by size and SHA-256, and
    its unchecked lines are read only while the file's first bytes still have that digest (a
    copy or a resumed run, with checked records appended, still reads).
    """
    path = Path(path)
    if not path.exists():
        return []
    records = []
    offset = 0
    legacy: bool | None = None  # whether the file starts with committed unchecked results
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            offset += len(raw)
            line = raw.decode("utf-8", errors="replace").strip()
            if not line:
                continue
            record = _parse_jsonl_line(line)
            if record is _TORN:
                continue
            if record is None:
                raise DamagedFileError(
                    f"{path} is damaged: line {number} is not the record that was written "
                    "(bad JSON or checksum); restore it or write the results to another file"
                )
            if _CRC_TAIL.search(line) is None:
                if legacy is None:
                    legacy = _unchecked_prefix(path)
                if offset > legacy:
                    raise DamagedFileError(
                        f"{path} is damaged: line {number} has no checksum, and only the results "
                        "committed before records carried one may lack it (as they were "
                        "committed); restore the file, or rerun to write the record again"
                    )
            records.append(record)
    return records


#: The results committed before JSON Lines records carried checksums: (path in the repository,
#: size in bytes, SHA-256). These files are the only place a record without its ``_crc32`` is
#: read (:func:`read_jsonl`); they are recognised by content, wherever they lie. Never add to
#: this list: every record written since carries its checksum.
UNCHECKED_RESULTS: tuple[tuple[str, int, str], ...] = (
    ("benchmarks/results/bench-cpu-k250/remove.jsonl", 100684,
     "8ca25d09b6cedfa4c36b2055a7b8ca0f0038b4900b2644c9c114da8c300f2c46"),
    ("benchmarks/results/bench-cpu-k250/remove.models.jsonl", 299684,
     "fd792f91a5617495ea17301b23b8801f96ca64a5ae1c945b8b862981faab8ec6"),
    ("benchmarks/results/bench-cpu/mislabel.jsonl", 90712,
     "b36db0f002ec8d962ae42651d8b54d226face9537ba9078239e8858122df0991"),
    ("benchmarks/results/bench-cpu/mislabel.models.jsonl", 355504,
     "4e12049662f3326ef5683390e1f63abf24613e4326a5e4568c12f477a93e86b8"),
    ("benchmarks/results/bench-cpu/remove.jsonl", 74570,
     "7829db73bda7f3dbe22d9dfb6824ab1b1c31d3b4af5d44564acabf62fd2dafe0"),
    ("benchmarks/results/bench-cpu/remove.models.jsonl", 272128,
     "484c4c4cf3524239ce28e490378b86fa4d1c1125c5e2f35a0494508f4b8ad0db"),
    ("benchmarks/results/margins-cpu-b/margins.jsonl", 113671,
     "85b128fb319f0e3772cbb5cef945aaeeb43be7213552871de99c5d9b8bbe73f8"),
    ("benchmarks/results/margins-cpu/control.jsonl", 12459,
     "103aa435df04c4eec5ba23a98016f70c06d0517902e958785ddc4ee47bd8e7ae"),
    ("benchmarks/results/margins-cpu/margins.jsonl", 125270,
     "4c58eb149ab96c3cf23ff2024103100b578c29419e79d9f8b49f4916f3675111"),
)  # fmt: skip


def _unchecked_prefix(path: Path) -> int:
    """How many leading bytes of ``path`` are one of :data:`UNCHECKED_RESULTS` (0 if none)."""
    try:
        size = path.stat().st_size
    except OSError:
        return 0
    for _, length, expected in UNCHECKED_RESULTS:
        if length <= size:
            with open(path, "rb") as fh:
                if digest_bytes(fh.read(length)) == expected:
                    return length
    return 0


#: What :func:`_parse_jsonl_line` returns for a line cut short by a killed writer.
_TORN: Any = object()


def _parse_jsonl_line(line: str) -> Any:
    """The record of one line; ``_TORN`` for a write cut short; None when it is damaged."""
    if not line.isascii():
        return None  # we write ASCII (JSON escapes): other bytes were changed on disk
    tail = _CRC_TAIL.search(line)
    if tail is None and _WHOLE_TAIL.search(line):
        return None  # a complete checksum followed by changed bytes
    body = line if tail is None else line[: tail.start()] + "}"
    if tail is not None and zlib.crc32(body.encode("ascii")) != int(tail.group(2), 16):
        return None
    try:
        record = json.loads(body)
    except json.JSONDecodeError as exc:
        return _TORN if tail is None and _cut_short(body, exc) else None
    if not isinstance(record, dict):
        return None
    if tail is None and record and _near_crc_key(next(reversed(record))):
        return None  # a checksum whose own bytes were changed, not a record of old
    return record


def _cut_short(text: str, exc: json.JSONDecodeError) -> bool:
    """Whether JSON ``text`` fails only because it ends too early (a prefix of a record)."""
    marker = text.rfind(f'"{_CRC_KEY}":"')
    if marker >= 0 and len(text) - marker >= len(_CRC_KEY) + 14 and _CRC_VALUE.match(text, marker):
        # it reaches the end of a complete checksum: the line is whole and damaged (a key of
        # that name nested in a record cut short has no 8-digit value; a bit flipped in the
        # checksum's quotes or brace leaves its digits)
        return False
    if exc.pos >= len(text) or exc.msg.startswith("Unterminated string"):
        return True
    rest = text[exc.pos :]  # a literal or a number cut in the middle
    return any(word.startswith(rest) for word in ("true", "false", "null")) or bool(
        _NUMBER_PREFIX.fullmatch(rest)
    )


def _near_crc_key(key: str) -> bool:
    """Whether ``key`` is the checksum key or differs from it in one bit of one character."""
    if len(key) != len(_CRC_KEY):
        return False
    diffs = [ord(a) ^ ord(b) for a, b in zip(key, _CRC_KEY, strict=True) if a != b]
    return not diffs or (len(diffs) == 1 and diffs[0].bit_count() == 1)
