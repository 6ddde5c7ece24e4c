"""Dataset sources: Parquet, torchvision CIFAR-10, image folders, digits, and the decoded cache."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from simattr.data import DIGITS_SPLIT_SEED, ImageDataset, load_dataset, resolve_root
from simattr.data import cache as data_cache
from simattr.errors import DataError, InvalidInputError, MissingFileError, SimattrError


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _manifest(data_root: Path) -> dict:
    return json.loads((data_root / "cifar10" / "manifest.json").read_text())


def _real_rows(data_root: Path, n: int) -> tuple[list[dict], list[int], dict]:
    """The first ``n`` rows of the shared CIFAR-10 test file, and its schema metadata."""
    table = pq.read_table(data_root / "cifar10" / "test.parquet").slice(0, n)
    return table.column("img").to_pylist(), table.column("label").to_pylist(), table.schema.metadata


def _write_parquet(path: Path, images: list[dict], labels: list, metadata: dict | None) -> Path:
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({"img": pa.array(images, type=struct), "label": pa.array(labels, pa.int64())})
    if metadata is not None:
        table = table.replace_schema_metadata(metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def _encode(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def _solid(color: tuple[int, int, int], height: int, width: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(color, np.uint8), (height, width, 3)).copy()


@pytest.fixture()
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache directory for tests that inspect what gets written."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("SIMATTR_CACHE_DIR", str(folder))
    return folder


def _cache_entries(cache_dir: Path) -> list[Path]:
    folder = cache_dir / "datasets"
    return sorted(folder.iterdir()) if folder.is_dir() else []


# ---------------------------------------------------------------------------------------------
# real CIFAR-10 (Parquet)
# ---------------------------------------------------------------------------------------------
def test_cifar10_train_matches_manifest(cifar_train: ImageDataset, data_root: Path) -> None:
    manifest = _manifest(data_root)
    assert len(cifar_train) == 50_000
    assert cifar_train.pixels.shape == (50_000, 32, 32, 3)
    assert cifar_train.pixels.dtype == np.uint8
    assert list(cifar_train.class_names) == manifest["classes"]
    assert cifar_train.class_counts().tolist() == [5_000] * 10
    assert cifar_train.class_counts().tolist() == manifest["splits"]["train"]["label_counts"]
    assert (cifar_train.name, cifar_train.split) == ("cifar10", "train")
    # The README's per-channel means of this JPEG copy: proves the pixels were really decoded.
    means = cifar_train.pixels.reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(means, [125.3, 122.9, 113.9], atol=0.1)


def test_cifar10_test_matches_manifest(cifar_test: ImageDataset, data_root: Path) -> None:
    manifest = _manifest(data_root)
    assert cifar_test.pixels.shape == (10_000, 32, 32, 3)
    assert cifar_test.pixels.dtype == np.uint8
    assert list(cifar_test.class_names) == manifest["classes"]
    assert cifar_test.class_counts().tolist() == manifest["splits"]["test"]["label_counts"]
    assert cifar_test.fingerprint != ""


def test_cifar10_second_load_comes_from_cache(
    cifar_train: ImageDataset, data_root: Path, session_cache: Path
) -> None:
    entry = data_cache.entry_dir("cifar10", "train", cifar_train.fingerprint, None)
    assert entry.parent == session_cache / "datasets"
    assert (entry / "pixels.npy").is_file() and (entry / "meta.json").is_file()
    hits = data_cache.stats.hits
    again = load_dataset(data_root / "cifar10", "train")
    assert data_cache.stats.hits == hits + 1
    np.testing.assert_array_equal(again.pixels, cifar_train.pixels)
    np.testing.assert_array_equal(again.labels, cifar_train.labels)
    assert again.class_names == cifar_train.class_names
    assert again.fingerprint == cifar_train.fingerprint


# ---------------------------------------------------------------------------------------------
# Parquet edge cases
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("workers", ["1", "2"])
def test_parquet_corrupt_image_names_row_and_path(
    data_root: Path, fresh_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers
) -> None:
    # 600 rows so that, with two worker processes, the bad row lies in a later chunk and its
    # index must be translated back to the split's row numbering.
    images, labels, metadata = _real_rows(data_root, 600)
    images[555] = {"bytes": b"this is not a JPEG", "path": "test/cat/broken_0555.jpg"}
    folder = tmp_path / "broken"
    _write_parquet(folder / "train.parquet", images, labels, metadata)
    monkeypatch.setenv("SIMATTR_DECODE_WORKERS", workers)
    with pytest.raises(DataError) as info:
        load_dataset(folder, "train")
    message = str(info.value)
    assert "row 555" in message
    assert "test/cat/broken_0555.jpg" in message
    assert "train.parquet" in message
    assert _cache_entries(fresh_cache) == []


def test_parquet_loads_small_export_with_metadata_class_names(
    data_root: Path, fresh_cache: Path, tmp_path: Path
) -> None:
    images, labels, metadata = _real_rows(data_root, 20)
    folder = tmp_path / "mini"
    _write_parquet(folder / "train.parquet", images, labels, metadata)
    dataset = load_dataset(folder, "train")
    assert dataset.name == "mini"
    assert list(dataset.class_names) == _manifest(data_root)["classes"]
    assert dataset.labels.tolist() == labels
    first = np.asarray(Image.open(io.BytesIO(images[0]["bytes"])).convert("RGB"))
    np.testing.assert_array_equal(dataset.pixels[0], first)


def test_parquet_class_names_fall_back_to_manifest_then_indices(
    data_root: Path, fresh_cache: Path, tmp_path: Path
) -> None:
    images, labels, _ = _real_rows(data_root, 12)
    folder = tmp_path / "plain"
    _write_parquet(folder / "train.parquet", images, labels, metadata=None)
    assert load_dataset(folder, "train", cache=False).class_names == tuple(
        str(i) for i in range(max(labels) + 1)
    )
    names = [f"class{i}" for i in range(10)]
    (folder / "manifest.json").write_text(json.dumps({"class_names": names}))
    assert list(load_dataset(folder, "train", cache=False).class_names) == names


def test_parquet_missing_label_column(data_root: Path, tmp_path: Path) -> None:
    images, _, _ = _real_rows(data_root, 4)
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    folder = tmp_path / "nolabel"
    folder.mkdir()
    pq.write_table(pa.table({"img": pa.array(images, type=struct)}), folder / "train.parquet")
    with pytest.raises(DataError, match="no label column"):
        load_dataset(folder, "train")


def test_parquet_negative_label(data_root: Path, tmp_path: Path) -> None:
    images, labels, metadata = _real_rows(data_root, 6)
    labels[4] = -1
    folder = tmp_path / "negative"
    _write_parquet(folder / "train.parquet", images, labels, metadata)
    with pytest.raises(DataError, match=r"row 4 has label -1"):
        load_dataset(folder, "train")


def test_parquet_row_without_image_bytes(data_root: Path, tmp_path: Path) -> None:
    images, labels, metadata = _real_rows(data_root, 5)
    images[3] = {"bytes": None, "path": "elsewhere/photo.jpg"}
    folder = tmp_path / "external"
    _write_parquet(folder / "train.parquet", images, labels, metadata)
    with pytest.raises(DataError, match=r"row 3 has no image bytes"):
        load_dataset(folder, "train")


def test_parquet_label_beyond_class_names(data_root: Path, tmp_path: Path) -> None:
    images, labels, metadata = _real_rows(data_root, 6)
    labels[2] = 10  # the metadata names 10 classes: 0..9
    folder = tmp_path / "toolarge"
    _write_parquet(folder / "train.parquet", images, labels, metadata)
    with pytest.raises(DataError, match=r"row 2 has label 10"):
        load_dataset(folder, "train")


def test_parquet_mixed_sizes_need_image_size(fresh_cache: Path, tmp_path: Path) -> None:
    red, blue = _solid((255, 0, 0), 32, 32), _solid((0, 0, 255), 16, 24)
    images = [
        {"bytes": _encode(red, "PNG"), "path": "a.png"},
        {"bytes": _encode(red, "PNG"), "path": "b.png"},
        {"bytes": _encode(blue, "PNG"), "path": "small.png"},
    ]
    folder = tmp_path / "mixed"
    _write_parquet(folder / "train.parquet", images, [0, 1, 1], None)
    with pytest.raises(DataError) as info:
        load_dataset(folder, "train")
    assert "row 2" in str(info.value) and "small.png" in str(info.value)
    assert "image_size" in str(info.value)
    resized = load_dataset(folder, "train", image_size=20)
    assert resized.pixels.shape == (3, 20, 20, 3)
    np.testing.assert_array_equal(resized.pixels[2], _solid((0, 0, 255), 20, 20))


def test_parquet_unknown_split_lists_available(data_root: Path, tmp_path: Path) -> None:
    images, labels, metadata = _real_rows(data_root, 3)
    folder = tmp_path / "onesplit"
    _write_parquet(folder / "train.parquet", images, labels, metadata)
    with pytest.raises(MissingFileError, match=r"'validation'.*available splits: 'train'"):
        load_dataset(folder, "validation")


def test_parquet_shards_are_concatenated_in_order(data_root: Path, tmp_path: Path) -> None:
    images, labels, metadata = _real_rows(data_root, 10)
    folder = tmp_path / "sharded"
    _write_parquet(
        folder / "data" / "train-00000-of-00002.parquet", images[:6], labels[:6], metadata
    )
    _write_parquet(
        folder / "data" / "train-00001-of-00002.parquet", images[6:], labels[6:], metadata
    )
    dataset = load_dataset(folder, "train", cache=False)
    assert dataset.labels.tolist() == labels
    last = np.asarray(Image.open(io.BytesIO(images[9]["bytes"])).convert("RGB"))
    np.testing.assert_array_equal(dataset.pixels[9], last)


def test_fingerprint_follows_parquet_bytes(
    data_root: Path, fresh_cache: Path, tmp_path: Path
) -> None:
    images, labels, metadata = _real_rows(data_root, 8)
    folder = tmp_path / "fp"
    path = _write_parquet(folder / "train.parquet", images, labels, metadata)
    before = load_dataset(folder, "train")
    copy = tmp_path / "fp_copy" / "train.parquet"
    copy.parent.mkdir()
    copy.write_bytes(path.read_bytes())
    assert load_dataset(copy.parent, "train").fingerprint == before.fingerprint
    assert load_dataset(folder, "train", image_size=16).fingerprint != before.fingerprint

    labels[0] = (labels[0] + 1) % 10
    _write_parquet(path, images, labels, metadata)
    after = load_dataset(folder, "train")
    assert after.fingerprint != before.fingerprint
    assert after.labels[0] == labels[0]  # decoded again, not served from the old cache entry


# ---------------------------------------------------------------------------------------------
# cache
# ---------------------------------------------------------------------------------------------
def _small_parquet(data_root: Path, folder: Path, n: int = 16) -> Path:
    images, labels, metadata = _real_rows(data_root, n)
    return _write_parquet(folder / "train.parquet", images, labels, metadata)


@pytest.mark.parametrize("damage", ["truncate", "flip", "meta"])
def test_damaged_cache_entry_is_rebuilt(
    data_root: Path, fresh_cache: Path, tmp_path: Path, damage: str
) -> None:
    folder = tmp_path / "cached"
    _small_parquet(data_root, folder)
    first = load_dataset(folder, "train")
    (entry,) = _cache_entries(fresh_cache)
    pixels_file = entry / "pixels.npy"
    raw = pixels_file.read_bytes()
    if damage == "truncate":
        pixels_file.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip":
        pixels_file.write_bytes(raw[:-1] + bytes([raw[-1] ^ 0xFF]))
    else:
        (entry / "meta.json").write_text("{not json")
    invalid = data_cache.stats.invalid
    again = load_dataset(folder, "train")
    assert data_cache.stats.invalid == invalid + 1
    np.testing.assert_array_equal(again.pixels, first.pixels)
    hits = data_cache.stats.hits
    load_dataset(folder, "train")  # the rebuilt entry is valid again
    assert data_cache.stats.hits == hits + 1


def test_cache_false_writes_and_reads_nothing(
    data_root: Path, fresh_cache: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "nocache"
    _small_parquet(data_root, folder)
    hits, misses = data_cache.stats.hits, data_cache.stats.misses
    load_dataset(folder, "train", cache=False)
    assert _cache_entries(fresh_cache) == []
    assert (data_cache.stats.hits, data_cache.stats.misses) == (hits, misses)


# ---------------------------------------------------------------------------------------------
# image folders
# ---------------------------------------------------------------------------------------------
_COLORS = {"bird": (0, 0, 255), "cat": (255, 0, 0), "dog": (0, 255, 0)}


def _image_folder(root: Path) -> Path:
    """train/{bird,cat,dog} and val/{cat,dog}: solid-colour images of assorted sizes and formats."""
    layout = {
        "train/cat/b.jpg": (40, 30),
        "train/cat/a.png": (12, 12),
        "train/dog/z.png": (64, 48),
        "train/dog/sub/y.jpeg": (20, 20),
        "train/bird/x.bmp": (8, 16),
        "train/bird/notes.txt": None,
        "val/dog/v1.png": (10, 10),
        "val/cat/v2.jpg": (50, 50),
    }
    for relative, size in layout.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if size is None:
            path.write_text("not an image, ignored")
            continue
        cls = relative.split("/")[1]
        fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP"}[path.suffix]
        path.write_bytes(_encode(_solid(_COLORS[cls], size[1], size[0]), fmt))
    return root


def test_image_folder_loads_sorted_and_resized(fresh_cache: Path, tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "photos")
    train = load_dataset(root, "train", image_size=8)
    assert train.class_names == ("bird", "cat", "dog")
    assert train.pixels.shape == (5, 8, 8, 3) and train.pixels.dtype == np.uint8
    # rows: class, then relative file name -> bird/x, cat/a, cat/b, dog/sub/y, dog/z
    assert train.labels.tolist() == [0, 1, 1, 2, 2]
    expected = [_COLORS[c] for c in ("bird", "cat", "cat", "dog", "dog")]
    means = train.pixels.reshape(5, -1, 3).mean(axis=1)
    np.testing.assert_allclose(means, expected, atol=8)  # JPEG rounding only
    assert train.name == "photos"

    default = load_dataset(root, "train")
    assert default.pixels.shape == (5, 32, 32, 3)
    assert default.fingerprint != train.fingerprint


def test_image_folder_fingerprint_sees_swapped_contents(fresh_cache: Path, tmp_path: Path) -> None:
    """Two same-size images of different classes swapped, their modification times put back:
    names, sizes and times are as before, only the bytes moved. The fingerprint must change
    (and the loader must decode again instead of serving the cached, now wrong, pixels)."""
    import os

    from simattr.data import dataset_fingerprint

    root = _image_folder(tmp_path / "photos")
    a, b = root / "train/cat/c.bmp", root / "train/dog/d.bmp"
    a.write_bytes(_encode(_solid(_COLORS["cat"], 9, 9), "BMP"))
    b.write_bytes(_encode(_solid(_COLORS["dog"], 9, 9), "BMP"))
    assert a.stat().st_size == b.stat().st_size
    before = load_dataset(root, "train", image_size=8)
    times = {p: (p.stat().st_atime_ns, p.stat().st_mtime_ns) for p in (a, b)}
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    for path, ns in times.items():
        os.utime(path, ns=ns)
    assert all(p.stat().st_mtime_ns == times[p][1] for p in (a, b))

    assert dataset_fingerprint(root, "train", image_size=8) != before.fingerprint
    after = load_dataset(root, "train", image_size=8)
    assert after.fingerprint != before.fingerprint
    row = after.files.index(str(a))
    np.testing.assert_allclose(after.pixels[row].reshape(-1, 3).mean(0), _COLORS["dog"], atol=1)
    # put back: the same bytes give the same fingerprint again
    a.write_bytes(data_a)
    b.write_bytes(data_b)
    assert dataset_fingerprint(root, "train", image_size=8) == before.fingerprint


def test_image_folder_test_falls_back_to_val(fresh_cache: Path, tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "photos")
    val = load_dataset(root, "val", image_size=8)
    test = load_dataset(root, "test", image_size=8)
    assert test.split == "test" and val.split == "val"
    assert test.class_names == ("bird", "cat", "dog")  # the train split's classes
    assert test.labels.tolist() == val.labels.tolist() == [1, 2]
    np.testing.assert_array_equal(test.pixels, val.pixels)
    with pytest.raises(MissingFileError, match="available splits"):
        load_dataset(root, "holdout")


def test_image_folder_corrupt_file(fresh_cache: Path, tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "photos")
    bad = root / "train" / "cat" / "b.jpg"
    bad.write_bytes(bad.read_bytes()[:40])  # a truncated JPEG
    with pytest.raises(DataError) as info:
        load_dataset(root, "train", image_size=8)
    assert str(bad) in str(info.value)
    assert "row 2" in str(info.value)
    assert _cache_entries(fresh_cache) == []


def test_image_folder_unknown_val_class(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "photos")
    extra = root / "val" / "horse" / "h.png"
    extra.parent.mkdir()
    extra.write_bytes(_encode(_solid((9, 9, 9), 5, 5), "PNG"))
    with pytest.raises(DataError, match="horse"):
        load_dataset(root, "val", image_size=8)


def test_unknown_layout_lists_layouts(tmp_path: Path) -> None:
    (tmp_path / "empty" / "stuff").mkdir(parents=True)
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path / "empty", "train")
    message = str(info.value)
    assert "Parquet" in message and "cifar-10-batches-py" in message and "train/<class>" in message


# ---------------------------------------------------------------------------------------------
# torchvision CIFAR-10
# ---------------------------------------------------------------------------------------------
class _Exploit:
    """Unpickling this creates ``marker``: proof that a file was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


