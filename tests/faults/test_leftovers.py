"""The fault corpus's leftovers (issue 24): silent wrong results and late failures, each
reproduced as a new user met it, then refused (or handled) with one line naming the culprit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from simattr._io import UNCHECKED_RESULTS, append_jsonl, read_jsonl
from simattr.errors import DamagedFileError

REPO = Path(__file__).resolve().parents[2]


# -- 1. records without their checksum ------------------------------------------------------


def _support_records(path: Path, supports: list[int]) -> None:
    for target, support in enumerate(supports):
        append_jsonl(
            path,
            {"target": target, "ranking": "esvm", "mode": "remove", "support": support,
             "status": "searched", "models_trained": 4, "seconds": 1.0, "settings": {"k": 64}},
        )  # fmt: skip


def _strip_checksum_and_edit(path: Path, line: int, **changes) -> None:
    """What the fault corpus did: delete a line's ``_crc32`` key and edit a value."""
    lines = path.read_text().splitlines()
    record = json.loads(lines[line - 1])
    del record["_crc32"]
    record.update(changes)
    lines[line - 1] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n")


def test_a_record_whose_checksum_was_deleted_and_value_edited_is_refused(tmp_path):
    path = tmp_path / "results.jsonl"
    _support_records(path, [11, 11, 11])
    _strip_checksum_and_edit(path, 2, support=4)
    with pytest.raises(
        DamagedFileError, match=r"results\.jsonl is damaged: line 2 has no checksum"
    ):
        read_jsonl(path)


def test_support_report_refuses_a_record_without_its_checksum(tmp_path):
    """Through the command: ``support-report`` used to print median 4 instead of 11."""
    from typer.testing import CliRunner

    from simattr.cli import app

    path = tmp_path / "results.jsonl"
    _support_records(path, [11, 11, 11])
    _strip_checksum_and_edit(path, 1, support=4)
    result = CliRunner().invoke(app, ["support-report", str(path), "--out", str(tmp_path / "r")])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 1, result.output
    assert str(path) in errors[0] and "line 1 has no checksum" in errors[0]
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("name", [entry[0] for entry in UNCHECKED_RESULTS])
def test_every_committed_results_file_still_reads(name):
    """The committed results from before checksums read as they are, with every line."""
    path = REPO / name
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    assert all('"_crc32"' not in line for line in lines)
    assert read_jsonl(path) == [json.loads(line) for line in lines]


def test_committed_results_are_recognised_by_content_not_by_path(tmp_path):
    """A copy reads, and reads on with checked records appended (a resumed run); an edited
    value or a removed line (the file is no longer what was committed: its first line is named)
    or an unchecked line appended after them is refused."""
    name, _, _ = UNCHECKED_RESULTS[-1]
    original = REPO / name
    n = len(read_jsonl(original))
    copy = tmp_path / "copy.jsonl"
    shutil.copy(original, copy)
    append_jsonl(copy, {"target": 999})
    assert len(read_jsonl(copy)) == n + 1

    lines = original.read_text().splitlines(keepends=True)
    edited = json.loads(lines[2])
    edited[next(iter(edited))] = "edited"
    for bad, line in [
        ([*lines[:2], json.dumps(edited) + "\n", *lines[3:]], 1),
        ([*lines[:1], *lines[2:]], 1),
        ([*lines, lines[0]], len(lines) + 1),
    ]:
        copy.write_text("".join(bad))
        with pytest.raises(DamagedFileError, match=rf"line {line} has no checksum"):
            read_jsonl(copy)
