"""A practitioner's workflow on their own folder of images (issue 15), end to end on real files.

The folder is built from real CIFAR-10 images of the shared copy: PNG and JPEG files of mixed
sizes in ``train/<class>/`` and ``test/<class>/``. Features come from the CLI itself, so every
test reads what a user's run would have written.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from clikit import embed_folder, invoke
from PIL import Image

CLASSES = ("airplane", "cat", "frog", "ship")
N_TRAIN = {"airplane": 12, "cat": 12, "frog": 12, "ship": 5}  # ship: a small class pool
N_TEST = 3


def _build_folder(root: Path, cifar_train, cifar_test) -> None:
    """``root/{train,test}/<class>/`` with real CIFAR-10 images, saved as PNG or JPEG and
    upscaled to mixed sizes (a user's photos are not all 32x32)."""
    names = list(cifar_train.class_names)
    for split, data, counts in (
        ("train", cifar_train, N_TRAIN),
        ("test", cifar_test, dict.fromkeys(CLASSES, N_TEST)),
    ):
        for name in CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True)
            rows = np.flatnonzero(data.labels == names.index(name))[: counts[name]]
            for i, row in enumerate(rows):
                image = Image.fromarray(data.get_images([row])[0])
                size = (32, 48, 64)[i % 3]
                image = image.resize((size, size), Image.Resampling.BICUBIC)
                suffix = ".png" if i % 2 == 0 else ".jpg"
                image.save(folder / f"{name}_{row:05d}{suffix}")


@pytest.fixture(scope="module")
def photos(tmp_path_factory, cifar_train, cifar_test) -> Path:
    root = tmp_path_factory.mktemp("photos") / "mydata"
    _build_folder(root, cifar_train, cifar_test)
    return root


@pytest.fixture(scope="module")
def photo_features(photos, tmp_path_factory) -> tuple[Path, Path]:
    return embed_folder(photos, tmp_path_factory.mktemp("photo-features"))


def _files(root: Path, split: str) -> list[Path]:
    return sorted((root / split).glob("*/*"))


def _error_lines(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("error:")]


# -- provenance ----------------------------------------------------------------------------------
def test_sidecars_record_source_ids_and_image_size(photos, photo_features):
    from simattr.data import load_dataset, source_ids, source_ids_digest

    train_meta = json.loads(Path(f"{photo_features[0]}.json").read_text())["dataset"]
    ids = source_ids(photos, load_dataset(photos, "train"))
    assert ids[0] == "train/airplane/" + sorted(os.listdir(photos / "train" / "airplane"))[0]
    assert train_meta["source_ids_digest"] == source_ids_digest(ids)
    assert train_meta["root"] == str(photos)
    assert train_meta["image_size"] is None


def test_attribute_refuses_features_of_files_moved_between_class_folders(
    photos, photo_features, tmp_path
):
    root = tmp_path / "moved"
    shutil.copytree(photos, root)  # keeps sizes and times: the same fingerprint as photos
    train, test = tmp_path / "train.npy", tmp_path / "test.npy"
    for made, copy in zip(photo_features, (train, test), strict=True):
        shutil.copy(made, copy)
        shutil.copy(f"{made}.json", f"{copy}.json")
    base = ("attribute", "--train-features", train, "--test-features", test, "--data", root,
            "--method", "cosine")  # fmt: skip
    ok = invoke(*base, "--topk", "3", "--out", tmp_path / "before.npz")
    assert ok.exit_code == 0, ok.output
    meta = json.loads((tmp_path / "before.npz.json").read_text())
    assert meta["source_ids"]["root"] == str(root)
    assert meta["target_labels"] == [CLASSES.index(p.parent.name) for p in _files(root, "test")]
    assert set(meta["source_ids"]) == {"root", "train", "test"}

    moved = sorted((root / "train" / "cat").iterdir())[0]
    moved.rename(root / "train" / "frog" / moved.name)  # a user re-sorts one picture
    out = tmp_path / "after.npz"
    result = invoke(*base, "--topk", "3", "--out", out)
    assert result.exit_code == 1
    (line,) = _error_lines(result)
    assert f"--train-features {train}" in " ".join(result.output.split())
    assert "moved between class folders" in line
    rebuild = f"simattr features --data {root} --split train --backbone random:0 --out {train}"
    assert rebuild in " ".join(result.output.split())
    assert not out.exists()

    # the command it names makes the features agree with the data again
    again = invoke(*rebuild.split()[1:])
    assert again.exit_code == 0, again.output
    assert invoke(*base, "--topk", "3", "--out", out).exit_code == 0


