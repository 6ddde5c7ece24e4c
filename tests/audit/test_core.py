"""The dataset audit on real CIFAR-10 images: planted duplicates, leaks and label flips are found,
by the API and by ``simattr audit``; its tables and page are complete and escaped; bad input is
refused in one line with nothing written.

The audited split is 60 training images per class read straight from the shared Parquet copy
(no full decode), plus six planted near-duplicates (shifted or cropped-and-resized copies of
other rows with a brightness change) and three test images copied into the training split
(leaks); ten labels are flipped. Features come from the shipped backbone (no download).
"""

from __future__ import annotations

import csv
import html
import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from simattr.audit import audit, write_duplicates_csv, write_label_issues_csv
from simattr.cli import app
from simattr.errors import InvalidInputError
from simattr.report.html import Row, Section, Tile, gallery_html

N_PER_CLASS, N_DUP, N_LEAK, N_FLIP, N_TEST = 60, 6, 3, 10, 150
EVIL = "<script>alert(1)</script>"

runner = CliRunner()


def _read_parquet(path: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow.parquet as pq
    from PIL import Image

    table = pq.read_table(path).slice(0, n)
    images = np.stack(
        [
            np.asarray(Image.open(io.BytesIO(cell["bytes"])).convert("RGB"))
            for cell in table.column("img").to_pylist()
        ]
    )
    return images, np.asarray(table.column("label").to_pylist(), dtype=np.int64)


def _edited(img: np.ndarray, rng: np.random.Generator, crop: bool) -> np.ndarray:
    """A light edit: a crop of 28-30 pixels resized back, or a 2-pixel shift; then a
    brightness change."""
    from PIL import Image

    if crop:
        s = int(rng.integers(28, 31))
        x0, y0 = (int(v) for v in rng.integers(0, 33 - s, size=2))
        out = Image.fromarray(img).crop((x0, y0, x0 + s, y0 + s)).resize((32, 32), Image.BILINEAR)
        out = np.asarray(out).astype(np.int16)
    else:
        dy, dx = (int(v) for v in rng.integers(-2, 3, size=2))
        out = np.roll(img, (dy, dx), axis=(0, 1)).astype(np.int16)
    return np.clip(out + int(rng.integers(-12, 13)), 0, 255).astype(np.uint8)


pytestmark = pytest.mark.usefixtures("one_torch_thread")
#: CIFAR-10's own copies among the unplanted rows, looked at: train rows 48 and 53 are one
#: photograph mirrored; train row 67 and test row 79 one photograph shifted
GENUINE_PAIRS, GENUINE_LEAKS = {(48, 53)}, {(67, 79)}


@pytest.fixture(scope="module")
def planted(data_root):
    return make_planted(data_root)


def make_planted(data_root: Path) -> dict:
    """The planted split, its test split and what was planted where."""
    from simattr.features import extract_features
    from simattr.models import load_backbone

    train_images, train_labels = _read_parquet(data_root / "cifar10" / "train.parquet", 1000)
    test_images, test_labels = _read_parquet(data_root / "cifar10" / "test.parquet", N_TEST)
    rng = np.random.default_rng(0)
    rows = np.concatenate([np.flatnonzero(train_labels == c)[:N_PER_CLASS] for c in range(10)])
    images, labels = train_images[rows], train_labels[rows].copy()
    originals = rng.choice(len(rows), N_DUP, replace=False)
    leaks = rng.choice(N_TEST, N_LEAK, replace=False)
    copies = [_edited(images[o], rng, crop=i % 2 == 0) for i, o in enumerate(originals)]
    copies += [_edited(test_images[t], rng, crop=i % 2 == 1) for i, t in enumerate(leaks)]
    images = np.concatenate([images, np.stack(copies)])
    labels = np.concatenate([labels, labels[originals], test_labels[leaks]])
    flipped = rng.choice(len(rows), N_FLIP, replace=False)
    true = labels.copy()
    labels[flipped] = (labels[flipped] + rng.integers(1, 10, N_FLIP)) % 10
    net = load_backbone("default")
    return {
        "features": extract_features(net, images, progress=False),
        "labels": labels,
        "true": true,
        "images": images,
        "test_features": extract_features(net, test_images, progress=False),
        "test_images": test_images,
        "test_labels": test_labels,
        "dup_pairs": {(int(o), len(rows) + i) for i, o in enumerate(originals)},
        "leak_pairs": {(len(rows) + N_DUP + i, int(t)) for i, t in enumerate(leaks)},
        "flipped": flipped,
    }


@pytest.fixture(scope="module")
def result(planted):
    return audit(
        planted["features"],
        planted["labels"],
        num_classes=10,
        test_features=planted["test_features"],
        images=planted["images"],
        test_images=planted["test_images"],
    )


def _pairs(d, split: str) -> set[tuple[int, int]]:
    return {
        (int(a), int(b)) if split == "test" else tuple(sorted((int(a), int(b))))
        for a, b, s in zip(d.row_a, d.row_b, d.split_b, strict=True)
        if s == split
    }


def test_planted_duplicates_and_leaks_are_reported_and_nothing_else(planted, result):
    d = result.duplicates
    assert _pairs(d, "train") == planted["dup_pairs"] | GENUINE_PAIRS
    assert _pairs(d, "test") == planted["leak_pairs"] | GENUINE_LEAKS  # (train row, test row)
    assert (np.diff(d.similarity) <= 0).all()  # most similar first
    assert (d.similarity >= 0.9).all() and (d.pixel >= 0.9).all()
    assert sorted(len(g) for g in d.groups()) == [2] * (N_DUP + N_LEAK + 2)


def test_without_images_pairs_are_reported_on_cosine_alone(planted):
    r = audit(planted["features"], planted["labels"], evidence=0)
    d = r.duplicates
    assert d.pixel is None and (d.similarity >= 0.94).all()
    # the pixel check is what removes look-alikes: without it, more pairs than were planted
    assert planted["dup_pairs"] <= _pairs(d, "train")


def test_flipped_labels_rank_near_the_top_with_the_true_class_suggested(planted, result):
    issues = result.label_issues
    assert len(issues.score) == len(planted["labels"])  # every row scored
    assert set(issues.scores) == {"simattr", "knn"}
    found = np.intersect1d(issues.order[:30], planted["flipped"])
    # a know-nothing order would put 30 * 10 / 609 < 1 of them there; with 60 images a class
    # the features' out-of-sample accuracy is only about 54 %, so half is what they can show
    assert len(found) >= 5, f"only {len(found)} of {N_FLIP} flipped labels in the top 30"
    # the suggested class is the true one far more often than chance (1 in 9)
    assert (issues.suggested[found] == planted["true"][found]).mean() >= 0.4
    truth = np.isin(np.arange(len(planted["labels"])), planted["flipped"])
    assert roc_auc_score(truth, issues.score) >= 0.8
    # evidence: training images of the suggested class, for the first rows
    row = int(issues.order[0])
    assert len(issues.evidence[row]) == 5
    assert (planted["labels"][issues.evidence[row]] == issues.suggested[row]).all()


def test_cleanlab_detector_orders_the_issues(planted):
    pytest.importorskip("cleanlab")
    r = audit(planted["features"], planted["labels"], detector="cleanlab", evidence=0)
    issues = r.label_issues
    assert issues.detector == "cleanlab" and np.array_equal(issues.score, issues.scores["cleanlab"])
    found = np.intersect1d(issues.order[:30], planted["flipped"])
    assert len(found) >= 4


def test_audit_result_as_pandas_tables_with_a_short_repr(planted, result):
    labels = result.to_pandas()
    assert len(labels) == len(planted["labels"]) and labels["rank"].tolist()[:3] == [1, 2, 3]
    # without ids the paths are empty and labels indices; the flipped rows are suspected
    assert set(labels["path"]) == {""}
    suspected = set(labels.loc[labels["suspected"], "row"].tolist())
    # (weak features: 60 images a class; the cut is "another class is more probable")
    assert len(suspected & set(planted["flipped"].tolist())) >= 8
    assert len(suspected) < 0.6 * len(planted["labels"])
    pairs = result.to_pandas("duplicates")
    assert len(pairs) == len(result.duplicates)
    assert set(pairs["split_b"]) == {"train", "test"}
    for text in (repr(result), repr(result.label_issues), repr(result.duplicates)):
        assert len(text) < 300 and "array" not in text
    with pytest.raises(InvalidInputError, match="unknown table"):
        result.to_pandas("pairs")


def test_tables_list_every_row_and_pair(tmp_path, planted, result):
    ids = [f"train:{i}" for i in range(len(planted["labels"]))]
    names = [f"class<{c}>" for c in range(10)]
    path = write_label_issues_csv(tmp_path / "label_issues.csv", result, ids, names)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["rank", "row", "path", "given_label", "suggested_label", "score"]
    assert len(rows) == len(ids) and [int(r["rank"]) for r in rows] == list(range(1, len(ids) + 1))
    assert int(rows[0]["row"]) == int(result.label_issues.order[0])
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    test_ids = [f"test:{i}" for i in range(N_TEST)]
    path = write_duplicates_csv(tmp_path / "duplicates.csv", result, ids, test_ids)
    with open(path, newline="") as f:
        pairs = list(csv.DictReader(f))
    assert len(pairs) == len(result.duplicates)
    assert list(pairs[0]) == [
        "split_a",
        "row_a",
        "path_a",
        "split_b",
        "row_b",
        "path_b",
        "similarity",
    ]
    assert {p["split_b"] for p in pairs} == {"train", "test"}
    assert all(p["path_b"].startswith(p["split_b"] + ":") for p in pairs)


def test_bad_input_is_refused_in_one_line(planted):
    with pytest.raises(InvalidInputError, match="labels has 3 entries"):
        audit(planted["features"], [0, 1, 2])
    with pytest.raises(InvalidInputError, match="unknown detector"):
        audit(planted["features"], planted["labels"], detector="magic")
    zero = planted["features"].copy()
    zero[4] = 0
    with pytest.raises(InvalidInputError, match="row 4 is all zeros"):
        audit(zero, planted["labels"])
    with pytest.raises(InvalidInputError, match="test_features"):
        audit(planted["features"], planted["labels"], test_features=planted["features"][:, :5])


def test_search_blocks_resume_from_saved_parts(tmp_path, planted):
    from simattr.audit import neighbours

    x = planted["features"] / np.linalg.norm(planted["features"], axis=1, keepdims=True)
    first = neighbours(x, x, 5, exclude_self=True, block_size=100, parts_dir=tmp_path)
    assert len(list(tmp_path.glob("neighbours-*.npz"))) == 7
    again = neighbours(x, x, 5, exclude_self=True, block_size=100, parts_dir=tmp_path)
    assert np.array_equal(first[1], again[1])
    assert not (first[1] == np.arange(len(x))[:, None]).any()  # never itself


# -- the page ---------------------------------------------------------------------------------


def test_gallery_escapes_every_string_and_embeds_images():
    img = np.zeros((8, 8, 3), dtype=np.uint8)
    page = gallery_html(
        f"title {EVIL}",
        [Section(f"s {EVIL}", [Row([Tile(img, f"cap {EVIL}", "k", title=EVIL)], EVIL)], EVIL)],
        intro=EVIL,
        legend=[("k", f"legend {EVIL}")],
    )
    assert "<script" not in page.lower()
    assert page.count(html.escape(EVIL)) >= 7
    assert "data:image/png;base64," in page and "http" not in page


# -- the command line -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder(planted, tmp_path_factory) -> Path:
    """The planted split as an image folder (lossless PNG), with a class and a file named like
    HTML, and its features made by ``simattr features``."""
    from PIL import Image

    root = tmp_path_factory.mktemp("audit-data") / "data"
    names = ["airplane", "automobile", "bird", f"cat{EVIL.replace('/', '')}", "deer"]
    names += ["dog", "frog", "horse", "ship", "truck"]
    for split, images, labels in (
        ("train", planted["images"], planted["labels"]),
        ("test", planted["test_images"], planted["test_labels"]),
    ):
        for i, (img, y) in enumerate(zip(images, labels, strict=True)):
            folder = root / split / names[y]
            folder.mkdir(parents=True, exist_ok=True)
            stem = f"{i:04d}" + ("<b>x" if i == 0 else "")
            Image.fromarray(img).save(folder / f"{stem}.png")
    for split in ("train", "test"):
        out = root.parent / f"{split}.npy"
        r = runner.invoke(
            app, ["features", "--data", str(root), "--split", split, "--out", str(out)]
        )
        assert r.exit_code == 0, r.output
    return root


def _audit(folder: Path, out: Path, *extra: str):
    args = ["audit", "--data", folder, "--features", folder.parent / "train.npy", "--out", out]
    return runner.invoke(app, [str(a) for a in (*args, *extra)])


def _file_row(path: str) -> int:
    return int(re.search(r"/(\d{4})", path).group(1))


def test_cli_writes_tables_and_page(folder, planted, tmp_path):
    out = tmp_path / "audit"
    r = _audit(folder, out, "--test-features", folder.parent / "test.npy", "--page", "--tables")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == [
        "audit.html",
        "duplicates.csv",
        "label_issues.csv",
        "possible_duplicates.csv",
    ]
    with open(out / "label_issues.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(planted["labels"])
    # rows are named by file; the flipped ones are near the top (file numbers are planted rows)
    top = {_file_row(r["path"]) for r in rows[:30]}
    assert len(top & set(planted["flipped"].tolist())) >= 5
    with open(out / "duplicates.csv", newline="") as f:
        pairs = list(csv.DictReader(f))
    leaks = {
        (_file_row(p["path_a"]), _file_row(p["path_b"])) for p in pairs if p["split_b"] == "test"
    }
    inside = {
        tuple(sorted((_file_row(p["path_a"]), _file_row(p["path_b"]))))
        for p in pairs
        if p["split_b"] == "train"
    }
    assert leaks == planted["leak_pairs"] | GENUINE_LEAKS
    assert inside == planted["dup_pairs"] | GENUINE_PAIRS
    page = (out / "audit.html").read_text()
    assert "<script" not in page.lower() and "<b>x" not in page
    assert html.escape("cat<script>alert(1)<script>") in page
    assert "Likely label errors" in page and page.count("data:image/png;base64,") > 50


def test_cli_writes_the_tables_by_default(folder, tmp_path):
    out = tmp_path / "audit"
    r = _audit(folder, out)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == [
        "duplicates.csv",
        "label_issues.csv",
        "possible_duplicates.csv",
    ]


def _refused(result, pattern: str) -> None:
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    assert re.search(pattern, errors[0]), errors[0]


def test_cli_refusals_leave_nothing_behind(folder, tmp_path):
    out = tmp_path / "audit"
    train, test = folder.parent / "train.npy", folder.parent / "test.npy"
    # features of the other split
    _refused(
        runner.invoke(
            app, ["audit", "--data", str(folder), "--features", str(test), "--out", str(out)]
        ),
        "test split, not train",
    )
    # leaks are looked for from the training split only
    _refused(
        _audit(folder, out, "--split", "test", "--test-features", str(test)),
        "--test-features",
    )
    # an output folder that is an input file
    _refused(
        runner.invoke(
            app, ["audit", "--data", str(folder), "--features", str(train), "--out", str(train)]
        ),
        "overwrite the input",
    )
    # no such features file
    _refused(
        runner.invoke(
            app,
            ["audit", "--data", str(folder), "--features", str(tmp_path / "no.npy"), "--out", out],
        ),
        "no such file",
    )
    _refused(_audit(folder, out, "--threads", "0"), "--threads")
    # features of another dataset (rows do not match)
    other = tmp_path / "other.npy"
    np.save(other, np.ones((5, 8), dtype=np.float32))
    _refused(
        runner.invoke(
            app, ["audit", "--data", str(folder), "--features", str(other), "--out", str(out)]
        ),
        "has 5 rows",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.npy"]


def test_cli_refuses_stale_and_foreign_features(folder, tmp_path):
    """Features made before one file moved between class folders, or of another folder with as
    many images, are refused in one line that gives the rebuild command; nothing is written."""
    data = tmp_path / "data"
    shutil.copytree(folder, data)
    feats = tmp_path / "train.npy"
    for suffix in ("", ".json"):
        shutil.copyfile(f"{folder.parent / 'train.npy'}{suffix}", f"{feats}{suffix}")
    out = tmp_path / "audit"
    args = ["audit", "--data", str(data), "--features", str(feats), "--out", str(out)]
    from simattr.audit import run_audit

    run = run_audit(str(data), feats, out)  # the copy is the same data
    table = run.result.to_pandas()
    files = {p.relative_to(data).as_posix() for p in (data / "train").glob("*/*.png")}
    assert set(table["path"]) == files
    assert set(table["given_label"]) == {p.split("/")[1] for p in files}
    shutil.rmtree(out)
    moved = sorted((data / "train" / "airplane").glob("*.png"))[-1]
    moved.rename(data / "train" / "automobile" / moved.name)
    _refused(runner.invoke(app, args), r"other data than the train split.*simattr features")
    assert not out.exists()
    # a foreign folder of the same size: one image's pixels changed, nothing moved
    (data / "train" / "automobile" / moved.name).rename(moved)
    from PIL import Image

    first = sorted((data / "train" / "dog").glob("*.png"))[0]
    pixels = np.asarray(Image.open(first).convert("RGB"))
    Image.fromarray(255 - pixels).save(first)
    _refused(runner.invoke(app, args), r"rebuild them with `simattr features --data")
    assert not out.exists()


@pytest.mark.browser
def test_page_renders_in_chromium(folder, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail("chromium is not installed (.ci/run installs it)")
        pytest.skip("chromium is not installed")
    out = tmp_path / "audit"
    assert _audit(folder, out, "--page").exit_code == 0
    shot = tmp_path / "page.png"
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--screenshot={shot}",
            "--window-size=1200,900",
            (out / "audit.html").as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB"))
    # thumbnails were drawn: many distinct colours, not a blank or an error page
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 500


def test_possible_pairs_and_the_note_reach_every_output_on_8x8_digits(tmp_path):
    """On 8x8 digits the pixel check cannot tell a copy from a look-alike: the tables, the
    page, the repr and ``to_pandas`` all say so, and the feature-close pairs are listed apart
    in ``possible_duplicates.csv`` (named by file and class), none in ``duplicates.csv``."""
    from simattr.audit import run_audit

    for split in ("train", "test"):
        r = runner.invoke(
            app,
            ["features", "--data", "digits", "--split", split, "--out", f"{tmp_path / split}.npy"],
        )
        assert r.exit_code == 0, r.output
    out = tmp_path / "audit"
    run = run_audit(
        "digits",
        tmp_path / "train.npy",
        out,
        test_features=tmp_path / "test.npy",
        html=True,
        folds=2,
        evidence=0,
    )
    result = run.result
    possible = result.duplicates.possible
    assert possible is not None and len(possible) > 0
    with open(out / "possible_duplicates.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(result.to_pandas("possible").columns)
    assert len(rows) == len(possible)
    by_id = dict(zip(result.ids, result.label_issues.given, strict=True))
    for row in rows[:50]:
        assert row["label_a"] == result.class_names[by_id[row["path_a"]]]
        assert float(row["cosine"]) >= 0.97 and row["pixel"] == ""  # not checked at 8x8
    frame = result.to_pandas("possible")
    assert frame.attrs["note"].startswith("pixel check not used below 16x16")
    assert "pixel check not used below 16x16" in repr(result) and len(repr(result)) < 300
    page = (out / "audit.html").read_text(encoding="utf-8")
    assert "pixel check not used below 16x16 (these images are 8x8)" in page
    assert "Possible duplicates, not confirmed" in page
    # the command line says it too, not only the files it writes
    features = ["--features", str(tmp_path / "train.npy")]
    args = ["audit", "--data", "digits", *features, "--test-features", str(tmp_path / "test.npy")]
    args += ["--out", str(tmp_path / "cli")]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    said = " ".join(r.output.split())
    assert "duplicates: pixel check not used below 16x16" in said
    assert "possible duplicate pairs, not confirmed by the pixels" in said
    assert f"{len(possible)} in all." in page


def test_possible_table_names_files_and_classes(folder, tmp_path):
    """On the CIFAR-10 folder the pixel check is used and says so; the possible table has
    the columns of the pair tables and one header line at least."""
    from simattr.audit import run_audit

    run = run_audit(str(folder), folder.parent / "train.npy", tmp_path / "a", evidence=0)
    assert run.result.duplicates.note.startswith("pixel check used")
    assert "pixel check used" in repr(run.result)
    with open(tmp_path / "a" / "possible_duplicates.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header == list(run.result.to_pandas("possible").columns)
    pairs = run.result.to_pandas("duplicates")
    assert len(pairs) > 0
    for _, p in pairs.iterrows():  # each class is the folder the file sits in
        assert p["path_a"].split("/")[1] == p["label_a"]
        assert p["path_b"].split("/")[1] == p["label_b"]
