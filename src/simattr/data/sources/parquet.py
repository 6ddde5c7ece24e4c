"""The Parquet source: a Hugging Face ``datasets`` export, one file or a few shards per split.
Its fingerprint is the SHA-256 of the files' bytes."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simattr.data.sources.base import _Decoded, _fingerprint, _unknown_split
from simattr.data.sources.decode import _DecodeFailure, _Target, decode_images
from simattr.errors import DataError
from simattr.hashing import digest_files

_SHARD = re.compile(r"^(?P<split>.+?)-\d+-of-\d+(?:-.*)?$")


class _ParquetSource:
    """A Hugging Face ``datasets`` Parquet export: one file (or a few shards) per split."""

    def __init__(self, root: Path, files: dict[str, list[Path]]) -> None:
        self.root = root
        self.name = root.name
        self.files = files

    @staticmethod
    def find(root: Path) -> dict[str, list[Path]]:
        """Parquet files of each split in ``root`` (or ``root/data``), shards in order."""
        for folder in (root, root / "data"):
            found: dict[str, list[Path]] = {}
            for path in sorted(folder.glob("*.parquet")) if folder.is_dir() else []:
                match = _SHARD.match(path.stem)
                found.setdefault(match["split"] if match else path.stem, []).append(path)
            if found:
                return found
        return {}

    def check_split(self, split: str) -> None:
        if split not in self.files:
            raise _unknown_split(split, self.root, sorted(self.files))

    def fingerprint(self, split: str, image_size: int | None) -> str:
        return _fingerprint("parquet", digest_files(self.files[split]), image_size)

    def decode(self, split: str, image_size: int | None, download: bool) -> _Decoded:
        tables = [_ParquetFile.read(path) for path in self.files[split]]
        labels = np.concatenate([t.labels for t in tables])
        class_names, origin = tables[0].class_names, "its 'huggingface' schema metadata"
        if class_names is None:
            class_names, origin = (
                self._manifest_class_names(),
                f"{self.root / 'manifest.json'}",
            )
        if class_names is None:  # no names anywhere: the classes are the label values
            class_names = tuple(str(i) for i in range(int(labels.max(initial=-1)) + 1))
        for table in tables:
            table.check_labels(len(class_names), origin)
        items = [blob for t in tables for blob in t.blobs]
        if not items:
            raise DataError(f"split {split!r} of {self.root} has no rows")
        target = None if image_size is None else _Target(image_size, image_size, resize=True)
        try:
            pixels = decode_images(items, target)
        except _DecodeFailure as failure:
            raise self._decode_error(tables, failure) from None
        return _Decoded(pixels, labels, tuple(class_names))

    def _manifest_class_names(self) -> tuple[str, ...] | None:
        path = self.root / "manifest.json"
        if not path.is_file():
            return None
        try:
            from simattr._io import read_json

            manifest = read_json(path)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path} is not valid JSON ({exc}); fix or delete it") from exc
        for key in ("class_names", "classes", "names", "label_names"):
            names = manifest.get(key) if isinstance(manifest, dict) else None
            if isinstance(names, list) and all(isinstance(n, str) for n in names):
                return tuple(names)
        return None

    @staticmethod
    def _decode_error(tables: Sequence[_ParquetFile], failure: _DecodeFailure) -> DataError:
        offset = 0
        for table in tables:
            if failure.index < offset + len(table.blobs):
                row = failure.index - offset
                break
            offset += len(table.blobs)
        where = f"{table.path}: row {row}"
        if len(tables) > 1:
            where += f" (row {failure.index} of the split)"
        image_path = table.image_path(row)
        if image_path is not None:
            where += f", image path {image_path!r}"
        if failure.kind == "size":
            first = tables[0].image_path(0)
            return DataError(
                f"{where} is {failure.detail} pixels, unlike the first image ({first!r}); the "
                "images of a split must share one size. Pass image_size=N (--image-size N) to "
                "resize them all"
            )
        return DataError(
            f"{where} cannot be decoded as an image ({failure.detail}). The file is damaged or "
            "the row holds no image: re-export the dataset or restore the file"
        )


@dataclass
class _ParquetFile:
    """The image bytes, labels and class names of one Parquet file, validated."""

    path: Path
    table: Any  # pyarrow.Table with the image and label columns
    image_column: str
    blobs: list[bytes]
    labels: np.ndarray
    class_names: tuple[str, ...] | None

    @classmethod
    def read(cls, path: Path) -> _ParquetFile:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            schema = pq.read_schema(path)
            image_col = _pick_column(path, schema, ("img", "image", "images"), "image")
            label_col = _pick_column(path, schema, ("label", "labels"), "label")
            table = pq.read_table(path, columns=[image_col, label_col])
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"{path} is not a readable Parquet file ({exc})") from exc
        labels = _parquet_labels(path, table.column(label_col), label_col)
        blobs = _parquet_blobs(path, table.column(image_col), image_col)
        names = _hf_class_names(schema.metadata or {}, label_col)
        return cls(path, table, image_col, blobs, labels, names)

    def check_labels(self, n_classes: int, source: str) -> None:
        if len(self.labels) and self.labels.max() >= n_classes:
            row = int(np.flatnonzero(self.labels >= n_classes)[0])
            raise DataError(
                f"{self.path}: row {row} has label {int(self.labels[row])}, but there are only "
                f"{n_classes} classes according to {source}; fix the labels or the class names"
            )

    def image_path(self, row: int) -> str | None:
        column = self.table.column(self.image_column)
        value = column[row].as_py()
        return value.get("path") if isinstance(value, dict) else None


def _pick_column(path: Path, schema: Any, candidates: Sequence[str], what: str) -> str:
    for name in candidates:
        if name in schema.names:
            return name
    raise DataError(
        f"{path} has no {what} column: looked for {', '.join(map(repr, candidates))}, "
        f"found {schema.names}. Export the dataset with an image and a label column"
    )


def _parquet_labels(path: Path, column: Any, name: str) -> np.ndarray:
    import pyarrow as pa

    if not pa.types.is_integer(column.type):
        raise DataError(f"{path}: label column {name!r} has type {column.type}, expected integers")
    if column.null_count:
        row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(f"{path}: row {row} has no label (null in column {name!r})")
    labels = column.to_numpy().astype(np.int64)
    if len(labels) and labels.min() < 0:
        row = int(np.flatnonzero(labels < 0)[0])
        raise DataError(
            f"{path}: row {row} has label {int(labels[row])}; labels must be class indices >= 0"
            " (unlabelled rows, marked -1 in some exports, cannot be used for classification)"
        )
    return labels


def _parquet_blobs(path: Path, column: Any, name: str) -> list[bytes]:
    import pyarrow as pa
    import pyarrow.compute as pc

    column = column.combine_chunks()
    if pa.types.is_struct(column.type):
        if column.type.get_field_index("bytes") < 0:
            raise DataError(f"{path}: image column {name!r} is a struct without a 'bytes' field")
        data = pc.struct_field(column, "bytes")  # a null struct gives null bytes
    elif pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        data = column
    else:
        raise DataError(
            f"{path}: image column {name!r} has type {column.type}; expected encoded image bytes "
            "(a struct {bytes, path} as written by Hugging Face datasets, or binary)"
        )
    missing = data.is_null().to_numpy(zero_copy_only=False)
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise DataError(
            f"{path}: row {row} has no image bytes in column {name!r} (images stored as paths "
            "to external files are not supported; export with the images embedded)"
        )
    return data.to_pylist()


def _hf_class_names(metadata: dict[bytes, bytes], label_col: str) -> tuple[str, ...] | None:
    """Class names from the ``huggingface`` schema metadata (``info.features.<label>.names``)."""
    import json

    raw = metadata.get(b"huggingface")
    if not raw:
        return None
    try:
        names = json.loads(raw)["info"]["features"][label_col]["names"]
    except (ValueError, KeyError, TypeError):
        return None
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        return tuple(names)
    return None
