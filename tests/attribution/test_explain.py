"""``simattr explain`` (new image files) and the ``--html`` page of ``attribute`` and ``explain``.

A small folder dataset of real CIFAR-10 images (PNG and JPEG, mixed sizes) is built from the
shared copy; features come from the CLI, so every test reads what a user's run would write.
"""

from __future__ import annotations

import csv
import html
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from clikit import embed_folder, invoke
from PIL import Image

CLASSES = ("automobile", "bird", "cat")
N_TRAIN, N_TEST = 8, 2
#: A real file name with HTML in it (a ``/`` cannot be part of a name on Linux).
SCRIPT_NAME = "<script>alert(1)<script>.png"


def _error_lines(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("error:")]


def _build_folder(root: Path, cifar_train, cifar_test, offset: int = 0) -> None:
    """``root/{train,test}/<class>/`` of real CIFAR-10 images as PNG or JPEG at mixed sizes;
    the first training cat is named :data:`SCRIPT_NAME`."""
    names = list(cifar_train.class_names)
    for split, data, count in (("train", cifar_train, N_TRAIN), ("test", cifar_test, N_TEST)):
        for name in CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True)
            rows = np.flatnonzero(data.labels == names.index(name))[offset : offset + count]
            for i, row in enumerate(rows):
                image = Image.fromarray(data.get_images([row])[0])
                width, height = ((32, 32), (48, 40), (64, 64))[i % 3]
                image = image.resize((width, height), Image.Resampling.BICUBIC)
                file = f"{name}_{row:05d}" + (".png" if i % 2 == 0 else ".jpg")
                if split == "train" and name == "cat" and i == 0:
                    file = SCRIPT_NAME
                image.save(folder / file)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, cifar_train, cifar_test) -> Path:
    root = tmp_path_factory.mktemp("explain") / "mydata"
    _build_folder(root, cifar_train, cifar_test)
    return root


@pytest.fixture(scope="module")
def feats(folder, tmp_path_factory) -> tuple[Path, Path]:
    return embed_folder(folder, tmp_path_factory.mktemp("explain-features"))


@pytest.fixture
def new_images(folder, tmp_path) -> dict[str, Path]:
    """New files outside the dataset: a byte copy of the <script>-named training cat (under
    another such name), and a re-encoded copy of a training bird."""
    new = tmp_path / "new"
    new.mkdir()
    cat = new / "[red]<script>x.png"  # rich markup and HTML in one name
    shutil.copy(folder / "train" / "cat" / SCRIPT_NAME, cat)
    bird_src = sorted((folder / "train" / "bird").iterdir())[1]
    bird = new / "bird photo.jpg"
    Image.open(bird_src).convert("RGB").save(bird, quality=95)
    return {"cat": cat, "bird": bird, "bird_src": bird_src}


def _page_images(page: str) -> list[str]:
    return re.findall(r'<img src="(data:image/png;base64,[A-Za-z0-9+/=]+)"', page)


# -- the API -------------------------------------------------------------------------------------
def test_copy_of_a_training_image_comes_first(folder, feats, new_images):
    from simattr.attribution import explain

    result = explain(
        [new_images["cat"], new_images["bird"]], feats[0], data=str(folder), label="cat", k=5
    )
    assert result.ranking.indices.shape == (2, 5)
    assert result.train_ids[result.ranking.indices[0, 0]] == f"train/cat/{SCRIPT_NAME}"
    assert result.ranking.scores[0, 0] == result.ranking.scores[0].max()
    assert result.labels.tolist() == [2, 2]
    rows = result.rows()
    assert rows[0]["image_path"] == str(new_images["cat"])
    assert rows[0]["train_path"] == f"train/cat/{SCRIPT_NAME}" and rows[0]["rank"] == 1
    assert {r["train_label"] for r in rows} == {"cat"}
    # the file is embedded as `simattr features` embeds it: the copy's feature is the row's
    train = np.load(feats[0])
    row = int(result.ranking.indices[0, 0])
    np.testing.assert_allclose(result.features[0], train[row], rtol=1e-5, atol=1e-5)