# -- table export --------------------------------------------------------------------------------
HEADER = [
    "target",
    "target_path",
    "target_label",
    "rank",
    "train_row",
    "train_path",
    "train_label",
    "score",
]


def test_attribute_csv_names_files_and_classes(photos, photo_features, tmp_path):
    from simattr.attribution import load_ranking
    from simattr.report import ranking_rows

    train, test = photo_features
    out, table = tmp_path / "r.npz", tmp_path / "top.csv"
    result = invoke(
        "attribute", "--train-features", train, "--test-features", test, "--data", photos,
        "--method", "cosine", "--topk", "4", "--out", out, "--csv", table,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with open(table, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == HEADER
    body = [dict(zip(HEADER, r, strict=True)) for r in rows[1:]]
    ranking = load_ranking(out)
    assert len(body) == len(ranking.targets) * 4 == len(CLASSES) * N_TEST * 4
    for row in body:
        target_file, train_file = photos / row["target_path"], photos / row["train_path"]
        assert target_file.is_file() and train_file.is_file()
        # the class is the folder the file lies in, by name
        assert target_file.parent.name == row["target_label"] == row["train_label"]
        assert row["target_path"].startswith("test/") and row["train_path"].startswith("train/")
    first = ranking.targets[0]
    mine = [r for r in body if int(r["target"]) == first]
    assert [int(r["rank"]) for r in mine] == [1, 2, 3, 4]
    assert [int(r["train_row"]) for r in mine] == ranking.indices[0].tolist()
    assert [float(r["score"]) for r in mine] == ranking.scores[0].tolist()
    # the Python API gives the same rows
    api = ranking_rows(ranking, str(photos))
    assert [{k: str(v) for k, v in r.items()} for r in api] == [
        {**r, "score": str(float(r["score"]))} for r in body
    ]


def test_attribute_table_as_parquet(photos, photo_features, tmp_path):
    import pyarrow.parquet as pq

    train, test = photo_features
    table = tmp_path / "top.parquet"
    result = invoke(
        "attribute", "--train-features", train, "--test-features", test, "--data", photos,
        "--method", "cosine", "--topk", "2", "--targets", "0,5", "--out", tmp_path / "r.npz",
        "--csv", table,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    read = pq.read_table(table)
    assert read.column_names == HEADER
    assert str(read.schema.field("score").type) == "double"
    assert read.num_rows == 4 and read.column("rank").to_pylist() == [1, 2, 1, 2]
    assert sorted(set(read.column("target").to_pylist())) == [0, 5]
    assert all((photos / p).is_file() for p in read.column("train_path").to_pylist())


def test_table_refusals_leave_nothing(photos, photo_features, tmp_path):
    train, test = photo_features
    before = train.read_bytes()
    base = ("attribute", "--train-features", train, "--test-features", test, "--data", photos)
    for table, message in (
        (train, "would overwrite the input --train-features"),
        (tmp_path / "top.txt", "ends in .parquet"),
        (tmp_path / "r.npz", "both name"),
    ):
        result = invoke(*base, "--out", tmp_path / "r.npz", "--csv", table)
        assert result.exit_code == 1, result.output
        assert len(_error_lines(result)) == 1 and message in result.output
    assert train.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_table_of_a_parquet_dataset_uses_split_row_ids(data_root, cifar_train, cifar_test):
    from simattr.ranking import Ranking
    from simattr.report import ranking_rows

    ranking = Ranking(targets=[7], indices=[[5, 11, -1]], scores=[[0.5, -0.25, np.nan]])
    rows = ranking_rows(ranking, str(data_root / "cifar10"))
    names = cifar_train.class_names
    assert [(r["target_path"], r["train_path"], r["rank"]) for r in rows] == [
        ("test:7", "train:5", 1),
        ("test:7", "train:11", 2),
    ]  # the unranked slot has no row
    assert rows[0]["target_label"] == names[cifar_test.labels[7]]
    assert rows[1]["train_label"] == names[cifar_train.labels[11]]


# -- --topk above a class pool -------------------------------------------------------------------
def test_topk_above_a_class_pool_returns_the_whole_pool_with_one_warning(
    photos, photo_features, tmp_path
):
    from simattr.attribution import load_ranking
    from simattr.data import load_dataset

    train, test = photo_features
    out, table = tmp_path / "r.npz", tmp_path / "top.csv"
    result = invoke(
        "attribute", "--train-features", train, "--test-features", test, "--data", photos,
        "--method", "cosine", "--topk", "8", "--out", out, "--csv", table,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if line.startswith("note:")]
    ship = CLASSES.index("ship")
    assert len(notes) == 1 and f"pool of label {ship} ({N_TRAIN['ship']} images)" in notes[0]
    ranking = load_ranking(out).check(n_test=len(CLASSES) * N_TEST, n_train=sum(N_TRAIN.values()))
    assert ranking.k == 8
    labels = load_dataset(photos, "train").labels
    for row, target in enumerate(ranking.targets):
        idx = ranking.indices[row]
        if photos_label(photos, int(target)) == "ship":
            assert sorted(idx[:5].tolist()) == np.flatnonzero(labels == ship).tolist()
            assert idx[5:].tolist() == [-1, -1, -1] and np.isnan(ranking.scores[row, 5:]).all()
        else:
            assert (idx >= 0).all() and np.isfinite(ranking.scores[row]).all()
    n_rows = len(table.read_text().splitlines()) - 1
    assert n_rows == (len(CLASSES) - 1) * N_TEST * 8 + N_TEST * N_TRAIN["ship"]


def photos_label(root: Path, test_row: int) -> str:
    return _files(root, "test")[test_row].parent.name


def test_topk_above_the_training_set_and_in_the_api(photo_features):
    from simattr.attribution import Attributor, SmallPoolWarning

    x = np.load(photo_features[0])
    labels = np.repeat(np.arange(4), [12, 12, 12, 5])
    fitted = Attributor("cosine").fit(x, labels)
    with pytest.warns(SmallPoolWarning, match="pool of label 3 .5 images"):
        idx, scores = fitted.topk(x[[0, 40]], [0, 3], k=20)
    assert idx.shape == (2, 12)  # as wide as the largest pool asked for
    assert idx[0, 0] == 0 and (idx[1, 5:] == -1).all() and np.isnan(scores[1, 5:]).all()
    assert sorted(idx[1, :5].tolist()) == [36, 37, 38, 39, 40]
    everything = Attributor("cosine", class_conditional=False).fit(x)
    with pytest.warns(SmallPoolWarning, match="training set .41 images"):
        idx, _ = everything.topk(x[:2], k=100)
    assert idx.shape == (2, 41) and sorted(idx[0].tolist()) == list(range(41))


# -- progress in a log ---------------------------------------------------------------------------
@pytest.mark.slow
def test_progress_is_plain_lines_when_stderr_is_a_pipe(photos, tmp_path):
    out = tmp_path / "f.npy"
    env = {**os.environ, "SIMATTR_PROGRESS_INTERVAL": "0", "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "simattr", "features", "--data", str(photos), "--split", "train",
         "--backbone", "random:0", "--batch-size", "8", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("features:")]
    n = sum(N_TRAIN.values())
    counts = [int(line.split()[1].split("/")[0]) for line in lines]
    # one line per batch of 8 (interval 0), then the closing line; no bar, no escape codes
    assert counts == [8, 16, 24, 32, 40, n, n]
    assert lines[0] == f"features: 8/{n} ({100 * 8 / n:.0f}%), " + lines[0].split(", ", 1)[1]
    assert "s left" in lines[0] and "done in" in lines[-1]
    assert "\x1b[" not in done.stderr and "━" not in done.stderr
    assert out.exists()


def test_plain_progress_keeps_short_loops_quiet(capsys, monkeypatch):
    from simattr._progress import progress_bar

    monkeypatch.delenv("SIMATTR_PROGRESS_INTERVAL", raising=False)
    with progress_bar("quick", 3) as advance:  # pytest's stderr is no terminal
        for _ in range(3):
            advance(1)
    assert capsys.readouterr().err == ""


# -- explaining a model's predictions ------------------------------------------------------------
def test_predictions_csv_explains_the_predicted_class(photos, photo_features, tmp_path):
    train, test = photo_features
    test_files = _files(photos, "test")
    cat = next(f for f in test_files if f.parent.name == "cat")
    frog = next(f for f in test_files if f.parent.name == "frog")
    plane = next(f for f in test_files if f.parent.name == "airplane")
    preds = tmp_path / "preds.csv"
    preds.write_text(
        "file,class\n"
        f"{cat.relative_to(photos).as_posix()},ship\n"  # a mistake of the model
        f"{frog.resolve()},2\n"  # an absolute path, a class index (frog)
        f"{plane.relative_to(photos).as_posix()},airplane\n"
    )
    out, table = tmp_path / "r.npz", tmp_path / "top.csv"
    result = invoke(
        "attribute", "--train-features", train, "--test-features", test, "--data", photos,
        "--method", "cosine", "--topk", "3", "--predictions", preds, "--out", out, "--csv", table,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with open(table, newline="") as fh:
        rows = list(csv.DictReader(fh))
    explained = {}
    for row in rows:
        explained.setdefault(row["target_path"], set()).add(
            (row["target_label"], row["train_label"])
        )
    rel = {f: f.relative_to(photos).as_posix() for f in (cat, frog, plane)}
    # only the listed files are targets, each ranked within the class the model chose
    assert explained == {
        rel[cat]: {("ship", "ship")},
        rel[frog]: {("frog", "frog")},
        rel[plane]: {("airplane", "airplane")},
    }
    assert len(rows) == 9
    meta = json.loads((tmp_path / "r.npz.json").read_text())
    assert meta["explained"] == "predicted classes" and str(preds) in meta["labels"]


def test_predictions_npy_gives_every_test_image_its_class(photos, photo_features, tmp_path):
    from simattr.attribution import load_ranking
    from simattr.data import load_dataset

    train, test = photo_features
    n_test = len(CLASSES) * N_TEST
    predicted = np.full(n_test, CLASSES.index("frog"), dtype=np.int64)  # a model that says frog
    np.save(tmp_path / "p.npy", predicted)
    out = tmp_path / "r.npz"
    result = invoke(
        "attribute", "--train-features", train, "--test-features", test, "--data", photos,
        "--method", "cosine", "--topk", "4", "--predictions", tmp_path / "p.npy", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    ranking = load_ranking(out)
    labels = load_dataset(photos, "train").labels
    assert len(ranking.targets) == n_test
    assert (labels[ranking.indices] == CLASSES.index("frog")).all()
    assert ranking.metadata["target_labels"] == predicted.tolist()


def test_predictions_refusals_name_the_fault(photos, photo_features, tmp_path):
    train, test = photo_features
    work = tmp_path / "w"
    work.mkdir()
    first = _files(photos, "test")[0].relative_to(photos).as_posix()
    np.save(work / "short.npy", np.zeros(5, dtype=np.int64))
    (work / "unknown-file.csv").write_text(f"{first},cat\ntest/cat/nothere.png,cat\n")
    (work / "unknown-class.csv").write_text(f"{first},dog\n")
    (work / "p.csv").write_text(f"{first},cat\n")
    base = ("attribute", "--train-features", train, "--test-features", test, "--data", photos,
            "--method", "cosine", "--topk", "3", "--out", work / "r.npz")  # fmt: skip
    for args, message in (
        (("--predictions", work / "short.npy"), "has 5 predictions but the test split has 12"),
        (("--predictions", work / "unknown-file.csv"), "line 2: 'test/cat/nothere.png' is no"),
        (("--predictions", work / "unknown-class.csv"), "unknown class 'dog'; the classes are"),
        (("--predictions", work / "p.csv", "--targets", "0,4"), "test row 4 (test/cat/"),
        (("--predictions", work / "gone.csv"), "no such file"),
        (("--predictions", work / "p.csv", "--all-classes"), "no pool to choose"),
    ):
        result = invoke(*base, *args)
        assert result.exit_code == 1, result.output
        (line,) = _error_lines(result)
        assert message in line, line
    assert sorted(p.name for p in work.iterdir()) == [
        "p.csv",
        "short.npy",
        "unknown-class.csv",
        "unknown-file.csv",
    ]


def test_progress_is_a_bar_on_a_terminal():
    import pty

    code = (
        "from simattr._progress import progress_bar\n"
        "with progress_bar('features', 3) as advance:\n"
        "    for _ in range(3): advance(1)\n"
    )
    leader, follower = pty.openpty()
    env = {**os.environ, "SIMATTR_PROGRESS_INTERVAL": "0"}
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], stderr=follower, env=env, timeout=120, check=False
        )
        os.close(follower)
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed: all was read
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(leader)
    text = seen.decode(errors="replace")
    assert done.returncode == 0
    assert "━" in text and "3/3" in text and "features: 3/3" not in text