_TV_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]


def test_torchvision_bad_files_are_never_unpickled(tmp_path: Path) -> None:
    control = tmp_path / "control_marker"
    payload = pickle.dumps(_Exploit(control))
    pickle.loads(payload)
    assert control.exists()  # the payload does run code when unpickled

    marker = tmp_path / "marker"
    folder = tmp_path / "tv" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in _TV_FILES:
        (folder / name).write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path / "tv", "train")
    assert "official" in str(info.value) and "download" in str(info.value)
    assert not marker.exists()


def test_torchvision_missing_files(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    folder = tmp_path / "tv" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / "data_batch_1").write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(MissingFileError) as info:
        load_dataset(tmp_path / "tv", "test")
    assert "test_batch" in str(info.value) and "download" in str(info.value)
    assert isinstance(info.value, SimattrError)
    assert not marker.exists()


def test_torchvision_layout_loads_verified_files(
    tmp_path: Path, fresh_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tiny CIFAR-like release, with torchvision's checksum table pointed at its files."""
    from torchvision.datasets import CIFAR10

    folder = tmp_path / "tv" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {}
    for name in _TV_FILES[:-1]:
        data = rng.integers(0, 256, size=(4, 3072), dtype=np.uint8)
        batches[name] = {"data": data, "labels": rng.integers(0, 3, size=4).tolist()}
        (folder / name).write_bytes(pickle.dumps(batches[name]))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": ["a", "b", "c"]}))

    def md5(name: str) -> str:
        return hashlib.md5((folder / name).read_bytes()).hexdigest()

    monkeypatch.setattr(CIFAR10, "train_list", [[n, md5(n)] for n in _TV_FILES[:5]])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5("test_batch")]])
    meta = {"filename": "batches.meta", "key": "label_names", "md5": md5("batches.meta")}
    monkeypatch.setattr(CIFAR10, "meta", meta)

    train = load_dataset(tmp_path / "tv", "train")
    assert train.name == "cifar10" and train.class_names == ("a", "b", "c")
    assert train.pixels.shape == (20, 32, 32, 3)
    # CIFAR rows are channel-major (1024 R, 1024 G, 1024 B); image 5 is batch 2's second row.
    row = batches["data_batch_2"]["data"][1]
    np.testing.assert_array_equal(
        train.pixels[5, 3, 7], row[[3 * 32 + 7, 1024 + 3 * 32 + 7, 2048 + 3 * 32 + 7]]
    )
    expected_labels = [label for n in _TV_FILES[:5] for label in batches[n]["labels"]]
    assert train.labels.tolist() == expected_labels
    hits = data_cache.stats.hits
    again = load_dataset(tmp_path / "tv" / "cifar-10-batches-py", "train")  # the inner folder
    assert data_cache.stats.hits == hits + 1
    np.testing.assert_array_equal(again.pixels, train.pixels)
    assert load_dataset(tmp_path / "tv", "test", image_size=16).pixels.shape == (4, 16, 16, 3)


