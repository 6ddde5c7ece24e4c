"""simattr.hashing reproduces, bit for bit, every digest simattr computed before it existed.

Each port is pinned twice: against the formula it replaced, written out here with hashlib, on
real inputs; and, where a committed result records a digest, against that recorded value. A
failure here means stored results (benchmarks/results, users' caches and checkpoints) would no
longer be recognised.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from simattr.hashing import (
    crc32_array,
    digest_array,
    digest_bytes,
    digest_file,
    digest_files,
    digest_json,
    digest_text,
)

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "src" / "simattr" / "weights"
SHIPPED = WEIGHTS / "cifar10-moco-resnet18-w16-e140.safetensors"
RESULTS = REPO / "benchmarks" / "results"
#: ``sha256sum src/simattr/weights/cifar10-moco-resnet18-w16-e140.safetensors``
SHIPPED_SHA256 = "9ede8eacc2528764076c364f10eb6038c97d0fd79507ed69c83054210bb69678"


def _old_blake2b_array(a, max_bytes=64 << 20):
    """resumable.fingerprint_array as it was written before simattr.hashing."""
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


def _old_file_sha(path, length):
    """checkpoints.file_sha256 / trak._file_digest before simattr.hashing."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


def _old_sha256_files(paths):
    """sources._sha256_files before simattr.hashing."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{path.name}\0{path.stat().st_size}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _old_json_digest(obj, length, default=None):
    """trak._digest (length 16, default=str) and jobs._digest (length 20) before."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=default)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


# -- the functions, against hashlib -----------------------------------------------------------
def test_sha256_digests_match_hashlib_on_real_bytes():
    data = SHIPPED.read_bytes()
    assert digest_bytes(data) == hashlib.sha256(data).hexdigest()
    assert digest_bytes(data, 16) == hashlib.sha256(data).hexdigest()[:16]
    parts = [data[:1000], b"", data[1000:]]  # parts hash as their concatenation
    assert digest_bytes(parts, 20) == hashlib.sha256(data).hexdigest()[:20]
    rows = np.arange(0, 5000, 7, dtype=np.int64)[::-1]  # a non-contiguous view
    assert digest_bytes(rows) == hashlib.sha256(rows.tobytes()).hexdigest()
    text = "simattr-dataset\nparquet\nnaïve\nNone"
    assert digest_text(text, 16) == hashlib.sha256(text.encode()).hexdigest()[:16]
    assert (
        digest_text(iter(["simattr-", "dataset\nparquet", "\nnaïve\nNone"]), 16)
        == (hashlib.sha256(text.encode()).hexdigest()[:16])
    )


def test_file_digests_match_the_old_streamed_formula(tmp_path):
    for length in (16, 20, 64, None):
        assert digest_file(SHIPPED, length) == _old_file_sha(SHIPPED, length)
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    assert digest_file(empty) == hashlib.sha256(b"").hexdigest()
    files = sorted(WEIGHTS.glob("*.safetensors*"))
    assert digest_files(files) == _old_sha256_files(files)
    assert digest_files([str(p) for p in files]) == _old_sha256_files(files)
    assert digest_files(files[::-1]) != digest_files(files)


def test_json_digest_is_canonical_and_matches_the_old_formula():
    obj = {"b": [1, 2.5, None], "a": {"z": "ü", "y": (3, 4)}, "p": Path("x/y")}
    assert digest_json(obj, 16, default=str) == _old_json_digest(obj, 16, default=str)
    plain = {"recipe": {"name": "tiny", "mean": (0.5, 0.25)}, "seed": 3, "predict": [1, 2]}
    assert digest_json(plain, 20) == _old_json_digest(plain, 20)
    assert digest_json(dict(reversed(list(plain.items()))), 20) == digest_json(plain, 20)
    with pytest.raises(TypeError):
        digest_json({"p": Path("x")})  # no default: not JSON, not silently str()-ed


