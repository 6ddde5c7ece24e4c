"""Classifier files (:mod:`simattr.training.classifier_io`): models trained on scikit-learn's
bundled digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from digitskit import digits_recipe

from simattr.errors import CheckpointError, SimattrError
from simattr.training.recipes import get_recipe, recipe_pool

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
