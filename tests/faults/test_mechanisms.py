"""One unit test per integrity mechanism of ``simattr._io``, ``validation`` and ``Ranking``."""

from __future__ import annotations

import os

import numpy as np
import pytest
from faultkit import flip_byte

from simattr._io import (
    append_jsonl,
    check_not_input,
    check_writable,
    lock,
    lock_path,
    read_json,
    read_jsonl,
    verify_checksum,
    write_with_sidecar,
)
from simattr.attribution import Ranking
from simattr.errors import DamagedFileError, InvalidInputError, LockedError


def test_checksum_is_written_with_the_file_and_checked_on_read(tmp_path):
    path = write_with_sidecar(tmp_path / "a.bin", lambda t: t.write_bytes(b"x" * 100), {"k": 1})
    meta = read_json(tmp_path / "a.bin.json")
    assert meta["k"] == 1 and meta["bytes"] == 100 and len(meta["sha256"]) == 64
    verify_checksum(path)
    flip_byte(path)
    with pytest.raises(DamagedFileError, match=r"a\.bin is damaged"):
        verify_checksum(path)
    (tmp_path / "a.bin.json").unlink()
    verify_checksum(path)  # a file without our sidecar is a user's file: not checked


def test_damaged_json_is_one_error_naming_the_file(tmp_path):
    (tmp_path / "m.json").write_text("{")
    with pytest.raises(DamagedFileError, match=r"m\.json is damaged: not valid JSON"):
        read_json(tmp_path / "m.json")


def test_outputs_never_name_an_input(tmp_path):
    src = tmp_path / "in.npy"
    src.write_bytes(b"1")
    os.link(src, tmp_path / "hard.npy")
    for out in (src, tmp_path / "sub" / ".." / "in.npy", tmp_path / "hard.npy"):
        with pytest.raises(InvalidInputError, match="would overwrite the input --x"):
            check_not_input({"--out": out}, {"--x": src})
    with pytest.raises(InvalidInputError, match="both name"):
        check_not_input({"--a": tmp_path / "o", "--b": tmp_path / "o"}, {})
    check_not_input({"--out": tmp_path / "other.npy"}, {"--x": src, "--y": None})


