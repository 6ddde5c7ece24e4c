"""The fault corpus's leftovers (issue 24): silent wrong results and late failures, each
reproduced as a new user met it, then refused (or handled) with one line naming the culprit."""

from __future__ import annotations

import errno
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from simattr._io import UNCHECKED_RESULTS, append_jsonl, read_jsonl
from simattr.errors import DamagedFileError, InvalidInputError

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


# -- 2. features that overflow or are all zero ------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    from simattr.data import load_dataset

    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    flat = [ds.pixels.reshape(len(ds), -1).astype(np.float32) / 255 for ds in (train, test)]
    return flat[0], train.labels, flat[1], test.labels


@pytest.mark.parametrize("method", ["esvm", "cosine", "l2", "l2-raw"])
def test_features_that_overflow_are_refused_not_ranked_as_ties(method, digits):
    """``X * 1e37`` in float32: the norms (or the raw distances) overflow, every score tied
    and the ranking was the training order, with only a numpy warning."""
    from simattr.attribution import Attributor

    X, y, T, ty = digits
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # refused before numpy can warn
        with pytest.raises(InvalidInputError, match=r"^train_features .*(overflow|1e\+37)"):
            Attributor(method).fit(X * np.float32(1e37), y)
        fitted = Attributor(method).fit(X, y)
        with pytest.raises(InvalidInputError, match=r"^target_features .*(overflow|1e\+37)"):
            fitted.topk(T[:3] * np.float32(1e37), ty[:3], 5)
    # features at a large but safe scale rank as the originals do (scale-free methods)
    if method != "l2-raw":
        a = Attributor(method).fit(X, y).topk(T[:3], ty[:3], 5)[0]
        big = Attributor(method).fit(X * np.float32(1e6), y)
        b = big.topk(T[:3] * np.float32(1e6), ty[:3], 5)[0]
        assert (a == b).mean() > 0.9


@pytest.mark.parametrize("method", ["esvm", "cosine", "l2-raw"])
def test_all_zero_features_are_refused_naming_the_row(method, digits):
    """All-zero features ranked by index with no warning; an all-zero row has no direction."""
    from simattr.attribution import Attributor

    X, y, T, ty = digits
    pattern = r"are all zeros" if method == "l2-raw" else r"row 0 cannot be L2-normalised .*zeros"
    with pytest.raises(InvalidInputError, match=rf"^train_features {pattern}"):
        Attributor(method).fit(np.zeros_like(X), y)
    if method != "l2-raw":
        one = X.copy()
        one[7] = 0
        with pytest.raises(InvalidInputError, match=r"^train_features row 7 cannot be L2-norm"):
            Attributor(method).fit(one, y)
        target = T[:3].copy()
        target[2] = 0
        with pytest.raises(InvalidInputError, match=r"^target_features row 2 .*all zeros"):
            Attributor(method).fit(X, y).topk(target, ty[:3], 5)


def test_normalisation_refusals_name_the_row_of_the_whole_array():
    """Chunked callers pass the first row of their chunk: the message names the row of the
    whole array; a row too small to square is told apart from a zero row."""
    from simattr.validation import check_magnitude, l2_normalize

    x = np.ones((4, 3), dtype=np.float32)
    x[2] = 1e-30
    with pytest.raises(InvalidInputError, match=r"^f row 70002 .*underflows float32"):
        l2_normalize(x, "f", first_row=70000)
    with pytest.raises(InvalidInputError, match=r"^rows 10-13 of f are all zeros"):
        check_magnitude(np.zeros((4, 3)), "f", first_row=10)
    unit = l2_normalize(np.ones((4, 3), dtype=np.float32))
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-6)


# -- 3. outputs: checked before the work, named when the disk fails, never cut by a pipe -------


def test_features_out_in_a_folder_that_takes_no_files_is_refused_before_embedding(
    work, monkeypatch
):
    """``/proc`` passes the permission bits (as root) but takes no new file: it used to be
    found out only after the whole split was embedded."""
    from test_cli_faults import FEATURES, refuse

    import simattr.features

    def embed(*args, **kwargs):
        raise AssertionError("the split was embedded before the output was checked")

    monkeypatch.setattr(simattr.features, "extract_features", embed)
    refuse(work, [*FEATURES, "--out", "/proc/x.npy"], r"^error: cannot write --out /proc/x\.npy"
           r": /proc takes no new files")  # fmt: skip


@pytest.mark.parametrize(
    "fault",
    [
        OSError(errno.ENOSPC, "No space left on device"),  # what a plain write raises
        OSError("4000 requested and 0 written"),  # what numpy's np.save raises on a full disk
    ],
)
def test_a_failed_write_names_the_file_and_leaves_nothing(fault, tmp_path, monkeypatch):
    from simattr.cli._common import describe_error
    from simattr.features import save_features

    def full_disk(*args, **kwargs):
        raise fault

    monkeypatch.setattr(np, "save", full_disk)
    out = tmp_path / "f.npy"
    with pytest.raises(OSError) as caught:
        save_features(out, np.ones((4, 3), dtype=np.float32))
    assert caught.value.filename == str(out)
    line = describe_error(caught.value)
    assert str(out) in line and (fault.strerror or str(fault)) in line, line
    assert list(tmp_path.iterdir()) == []  # no temporary file, no sidecar


