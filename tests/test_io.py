"""Atomic writes: all or nothing, and files with the usual permissions."""

from __future__ import annotations

import os

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
