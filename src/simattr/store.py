"""A folder of artifacts that depend on one set of inputs, and the manifest that says which.

Resumable outputs (the blocks of a ranking, the subset models of an LDS run, a TRAK store) are
folders filled over several runs. Entries of two runs with different inputs must never be mixed:
the result would look fine and be wrong. So such a folder holds a ``manifest.json`` with the
*identity* of its inputs (settings, and digests from :mod:`simattr.hashing`), and a run that
finds the folder compares the identity it would write with the recorded one and refuses a change
with one :class:`~simattr.errors.InvalidInputError` naming the first key that differs (DESIGN.md
section 4, identity and integrity). :func:`differences` is the same comparison for identities
kept elsewhere (a sidecar, a resume file).

The manifest is written through the atomic io with the :func:`~simattr._io.provenance` header;
the header (package version, creation time) is not part of the identity, so a folder made by an
older release of simattr is reused when its inputs are the same.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from simattr._io import (
    _json_default,
    provenance,
    read_json,
    sidecar_path,
    verify_checksum,
    write_json,
    write_with_sidecar,
)
from simattr.errors import DamagedFileError, InvalidInputError

MANIFEST = "manifest.json"
#: Fields of the provenance header: recorded, never compared.
PROVENANCE_KEYS = frozenset({"simattr_version", "created"})


def as_json(obj: Any) -> Any:
    """``obj`` as it reads back from a JSON file (tuples become lists, numpy scalars numbers)."""
    return json.loads(json.dumps(obj, default=_json_default))


def differences(
    recorded: Mapping[str, Any], current: Mapping[str, Any], growing: Iterable[str] = ()
) -> list[tuple[str, Any, Any]]:
    """``(key path, recorded value, current value)`` of every differing key, in sorted order.

    Nested dictionaries are compared key by key, so the path names the innermost key that
    changed (``inputs.train_features``); a key present on one side only differs (its missing
    value is ``None``). Top-level provenance fields and the ``growing`` paths are skipped.
    """
    skip = set(growing)
    found: list[tuple[str, Any, Any]] = []

    def walk(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str) -> None:
        for key in sorted(set(old) | set(new)):
            path = f"{prefix}{key}"
            if path in skip or (not prefix and key in PROVENANCE_KEYS):
                continue
            a, b = old.get(key), new.get(key)
            if isinstance(a, Mapping) and isinstance(b, Mapping):
                walk(a, b, f"{path}.")
            elif a != b:
                found.append((path, a, b))

    walk(recorded, current, "")
    return found


def check_identity(
    recorded: object,
    current: Mapping[str, Any],
    *,
    where: object,
    holds: str,
    remedy: str,
    growing: Iterable[str] = (),
) -> None:
    """Refuse with ``"<where> <holds> (<key> was X, now Y); <remedy>"`` when the identity
    ``recorded`` with an artifact (a sidecar's field, a manifest) differs from ``current``.

    Something that is not a dictionary (a missing field) differs in every key.
    """
    old = recorded if isinstance(recorded, Mapping) else {}
    diff = differences(old, current, growing)
    if diff:
        key, a, b = diff[0]
        raise InvalidInputError(f"{where} {holds} ({key} was {a!r}, now {b!r}); {remedy}")


class Store:
    """A folder whose entries all derive from ``identity``, recorded in its ``manifest.json``.

    Args:
        folder: the folder (created by :meth:`save` or the first :meth:`write`).
        kind: written as the manifest's ``kind`` and compared like the identity, so that a
            folder of another kind of artifact is refused; ``None`` writes no ``kind``.
        identity: JSON-ready description of everything the entries depend on.
        growing: key paths that may change from run to run without invalidating the entries
            (LDS ``subsets``: adding subsets keeps the models of the earlier ones); they are
            not compared, and :meth:`save` records the current value.
        holds, remedy: the refusal reads ``"<folder> <holds> (<key> was X, now Y); <remedy>"``.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        kind: str | None,
        identity: Mapping[str, Any],
        *,
        growing: Iterable[str] = (),
        holds: str = "holds results of other inputs",
        remedy: str = "delete it or choose another folder",
    ) -> None:
        self.folder = Path(folder)
        self.kind = kind
        self.identity: dict[str, Any] = as_json(dict(identity))
        self.growing = tuple(growing)
        self.holds, self.remedy = holds, remedy

    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST

    def exists(self) -> bool:
        """Whether the folder has a manifest (an earlier run got as far as recording it)."""
        return self.manifest_path.is_file()

    def _expected(self) -> dict[str, Any]:
        return self.identity if self.kind is None else {"kind": self.kind, **self.identity}

    def recorded(self) -> dict[str, Any] | None:
        """The manifest as written, or ``None`` when there is none; unreadable: an error."""
        if not self.exists():
            return None
        try:
            manifest = read_json(self.manifest_path)
        except (OSError, ValueError) as exc:  # ValueError: bad JSON or bad UTF-8
            raise InvalidInputError(
                f"{self.manifest_path} is not readable JSON ({exc}); {self.remedy}"
            ) from None
        if not isinstance(manifest, dict):
            raise InvalidInputError(
                f"{self.manifest_path} holds no JSON object, so no manifest; {self.remedy}"
            )
        return manifest

    def check(self) -> dict[str, Any] | None:
        """Refuse the folder if its manifest records other inputs; return the manifest."""
        manifest = self.recorded()
        if manifest is not None:
            check_identity(
                manifest,
                self._expected(),
                where=self.folder,
                holds=self.holds,
                remedy=self.remedy,
                growing=self.growing,
            )
        return manifest

    def save(self) -> Path:
        """Write the manifest (atomically, with the provenance header) for the current inputs."""
        return write_json(self.manifest_path, provenance(**self._expected()))

    def path(self, name: str) -> Path:
        """Where entry ``name`` (a path relative to the folder) lives."""
        return self.folder / name

    def write(self, name: str, write: Callable[[Path], None]) -> Path:
        """Write entry ``name`` atomically: ``write(tmp)`` then a rename (no partial entry),
        with a sidecar holding the checksum of its bytes (:meth:`verified` checks it)."""
        return write_with_sidecar(self.path(name), write, {"entry": name})

    def write_array(self, name: str, array: np.ndarray) -> Path:
        """Save ``array`` as the ``.npy`` entry ``name``, atomically, with its checksum."""
        return self.write(name, lambda tmp: np.save(tmp, array, allow_pickle=False))

    def verified(self, name: str, *, rebuild: bool = True) -> Path | None:
        """Entry ``name`` if it exists with the bytes it was written with; else ``None``.

        A damaged entry (bytes or sidecar) is deleted with a warning when ``rebuild`` (the
        caller recomputes it: a cache entry), and refused naming the file otherwise (an entry
        nothing can recompute).
        """
        path = self.path(name)
        if not path.is_file():
            return None
        try:
            verify_checksum(path)
        except DamagedFileError as exc:
            if not rebuild:
                raise
            warnings.warn(f"{exc}; it is deleted and will be recomputed", stacklevel=2)
            path.unlink(missing_ok=True)
            sidecar_path(path).unlink(missing_ok=True)
            return None
        return path

    def read_array(self, name: str) -> np.ndarray:
        """Entry ``name`` as an array, checked against its checksum; damaged or missing: refused."""
        path = self.verified(name, rebuild=False)
        if path is None:
            raise DamagedFileError(f"{self.path(name)} is missing; {self.remedy}")
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise DamagedFileError(
                f"{path} is not a readable array ({exc}); {self.remedy}"
            ) from None


__all__ = ["MANIFEST", "PROVENANCE_KEYS", "Store", "as_json", "check_identity", "differences"]