def test_unwritable_outputs_are_refused_before_any_work(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(InvalidInputError, match="is a file, not a folder"):
        check_writable(tmp_path / "f" / "out.npy")
    with pytest.raises(InvalidInputError, match="is a file; give a folder"):
        check_writable(tmp_path / "f", folder=True)
    check_writable(tmp_path / "new" / "deeper" / "out.npy")
    assert not (tmp_path / "new").exists()


def test_writability_refusals_say_what_the_path_is_and_what_was_wanted(tmp_path, monkeypatch):
    """A file path that is a folder, or a folder path that is a file, is refused saying which
    (as `` `out` `` unless named otherwise); an existing file may be overwritten; permission is
    asked of the folder written in: the output folder itself, or a file's parent folder."""
    import simattr._io as io_mod

    afile = tmp_path / "a.npz"
    afile.write_bytes(b"")
    check_writable(afile)  # an existing file path: overwritten, fine
    with pytest.raises(InvalidInputError, match=r"^`out` .* is a folder; give a file path$"):
        check_writable(tmp_path)
    with pytest.raises(InvalidInputError, match=r"^--cache .* is a file; give a folder$"):
        check_writable(afile, "--cache", folder=True)

    denied = tmp_path / "locked"
    denied.mkdir()
    real_access = os.access

    def access(path, mode):  # tests run as root: simulate a folder without write permission
        if os.path.abspath(path) == str(denied) and mode & os.W_OK:
            return False
        return real_access(path, mode)

    monkeypatch.setattr(io_mod.os, "access", access)
    with pytest.raises(InvalidInputError, match=r"^cannot write `out` .*: no permission"):
        check_writable(denied / "r.npz")
    with pytest.raises(InvalidInputError, match=r"^cannot write --cache .*: no permission"):
        check_writable(denied, "--cache", folder=True)
    check_writable(tmp_path / "free", "--cache", folder=True)


def test_same_file_is_false_when_a_path_cannot_be_examined(tmp_path):
    """A path the system refuses to examine (a name too long) is not taken for an input."""
    from simattr._io import same_file

    existing = tmp_path / "in.npy"
    existing.write_bytes(b"x")
    assert not same_file(existing, tmp_path / ("x" * 300))
    check_not_input({"--out": tmp_path / ("x" * 300)}, {"--ranking": existing})


def test_checksum_refusals_name_the_file_and_what_changed(tmp_path):
    """A truncated file is reported by its size, a same-size change by its SHA-256; the
    message starts with the caller's name for the file, or the bare path without one; a
    sidecar that is not an object holds no checksum to check."""
    import re

    path = write_with_sidecar(tmp_path / "r.bin", lambda t: t.write_bytes(b"0123456789"), {})
    path.write_bytes(b"012")
    bare = re.escape(str(path))
    with pytest.raises(DamagedFileError, match=rf"^{bare} is damaged: it has 3 bytes, not the 10"):
        verify_checksum(path)
    path.write_bytes(b"0123456780")
    with pytest.raises(DamagedFileError, match=rf"^--ranking {bare} is damaged: it has bytes that"
                       r" do not match the SHA-256"):  # fmt: skip
        verify_checksum(path, name="--ranking")
    verify_checksum(path, ["not", "a", "sidecar"])


def test_lock_refuses_a_live_holder_and_takes_over_a_dead_ones(tmp_path, holder):
    out = tmp_path / "deep" / "results.jsonl"
    proc = holder(out)
    with pytest.raises(LockedError, match=f"pid {proc.pid}"), lock(out):
        pass
    proc.kill()
    proc.wait()
    assert lock_path(out).exists()  # left by the killed holder: stale
    with lock(out):
        with lock(out):  # re-entrant in one process
            pass
        assert lock_path(out).exists()
    assert not lock_path(out).exists()


def test_a_refused_lock_leaves_no_folder_behind(tmp_path):
    with pytest.raises(RuntimeError), lock(tmp_path / "a" / "b" / "out"):
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "targets, indices, kwargs, pattern",
    [
        ([0, 1], [[1, 1], [2, 3]], {}, "more than once"),
        ([-1, 1], [[1, 2], [2, 3]], {}, "target -1"),
        ([0, 9], [[1, 2], [2, 3]], {"n_test": 5}, r"target 9 .* outside \[0, 5\)"),
        ([0, 0], [[1, 2], [2, 3]], {}, "ranked twice"),
        ([0, 1], [[1, 7], [2, 3]], {"n_train": 5}, "outside the 5-image training split"),
        ([0, 1], [[1, 2], [2, 3]], {"pool": np.array([1, 2])}, "training row 3"),
        ([0, 1], [[-1, 2], [2, 3]], {}, "unranked"),
    ],
)
def test_rankings_are_validated_against_their_data(targets, indices, kwargs, pattern):
    r = Ranking(np.array(targets), np.array(indices), np.ones((2, 2)))
    with pytest.raises(InvalidInputError, match=pattern):
        r.check(**kwargs)


def test_ranking_dtypes_and_dataset_identity():
    with pytest.raises(InvalidInputError, match="must be integers"):
        Ranking(np.array([0]), np.array([[1.5]]), np.ones((1, 1)))
    r = Ranking([0], [[1]], [[1.0]], metadata={"data_fingerprints": {"train": "a", "test": "b"}})
    r.check(fingerprints={"train": "a", "test": "b"})
    with pytest.raises(InvalidInputError, match="another train split"):
        r.check(fingerprints={"train": "c", "test": "b"})
    assert r.digest != Ranking([0], [[2]], [[1.0]]).digest


def _two_records(path) -> list[dict]:
    records = [
        {"target": 3, "steps": [{"m": 24, "flipped": True, "by": None}], "support": 218.5},
        {"target": -4, "ranking": "esvm", "found": False, "note": "a } in a string"},
    ]
    for record in records:
        append_jsonl(path, record)
    return records


def test_every_bit_flip_in_a_jsonl_file_is_caught(tmp_path):
    """Each line carries its CRC-32: no single flipped bit yields a record silently changed or
    dropped (a flip of the last newline into other whitespace changes nothing)."""
    path = tmp_path / "r.jsonl"
    records = _two_records(path)
    data = path.read_bytes()
    assert read_jsonl(path) == records
    for i in range(len(data)):
        for bit in range(8):
            flipped = bytearray(data)
            flipped[i] ^= 1 << bit
            path.write_bytes(bytes(flipped))
            try:
                assert read_jsonl(path) == records, (i, bit)
            except DamagedFileError as exc:
                assert str(path) in str(exc) and "line" in str(exc)


def test_a_jsonl_line_cut_short_is_skipped_not_refused(tmp_path):
    """What a killed writer leaves (any prefix of the last line) reads as the records before
    it; the next append starts a fresh line, so the file reads on."""
    path = tmp_path / "r.jsonl"
    records = _two_records(path)
    data = path.read_bytes()
    first_end = data.index(b"\n") + 1
    for cut in range(first_end, len(data) - 1):
        path.write_bytes(data[:cut])
        assert read_jsonl(path) == records[:1], cut
        append_jsonl(path, {"after": cut})
        assert read_jsonl(path) == [*records[:1], {"after": cut}]