@pytest.mark.parametrize(
    "array, max_bytes",
    [
        (np.random.default_rng(0).standard_normal((1000, 37)).astype(np.float32), 64 << 20),
        (np.random.default_rng(1).standard_normal((1000, 37)), 4096),  # sampled rows
        (np.arange(24, dtype=np.int64).reshape(4, 6)[:, ::2], 64 << 20),  # not contiguous
        (np.float64(3.0), 64 << 20),
        (np.zeros((0, 5), dtype=np.float32), 64 << 20),
        (None, 64 << 20),
    ],
)
def test_array_digest_matches_the_old_sampled_blake2b(array, max_bytes):
    assert digest_array(array, max_bytes) == _old_blake2b_array(array, max_bytes)


def test_crc32_matches_zlib():
    a = np.random.default_rng(2).integers(0, 255, (7, 5, 5, 3), dtype=np.uint8)
    assert crc32_array(a) == zlib.crc32(a.tobytes())
    assert crc32_array(a[:, ::2]) == zlib.crc32(a[:, ::2].tobytes())


# -- committed values -------------------------------------------------------------------------
def test_shipped_weights_digest_is_the_one_committed_results_record():
    record = RESULTS / "ssl_knn.json"
    if not record.exists():
        pytest.skip("benchmarks/results is not part of this checkout")
    recorded = _file_digests(json.loads(record.read_text(encoding="utf-8")))
    assert recorded[SHIPPED.name] == digest_file(SHIPPED, 16) == SHIPPED_SHA256[:16]
    assert digest_file(SHIPPED) == SHIPPED_SHA256
    assert len(recorded) == 2
    for name, sha in recorded.items():
        assert digest_file(WEIGHTS / name, 16) == sha


def _file_digests(node: object) -> dict[str, str]:
    """``{file: sha256_16}`` of every backbone description in a results file."""
    found: dict[str, str] = {}
    if isinstance(node, dict):
        if "file" in node and "sha256_16" in node:
            found[node["file"]] = node["sha256_16"]
        for value in node.values():
            found.update(_file_digests(value))
    elif isinstance(node, list):
        for value in node:
            found.update(_file_digests(value))
    return found


def test_backbone_sha256_16_is_unchanged():
    from simattr.models import load_backbone

    net = load_backbone("shipped:cifar10-moco-resnet18-w16-e140")
    assert net.extra["sha256_16"] == _old_file_sha(SHIPPED, 16) == SHIPPED_SHA256[:16]


# -- each port, against the formula it replaced -----------------------------------------------
def test_resumable_fingerprints_are_the_hashing_ones():
    from simattr.attribution.resumable import fingerprint_array

    a = np.random.default_rng(3).standard_normal((300, 8))
    assert fingerprint_array(a) == _old_blake2b_array(a) == digest_array(a)
    assert fingerprint_array(a, max_bytes=1000) == _old_blake2b_array(a, 1000)


def test_job_keys_are_unchanged():
    from simattr.training.jobs import TrainJob
    from simattr.training.recipes import get_recipe

    job = TrainJob(
        data="cifar10", recipe="tiny", seed=3, remove=(5, 2), predict=(1,), subset=(9, 4)
    )
    ident = {
        "recipe": get_recipe("tiny").to_dict(),
        "seed": 3,
        "remove": [2, 5],
        "relabel": [],
        "relabel_to": None,
        "predict": [1],
        "subset": _old_json_digest([4, 9], 20),
    }
    assert job.key() == _old_json_digest(ident, 20)
    # computed by simattr 0.1.0 before the port (the recipe "tiny" as it is defined today)
    pinned = TrainJob(
        data="cifar10", recipe="tiny", seed=3, remove=(5, 2), predict=(1,), subset=(9, 4, 7)
    )
    assert pinned.key() == "c73aceb2fafbbfddcafe"


def test_trak_store_names_are_unchanged():
    from simattr.baselines import trak

    obj = {"b": [1, 2], "a": Path("x"), "c": 1.5}
    assert trak._digest(obj) == _old_json_digest(obj, 16, default=str) == "db162bb5b5fe4e37"


