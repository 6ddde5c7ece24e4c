"""The default backbone shipped in the package: present, trained, and better than chance."""

from __future__ import annotations

import numpy as np
import pytest

from simattr.errors import InvalidInputError, MissingFileError
from simattr.features import extract_features
from simattr.models import load_backbone, shipped_weights
from simattr.models.backbones import default_weights_path
from simattr.ssl.knn import knn_accuracy


def test_default_backbone_ships_as_small_fp16_file():
    path = default_weights_path()
    assert path is not None, "the package must ship its default CIFAR-10 backbone"
    assert path.stat().st_size < 25_000_000
    net = load_backbone("default")
    assert net.pretrained
    assert net.extra["method"] == "moco"
    assert net.extra["knn_accuracy"] > 0.6


@pytest.mark.slow
def test_default_backbone_features_beat_a_random_network(cifar_train, cifar_test):
    """kNN on a CIFAR-10 slice: trained features must be far better than untrained ones."""
    train = cifar_train.subset(np.arange(3000))
    test = cifar_test.subset(np.arange(600))
    scores = {}
    for spec, kwargs in (("default", {}), ("random", {"arch": "resnet18-w16"})):
        net = load_backbone(spec, **kwargs)
        xtr = extract_features(net, train, progress=False)
        xte = extract_features(net, test, progress=False)
        scores[spec] = knn_accuracy(xtr, train.labels, xte, test.labels, k=50)
    assert scores["default"] > 0.5
    assert scores["default"] > scores["random"] + 0.1


def test_shipped_weights_load_by_name_and_match_the_default():
    shipped = shipped_weights()
    default = default_weights_path()
    assert default is not None and default in shipped.values()
    name = default.name.removesuffix(".safetensors")
    by_name = load_backbone(f"shipped:{name}")
    by_file = load_backbone(f"shipped:{name}.safetensors")
    assert by_name.name == f"shipped:{name}" and by_name.pretrained
    assert by_name.extra["sha256_16"] == load_backbone("default").extra["sha256_16"]
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    a = extract_features(by_name, images, progress=False)
    b = extract_features(by_file, images, progress=False)
    np.testing.assert_array_equal(a, b)


def test_unknown_shipped_name_lists_what_ships():
    with pytest.raises(MissingFileError, match="shipped: 'shipped:"):
        load_backbone("shipped:no-such-weights")
    with pytest.raises(InvalidInputError, match="fixed network"):
        load_backbone(f"shipped:{next(iter(shipped_weights()))}", arch="resnet18")
