"""The ranking artifact: top-k training indices and scores for a set of target test images.

On disk a ranking is an ``.npz`` with three arrays, ``targets`` (n,), ``indices`` (n, k) and
``scores`` (n, k), plus a JSON sidecar describing how it was made. The evaluation stages read
it back with :func:`load_ranking`; :func:`export_paper_npy` writes the dense
``(n_test, k)`` index matrix used by the paper's code, with ``-1`` rows for targets not ranked.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from simattr._io import (
    atomic_write,
    provenance,
    read_sidecar,
    verify_checksum,
    write_with_sidecar,
)
from simattr.errors import DamagedFileError, InvalidInputError, MissingFileError
from simattr.hashing import digest_bytes
from simattr.validation import check_ranking_arrays


@dataclass
class Ranking:
    """Top-k attribution of ``targets`` (rows of the test split) over training rows."""

    targets: np.ndarray
    indices: np.ndarray
    scores: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)
    #: the file it was read from (for messages); ``None`` for a ranking made in memory
    source: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        check_ranking_arrays(
            self.targets, self.indices, self.scores, self.name, structure_only=True
        )
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

    @property
    def targets_are_rows(self) -> bool:
        """Whether ``targets`` are rows of a test split. ``explain`` ranks new image files: its
        targets are positions among those files, and naming them as test rows would be wrong."""
        return not (self.metadata.get("targets") == "files" or "images" in self.metadata)

    def __repr__(self) -> str:
        method = self.metadata.get("method")
        ranked = int((self.indices >= 0).sum())
        of = "new files" if not self.targets_are_rows else "test rows"
        return (
            f"Ranking({len(self.targets)} targets ({of}) x top {self.k}, {ranked} ranked images"
            + (f", method {method}" if method else "")
            + (f", from {self.source}" if self.source else "")
            + ")"
        )

    def to_pandas(
        self,
        *,
        train_ids: Sequence[str] | None = None,
        target_ids: Sequence[str] | None = None,
        train_labels: np.ndarray | None = None,
        target_labels: np.ndarray | None = None,
        class_names: Sequence[str] | None = None,
    ) -> Any:
        """The ranking as a ``pandas.DataFrame``: one row per ranked training image of each
        target (unranked ``-1`` slots left out), columns ``target``, ``rank`` (1 = most
        responsible), ``train_row``, ``score``, plus ``target_path``, ``target_label``,
        ``train_path``, ``train_label`` where the ids and labels are given (labels as class
        names with ``class_names``). ``simattr.report.ranking_rows(ranking, data)`` fills them
        from the dataset itself; this method reads nothing from disk.

        ``target_ids`` and ``target_labels`` are indexed by target row (the test split's ids
        and labels); a ranking of new files (``explain``) indexes them by file position.
        """
        import pandas as pd

        rows, cols = np.nonzero(self.indices >= 0)
        targets = self.targets[rows]
        train_rows = self.indices[rows, cols]

        def named(values: np.ndarray) -> list[Any]:
            if class_names is None:
                return [int(v) for v in values]
            return [str(class_names[int(v)]) for v in values]

        table: dict[str, Any] = {"target": targets}
        if target_ids is not None:
            table["target_path"] = [target_ids[int(t)] for t in targets]
        explained = self.metadata.get("target_labels")
        if explained is not None:
            table["target_label"] = named(np.asarray(explained, dtype=np.int64)[rows])
        elif target_labels is not None:
            table["target_label"] = named(np.asarray(target_labels)[targets])
        table["rank"] = cols + 1
        table["train_row"] = train_rows
        if train_ids is not None:
            table["train_path"] = [train_ids[int(r)] for r in train_rows]
        if train_labels is not None:
            table["train_label"] = named(np.asarray(train_labels)[train_rows])
        table["score"] = self.scores[rows, cols]
        return pd.DataFrame(table)

    @property
    def name(self) -> str:
        """How messages name this ranking: its file, or ``ranking``."""
        return f"ranking {self.source}" if self.source else "ranking"

    @property
    def digest(self) -> str:
        """Content identity (SHA-256 of targets, indices and scores, 16 hex digits): results
        that depend on the ranking record it, and a resumed run refuses another."""
        return digest_bytes((self.targets, self.indices, self.scores), 16)

    def data_fingerprints(self) -> dict[str, str | None]:
        """Fingerprints of the train and test splits the ranking was made on, as recorded in
        its sidecar (``None`` where it does not say: a ranking made from user features)."""
        meta = self.metadata
        recorded = meta.get("data_fingerprints") or {}
        found: dict[str, str | None] = {}
        for split in ("train", "test"):
            fp = recorded.get(split)
            if fp is None:
                feats = meta.get(f"{split}_features_meta") or {}
                fp = (feats.get("dataset") or {}).get("fingerprint")
            found[split] = fp
        return found

    def check(
        self,
        *,
        n_test: int | None = None,
        n_train: int | None = None,
        pool: np.ndarray | None = None,
        fingerprints: dict[str, str | None] | None = None,
    ) -> Ranking:
        """Refuse this ranking for data it was not made on: target rows in ``[0, n_test)``
        (and targets that are rows at all: not the new files of ``explain``), indices in
        ``[0, n_train)`` and inside ``pool``, and, where both sides record them, the same
        dataset ``fingerprints`` (``{"train": ..., "test": ...}``). Returns itself."""
        if n_test is not None and not self.targets_are_rows:
            raise InvalidInputError(
                f"{self.name} explains new image files (from explain), not rows of a test "
                "split: its targets cannot be named as test images; use the explanation's "
                "to_pandas() or simattr.report.explanation_columns(explanation)"
            )
        if fingerprints:
            mine = self.data_fingerprints()
            for split, fp in fingerprints.items():
                if fp is not None and mine.get(split) is not None and mine[split] != fp:
                    raise InvalidInputError(
                        f"{self.name} was made on another {split} split (fingerprint "
                        f"{mine[split]}, these data have {fp}); rank these data's features"
                    )
        check_ranking_arrays(
            self.targets,
            self.indices,
            self.scores,
            self.name,
            n_test=n_test,
            n_train=n_train,
            pool=pool,
        )
        return self


def save_ranking(path: str | os.PathLike[str], ranking: Ranking) -> Path:
    """Write the ranking ``.npz`` and its sidecar, atomically."""
    path = Path(path)
    if path.suffix != ".npz":
        raise InvalidInputError(f"rankings are written as .npz; got output path {path}")
    arrays = {"targets": ranking.targets, "indices": ranking.indices, "scores": ranking.scores}
    # a loaded ranking carries the old header: it is written anew, not repeated
    own = {k: v for k, v in ranking.metadata.items() if k not in _HEADER_KEYS}
    meta = provenance(
        kind="ranking", n_targets=len(ranking.targets), k=ranking.k, digest=ranking.digest, **own
    )
    write_with_sidecar(path, lambda tmp: np.savez(tmp, **arrays), meta)
    return path


#: Sidecar keys :func:`save_ranking` writes itself.
_HEADER_KEYS = frozenset(
    {"simattr_version", "created", "kind", "n_targets", "k", "digest", "sha256", "bytes"}
)


def load_ranking(path: str | os.PathLike[str]) -> Ranking:
    """Read a ranking written by :func:`save_ranking` (no pickled objects are accepted).

    The bytes are checked against the checksum of its sidecar, and the arrays against their
    declared shapes and dtypes (:meth:`Ranking.check` adds the data it is used with)."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"no such ranking file: {path}")
    if path.is_dir():
        raise InvalidInputError(f"{path} is a folder, not a ranking .npz")
    meta = read_sidecar(path)
    verify_checksum(path, meta, "ranking")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = {"targets", "indices", "scores"} - set(npz.files)
            if missing:
                raise InvalidInputError(
                    f"{path} is not a ranking: missing arrays {sorted(missing)}"
                )
            arrays = {name: npz[name] for name in ("targets", "indices", "scores")}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DamagedFileError(f"{path} is not a readable .npz ranking: {exc}") from None
    return Ranking(**arrays, metadata=meta, source=str(path))


def export_paper_npy(path: str | os.PathLike[str], ranking: Ranking, n_test: int) -> Path:
    """Write the ``(n_test, k)`` int64 index matrix of the paper's code (``-1`` = not ranked)."""
    if len(ranking.targets) and ranking.targets.max() >= n_test:
        raise InvalidInputError(
            f"target {int(ranking.targets.max())} is outside a test split of {n_test} images"
        )
    dense = np.full((n_test, ranking.k), -1, dtype=np.int64)
    dense[ranking.targets] = ranking.indices
    return atomic_write(path, lambda tmp: np.save(tmp, dense, allow_pickle=False))
