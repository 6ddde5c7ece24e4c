"""simattr.store: a folder's manifest is created once, compared on reuse, and a change refused.

Needs no dataset: every test works on small folders in tmp_path (and reads one committed
manifest, to show the Store accepts the format results were written in).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from simattr.errors import InvalidInputError
from simattr.store import MANIFEST, Store, check_identity, differences

IDENTITY = {
    "k": 10,
    "inputs": {"train_features": "aa11", "test_features": "bb22"},
    "settings": {"method": "esvm", "C": 0.1, "mean": (0.5, 0.25)},
    "subsets": 4,
}
COMMITTED_LDS = Path(__file__).resolve().parents[1] / "benchmarks/results/bench-cpu/lds"


def _store(folder: Path, **changes) -> Store:
    return Store(folder, "demo", {**IDENTITY, **changes}, growing=("subsets",))


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if ".tmp" in p.name]


def test_first_use_creates_the_manifest_with_a_provenance_header(tmp_path):
    folder = tmp_path / "run"
    store = _store(folder)
    assert not store.exists() and store.check() is None
    assert not folder.exists()  # checking writes nothing
    store.save()
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    assert list(manifest)[:3] == ["simattr_version", "created", "kind"]
    assert manifest["kind"] == "demo" and manifest["k"] == 10
    assert manifest["settings"]["mean"] == [0.5, 0.25]  # as JSON holds it
    assert store.exists() and _no_temp_files(folder)


def test_reuse_with_an_equal_identity_is_accepted(tmp_path):
    _store(tmp_path).save()
    same = Store(
        tmp_path,
        "demo",
        {
            **IDENTITY,
            "k": np.int64(10),
            "settings": {"C": 0.1, "mean": [0.5, 0.25], "method": "esvm"},
        },
    )
    assert same.check()["inputs"] == IDENTITY["inputs"]


def test_provenance_fields_are_not_compared(tmp_path):
    _store(tmp_path).save()
    path = tmp_path / MANIFEST
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest.update(simattr_version="0.0.1", created="1999-01-01T00:00:00+00:00")
    path.write_text(json.dumps(manifest), encoding="utf-8")
    _store(tmp_path).check()
    del manifest["simattr_version"], manifest["created"]  # a manifest written without header
    path.write_text(json.dumps(manifest), encoding="utf-8")
    _store(tmp_path).check()


def test_a_changed_key_is_refused_in_one_line_naming_it(tmp_path):
    _store(tmp_path).save()
    with pytest.raises(InvalidInputError) as err:
        _store(tmp_path, k=7).check()
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path} holds results of other inputs (k was 10, now 7); ")
    assert "\n" not in msg and msg.endswith("delete it or choose another folder")


def test_a_changed_nested_key_is_named_by_its_path(tmp_path):
    _store(tmp_path).save()
    inputs = {**IDENTITY["inputs"], "train_features": "cc33"}
    with pytest.raises(InvalidInputError, match=r"inputs\.train_features was 'aa11', now 'cc33'"):
        _store(tmp_path, inputs=inputs).check()
    with pytest.raises(InvalidInputError, match=r"inputs\.test_labels was None, now 'dd44'"):
        _store(tmp_path, inputs={**IDENTITY["inputs"], "test_labels": "dd44"}).check()
    with pytest.raises(
        InvalidInputError, match=r"settings\.mean was \[0\.5, 0\.25\], now \[0\.5\]"
    ):
        _store(tmp_path, settings={**IDENTITY["settings"], "mean": (0.5,)}).check()


def test_a_removed_key_and_another_kind_are_refused(tmp_path):
    _store(tmp_path).save()
    fewer = {k: v for k, v in IDENTITY.items() if k != "k"}
    with pytest.raises(InvalidInputError, match="k was 10, now None"):
        Store(tmp_path, "demo", fewer).check()
    with pytest.raises(InvalidInputError, match="kind was 'demo', now 'lds'"):
        Store(tmp_path, "lds", IDENTITY).check()


def test_growing_keys_may_change_and_the_manifest_records_the_latest(tmp_path):
    _store(tmp_path).save()
    grown = _store(tmp_path, subsets=12)
    grown.check()
    grown.save()
    assert json.loads((tmp_path / MANIFEST).read_text(encoding="utf-8"))["subsets"] == 12
    with pytest.raises(InvalidInputError, match="subsets was 12, now 4"):
        Store(tmp_path, "demo", IDENTITY).check()  # not declared growing here
    nested = Store(tmp_path, "demo", {**IDENTITY, "subsets": 12, "k": 11}, growing=("k",))
    nested.check()
    deep = {**IDENTITY, "subsets": 12, "inputs": {**IDENTITY["inputs"], "test_features": "x"}}
    Store(tmp_path, "demo", deep, growing=("inputs.test_features",)).check()


def test_the_wording_is_the_callers(tmp_path):
    store = Store(tmp_path, None, {"k": 1}, holds="holds blocks of an earlier run", remedy="stop")
    store.save()
    assert "kind" not in json.loads((tmp_path / MANIFEST).read_text(encoding="utf-8"))
    with pytest.raises(
        InvalidInputError, match=r"^\S+ holds blocks of an earlier run \(k was 1, now 2\); stop$"
    ):
        Store(
            tmp_path, None, {"k": 2}, holds="holds blocks of an earlier run", remedy="stop"
        ).check()


def test_entries_are_written_atomically_and_leave_no_temporary_files(tmp_path):
    store = _store(tmp_path / "run")
    path = store.write_array("margins/subset-00000.npy", np.arange(5.0))
    assert path == tmp_path / "run" / "margins" / "subset-00000.npy"
    np.testing.assert_array_equal(np.load(path, allow_pickle=False), np.arange(5.0))
    store.write("notes.txt", lambda tmp: tmp.write_text("x", encoding="utf-8"))

    def dies(tmp: Path) -> None:
        tmp.write_bytes(b"half an entry")
        raise KeyboardInterrupt  # the process killed mid-write

    with pytest.raises(KeyboardInterrupt):
        store.write("block-00001.npz", dies)
    assert not store.path("block-00001.npz").exists()
    assert _no_temp_files(tmp_path)
    assert sorted(p.name for p in (tmp_path / "run").rglob("*")) == [
        "margins",
        "notes.txt",
        "notes.txt.json",  # each entry's sidecar holds the checksum of its bytes
        "subset-00000.npy",
        "subset-00000.npy.json",
    ]
    with pytest.raises(ValueError):
        store.write_array("objects.npy", np.array([{"a": 1}], dtype=object))  # no pickles
    assert _no_temp_files(tmp_path)


@pytest.mark.parametrize("content", [b'{"k": 10, ', b"\xff\xfe garbage", b"[1, 2]", b""])
def test_a_corrupt_manifest_is_one_clear_error(tmp_path, content):
    (tmp_path / MANIFEST).write_bytes(content)
    with pytest.raises(InvalidInputError) as err:
        _store(tmp_path).check()
    msg = str(err.value)
    assert str(tmp_path / MANIFEST) in msg and "delete it" in msg and "\n" not in msg


def test_differences_lists_every_changed_path_in_order():
    old = {"b": 1, "a": {"y": 2, "x": 1}, "created": "then", "c": [1]}
    new = {"b": 2, "a": {"y": 2, "x": 3, "w": 0}, "created": "now", "c": [1]}
    assert differences(old, new) == [("a.w", None, 0), ("a.x", 1, 3), ("b", 1, 2)]
    assert differences(old, new, growing=("a",)) == [("b", 1, 2)]
    assert differences({"a": {"x": 1}}, {"a": 5}) == [("a", {"x": 1}, 5)]


def test_check_identity_of_a_sidecar_field(tmp_path):
    check_identity({"seed": 1}, {"seed": 1}, where="m.npy", holds="holds x", remedy="fix")
    with pytest.raises(InvalidInputError, match=r"^m\.npy holds x \(seed was None, now 1\); fix$"):
        check_identity(None, {"seed": 1}, where="m.npy", holds="holds x", remedy="fix")


def test_the_committed_lds_manifest_is_reused_and_guarded(tmp_path):
    """The format results were written in: the committed CPU benchmark's LDS folder."""
    path = COMMITTED_LDS / MANIFEST
    if not path.exists():
        pytest.skip("benchmarks/results is not part of this checkout")
    recorded = json.loads(path.read_text(encoding="utf-8"))
    identity = {
        k: v for k, v in recorded.items() if k not in ("simattr_version", "created", "kind")
    }
    (tmp_path / MANIFEST).write_bytes(path.read_bytes())
    Store(tmp_path, "lds", {**identity, "subsets": 80}, growing=("subsets",)).check()
    with pytest.raises(InvalidInputError, match="seed was 0, now 1"):
        Store(tmp_path, "lds", {**identity, "seed": 1}, growing=("subsets",)).check()
    Store(tmp_path, "lds", identity).save()
    rewritten = json.loads((tmp_path / MANIFEST).read_text(encoding="utf-8"))
    assert list(rewritten) == list(recorded)
    header = ("simattr_version", "created")
    assert {k: v for k, v in rewritten.items() if k not in header} == {
        k: v for k, v in recorded.items() if k not in header
    }
