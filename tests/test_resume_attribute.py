"""Resumable attribution: an interrupted run restarts from its finished blocks, computes only
the others and gives exactly the ranking of an uninterrupted run; changed inputs are refused."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from simattr import Attributor, InvalidInputError
from simattr.attribution import load_ranking, rank_resumable
from simattr.attribution.resumable import parts_dir


class Interrupted(RuntimeError):
    pass


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def split():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16))
    ytr, yte = rng.integers(0, 4, 400), rng.integers(0, 4, 60)
    xtr = centres[ytr] + rng.normal(size=(400, 16))
    xte = centres[yte] + rng.normal(size=(60, 16))
    return xtr, ytr, xte, yte


def _count_topk(monkeypatch) -> list[int]:
    calls: list[int] = []
    original = Attributor.topk

    def counting(self, features, labels=None, k=100):
        calls.append(len(features))
        return original(self, features, labels, k)

    monkeypatch.setattr(Attributor, "topk", counting)
    return calls


def test_interrupted_run_resumes_without_recomputing(split, tmp_path, monkeypatch):
    xtr, ytr, xte, yte = split
    att = Attributor("esvm").fit(xtr, ytr)
    targets = np.arange(3, 58)
    full = rank_resumable(att, xte, yte, targets, 10, tmp_path / "full.npz", block_size=8)

    out = tmp_path / "r.npz"

    def stop_after_two(done: int, total: int) -> None:
        if done == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        rank_resumable(att, xte, yte, targets, 10, out, block_size=8, on_block=stop_after_two)
    assert not out.exists()
    assert sorted(p.name for p in parts_dir(out).glob("block-*.npz")) == [
        "block-00000.npz",
        "block-00001.npz",
    ]
    calls = _count_topk(monkeypatch)
    again = rank_resumable(att, xte, yte, targets, 10, out, block_size=8)
    assert len(calls) == 7 - 2 and sum(calls) == len(targets) - 16  # only unfinished blocks
    assert not parts_dir(out).exists()
    np.testing.assert_array_equal(again.targets, targets)
    np.testing.assert_array_equal(again.indices, full.indices)
    np.testing.assert_array_equal(again.scores, full.scores)
    np.testing.assert_array_equal(load_ranking(out).indices, full.indices)


def test_changed_inputs_are_refused_and_no_resume_discards(split, tmp_path):
    xtr, ytr, xte, yte = split
    att = Attributor("cosine").fit(xtr, ytr)
    out = tmp_path / "r.npz"

    def stop(done: int, total: int) -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        rank_resumable(att, xte, yte, np.arange(20), 10, out, block_size=5, on_block=stop)
    with pytest.raises(InvalidInputError, match=r"k was 10, now 7.*--no-resume"):
        rank_resumable(att, xte, yte, np.arange(20), 7, out, block_size=5)
    other = Attributor("cosine").fit(xtr + 1, ytr)
    with pytest.raises(InvalidInputError, match=r"inputs.train_features was"):
        rank_resumable(other, xte, yte, np.arange(20), 10, out, block_size=5)
    ranking = rank_resumable(att, xte, yte, np.arange(20), 7, out, block_size=5, resume=False)
    assert ranking.k == 7 and not parts_dir(out).exists()


def test_cli_attribute_resumes_after_a_crash(split, tmp_path, monkeypatch):
    from simattr.cli import app

    xtr, ytr, xte, yte = split
    paths = {}
    for name, arr in (("xtr", xtr), ("ytr", ytr), ("xte", xte), ("yte", yte)):
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], arr.astype(np.float32) if name.startswith("x") else arr)

    def run(out, *extra):
        args = ["attribute", "--train-features", paths["xtr"], "--test-features", paths["xte"]]
        args += ["--train-labels", paths["ytr"], "--test-labels", paths["yte"], "--out", out]
        args += ["--topk", "12", "--block-size", "16", *extra]
        return CliRunner().invoke(app, [str(a) for a in args])

    reference = tmp_path / "ref.npz"
    assert run(reference).exit_code == 0
    out = tmp_path / "r.npz"
    original = Attributor.topk
    calls: list[int] = []

    def crash_on_third(self, features, labels=None, k=100):
        calls.append(len(features))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, features, labels, k)

    monkeypatch.setattr(Attributor, "topk", crash_on_third)
    result = run(out)
    assert result.exit_code != 0 and not out.exists()
    assert len(list(parts_dir(out).glob("block-*.npz"))) == 2
    monkeypatch.setattr(Attributor, "topk", original)
    calls = _count_topk(monkeypatch)
    result = run(out)
    assert result.exit_code == 0, result.output
    assert len(calls) == 2  # 4 blocks of 16 targets, 2 already done
    np.testing.assert_array_equal(load_ranking(out).indices, load_ranking(reference).indices)


# -- attribute's inputs: file identities, predictions, data checks and provenance ---------------


def test_fingerprint_file_is_resolved_path_size_and_sha256(tmp_path):
    """A resumed run is refused when an input file moved, changed size or changed bytes: the
    identity holds exactly those three, checked here against ``os`` and ``hashlib``."""
    import hashlib

    from simattr.attribution.resumable import fingerprint_file

    path = tmp_path / "x.npy"
    np.save(path, np.arange(7.0))
    (tmp_path / "sub").mkdir()
    assert fingerprint_file(tmp_path / "sub" / ".." / "x.npy") == {
        "path": str(path.resolve()),
        "size": path.stat().st_size,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }


def _save_split(tmp_path, split):
    xtr, _, xte, _ = split
    paths = {"xtr": tmp_path / "xtr.npy", "xte": tmp_path / "xte.npy"}
    np.save(paths["xtr"], xtr)
    np.save(paths["xte"], xte)
    return paths


def test_predicted_classes_choose_the_pool_without_test_labels(split, tmp_path):
    """With predictions (a ``.npy`` file or an array) and no test labels, each target is
    ranked in the training pool of its predicted class, and the sidecar records those classes
    as integers."""
    from simattr.attribution import attribute

    ytr = split[1]
    paths = _save_split(tmp_path, split)
    predicted = (np.arange(60) * 7) % 4
    np.save(tmp_path / "pred.npy", predicted)
    for i, given in enumerate((tmp_path / "pred.npy", predicted)):
        out = tmp_path / f"r{i}.npz"
        run = attribute(
            paths["xtr"], paths["xte"], out, attributor=Attributor("cosine"), train_labels=ytr,
            predictions=given, k=5,
        )  # fmt: skip
        np.testing.assert_array_equal(run.ranking.targets, np.arange(60))
        for t, rows in zip(run.ranking.targets, run.ranking.indices, strict=True):
            assert set(ytr[rows]) == {predicted[t]}
        recorded = load_ranking(out).metadata["target_labels"]
        assert recorded == predicted.tolist() and {type(v) for v in recorded} == {int}


def test_explain_predictions_refusals_name_the_predictions(tmp_path):
    """An array of predictions is checked like labels (its length against the test images,
    its classes against the dataset's); a CSV may name test files by absolute path under the
    data root, and a target it lacks is refused naming the file."""
    from simattr.attribution.workflow import _explain_predictions

    names = ("cat", "dog", "ship")
    ids = [f"test/img{i}.png" for i in range(4)]
    true = np.array([0, 1, 2, 0])
    with pytest.raises(InvalidInputError, match=r"^predictions has label 3 at row 1, outside"):
        _explain_predictions(np.array([0, 3, 1, 2]), true, None, 4, names, ids, None)
    with pytest.raises(InvalidInputError, match=r"^predictions has 3 entries but there are 4 test"):
        _explain_predictions(np.array([0, 1, 1]), true, None, 4, names, ids, None)
    no_names = (None, None, 4, None, None, None)
    explained, chosen = _explain_predictions(np.array([5, 1, 1, 0]), *no_names)
    assert explained.tolist() == [5, 1, 1, 0] and chosen.tolist() == [0, 1, 2, 3]

    root = tmp_path / "mydata"
    csv = tmp_path / "preds.csv"
    csv.write_text(f"{root}/test/img2.png,dog\n{root / 'test' / 'img0.png'},2\n")
    explained, chosen = _explain_predictions(csv, true, None, 4, names, ids, str(root))
    assert explained.tolist() == [2, 1, 1, 0] and chosen.tolist() == [0, 2]
    with pytest.raises(InvalidInputError, match=rf"^test row 3 .* but --predictions {csv} has no"):
        _explain_predictions(csv, true, np.array([2, 3]), 4, names, ids, str(root))


def test_label_and_feature_refusals_name_the_option(split, tmp_path):
    """A missing labels file, or features whose sidecar records other data, is refused naming
    the option that gave it; a list of training rows is read as such."""
    import json

    from simattr.attribution import attribute
    from simattr.attribution.workflow import candidate_rows
    from simattr.errors import MissingFileError

    paths = _save_split(tmp_path, split)
    gone = tmp_path / "gone.npy"
    with pytest.raises(MissingFileError, match=r"^--train-labels: no such file .*gone\.npy"):
        attribute(
            paths["xtr"], paths["xte"], tmp_path / "a.npz", train_labels=gone, test_labels=gone
        )
    other = json.dumps({"dataset": {"fingerprint": "0123456789abcdef"}})
    for option, key in (("--train-features", "xtr"), ("--test-features", "xte")):
        side = paths[key].with_name(paths[key].name + ".json")
        side.write_text(other)
        with pytest.raises(InvalidInputError, match=rf"^{option} .*{key}\.npy was made from other"):
            attribute(paths["xtr"], paths["xte"], tmp_path / "b.npz", data="digits")
        side.unlink()
    assert candidate_rows(None, [3, 1], None, 5).tolist() == [1, 3]


def test_ranking_records_its_files_and_the_table_refuses_moved_ones(tmp_path):
    """The sidecar says where the ranked rows come from (the data root) and which files they
    were; after a file is renamed, writing the table of the ranking against the folder is
    refused rather than naming the wrong file."""
    from PIL import Image

    from simattr.attribution import attribute
    from simattr.report.table import ranking_columns

    root = tmp_path / "mydata"
    rng = np.random.default_rng(1)
    for split, count in (("train", 3), ("test", 1)):
        for name in ("cat", "dog"):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    np.save(tmp_path / "xtr.npy", rng.normal(size=(6, 4)))
    np.save(tmp_path / "xte.npy", rng.normal(size=(2, 4)))
    out = tmp_path / "r.npz"
    attribute(
        tmp_path / "xtr.npy", tmp_path / "xte.npy", out, attributor=Attributor("cosine"),
        data=str(root), k=2,
    )  # fmt: skip
    ranking = load_ranking(out)
    assert ranking.metadata["source_ids"]["root"] == str(root)
    assert ranking_columns(ranking, str(root))["train_path"][0].startswith("train/")
    (root / "train" / "dog" / "2.png").rename(root / "train" / "dog" / "9.png")
    with pytest.raises(InvalidInputError, match="made on other files than the train split"):
        ranking_columns(ranking, str(root))
