"""Source identifiers: what each row of a split is, in words a user can find on disk.

DESIGN.md section 4: every row has a source identifier, the image file's path relative to the
dataset root for an image-folder dataset, else ``split:row`` (Parquet exports, CIFAR-10,
digits). Results that name rows (audits, reports) name them by these.
"""

from __future__ import annotations

import os
from pathlib import Path

from simattr.data.dataset import ImageDataset
from simattr.data.sources import _detect, _ImageFolderSource, resolve_root
from simattr.hashing import digest_text


def source_ids(root: str | os.PathLike[str], dataset: ImageDataset) -> list[str]:
    """One identifier per item of ``dataset`` (a split of ``root``, or a view of one)."""
    rows = dataset.source_indices
    resolved = resolve_root(root)
    if isinstance(resolved, Path):
        source = _detect(resolved, False)
        if isinstance(source, _ImageFolderSource):
            files, _ = source._listing(dataset.split)
            return [files[int(r)].relative_to(resolved).as_posix() for r in rows]
    return [f"{dataset.split}:{int(r)}" for r in rows]


def source_ids_digest(ids: list[str]) -> str:
    """A short hex SHA-256 of a split's source identifiers, in row order: what sidecars record
    instead of the identifiers themselves (a million paths do not belong in a JSON sidecar).
    Two splits with the same digest name the same files in the same rows."""
    return digest_text("simattr-source-ids\n" + "\n".join(ids), 16)