def test_tables_in_python_and_rankings_of_new_files_refused_as_test_rows(folder, feats, new_images):
    """``to_pandas()`` names files relative to the root and classes by name; reprs are short;
    ``ranking_rows`` refuses to name an explanation's targets as test images."""
    from simattr.attribution import explain
    from simattr.errors import InvalidInputError
    from simattr.report import ranking_rows

    result = explain(
        [new_images["cat"], new_images["bird"]], feats[0], data=str(folder), label="cat", k=4
    )
    table = result.to_pandas()
    assert len(table) == 8 and table["rank"].tolist() == [1, 2, 3, 4] * 2
    assert table["train_path"].iloc[0] == f"train/cat/{SCRIPT_NAME}"
    assert set(table["train_label"]) == {"cat"} and set(table["label"]) == {"cat"}
    assert table["image_path"].iloc[0] == str(new_images["cat"])
    assert all(not Path(p).is_absolute() for p in table["train_path"])
    for text in (repr(result), repr(result.ranking)):
        assert len(text) < 300 and "\n" not in text and "array" not in text
    assert "2 files" in repr(result) and "new files" in repr(result.ranking)
    # the ranking alone, as a table: train rows and scores agree with the explanation's
    ranked = result.ranking.to_pandas(
        train_ids=result.train_ids,
        train_labels=result.train.labels,
        class_names=result.class_names,
    )
    assert ranked["train_path"].tolist() == table["train_path"].tolist()
    np.testing.assert_allclose(ranked["score"], table["score"])
    with pytest.raises(InvalidInputError, match="new image files") as caught:
        ranking_rows(result.ranking, str(folder))
    assert "\n" not in str(caught.value)


def test_re_encoded_copy_and_class_by_index(folder, feats, new_images):
    from simattr.attribution import explain

    result = explain([new_images["bird"]], feats[0], data=str(folder), label="1", k=3)
    assert result.class_names[1] == "bird"
    top = result.train_ids[result.ranking.indices[0, 0]]
    assert top == new_images["bird_src"].relative_to(folder).as_posix()