def test_a_failed_append_names_the_results_file(tmp_path, monkeypatch):
    import os

    path = tmp_path / "r.jsonl"

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left") as caught:
        append_jsonl(path, {"a": 1})
    assert caught.value.filename == str(path) and caught.value.errno == errno.ENOSPC


def _attribute_args(w: Path) -> list:
    return [
        "attribute", "--train-features", w / "train.npy", "--test-features", w / "test.npy",
        "--data", "digits", "--method", "cosine", "--topk", "5", "--targets", "0,1,2",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "html, pattern",
    [
        ("r.npz", r"--out and --html both name"),
        ("r.npz/page", r"--html .* lies inside --out .*written as a file"),
    ],
)
def test_attribute_outputs_that_collide_are_refused_before_the_ranking(html, pattern, work):
    """``--html`` equal to ``--out`` left the ranking behind after exit 1."""
    from test_cli_faults import refuse

    refuse(work, [*_attribute_args(work), "--out", work / "r.npz", "--html", work / html], pattern)


def test_lds_with_zero_workers_is_refused_before_its_folder_is_made(work):
    from test_cli_faults import refuse

    args = ["lds", "--data", "digits", "--out", work / "new-lds", "--recipe", "tiny",
            "--subsets", "2", "--workers", "0"]  # fmt: skip
    refuse(work, args, r"--workers must be a positive integer, got 0")
    assert not (work / "new-lds").exists()


@pytest.mark.slow
def test_a_reader_closing_the_pipe_leaves_the_outputs_written(work):
    """``simattr attribute ... | head``: the reader leaves before the summary is printed; the
    ranking and its table are written all the same, and the run ends quietly (status 141, no
    traceback)."""
    import subprocess
    import sys

    args = [str(a) for a in _attribute_args(work)]
    out, csv = work / "r.npz", work / "r.csv"
    proc = subprocess.Popen(
        [sys.executable, "-m", "simattr", *args, "--out", str(out), "--csv", str(csv)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader is gone before anything is printed
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    from simattr.attribution import load_ranking

    assert load_ranking(out).indices.shape == (3, 5)
    assert len(csv.read_text().splitlines()) == 1 + 3 * 5


# -- 4. cache class names, file permissions, targets named as given --------------------------


def test_an_edited_class_name_in_the_cache_is_caught_and_the_entry_rebuilt(tmp_path, monkeypatch):
    """``meta.json``'s class names were not checksummed: an edit renamed a class silently."""
    from simattr.data import cache, load_dataset

    monkeypatch.setenv("SIMATTR_CACHE_DIR", str(tmp_path))
    digits = load_dataset("digits", "train")
    where = cache.save_entry(digits, None)
    args = (digits.name, digits.split, digits.fingerprint, None)
    assert cache.load_entry(*args).class_names == digits.class_names
    meta = json.loads((where / "meta.json").read_text())
    meta["class_names"][3] = "seven"
    (where / "meta.json").write_text(json.dumps(meta, indent=2))
    invalid = cache.stats.invalid
    assert cache.load_entry(*args) is None  # a miss: the caller decodes again
    assert cache.stats.invalid == invalid + 1 and not where.exists()


def test_train_ssl_writes_every_file_with_the_same_permissions(tmp_path):
    """The weights came out 0600 (safetensors makes its own file) and the rest 0644."""
    import os

    from typer.testing import CliRunner

    from simattr.cli import app

    out = tmp_path / "run"
    args = ["train-ssl", "--data", "digits", "--arch", "resnet18-w16", "--epochs", "1",
            "--batch-size", "64", "--queue-size", "128", "--max-steps", "1", "--knn-every",
            "100", "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    mask = os.umask(0)
    os.umask(mask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.rglob("*") if p.is_file()}
    assert "backbone.safetensors" in modes
    assert set(modes.values()) == {0o666 & ~mask}, modes


def test_a_target_whose_class_is_not_ranked_is_named_by_its_test_row(work):
    """``--targets 12`` with a training pool that lacks its class said "target row 0"."""
    from test_cli_faults import refuse

    from simattr.data import load_dataset

    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    label = int(test.labels[12])
    np.save(work / "rows.npy", np.flatnonzero(train.labels != label))
    args = [*_attribute_args(work)[:-2], "--targets", "5,12", "--train-indices", work / "rows.npy",
            "--out", work / "r.npz"]  # fmt: skip
    refuse(work, args, rf"--targets names test row 12, whose label {label} no image of the ranked")
