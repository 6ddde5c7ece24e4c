"""``simattr report``: a folder and a predictions file in, one page and one table out, that
answer "why is my model wrong?" (issue 25).

The folder is built from real CIFAR-10 images of the shared copy: four classes, 50 training
images each, with four airplanes planted in the ``ship`` folder (mislabels), and 30 test images
each. The model's predictions swap airplane with ship and cat with frog for 25 test images of
each class: 100 wrong predictions, 20 right. One test file has HTML in its name.
"""

from __future__ import annotations

import csv
import html
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from clikit import invoke
from PIL import Image

CLASSES = ("airplane", "cat", "frog", "ship")
SWAP = {"airplane": "ship", "ship": "airplane", "cat": "frog", "frog": "cat"}
N_TRAIN, N_TEST, N_WRONG, N_PLANTED = 50, 30, 25, 4
EVIL = "<img src=x onerror=alert(1)>&'\"x.png"


@pytest.fixture(scope="module")
def folder(tmp_path_factory, cifar_train, cifar_test) -> Path:
    root = tmp_path_factory.mktemp("report") / "mydata"
    names = list(cifar_train.class_names)
    for split, data, count in (("train", cifar_train, N_TRAIN), ("test", cifar_test, N_TEST)):
        for name in CLASSES:
            (root / split / name).mkdir(parents=True)
            rows = np.flatnonzero(data.labels == names.index(name))
            for i, row in enumerate(rows[:count]):
                file = f"{name}_{row:05d}.png"
                if split == "test" and name == "airplane" and i == 0:
                    file = EVIL
                Image.fromarray(data.get_images([row])[0]).save(root / split / name / file)
    airplanes = np.flatnonzero(cifar_train.labels == names.index("airplane"))
    for row in airplanes[N_TRAIN : N_TRAIN + N_PLANTED]:  # airplanes filed under ship
        image = Image.fromarray(cifar_train.get_images([row])[0])
        image.save(root / "train" / "ship" / f"planted_{row:05d}.png")
    return root


@pytest.fixture(scope="module")
def predictions(folder) -> Path:
    path = folder.parent / "predictions.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(("file", "class"))
        for name in CLASSES:
            for i, file in enumerate(sorted((folder / "test" / name).iterdir())):
                predicted = SWAP[name] if i < N_WRONG else name
                writer.writerow((file.relative_to(folder).as_posix(), predicted))
    return path