# ---------------------------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------------------------
def test_digits_split_is_stratified_and_deterministic() -> None:
    from sklearn.datasets import load_digits

    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert len(train) + len(test) == 1_797
    assert (len(train), len(test)) == (1_437, 360)
    for ds in (train, test):
        assert ds.pixels.dtype == np.uint8 and ds.pixels.shape[1:] == (8, 8, 3)
        assert ds.class_names == tuple(str(i) for i in range(10))
        assert (ds.pixels[..., 0] == ds.pixels[..., 1]).all()
        assert (ds.pixels[..., 0] == ds.pixels[..., 2]).all()
    # stratified: every class has 20 % of its images (rounded) in the test split
    totals = train.class_counts() + test.class_counts()
    assert np.all(np.abs(test.class_counts() - 0.2 * totals) <= 1)

    # every image appears exactly once across the splits, scaled 0..16 -> 0..255, with its
    # label, and each split keeps the original (ascending) order
    reference = load_digits()
    scaled = np.rint(reference.images * 255 / 16).astype(np.uint8).reshape(1_797, -1)
    where: dict[bytes, list[int]] = {}
    for index, image in enumerate(scaled):
        where.setdefault(image.tobytes(), []).append(index)
    seen: list[int] = []
    for ds in (train, test):
        rows = [where[image.tobytes()] for image in ds.pixels[..., 0].reshape(len(ds), -1)]
        unique = [r[0] for r in rows if len(r) == 1]
        assert unique == sorted(unique) and len(unique) > 0.9 * len(ds)
        assert ds.labels.tolist() == reference.target[[r[0] for r in rows]].tolist()
        seen.extend(i for r in rows for i in r if len(r) == 1)
    assert len(seen) == len(set(seen))
    assert train.pixels.max() == 255

    again = load_dataset("digits", "test")
    np.testing.assert_array_equal(again.pixels, test.pixels)
    assert again.fingerprint == test.fingerprint != train.fingerprint
    assert DIGITS_SPLIT_SEED == 0


