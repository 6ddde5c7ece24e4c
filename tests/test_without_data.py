"""Modules whose other tests all need the shared CIFAR-10, tested on what ships or is made here.

Everything in this file runs without ``SIMATTR_DATA_ROOT``: synthetic arrays, scikit-learn's
digits (bundled) and real tiny training on digits. Digits' 8 x 8 images need a network that
pools 8 x 8 down to 1 x 1, so the models here use :func:`digits_recipe` (quarter-width
ResNet-9, 30 images per class, 2 epochs: a fraction of a second per model on one thread).
"""

from __future__ import annotations

import dataclasses
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

import simattr
from simattr.data import load_dataset
from simattr.errors import CheckpointError, InvalidInputError, SimattrError
from simattr.training.recipes import RECIPES, PoolSpec, Recipe, get_recipe, recipe_pool

runner = CliRunner()
WIDE = {"COLUMNS": "240"}  # rich tables and help fold long cells at the default 80 columns


def digits_recipe(**changes) -> Recipe:
    base = dataclasses.replace(
        get_recipe("tiny"),
        name="tiny-digits",
        arch="resnet9-w0.25",
        epochs=2,
        pool=PoolSpec(30, 0),
    )
    return dataclasses.replace(base, **changes)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One thread per model (the fast setting on a shared 2-core machine); restored after."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train"), load_dataset("digits", "test")


# -- simattr.__main__, simattr._version -------------------------------------------------------