@pytest.fixture(scope="module")
def report(folder, predictions, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report-out") / "why"
    result = invoke("report", "--data", folder, "--predictions", predictions, "--out", out)
    assert result.exit_code == 0, result.output
    assert "WhyWrong(100 wrong of 120 predictions" in result.output
    return out


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_table_lists_every_wrong_prediction_with_both_classes(folder, report):
    assert sorted(p.name for p in report.iterdir()) == [
        "index.html", "predictions.csv", "why_wrong.csv", "why_wrong.parquet",
    ]  # fmt: skip
    listed = _read(report / "predictions.csv")
    assert len(listed) == len(CLASSES) * N_TEST
    assert sum(r["wrong"] == "True" for r in listed) == len(CLASSES) * N_WRONG
    rows = _read(report / "why_wrong.csv")
    by_target: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        by_target.setdefault(r["target_path"], []).append(r)
    assert len(by_target) == len(CLASSES) * N_WRONG
    evil = by_target[f"test/airplane/{EVIL}"]
    assert {(r["true_label"], r["predicted_label"]) for r in evil} == {("airplane", "ship")}
    for side, label in (("predicted", "ship"), ("true", "airplane")):
        mine = [r for r in evil if r["side"] == side]
        assert [int(r["rank"]) for r in mine] == list(range(1, 11))
        assert {r["train_label"] for r in mine} == {label}
        assert all(r["train_path"].startswith(f"train/{label}/") for r in mine)
    import pandas as pd

    parquet = pd.read_parquet(report / "why_wrong.parquet")
    assert len(parquet) == len(rows) and parquet["percentile"].between(0, 100).all()


def test_planted_mislabels_are_badged_and_counted(folder, report):
    rows = _read(report / "why_wrong.csv")
    planted = [r for r in rows if "/planted_" in r["train_path"]]
    # airplanes predicted "ship": the planted airplanes among the ships come up, flagged
    assert planted, "no planted mislabel among the top training images"
    flagged = [r for r in planted if r["suspected_mislabel"] == "True"]
    # the badge is the audit's strict cut (top 5 % of a class, docs/report.md): with 50 images
    # a class it may pass them over, but any it badges is badged as an airplane
    assert all(r["suggested_label"] == "airplane" for r in flagged)
    page = (report / "index.html").read_text(encoding="utf-8")
    figures = re.findall(r"<figure[^>]*>.*?</figure>", page, flags=re.S)
    assert any("suspected mislabel" in f or "looks like" in f for f in figures)
    hit = {
        r["target_row"]
        for r in rows
        if r["side"] == "predicted"
        and int(r["rank"]) <= 10
        and (r["suspected_mislabel"] == "True" or r["duplicate_of"] or r["leak_of"])
    }
    match = re.search(r"<b>(\d+) of the 100 wrong predictions have a training image", page)
    assert match and int(match.group(1)) == len(hit) >= 1


def test_page_lists_wrong_predictions_light_escaped_and_wrapping(folder, report):
    page_file = report / "index.html"
    page = page_file.read_text(encoding="utf-8")
    headings = re.findall(r"<h2>\d+\. true: (\w+) · predicted: (\w+)</h2>", page)
    assert len(headings) == len(CLASSES) * N_WRONG
    assert all(SWAP[true] == pred for true, pred in headings)
    # 100 targets of 20 training images each: at most 3 MB
    images = re.findall(r'<img src="data:image/webp;base64,', page)
    assert len(images) >= len(CLASSES) * N_WRONG * 21
    assert page_file.stat().st_size <= 3_000_000, page_file.stat().st_size
    # the hostile name is escaped everywhere, and nothing runs
    assert EVIL not in page and "<img src=x" not in page and "<script" not in page.lower()
    assert html.escape(EVIL) in page
    # captions wrap between folders, not inside names
    assert "test/<wbr>airplane/<wbr>" in page and "anywhere" not in page


def test_pages_and_cached_features(folder, predictions, report, tmp_path):
    from simattr.data.cache import cache_root

    cached = sorted((cache_root() / "features").glob("*.npy"))
    assert len(cached) == 2
    stamps = [p.stat().st_mtime_ns for p in cached]
    out = tmp_path / "paged"
    result = invoke(
        "report", "--data", folder, "--predictions", predictions, "--out", out,
        "--per-page", "40", "--topk", "3",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    # the features were reused, not embedded again
    assert [p.stat().st_mtime_ns for p in cached] == stamps
    pages = sorted(p.name for p in out.glob("*.html"))
    assert pages == ["index.html", "page-002.html", "page-003.html"]
    texts = [(out / p).read_text(encoding="utf-8") for p in pages]
    counts = [len(re.findall(r"<h2>\d+\. true:", t)) for t in texts]
    assert counts == [40, 40, 20]
    assert all('href="page-003.html"' in t or "<b>3</b>" in t for t in texts)
    # a file moved between class folders: the old features are not reused
    moved = sorted((folder / "train" / "cat").iterdir())[-1]
    shutil.move(moved, folder / "train" / "frog" / moved.name)
    try:
        result = invoke(
            "report", "--data", folder, "--predictions", predictions,
            "--out", tmp_path / "moved", "--topk", "2",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert len(list((cache_root() / "features").glob("*.npy"))) == 3
    finally:
        shutil.move(folder / "train" / "frog" / moved.name, moved)


def test_refusals_are_one_line(folder, predictions, tmp_path):
    missing = invoke(
        "report", "--data", folder, "--predictions", tmp_path / "no.csv", "--out", tmp_path / "o"
    )
    assert missing.exit_code == 1 and "--predictions" in missing.output
    bad = tmp_path / "bad.csv"
    bad.write_text("test/airplane/nope.png,ship\n")
    result = invoke("report", "--data", folder, "--predictions", bad, "--out", tmp_path / "o")
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 1, result.output
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


@pytest.mark.browser
def test_report_page_renders_in_chromium(report, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail("chromium is not installed (.ci/run installs it)")
        pytest.skip("chromium is not installed")
    shot = tmp_path / "page.png"
    subprocess.run(
        [
            browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
            "--window-size=1200,1400", (report / "index.html").as_uri(),
        ],
        check=True, capture_output=True, timeout=90,
    )  # fmt: skip
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 500
    # thumbnails drawn: many columns with colourful pixels
    colourful = (pixels.max(axis=2).astype(int) - pixels.min(axis=2)) > 25
    assert (colourful.sum(axis=0) > 20).sum() > 3 * 80