def test_digits_resize() -> None:
    small = load_dataset("digits", "test", image_size=16)
    assert small.pixels.shape == (360, 16, 16, 3)
    assert small.fingerprint != load_dataset("digits", "test").fingerprint
    with pytest.raises(MissingFileError, match="available splits"):
        load_dataset("digits", "val")


# ---------------------------------------------------------------------------------------------
# resolve_root and arguments
# ---------------------------------------------------------------------------------------------
def test_resolve_root_cifar10_from_data_root(
    data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIMATTR_DATA_ROOT", str(data_root))
    assert Path(resolve_root("cifar10")) == data_root / "cifar10"
    monkeypatch.chdir(data_root.parent)
    monkeypatch.setenv("SIMATTR_DATA_ROOT", data_root.name)  # relative to the current folder
    assert Path(resolve_root("cifar10")).resolve() == (data_root / "cifar10").resolve()
    assert resolve_root("digits") == "digits"


def test_resolve_root_cifar10_without_data_root(
    fresh_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SIMATTR_DATA_ROOT", raising=False)
    assert resolve_root("cifar10") == fresh_cache / "torchvision-cifar10"
    with pytest.raises(MissingFileError, match="download"):
        load_dataset("cifar10", "train")  # no download without being asked


def test_resolve_root_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(MissingFileError, match="nowhere"):
        resolve_root(missing)
    with pytest.raises(MissingFileError, match="nowhere"):
        load_dataset(str(missing))


@pytest.mark.parametrize("size", [0, -3, 2.5, True])
def test_bad_image_size(size: object) -> None:
    with pytest.raises(InvalidInputError):
        load_dataset("digits", "train", image_size=size)  # type: ignore[arg-type]
