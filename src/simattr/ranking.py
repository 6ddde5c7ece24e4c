"""The ranking artifact: top-k training indices and scores for a set of target test images.

On disk a ranking is an ``.npz`` with three arrays, ``targets`` (n,), ``indices`` (n, k) and
``scores`` (n, k), plus a JSON sidecar describing how it was made. The evaluation stages read
it back with :func:`load_ranking`; :func:`export_paper_npy` writes the dense
``(n_test, k)`` index matrix used by the paper's code, with ``-1`` rows for targets not ranked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from simattr._io import atomic_write, provenance, read_json, sidecar_path, write_json
from simattr.errors import InvalidInputError, MissingFileError


@dataclass
class Ranking:
    """Top-k attribution of ``targets`` (rows of the test split) over training rows."""

    targets: np.ndarray
    indices: np.ndarray
    scores: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.targets = np.asarray(self.targets, dtype=np.int64)
        self.indices = np.asarray(self.indices, dtype=np.int64)
        self.scores = np.asarray(self.scores, dtype=np.float64)
        n = len(self.targets)
        if self.targets.ndim != 1 or self.indices.ndim != 2 or self.indices.shape[0] != n:
            raise InvalidInputError(
                f"a ranking needs targets (n,) and indices (n, k); got {self.targets.shape} "
                f"and {self.indices.shape}"
            )
        if self.scores.shape != self.indices.shape:
            raise InvalidInputError(
                f"ranking scores {self.scores.shape} do not match indices {self.indices.shape}"
            )

    @property
    def k(self) -> int:
        return self.indices.shape[1]


def save_ranking(path: str | os.PathLike[str], ranking: Ranking) -> Path:
    """Write the ranking ``.npz`` and its sidecar, atomically."""
    path = Path(path)
    if path.suffix != ".npz":
        raise InvalidInputError(f"rankings are written as .npz; got output path {path}")
    arrays = {"targets": ranking.targets, "indices": ranking.indices, "scores": ranking.scores}
    # a loaded ranking carries the old header: it is written anew, not repeated
    own = {k: v for k, v in ranking.metadata.items() if k not in _HEADER_KEYS}
    meta = provenance(kind="ranking", n_targets=len(ranking.targets), k=ranking.k, **own)
    atomic_write(path, lambda tmp: np.savez(tmp, **arrays))
    write_json(sidecar_path(path), meta)
    return path


#: Sidecar keys :func:`save_ranking` writes itself.
_HEADER_KEYS = frozenset({"simattr_version", "created", "kind", "n_targets", "k"})


def load_ranking(path: str | os.PathLike[str]) -> Ranking:
    """Read a ranking written by :func:`save_ranking` (no pickled objects are accepted)."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"no such ranking file: {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = {"targets", "indices", "scores"} - set(npz.files)
            if missing:
                raise InvalidInputError(
                    f"{path} is not a ranking: missing arrays {sorted(missing)}"
                )
            arrays = {name: npz[name] for name in ("targets", "indices", "scores")}
    except (ValueError, OSError, EOFError) as exc:
        raise InvalidInputError(f"{path} is not a readable .npz ranking: {exc}") from None
    meta_path = sidecar_path(path)
    meta = read_json(meta_path) if meta_path.exists() else {}
    return Ranking(**arrays, metadata=meta)


def export_paper_npy(path: str | os.PathLike[str], ranking: Ranking, n_test: int) -> Path:
    """Write the ``(n_test, k)`` int64 index matrix of the paper's code (``-1`` = not ranked)."""
    if len(ranking.targets) and ranking.targets.max() >= n_test:
        raise InvalidInputError(
            f"target {int(ranking.targets.max())} is outside a test split of {n_test} images"
        )
    dense = np.full((n_test, ranking.k), -1, dtype=np.int64)
    dense[ranking.targets] = ranking.indices
    return atomic_write(path, lambda tmp: np.save(tmp, dense, allow_pickle=False))