def test_imagenet_stem_backbone_embeds_new_files_as_features_does(folder, new_images, tmp_path):
    """A photo backbone decodes files again at its own size (shorter side, centre crop): the
    new file is embedded through that same path, so a byte copy gets the row's feature."""
    from simattr.attribution import explain

    train = tmp_path / "train.npy"
    made = invoke(
        "features", "--data", folder, "--split", "train",
        "--backbone", "random:resnet18-imagenet@64", "--out", train,
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    result = explain([new_images["cat"]], train, data=str(folder), label="cat", k=3)
    assert result.backbone["name"] == "random:resnet18-imagenet@64"
    row = int(result.ranking.indices[0, 0])
    assert result.train_ids[row] == f"train/cat/{SCRIPT_NAME}"
    np.testing.assert_allclose(result.features[0], np.load(train)[row], rtol=1e-4, atol=1e-5)
    # a backbone other than the one that made the features is refused
    other = invoke(
        "explain", new_images["cat"], "--data", folder, "--train-features", train,
        "--label", "cat", "--backbone", "random:1",
    )  # fmt: skip
    assert other.exit_code == 1
    assert "is not the backbone that made" in " ".join(other.output.split())


# -- the command ---------------------------------------------------------------------------------
def test_explain_command_prints_table_writes_csv_and_page(folder, feats, new_images, tmp_path):
    table, page_dir = tmp_path / "top.csv", tmp_path / "page"
    result = invoke(
        "explain", new_images["cat"], new_images["bird"], "--data", folder,
        "--train-features", feats[0], "--label", "cat", "--topk", "4",
        "--csv", table, "--html", page_dir,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "explained as cat" in flat and "rank" in flat and "score" in flat
    assert "train/cat/<script>alert(1)<script>.png" in flat.replace(" ", "")
    # printed as text, not read as markup
    assert "[red]<script>x.png:explainedascat" in flat.replace(" ", "")
    with open(table, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == [
        "target", "target_path", "target_label", "rank", "train_row", "train_path",
        "train_label", "score",
    ]  # fmt: skip
    assert len(rows) == 8
    assert rows[0]["target_path"] == str(new_images["cat"])
    assert rows[0]["train_path"] == f"train/cat/{SCRIPT_NAME}" and rows[0]["rank"] == "1"
    assert all((folder / r["train_path"]).is_file() for r in rows)

    page = (page_dir / "index.html").read_text()
    # two targets and four training images each, all embedded
    assert len(_page_images(page)) == 2 + 2 * 4
    assert "<script" not in page  # every user string is escaped; the page has no script
    assert html.escape(f"train/cat/{SCRIPT_NAME}") in page
    assert html.escape(str(new_images["cat"])) in page
    assert "http://" not in page and "https://" not in page  # nothing loaded from elsewhere
    for row in rows:
        assert html.escape(row["train_path"]) in page
    assert "rank 1 is the most responsible" in page and "Reading a score" in page
    assert [p.name for p in page_dir.iterdir()] == ["index.html"]  # no temporary file left


def test_explain_with_predictions_csv(folder, feats, new_images, tmp_path):
    from simattr.attribution import explain

    preds = tmp_path / "preds.csv"
    preds.write_text(
        f"file,class\n{new_images['bird'].name},bird\n{new_images['cat']},2\nother.png,cat\n"
    )
    result = explain(
        [new_images["cat"], new_images["bird"]], feats[0], data=str(folder), predictions=preds, k=2
    )
    assert [result.class_names[i] for i in result.labels] == ["cat", "bird"]
    assert result.label_source == f"predictions={preds}"


def test_predictions_refusals_name_the_predictions_file(
    folder, feats, new_images, tmp_path, monkeypatch
):
    """A predictions file of the wrong kind, or a row with an unknown class, is refused naming
    the parameter (`` `predictions` ``, a flag only in the CLI) and the file (and the line)."""
    from simattr.attribution import explain
    from simattr.errors import InvalidInputError

    images = [new_images["cat"]]
    txt = tmp_path / "preds.txt"
    txt.write_text(f"{new_images['cat']},cat\n")
    with pytest.raises(InvalidInputError, match=rf"^`predictions` {txt}: give a \.csv"):
        explain(images, feats[0], data=str(folder), predictions=txt)
    csv = tmp_path / "preds.csv"
    csv.write_text(f"file,class\n{new_images['cat']},dog\n")
    with pytest.raises(InvalidInputError, match=rf"`predictions` {csv}, line 2"):
        explain(images, feats[0], data=str(folder), predictions=csv)
    monkeypatch.chdir(new_images["cat"].parent.parent)  # a file named relative to here
    csv.write_text(f"new/{new_images['cat'].name},bird\n")
    result = explain(images, feats[0], data=str(folder), predictions=csv, k=2)
    assert result.labels.tolist() == [1]


def test_features_must_come_from_the_backbone_that_embeds(folder, feats, new_images, tmp_path):
    """The backbone recorded with the features is used, and refused when its file is gone or
    it is not the one recorded (another seed); explaining leaves no decoded cache of the new
    files behind."""
    import json

    from simattr.attribution import explain
    from simattr.errors import InvalidInputError, MissingFileError

    meta = json.loads(feats[0].with_name("train.npy.json").read_text())
    cases = {
        "gone": ({**meta["backbone"], "name": str(tmp_path / "net.pt")}, MissingFileError,
                 "which is no longer there"),
        "seed": ({**meta["backbone"], "seed": 1}, InvalidInputError, r"\(seed 0, recorded 1\)"),
    }  # fmt: skip
    for name, (backbone, error, message) in cases.items():
        copy = tmp_path / f"{name}.npy"
        shutil.copy(feats[0], copy)
        copy.with_name(f"{name}.npy.json").write_text(json.dumps({**meta, "backbone": backbone}))
        with pytest.raises(error, match=message):
            explain([new_images["cat"]], copy, data=str(folder), label="cat")
    cache = Path(os.environ["SIMATTR_CACHE_DIR"])
    before = sorted(cache.rglob("*"))
    explain([new_images["cat"]], feats[0], data=str(folder), label="cat", k=2)
    assert sorted(cache.rglob("*")) == before


def test_topk_above_the_class_pool_ranks_it_whole(folder, feats, new_images, tmp_path):
    table = tmp_path / "all.parquet"
    result = invoke(
        "explain", new_images["cat"], "--data", folder, "--train-features", feats[0],
        "--label", "cat", "--topk", "20", "--method", "cosine", "--csv", table,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "fewer than --topk 20" in " ".join(result.output.split())
    import pyarrow.parquet as pq

    read = pq.read_table(table)
    assert read.num_rows == N_TRAIN and read.column("rank").to_pylist() == list(range(1, 9))
    assert read.column("train_path").to_pylist()[0] == f"train/cat/{SCRIPT_NAME}"


def test_explain_refusals_are_one_line(folder, feats, new_images, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image at all")
    bare = tmp_path / "bare.npy"
    np.save(bare, np.load(feats[0]))
    preds = tmp_path / "p.csv"
    preds.write_text("other.png,cat\n")
    page_dir = tmp_path / "out"
    page_dir.mkdir()
    as_page = page_dir / "index.html"  # an image file that --html would overwrite
    shutil.copy(new_images["cat"], as_page)
    base = ("--data", folder, "--train-features", feats[0])
    cases = [
        ((new_images["cat"], *base, "--label", "dog"), "unknown class 'dog'; the classes are"),
        ((tmp_path / "gone.png", *base, "--label", "cat"), "gone.png: no such image file"),
        ((bad, *base, "--label", "cat"), "broken.png cannot be read as an image"),
        ((new_images["cat"], *base), "--label (a class name or index) or --predictions"),
        (
            (new_images["cat"], "--data", folder, "--train-features", bare, "--label", "cat"),
            "has no backbone record",
        ),
        ((new_images["cat"], *base, "--predictions", preds), "has no prediction for"),
        ((as_page, *base, "--label", "cat", "--html", page_dir), "--html"),
    ]
    for args, message in cases:
        result = invoke("explain", *args)
        assert result.exit_code == 1, (args, result.output)
        assert len(_error_lines(result)) == 1, result.output
        assert message in " ".join(result.output.split()), (message, result.output)
    assert sorted(p.name for p in page_dir.iterdir()) == ["index.html"]
    assert as_page.read_bytes() == new_images["cat"].read_bytes()


def test_attribute_html_page(folder, feats, tmp_path):
    page_dir = tmp_path / "page"
    result = invoke(
        "attribute", "--train-features", feats[0], "--test-features", feats[1], "--data", folder,
        "--topk", "3", "--out", tmp_path / "r.npz", "--html", page_dir,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    page = (page_dir / "index.html").read_text()
    n_targets = len(CLASSES) * N_TEST
    assert len(_page_images(page)) == n_targets * (1 + 3)
    for file in sorted((folder / "test").glob("*/*")):
        assert html.escape(file.relative_to(folder).as_posix()) in page
    assert "<script" not in page
    # --html needs the data to show images, and never overwrites an input
    np.save(tmp_path / "l.npy", np.zeros(1, dtype=np.int64))  # inputs exist: --html is at fault
    no_data = invoke(
        "attribute", "--train-features", feats[0], "--test-features", feats[1],
        "--train-labels", tmp_path / "l.npy", "--test-labels", tmp_path / "l.npy",
        "--out", tmp_path / "r2.npz", "--html", tmp_path / "p2",
    )  # fmt: skip
    assert no_data.exit_code == 1 and "needs --data" in no_data.output


def _screenshot(page: Path, shot: Path) -> np.ndarray:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail("chromium is not installed (.ci/run installs it)")
        pytest.skip("chromium is not installed")
    subprocess.run(
        [
            browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
            "--window-size=1200,900", page.as_uri(),
        ],
        check=True, capture_output=True, timeout=90,
    )  # fmt: skip
    return np.asarray(Image.open(shot).convert("RGB"))


def _check_screenshot(pixels: np.ndarray) -> None:
    """Not blank, and square image regions drawn: 96-pixel thumbnails, many colours each."""
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 500
    colourful = (pixels.max(axis=2).astype(int) - pixels.min(axis=2)) > 25
    # at least a row of several thumbnails: columns with colourful pixels in one band of rows
    band = colourful[: pixels.shape[0]].sum(axis=0) > 20
    assert band.sum() > 3 * 80


@pytest.mark.browser
def test_page_renders_in_chromium(folder, feats, new_images, tmp_path):
    page_dir = tmp_path / "page"
    result = invoke(
        "explain", new_images["cat"], new_images["bird"], "--data", folder,
        "--train-features", feats[0], "--label", "cat", "--topk", "6", "--html", page_dir,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    pixels = _screenshot(page_dir / "index.html", tmp_path / "page.png")
    _check_screenshot(pixels)


# -- the walk-through, as a user would run it from the README --------------------------
@pytest.mark.browser
def test_walk_through(cifar_train, cifar_test, tmp_path):
    timings: dict[str, float] = {}

    def step(name: str, *args: object):
        start = time.perf_counter()
        result = invoke(*args)
        timings[name] = time.perf_counter() - start
        assert result.exit_code == 0, (name, result.output)
        return result

    root = tmp_path / "myphotos"
    _build_folder(root, cifar_train, cifar_test, offset=100)
    work = tmp_path / "work"
    work.mkdir()
    for split in ("train", "test"):
        step(
            f"features {split}", "features", "--data", root, "--split", split,
            "--backbone", "random:0", "--out", work / f"{split}.npy",
        )  # fmt: skip
    # a model's predictions: every test image predicted as its folder's class, one as "bird"
    tests = sorted((root / "test").glob("*/*"))
    lines = ["file,class"] + [f"{p.relative_to(root).as_posix()},{p.parent.name}" for p in tests]
    lines[1] = f"{tests[0].relative_to(root).as_posix()},bird"
    (work / "preds.csv").write_text("\n".join(lines) + "\n")
    step(
        "attribute", "attribute", "--train-features", work / "train.npy",
        "--test-features", work / "test.npy", "--data", root, "--predictions", work / "preds.csv",
        "--topk", "5", "--out", work / "r.npz", "--csv", work / "ranking.csv",
        "--html", work / "ranking",
    )  # fmt: skip
    new = tmp_path / "new photo.jpg"
    Image.open(sorted((root / "train" / "bird").iterdir())[2]).convert("RGB").resize((80, 60)).save(
        new
    )
    step(
        "explain", "explain", new, "--data", root, "--train-features", work / "train.npy",
        "--label", "bird", "--topk", "5", "--csv", work / "explain.csv", "--html", work / "explain",
    )  # fmt: skip

    import pandas as pd  # as the user loads it (pandas comes with the dev extra's cleanlab)

    table = pd.read_csv(work / "ranking.csv")
    assert len(table) == len(tests) * 5
    assert list(table.columns[:3]) == ["target", "target_path", "target_label"]
    assert table["target_label"].iloc[0] == "bird"  # the prediction, not the folder
    ranks = table.groupby("target", sort=False)["rank"].apply(list).tolist()
    assert ranks == [[1, 2, 3, 4, 5]] * len(tests)
    with open(work / "explain.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows[0]["target_path"] == str(new) and rows[0]["target_label"] == "bird"
    assert all((root / r["train_path"]).is_file() for r in rows)
    for name in ("ranking", "explain"):
        pixels = _screenshot(work / name / "index.html", tmp_path / f"{name}.png")
        _check_screenshot(pixels)
    print("walk-through timings (s):", {k: round(v, 2) for k, v in timings.items()})