def test_python_dash_m_simattr_runs_the_cli_and_prints_the_version():
    from importlib.metadata import version

    env = {k: v for k, v in os.environ.items() if k != "SIMATTR_DATA_ROOT"}
    proc = subprocess.run(
        [sys.executable, "-m", "simattr", "--version"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"simattr {simattr.__version__}"
    # the version in the code is the one the installed distribution declares (pyproject)
    assert simattr.__version__ == version("simattr")


# -- simattr._progress ------------------------------------------------------------------------


def test_progress_bar_draws_the_count_when_enabled(capsys, monkeypatch):
    from simattr._progress import progress_bar

    # pytest's stderr is no terminal: plain lines, here after every step
    monkeypatch.setenv("SIMATTR_PROGRESS_INTERVAL", "0")
    with progress_bar("counting sheep", 5, enabled=True) as advance:
        advance(2)
        advance()
        advance(2)
    drawn = capsys.readouterr()
    assert drawn.out == ""
    assert drawn.err.splitlines()[0].startswith("counting sheep: 2/5 (40%), ")
    assert drawn.err.splitlines()[-1].startswith("counting sheep: 5/5 (100%), done in")


def test_progress_bar_is_silent_when_disabled(capsys):
    from simattr._progress import progress_bar

    with progress_bar("quiet", 3, enabled=False) as advance:
        advance(3)
        advance()
    drawn = capsys.readouterr()
    assert drawn.out == drawn.err == ""


# -- simattr.report.grid ----------------------------------------------------------------------


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    crc = struct.unpack(">I", data[16 + length : 20 + length])[0]
    assert zlib.crc32(data[12 : 16 + length]) == crc, "corrupt IHDR chunk"
    return struct.unpack(">II", data[16:24])


def test_attribution_grid_is_a_png_of_the_right_size_with_a_red_target_frame(tmp_path, digits):
    import matplotlib.image

    from simattr.report.grid import save_attribution_grid

    train, test = digits
    out = tmp_path / "grid" / "target.png"
    out.parent.mkdir()
    images = train.get_images([0, 1, 2])
    path = save_attribution_grid(
        out, test.get_images([0])[0], "target", images, ["a", "b", "c"], suptitle="top 3"
    )
    assert Path(path) == out
    width, height = _png_size(out.read_bytes())
    # one panel of 1.6 x 2.1 inches per image (target + 3) at 110 dpi
    assert (width, height) == (round(1.6 * 4 * 110), round(2.1 * 110))
    pixels = matplotlib.image.imread(out)
    assert pixels.shape[:2] == (height, width)
    red = (pixels[..., 0] > 0.9) & (pixels[..., 1] < 0.1) & (pixels[..., 2] < 0.1)
    assert red.sum() > 100, "the target's red frame is missing"
    assert red[:, width // 4 :].sum() == 0, "only the first panel (the target) is framed"
    assert sorted(p.name for p in out.parent.iterdir()) == ["target.png"]  # no temporary left


# -- simattr.cli (app, _common, evaluation) ---------------------------------------------------


def test_help_lists_every_registered_command():
    from simattr.cli import app

    names = sorted(typer.main.get_command(app).commands)
    assert {"attribute", "bench", "recipes", "support"} <= set(names)
    result = runner.invoke(app, ["--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    for name in names:
        assert name in result.output, name


def test_version_option():
    from simattr.cli import app

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"simattr {simattr.__version__}"


def test_recipes_command_lists_every_registered_recipe(monkeypatch):
    from simattr.cli import app

    extra = digits_recipe(name="contract-only-recipe", description="registered by a test")
    monkeypatch.setitem(RECIPES, extra.name, extra)
    result = runner.invoke(app, ["recipes"], env=WIDE)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for name, recipe in RECIPES.items():
        row = [line for line in lines if f" {name} " in line]
        assert row, f"recipe {name!r} is not listed"
        assert recipe.arch in row[0] and f" {recipe.epochs} " in row[0]


def test_bench_command_refuses_an_unknown_profile_in_one_line():
    from simattr.cli import app

    result = runner.invoke(app, ["bench", "--data", "digits", "--profile", "huge"])
    assert result.exit_code == 1
    assert "unknown profile 'huge'" in result.output
    assert "Traceback" not in result.output


def test_choice_enums_equal_the_registries_they_are_built_from():
    from simattr.attribution.retrieval import INDEX_KINDS, RETRIEVALS
    from simattr.attribution.scorers import SCORERS, ExemplarSVMScorer
    from simattr.cli import _common
    from simattr.evaluation.support import MODES
    from simattr.ssl.methods import METHODS as SSL_METHODS
    from simattr.training.executors import EXECUTORS

    pairs = {
        "Method": SCORERS,
        "Solver": ExemplarSVMScorer.solvers,
        "Retrieval": RETRIEVALS,
        "IndexKind": INDEX_KINDS,
        "Mode": MODES,
        "ExecutorKind": EXECUTORS,
        "SSLMethodName": SSL_METHODS,
    }
    for enum_name, registry in pairs.items():
        enum = getattr(_common, enum_name)
        assert [member.value for member in enum] == list(registry), enum_name


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


# -- simattr.baselines.controls ---------------------------------------------------------------


def test_random_ranking_draws_from_the_targets_class_and_pool_seeded_per_target():
    from simattr.baselines.controls import random_ranking

    rng = np.random.default_rng(0)
    train_labels = rng.integers(0, 3, 200)
    test_labels = rng.integers(0, 3, 20)
    candidates = np.sort(rng.choice(200, 120, replace=False))
    targets = np.array([3, 7, 11])
    r = random_ranking(train_labels, test_labels, targets, 10, candidates=candidates, seed=5)
    assert r.indices.shape == r.scores.shape == (3, 10) and r.indices.dtype == np.int64
    assert np.isin(r.indices, candidates).all()
    assert (train_labels[r.indices] == test_labels[targets][:, None]).all()
    assert all(len(np.unique(row)) == 10 for row in r.indices)
    assert np.all(np.diff(r.scores, axis=1) < 0)
    # a target's order depends on the seed and the target only, not on the other targets
    alone = random_ranking(train_labels, test_labels, [7], 10, candidates=candidates, seed=5)
    np.testing.assert_array_equal(alone.indices[0], r.indices[1])
    other = random_ranking(train_labels, test_labels, [7], 10, candidates=candidates, seed=6)
    assert not np.array_equal(other.indices[0], alone.indices[0])
    # all classes: any candidate may appear
    free = random_ranking(train_labels, test_labels, targets, 60, candidates=candidates,
                          class_conditional=False)  # fmt: skip
    assert np.isin(free.indices, candidates).all()
    assert len(np.unique(train_labels[free.indices])) > 1
    smallest = int(np.bincount(train_labels[candidates], minlength=3).min())
    with pytest.raises(InvalidInputError, match="larger"):
        random_ranking(
            train_labels, test_labels, np.arange(20), smallest + 1, candidates=candidates
        )


# -- simattr.training.trainer -----------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_pool(digits):
    train, _ = digits
    return train.subset(recipe_pool(digits_recipe(), train))


@pytest.fixture(scope="module")
def digits_model(digits_pool):
    from simattr.training.trainer import train_classifier

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_classifier(digits_recipe(), digits_pool, seed=0)
    finally:
        torch.set_num_threads(saved)


def test_trained_digits_model_beats_chance_by_far(digits_model, digits):
    from simattr.training.trainer import predict_logits

    _, test = digits
    logits = predict_logits(digits_model, digits_recipe(), test.images)
    assert logits.shape == (len(test), 10) and logits.dtype == np.float32
    accuracy = float((logits.argmax(1) == test.labels).mean())
    assert accuracy > 0.4, accuracy  # chance is 0.1
    assert not digits_model.training  # returned in eval mode


def test_training_is_seeded_and_leaves_the_global_rngs_alone(digits_model, digits_pool, digits):
    from simattr.training.trainer import predict_logits, train_classifier

    _, test = digits
    images = test.images[:50]
    # the legacy global generators are exactly what a caller's unseeded code draws from
    torch_state, np_state = torch.random.get_rng_state(), np.random.get_state()  # noqa: NPY002
    again = train_classifier(digits_recipe(), digits_pool, seed=0)
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state[1])  # noqa: NPY002
    other = train_classifier(digits_recipe(), digits_pool, seed=1)
    reference = predict_logits(digits_model, digits_recipe(), images)
    np.testing.assert_array_equal(predict_logits(again, digits_recipe(), images), reference)
    assert not np.array_equal(predict_logits(other, digits_recipe(), images), reference)


def test_predicting_no_images_gives_an_empty_logit_array(digits_model):
    from simattr.training.trainer import predict_logits

    out = predict_logits(digits_model, digits_recipe(), np.zeros((0, 8, 8, 3), dtype=np.uint8))
    assert out.shape == (0, 10) and out.dtype == np.float32


# -- simattr.training.classifier_io -----------------------------------------------------------


def test_classifier_file_round_trip_gives_identical_predictions(tmp_path, digits_model, digits):
    from simattr.training.classifier_io import (
        check_compatible,
        load_classifier,
        pool_rows_fingerprint,
        read_classifier_meta,
        save_classifier,
    )
    from simattr.training.trainer import predict_logits

    train, test = digits
    recipe = digits_recipe()
    fp = pool_rows_fingerprint(train, recipe_pool(recipe, train))
    path = save_classifier(tmp_path / "m.safetensors", digits_model, recipe, 10, 0, fp)
    meta = read_classifier_meta(path)
    assert meta["arch"] == recipe.arch and meta["num_classes"] == 10 and meta["seed"] == 0
    model, meta2 = load_classifier(path)
    assert meta2 == meta and not model.training
    saved, loaded = digits_model.state_dict(), model.state_dict()
    assert saved.keys() == loaded.keys()
    for key, value in saved.items():
        assert torch.equal(loaded[key], value.cpu()), key
    # same weights; the trained model runs channels_last, so convolutions may round differently
    np.testing.assert_allclose(
        predict_logits(model, recipe, test.images[:40]),
        predict_logits(digits_model, recipe, test.images[:40]),
        rtol=1e-5,
        atol=1e-6,
    )
    check_compatible(meta, recipe, path)  # same network and inputs: accepted
    with pytest.raises(CheckpointError, match="arch"):
        check_compatible(meta, get_recipe("tiny"), path)
    with pytest.raises(SimattrError):
        save_classifier(tmp_path / "m.pt", digits_model, recipe, 10, 0, fp)
    assert not (tmp_path / "m.pt").exists()
    # weights without their sidecar are refused, naming the file
    bare = tmp_path / "bare.safetensors"
    bare.write_bytes(path.read_bytes())
    with pytest.raises(CheckpointError, match=r"bare\.safetensors"):
        load_classifier(bare)


def test_train_checkpoints_trains_once_then_reads_the_folder(tmp_path):
    from simattr.training.classifier_io import load_classifier, train_checkpoints

    recipe = digits_recipe()
    paths = train_checkpoints("digits", recipe, 2, tmp_path / "ckpt", threads=1)
    assert [p.name for p in paths] == ["seed-0.safetensors", "seed-1.safetensors"]
    stamps = [p.stat().st_mtime_ns for p in paths]
    assert train_checkpoints("digits", recipe, 2, tmp_path / "ckpt", threads=1) == paths
    assert [p.stat().st_mtime_ns for p in paths] == stamps  # nothing retrained
    assert [load_classifier(p)[1]["seed"] for p in paths] == [0, 1]
    # the folder holds models of this recipe: another recipe's request is refused
    with pytest.raises(SimattrError):
        train_checkpoints("digits", digits_recipe(epochs=1), 1, tmp_path / "ckpt", threads=1)


# -- simattr.evaluation.ensemble --------------------------------------------------------------


def test_ensemble_trains_once_and_derives_correctness_and_flip_classes(tmp_path, digits):
    from simattr.evaluation.ensemble import train_ensemble

    _, test = digits
    recipe = digits_recipe()
    ens = train_ensemble("digits", recipe, n_models=2, cache_dir=tmp_path / "ens", threads=1)
    assert ens.probs.shape == (2, len(test), 10) and ens.seeds == (0, 1)
    np.testing.assert_allclose(ens.probs.sum(axis=2), 1.0, atol=1e-4)
    assert not np.array_equal(ens.probs[0], ens.probs[1])  # two seeds, two models
    np.testing.assert_array_equal(ens.correct, ens.mean.argmax(1) == test.labels)
    assert ens.accuracy > 0.4  # chance is 0.1
    assert np.all(ens.flip_class != test.labels)
    runner_up = np.argsort(ens.mean, axis=1)[:, -2]
    wrong = ~ens.correct
    np.testing.assert_array_equal(ens.flip_class[ens.correct], runner_up[ens.correct])
    np.testing.assert_array_equal(ens.flip_class[wrong], ens.predicted[wrong])
    files = sorted((tmp_path / "ens").glob("seed-*.npy"))
    stamps = [f.stat().st_mtime_ns for f in files]
    assert len(files) == 2
    again = train_ensemble("digits", recipe, n_models=2, cache_dir=tmp_path / "ens", threads=1)
    np.testing.assert_array_equal(again.probs, ens.probs)
    assert [f.stat().st_mtime_ns for f in files] == stamps  # read back, not retrained
    with pytest.raises(SimattrError):
        train_ensemble("digits", digits_recipe(epochs=1), n_models=1,
                       cache_dir=tmp_path / "ens", threads=1)  # fmt: skip
    with pytest.raises(InvalidInputError, match="at least one"):
        train_ensemble("digits", recipe, n_models=0, cache_dir=tmp_path / "none")