def test_pool_rows_fingerprint_is_unchanged():
    from simattr.training.classifier_io import pool_rows_fingerprint

    train = SimpleNamespace(fingerprint="09a8951670fb6112", split="train")
    rows = np.array([9, 3, 7, 1], dtype=np.int32)
    h = hashlib.sha256()
    h.update(b"09a8951670fb6112")
    h.update(b"train")
    h.update(np.sort(rows.astype(np.int64)).tobytes())
    assert pool_rows_fingerprint(train, rows) == h.hexdigest()[:20]


def test_dataset_fingerprints_are_unchanged(tmp_path):
    import sklearn
    from PIL import Image

    from simattr.data import load_dataset
    from simattr.data.sources import _detect

    digits = load_dataset("digits", "test")
    text = f"simattr-dataset\ndigits\nsklearn-digits {sklearn.__version__} test\nNone"
    assert digits.fingerprint == hashlib.sha256(text.encode()).hexdigest()[:16]

    root = tmp_path / "pets"
    for i, name in enumerate(["cat", "dog"]):
        (root / "train" / name).mkdir(parents=True)
        Image.new("RGB", (5, 4), (i * 90, 20, 30)).save(root / "train" / name / f"{i}.png")
    source = _detect(root, False)
    files, _ = source._listing("train")
    h = hashlib.sha256(b"cat\ndog")
    for path in files:  # relative path, size, BLAKE2b-128 of the bytes (files under 1 MiB)
        content = hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
        rel = path.relative_to(root).as_posix()
        h.update(f"\n{rel}\0{path.stat().st_size}\0{content}".encode())
    text = f"simattr-dataset\nimage-folder\n{h.hexdigest()}\n32"
    assert source.fingerprint("train", None) == hashlib.sha256(text.encode()).hexdigest()[:16]


def test_ssl_data_identity_digests_are_unchanged():
    from simattr.data import load_dataset
    from simattr.data.dataset import ImageDataset
    from simattr.ssl.train import _data_identity

    view = load_dataset("digits", "train").subset(np.arange(10, 50, 3))
    ident = _data_identity(view)
    rows = hashlib.sha256(view.source_indices.tobytes()).hexdigest()[:16]
    assert ident["rows_sha256_16"] == rows
    raw = ImageDataset(pixels=view.images[:6], labels=view.labels[:6], class_names=view.class_names)
    pixels = hashlib.sha256(raw.images.tobytes()).hexdigest()[:16]
    assert _data_identity(raw)["pixels_sha256_16"] == pixels


def test_cifar10_fingerprints_are_the_committed_ones(data_root):
    """The Parquet CIFAR-10 fingerprints recorded by the committed CPU benchmark."""
    from simattr.data.sources import _detect

    manifest = RESULTS / "bench-cpu" / "lds" / "manifest.json"
    if not manifest.exists():
        pytest.skip("benchmarks/results is not part of this checkout")
    recorded = json.loads(manifest.read_text(encoding="utf-8"))
    source = _detect(data_root / "cifar10", False)
    assert source.fingerprint("train", None) == recorded["train_fingerprint"]
    assert source.fingerprint("test", None) == recorded["test_fingerprint"]
    files = source.files["train"]
    text = f"simattr-dataset\nparquet\n{_old_sha256_files(files)}\nNone"
    assert recorded["train_fingerprint"] == hashlib.sha256(text.encode()).hexdigest()[:16]


def test_cpu_mini_pool_fingerprint_is_the_committed_one(cifar_train):
    from simattr.training.classifier_io import pool_rows_fingerprint
    from simattr.training.recipes import recipe_pool

    sidecar = RESULTS / "bench-cpu" / "rankings" / "trak.npz.json"
    if not sidecar.exists():
        pytest.skip("benchmarks/results is not part of this checkout")
    recorded = json.loads(sidecar.read_text(encoding="utf-8"))["pool_rows_fingerprint"]
    pool = recipe_pool("cpu-mini", cifar_train)
    assert pool_rows_fingerprint(cifar_train, pool) == recorded