def test_a_cut_in_a_literal_or_a_number_is_a_cut_not_damage(tmp_path):
    """A kill can stop a line in the middle of ``true``, ``null`` or a number: every prefix of
    such a record reads as the records before it."""
    _each_cut_of_the_second_record_reads_as_the_first(
        tmp_path / "r.jsonl", {"target": 1}, {"ok": True, "by": None, "x": -1.5e-3, "found": False}
    )


def _each_cut_of_the_second_record_reads_as_the_first(path, first: dict, second: dict) -> None:
    """Write two records, then cut the file at every byte of the second: each cut reads as
    the first record alone (what a killed writer leaves is skipped, not refused)."""
    append_jsonl(path, first)
    append_jsonl(path, second)
    data = path.read_bytes()
    first_end = data.index(b"\n") + 1
    for cut in range(first_end, len(data) - 1):
        path.write_bytes(data[:cut])
        assert read_jsonl(path) == [first], data[first_end:cut]


def test_jsonl_records_without_a_checksum_are_refused_outside_committed_results(tmp_path):
    """A whole line without its checksum is refused naming the file and line (a cut last line
    is still skipped); a record may not bring its own checksum key."""
    path = tmp_path / "old.jsonl"
    path.write_text('{"target": 1, "support": 4}\n{"target": 2, "sup\n')
    with pytest.raises(DamagedFileError, match=r"old\.jsonl is damaged: line 1 has no checksum"):
        read_jsonl(path)
    path.write_text('{"target": 2, "sup')
    assert read_jsonl(path) == []
    with pytest.raises(ValueError, match="_crc32"):
        append_jsonl(path, {"_crc32": "x"})


def test_a_key_one_bit_from_the_checksum_key_is_a_damaged_checksum(tmp_path):
    """A record whose last key is the checksum key with one bit flipped is damage (refused as
    not the record written); one merely like it (two characters differ) has no checksum."""
    path = tmp_path / "old.jsonl"
    path.write_text('{"target": 1, "_crc16": "ab12"}\n')
    with pytest.raises(DamagedFileError, match="line 1 has no checksum"):
        read_jsonl(path)
    path.write_text('{"target": 1, "_crc22": "ab12"}\n')  # "3" -> "2": one bit
    with pytest.raises(DamagedFileError, match="line 1 is not the record that was written"):
        read_jsonl(path)


def test_jsonl_lines_are_compact_with_the_crc32_of_the_line_without_it(tmp_path):
    """Each record is one compact line ending in the CRC-32 (checked with zlib) of the line as
    it would be without it; appends add no blank lines."""
    import json
    import zlib

    path = tmp_path / "r.jsonl"
    records = [{"a": 1, "b": [True, None]}, {"c": "x y"}]
    for record in records:
        append_jsonl(path, record)
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 3
    for line, record in zip(lines, records, strict=False):
        body = json.dumps(record, separators=(",", ":")).encode()
        assert line == body[:-1] + b',"_crc32":"%08x"}' % zlib.crc32(body)


def test_the_lock_file_sits_beside_the_output_and_names_its_holder(tmp_path):
    """``<output>.lock`` holds the holder's pid, host, start time and command while locked."""
    import json
    import socket
    import sys

    out = tmp_path / "results.jsonl"
    with lock(out):
        holder = json.loads((tmp_path / "results.jsonl.lock").read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    assert holder["command"] == " ".join(sys.argv[:3]) and holder["since"]
    assert lock_path(out) == tmp_path / "results.jsonl.lock"


def test_a_cut_record_with_a_nested_checksum_key_is_skipped(tmp_path):
    """Only the record's own checksum, at the end of the line, makes a line whole: a key of the
    same name nested inside a record cut short does not turn the cut into a refusal."""
    _each_cut_of_the_second_record_reads_as_the_first(
        tmp_path / "r.jsonl", {"a": 1}, {"meta": {"_crc32": "abc"}, "ok": True}
    )


def test_an_output_that_is_a_symlink_loop_is_checked_not_a_traceback(tmp_path):
    """A symlink loop given as an output is not an input (and no RuntimeError escapes)."""
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    (tmp_path / "in.npy").write_bytes(b"x")
    check_not_input({"--out": tmp_path / "a"}, {"--ranking": tmp_path / "in.npy"})
