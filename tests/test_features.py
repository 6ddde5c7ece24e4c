"""Backbones and feature extraction: determinism, batch independence, sidecars, weights files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from simattr import CheckpointError, MissingFileError
from simattr.features import extract_features, load_features, save_features
from simattr.models import load_backbone


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(20, 16, 16, 3), dtype=np.uint8)


def test_random_backbone_is_seeded_and_batch_independent(images):
    a = extract_features(load_backbone("random:3"), images, batch_size=20, progress=False)
    b = extract_features(load_backbone("random:3"), images, batch_size=3, progress=False)
    c = extract_features(load_backbone("random:4"), images, batch_size=20, progress=False)
    assert a.shape == (20, 512) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert not np.allclose(a, c)


def test_default_backbone_says_it_is_a_stand_in(images, tmp_path, monkeypatch):
    """Without shipped weights, 'default' is a random stand-in and every output says so."""
    import simattr.models.backbones as backbones

    monkeypatch.setattr(backbones, "default_weights_path", lambda: None)
    with pytest.warns(UserWarning, match="randomly initialised"):
        net = load_backbone("default")
    assert net.pretrained is False
    feats = extract_features(net, images, progress=False)
    out = save_features(tmp_path / "f.npy", feats, backbone=net)
    meta = json.loads((tmp_path / "f.npy.json").read_text())
    assert meta["backbone"]["pretrained"] is False
    assert "stand-in" in meta["backbone"]["note"]
    assert meta["shape"] == [20, 512]
    np.testing.assert_array_equal(load_features(out), feats)


def test_safetensors_backbone_round_trip(images, tmp_path):
    source = load_backbone("random:7")
    path = tmp_path / "net.safetensors"
    save_file({k: v.contiguous() for k, v in source.module.state_dict().items()}, str(path))
    (tmp_path / "net.safetensors.json").write_text(json.dumps({"arch": "resnet18"}))
    loaded = load_backbone(str(path))
    np.testing.assert_allclose(
        extract_features(loaded, images, progress=False),
        extract_features(source, images, progress=False),
        rtol=1e-5,
        atol=1e-6,
    )


def test_wrong_weights_file_lists_missing_and_unexpected_keys(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"encoder.layer.weight": torch.zeros(3, 3)}, str(path))
    with pytest.raises(CheckpointError, match=r"missing keys \['bn1.bias'.*unexpected keys"):
        load_backbone(str(path))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_backbone(str(garbage))
    with pytest.raises(MissingFileError):
        load_backbone(str(tmp_path / "absent.safetensors"))


def test_features_of_real_cifar_images(cifar_train):
    net = load_backbone("random")
    subset = cifar_train.subset(np.arange(32))
    feats = extract_features(net, subset, batch_size=16, progress=False)
    assert feats.shape == (32, 512)
    assert np.all(np.isfinite(feats))
    assert np.linalg.matrix_rank(feats) > 16  # images give distinct, non-degenerate features
