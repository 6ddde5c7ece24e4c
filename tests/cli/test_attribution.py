"""The command line, end to end on real files: digits and a slice of the real CIFAR-10.

Every refusal must exit non-zero with one readable message and leave no output behind.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from simattr.attribution import load_ranking
from simattr.cli import app
from simattr.data import load_dataset

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def digits_features(tmp_path_factory) -> Path:
    """Train and test features of digits, made by the CLI itself."""
    out = tmp_path_factory.mktemp("digits-features")
    for split in ("train", "test"):
        result = invoke(
            "features",
            "--data",
            "digits",
            "--split",
            split,
            "--backbone",
            "random:0",
            "--out",
            out / f"{split}.npy",
            "--batch-size",
            "128",
        )
        assert result.exit_code == 0, result.output
    return out


def test_features_command_writes_array_and_sidecar(digits_features):
    train = np.load(digits_features / "train.npy")
    meta = json.loads((digits_features / "train.npy.json").read_text())
    assert train.shape == (meta["dataset"]["n"], 512)
    assert meta["dataset"]["name"] == "digits" and meta["dataset"]["split"] == "train"
    assert meta["backbone"]["pretrained"] is False


def test_attribute_with_dataset_labels_and_paper_export(digits_features, tmp_path):

    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    out, paper = tmp_path / "r.npz", tmp_path / "paper.npy"
    result = invoke(
        "attribute",
        "--train-features",
        digits_features / "train.npy",
        "--test-features",
        digits_features / "test.npy",
        "--data",
        "digits",
        "--targets",
        "3,17,42",
        "--topk",
        "10",
        "--out",
        out,
        "--export-paper-npy",
        paper,
    )
    assert result.exit_code == 0, result.output
    ranking = load_ranking(out)
    assert ranking.targets.tolist() == [3, 17, 42]
    assert ranking.indices.shape == ranking.scores.shape == (3, 10)
    assert np.all(train.labels[ranking.indices] == test.labels[[3, 17, 42]][:, None])
    assert ranking.metadata["method"] == "esvm"
    dense = np.load(paper)
    assert dense.shape == (len(test), 10)
    np.testing.assert_array_equal(dense[[3, 17, 42]], ranking.indices)
    assert np.all(np.delete(dense, [3, 17, 42], axis=0) == -1)


def test_attribute_label_files_all_classes_and_targets_file(digits_features, tmp_path):

    ytr, yte = load_dataset("digits", "train").labels, load_dataset("digits", "test").labels
    np.save(tmp_path / "ytr.npy", ytr)
    np.save(tmp_path / "yte.npy", yte)
    np.save(tmp_path / "t.npy", np.array([0, 5]))
    common = ["--train-features", digits_features / "train.npy"]
    common += ["--test-features", digits_features / "test.npy"]
    res = invoke(
        "attribute",
        *common,
        "--train-labels",
        tmp_path / "ytr.npy",
        "--test-labels",
        tmp_path / "yte.npy",
        "--targets-file",
        tmp_path / "t.npy",
        "--method",
        "cosine",
        "--topk",
        "5",
        "--out",
        tmp_path / "a.npz",
    )
    assert res.exit_code == 0, res.output
    res = invoke(
        "attribute",
        *common,
        "--all-classes",
        "--targets",
        "0,5",
        "--topk",
        "300",
        "--out",
        tmp_path / "b.npz",
    )
    assert res.exit_code == 0, res.output
    a, b = load_ranking(tmp_path / "a.npz"), load_ranking(tmp_path / "b.npz")
    assert np.all(ytr[a.indices] == yte[[0, 5]][:, None])
    # 300 > any class pool: the all-class ranking must reach into other classes.
    assert np.any(ytr[b.indices] != yte[[0, 5]][:, None])


def _refused(result, pattern: str, *outputs: Path) -> None:
    assert result.exit_code != 0
    assert pattern in result.output, result.output
    assert "Traceback" not in result.output
    for path in outputs:
        assert not path.exists(), f"{path} was written by a failed command"


def test_attribute_refusals_leave_nothing_behind(digits_features, tmp_path):
    train, test = digits_features / "train.npy", digits_features / "test.npy"
    out, paper = tmp_path / "r.npz", tmp_path / "p.npy"
    base = ["attribute", "--train-features", train, "--test-features", test, "--out", out]
    base += ["--export-paper-npy", paper]

    nan = np.load(test)
    nan[7, 3] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    _refused(
        invoke(
            "attribute",
            "--train-features",
            train,
            "--test-features",
            tmp_path / "nan.npy",
            "--data",
            "digits",
            "--out",
            out,
        ),
        "row 7, column 3",
        out,
    )
    np.save(tmp_path / "narrow.npy", np.load(test)[:, :100])
    _refused(
        invoke(
            "attribute",
            "--train-features",
            train,
            "--test-features",
            tmp_path / "narrow.npy",
            "--data",
            "digits",
            "--out",
            out,
        ),
        "512 dimensions",
        out,
    )
    # --topk above a class pool is no refusal: tests/e2e/test_practitioner.py
    _refused(invoke(*base, "--data", "digits", "--targets", "3,99999"), "99999", out, paper)
    _refused(invoke(*base, "--data", "digits", "--targets", "3,x"), "comma-separated", out, paper)
    np.save(tmp_path / "short.npy", np.zeros(5, dtype=np.int64))
    np.save(tmp_path / "yte.npy", np.zeros(len(np.load(test)), dtype=np.int64))
    _refused(
        invoke(
            *base, "--train-labels", tmp_path / "short.npy", "--test-labels", tmp_path / "yte.npy"
        ),
        "5 entries",
        out,
        paper,
    )
    bad_range = np.full(len(np.load(train)), 12, dtype=np.int64)
    np.save(tmp_path / "range.npy", bad_range)
    _refused(
        invoke(
            *base,
            "--train-labels",
            tmp_path / "range.npy",
            "--test-labels",
            tmp_path / "yte.npy",
            "--targets",
            "0",
        ),
        "no image of the training set has",
        out,
        paper,
    )
    _refused(invoke(*base), "needs labels", out, paper)
    _refused(invoke(*base, "--data", "digits", "--method", "knn"), "knn", out, paper)
    _refused(
        invoke(
            "attribute",
            "--train-features",
            tmp_path / "absent.npy",
            "--test-features",
            test,
            "--data",
            "digits",
            "--out",
            out,
        ),
        "absent.npy",
        out,
    )


def test_features_refusals(tmp_path):
    out = tmp_path / "f.npy"
    _refused(invoke("features", "--data", tmp_path / "nowhere", "--out", out), "nowhere", out)
    _refused(
        invoke("features", "--data", "digits", "--backbone", tmp_path / "w.pt", "--out", out),
        "w.pt",
        out,
    )


def test_demo_runs_end_to_end(tmp_path):
    result = invoke("demo", "--out", tmp_path / "demo", "--n-targets", "3")
    assert result.exit_code == 0, result.output
    pictures = sorted((tmp_path / "demo").glob("target_*.png"))
    assert len(pictures) == 3
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pictures)
    ranking = load_ranking(tmp_path / "demo" / "ranking.npz")
    assert ranking.indices.shape == (3, 10)  # --topk: 10 by default, as everywhere
    for target in ranking.targets:
        assert f"{target}" in result.output
    assert "backbone:" in result.output


@pytest.mark.slow
def test_cifar10_slice_through_the_cli(cifar_train, cifar_test, tmp_path):
    """The real CIFAR-10 copy: features of a slice, class-conditional ESVM, label files."""
    from simattr.features import extract_features, save_features
    from simattr.models import load_backbone

    net = load_backbone("random:0")
    train, test = cifar_train.subset(np.arange(400)), cifar_test.subset(np.arange(20))
    save_features(tmp_path / "tr.npy", extract_features(net, train, progress=False), backbone=net)
    save_features(tmp_path / "te.npy", extract_features(net, test, progress=False), backbone=net)
    np.save(tmp_path / "ytr.npy", train.labels)
    np.save(tmp_path / "yte.npy", test.labels)
    result = invoke(
        "attribute",
        "--train-features",
        tmp_path / "tr.npy",
        "--test-features",
        tmp_path / "te.npy",
        "--train-labels",
        tmp_path / "ytr.npy",
        "--test-labels",
        tmp_path / "yte.npy",
        "--topk",
        "20",
        "--out",
        tmp_path / "r.npz",
    )
    assert result.exit_code == 0, result.output
    ranking = load_ranking(tmp_path / "r.npz")
    assert ranking.indices.shape == (20, 20)
    assert np.all(train.labels[ranking.indices] == test.labels[:, None])


def test_train_ssl_precision_option(tmp_path):
    out = tmp_path / "run"
    args = ["train-ssl", "--data", "digits", "--arch", "resnet18-w16", "--epochs", "1"]
    result = invoke(*args, "--batch-size", "256", "--precision", "bf16", "--out", out)
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "backbone.safetensors.json").read_text())
    assert meta["precision"] == "bf16" and meta["epochs"] == 1
    bad = invoke(*args, "--precision", "fp16", "--out", tmp_path / "bad")
    assert bad.exit_code != 0 and "precision" in bad.output
    assert not (tmp_path / "bad").exists()


# -- a method that is not registered ---------------------------------------------------------------


def test_cli_refuses_a_method_that_is_not_registered(tmp_path):
    from simattr.cli import app

    np.save(tmp_path / "f.npy", np.zeros((4, 3), dtype=np.float32))
    result = runner.invoke(
        app,
        ["attribute", "--train-features", str(tmp_path / "f.npy"), "--test-features",
         str(tmp_path / "f.npy"), "--method", "no-such-method", "--out", str(tmp_path / "r.npz")],
    )  # fmt: skip
    assert result.exit_code == 2  # a usage error, before anything runs
    assert "no-such-method" in result.output
    assert not (tmp_path / "r.npz").exists()


def _learned_inputs(tmp_path: Path) -> dict[str, Path]:
    """Features, labels and a learned model fitted on seeded synthetic retraining data."""
    from simattr.attribution.learned import LearnedAttribution

    rng = np.random.default_rng(0)
    pool, targets = rng.normal(size=(48, 8)), rng.normal(size=(12, 8))
    pool_labels, target_labels = np.arange(48) % 3, np.arange(12) % 3
    masks, margins = rng.random((24, 48)) < 0.5, rng.normal(size=(24, 12))
    model = LearnedAttribution(form="bilinear", dim=4, signals=("cosine",)).fit(
        pool, pool_labels, masks, margins, targets, target_labels
    )
    files = {
        "train": tmp_path / "train.npy",
        "test": tmp_path / "test.npy",
        "train_labels": tmp_path / "train_labels.npy",
        "test_labels": tmp_path / "test_labels.npy",
    }
    for key, value in zip(files, (pool, targets, pool_labels, target_labels), strict=True):
        np.save(files[key], value.astype(np.float32) if value.dtype.kind == "f" else value)
    files["model"] = model.save(tmp_path / "learned.safetensors")
    return files


def test_attribute_applies_a_learned_model_given_by_file(tmp_path: Path) -> None:
    f = _learned_inputs(tmp_path)
    common = ["attribute", "--train-features", str(f["train"]), "--test-features", str(f["test"]),
              "--train-labels", str(f["train_labels"]), "--test-labels", str(f["test_labels"]),
              "--all-classes", "--topk", "5"]  # fmt: skip
    done = invoke(*common, "--method", "learned", "--learned-model", str(f["model"]),
                  "--out", str(tmp_path / "r.npz"))  # fmt: skip
    assert done.exit_code == 0, done.output
    ranking = load_ranking(tmp_path / "r.npz")
    assert ranking.indices.shape == (12, 5)
    # signed scores in logits: the learned model's own, in descending order
    assert (np.diff(ranking.scores, axis=1) <= 0).all()
    # the option belongs to the method, and the method to its model file
    no_model = invoke(*common, "--method", "learned", "--out", str(tmp_path / "a.npz"))
    assert no_model.exit_code == 1 and "--method learned needs --learned-model" in no_model.output
    stray = invoke(*common, "--learned-model", str(f["model"]), "--out", str(tmp_path / "b.npz"))
    assert stray.exit_code == 1 and "read by --method learned only" in stray.output
    missing = invoke(*common, "--method", "learned", "--learned-model", str(tmp_path / "gone"),
                     "--out", str(tmp_path / "c.npz"))  # fmt: skip
    assert missing.exit_code == 1 and "--learned-model: no such file" in missing.output
    assert not any((tmp_path / n).exists() for n in ("a.npz", "b.npz", "c.npz"))
