"""Atomic writes: all or nothing, and files with the usual permissions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from simattr._io import atomic_write


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.npy"

    def fail(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_write(target, fail)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_gives_umask_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "a.txt", lambda tmp: tmp.write_text("x"))
    finally:
        os.umask(mask)
    assert path.read_text() == "x"
    assert path.stat().st_mode & 0o777 == 0o644


def test_json_writers_turn_numpy_values_and_paths_into_plain_json(tmp_path):
    """Results hold numpy scalars, arrays and paths; both writers store them as plain JSON
    (exact values, not strings) and refuse anything else rather than guessing."""
    from pathlib import Path

    import numpy as np

    from simattr._io import append_jsonl, read_json, read_jsonl, write_json

    record = {
        "k": np.int64(3),
        "x": np.float32(0.5),
        "rows": np.arange(3),
        "grid": np.eye(2),
        "out": Path("a") / "b.npz",
    }
    plain = {
        "k": 3,
        "x": 0.5,
        "rows": [0, 1, 2],
        "grid": [[1.0, 0.0], [0.0, 1.0]],
        "out": "a/b.npz",
    }
    write_json(tmp_path / "r.json", record)
    assert read_json(tmp_path / "r.json") == plain
    assert type(read_json(tmp_path / "r.json")["k"]) is int
    append_jsonl(tmp_path / "r.jsonl", record)
    assert read_jsonl(tmp_path / "r.jsonl") == [plain]
    with pytest.raises(TypeError, match="not JSON serialisable: complex"):
        write_json(tmp_path / "bad.json", {"z": 1j})
    assert not (tmp_path / "bad.json").exists()


def test_read_npy_never_unpickles(tmp_path):
    """A user's ``.npy`` may hold pickled objects (code run on load): it is refused, naming the
    option, never loaded."""
    import numpy as np

    from simattr._io import read_npy
    from simattr.errors import InvalidInputError

    path = tmp_path / "labels.npy"
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(InvalidInputError, match=r"^--train-labels .*labels\.npy: not a \.npy"):
        read_npy(path, "--train-labels")


def test_json_sidecars_are_indented_in_insertion_order_and_read_as_utf8(tmp_path):
    """Sidecars are meant to be read by people: indented by 2, keys in the order written (the
    provenance header first, in UTC); a sidecar holding UTF-8 text reads whatever the locale's
    encoding (here ASCII)."""
    import datetime as dt
    import json
    import locale

    from simattr._io import provenance, read_json, write_json

    payload = provenance(zeta=1, alpha={"b": 2, "a": [1, 2]})
    path = write_json(tmp_path / "p.json", payload)
    assert path.read_text(encoding="utf-8") == json.dumps(payload, indent=2) + "\n"
    assert list(read_json(path)) == ["simattr_version", "created", "zeta", "alpha"]
    created = dt.datetime.fromisoformat(payload["created"])
    assert created.utcoffset() == dt.timedelta(0)

    (tmp_path / "u.json").write_text('{"class": "caf\u00e9"}', encoding="utf-8")
    old = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")  # the locale's encoding is now ASCII
    try:
        assert read_json(tmp_path / "u.json") == {"class": "caf\u00e9"}
    finally:
        locale.setlocale(locale.LC_CTYPE, old)


def test_taking_the_lock_removes_what_a_killed_writer_left(tmp_path):
    """kill -9 between an atomic write's start and its rename leaves a temporary behind; the
    next run on the output, once it holds the lock, deletes it (and only it)."""
    import tempfile

    from simattr._io import lock

    def killed_writer(path):  # what atomic_path leaves when its process dies mid-write
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}",
                                    dir=path.parent)  # fmt: skip
        os.close(fd)
        return Path(name)

    run = tmp_path / "run"
    (run / "sub").mkdir(parents=True)
    stale = [killed_writer(run / "resume.pt"), killed_writer(run / "sub" / "margins.npy")]
    kept = [run / "resume.pt", run / ".hidden", run / "notes.tmp", run / ".a.b.tmp"]
    for p in kept:
        p.write_text("x")
    with lock(run):
        assert not any(p.exists() for p in stale)
        assert all(p.exists() for p in kept)
    # a file output: its own temporaries beside it and in its companion folder, no one else's
    out = tmp_path / "ranking.npz"
    (tmp_path / "ranking.npz.parts").mkdir()
    mine = [killed_writer(out), killed_writer(tmp_path / "ranking.npz.parts" / "block-00000.npz")]
    other = killed_writer(tmp_path / "other.npz")
    with lock(out):
        assert not any(p.exists() for p in mine)
        assert other.exists()
