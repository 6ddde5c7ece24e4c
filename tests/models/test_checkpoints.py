"""Foreign checkpoints: each published layout loads to the same features as its source network.

Every checkpoint here is written with ``torch.save`` in the nesting its codebase uses, heads,
momentum encoders and queues included, from a randomly initialised ``resnet18-w16`` whose
batch-norm parameters and statistics are randomised too (so a loader that skipped them would
be caught). Loading goes through the public :func:`load_backbone`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from netkit import randomise_bn
from safetensors.torch import save_file
from torch import nn

from simattr import CheckpointError, InvalidInputError
from simattr.features import extract_features
from simattr.models import Backbone, load_backbone
from simattr.models import backbones as backbones_module
from simattr.models import resnet as resnet_module
from simattr.models.resnet import random_init

ARCH = "resnet18-w16"


def _source(seed: int = 1) -> nn.Module:
    return randomise_bn(random_init(ARCH, seed), seed).eval()


def _state(module: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + k: v.clone().contiguous() for k, v in module.state_dict().items()}


def _head(prefix: str, dims: tuple[int, ...] = (128, 32)) -> dict[str, torch.Tensor]:
    """A two-layer MLP head (``fc.0``, ``fc.2``) as MoCo v2 / v3 store it."""
    return {
        f"{prefix}0.weight": torch.randn(dims[1], 128),
        f"{prefix}0.bias": torch.randn(dims[1]),
        f"{prefix}2.weight": torch.randn(dims[0], dims[1]),
        f"{prefix}2.bias": torch.randn(dims[0]),
    }


def _features(module: nn.Module, images: np.ndarray) -> np.ndarray:
    return extract_features(Backbone(module=module, arch=ARCH, name="src"), images, progress=False)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(6, 16, 16, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def source() -> nn.Module:
    return _source(1)


@pytest.fixture(scope="module")
def source_features(source, images) -> np.ndarray:
    return _features(source, images)


def _assert_same_features(loaded: Backbone, expected: np.ndarray, images: np.ndarray) -> None:
    assert loaded.arch == ARCH
    np.testing.assert_allclose(
        extract_features(loaded, images, progress=False), expected, rtol=1e-5, atol=1e-5
    )


def _moco(source: nn.Module) -> dict:
    other = _source(2)
    return {
        "epoch": 200,
        "arch": "resnet18",
        "state_dict": {
            **_state(source, "module.encoder_q."),
            **_head("module.encoder_q.fc."),
            **_state(other, "module.encoder_k."),
            **_head("module.encoder_k.fc."),
            "module.queue": torch.randn(128, 64),
            "module.queue_ptr": torch.zeros(1, dtype=torch.long),
        },
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.03, "params": [0, 1]}]},
    }


def _mocov3(source: nn.Module) -> dict:
    other = _source(2)
    return {
        "epoch": 100,
        "arch": "resnet18",
        "state_dict": {
            **_state(source, "module.base_encoder."),
            **_head("module.base_encoder.fc."),
            **_state(other, "module.momentum_encoder."),
            **_head("module.momentum_encoder.fc."),
            **_head("module.predictor.", (128, 128)),
        },
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.6, "params": [0]}]},
        "scaler": {"scale": 65536.0, "growth_factor": 2.0},
    }


def _lightly(source: nn.Module) -> dict:
    other = _source(2)
    return {
        "epoch": 9,
        "global_step": 900,
        "pytorch-lightning_version": "2.1.0",
        "state_dict": {
            **_state(source, "backbone."),
            **_state(other, "backbone_momentum."),
            "projection_head.layers.0.weight": torch.randn(32, 128),
            "projection_head.layers.2.weight": torch.randn(16, 32),
        },
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.06, "params": [0]}]}],
        "lr_schedulers": [],
    }


def _solo(source: nn.Module) -> dict:
    other = _source(2)
    return {
        "epoch": 999,
        "global_step": 12345,
        "pytorch-lightning_version": "1.9.0",
        "state_dict": {
            **_state(source, "backbone."),
            "projector.0.weight": torch.randn(32, 128),
            "projector.0.bias": torch.randn(32),
            **_state(other, "momentum_backbone."),
            "momentum_projector.0.weight": torch.randn(32, 128),
            "classifier.weight": torch.randn(10, 128),
            "classifier.bias": torch.randn(10),
        },
        "hyper_parameters": {"method": "mocov2plus", "backbone": {"name": "resnet18"}},
    }


def _torchvision(source: nn.Module) -> dict:
    return {**_state(source), "fc.weight": torch.randn(10, 128), "fc.bias": torch.randn(10)}


@pytest.mark.parametrize(
    ("builder", "filename", "fmt"),
    [
        (_moco, "moco_v2.pth.tar", "moco"),
        (_mocov3, "mocov3.pth.tar", "mocov3"),
        (_lightly, "lightly.ckpt", "lightly"),
        (_solo, "solo.ckpt", "solo"),
        (_torchvision, "torchvision.pth", "torchvision"),
    ],
)
def test_foreign_layout_loads_to_the_source_features(
    builder, filename, fmt, source, source_features, images, tmp_path
):
    path = tmp_path / filename
    torch.save(builder(source), path)
    loaded = load_backbone(str(path))
    _assert_same_features(loaded, source_features, images)
    assert loaded.extra["format"] == fmt
    assert len(loaded.extra["sha256_16"]) == 16
    assert loaded.pretrained is True
    assert loaded.mean == backbones_module.CIFAR10_MEAN
    assert "CIFAR-10 mean" in loaded.note
    assert loaded.module.conv1.weight.dtype == torch.float32


def test_torchvision_layout_in_safetensors_and_pt(source, source_features, images, tmp_path):
    data_parallel = {f"module.{k}": v for k, v in _torchvision(source).items()}
    torch.save(data_parallel, tmp_path / "dp.pt")
    save_file(_torchvision(source), str(tmp_path / "tv.safetensors"))
    for name in ("dp.pt", "tv.safetensors"):
        loaded = load_backbone(str(tmp_path / name))
        _assert_same_features(loaded, source_features, images)
        assert loaded.extra["format"] == "torchvision"


def test_lightly_sequential_of_torchvision_children(source, source_features, images, tmp_path):
    # nn.Sequential(conv1, bn1, relu, maxpool=Identity, layer1..4, avgpool): stages at 4..7
    index = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6", "layer4": "7"}
    state = {}
    for key, value in source.state_dict().items():
        head, rest = key.split(".", 1)
        state[f"backbone.{index[head]}.{rest}"] = value
    torch.save({"state_dict": state}, tmp_path / "seq.ckpt")
    loaded = load_backbone(str(tmp_path / "seq.ckpt"))
    _assert_same_features(loaded, source_features, images)
    assert "stem_relu" not in loaded.extra


def test_lightly_resnet_generator_with_split_batch_norm(images, tmp_path):
    """lightly's CIFAR benchmark backbone: ResNetGenerator children in an nn.Sequential, with
    SplitBatchNorm (as its MoCo model uses) and no ReLU after the stem."""
    from lightly.models import ResNetGenerator

    torch.manual_seed(3)
    resnet = ResNetGenerator("resnet-18", width=0.25, num_splits=2)
    backbone = nn.Sequential(*list(resnet.children())[:-1], nn.AdaptiveAvgPool2d(1))
    randomise_bn(backbone.train(), 3)  # per-split statistics differ, as mid-training
    state = {f"backbone.{k}": v.clone() for k, v in backbone.state_dict().items()}
    assert state["backbone.1.running_mean"].shape == (32,)  # 2 splits x 16 channels
    assert "backbone.3.0.shortcut.0.weight" in state
    torch.save({"epoch": 1, "state_dict": state}, tmp_path / "lightly_moco.ckpt")
    expected = _features(nn.Sequential(backbone.eval(), nn.Flatten()), images)
    loaded = load_backbone(str(tmp_path / "lightly_moco.ckpt"))
    _assert_same_features(loaded, expected, images)
    assert loaded.extra["stem_relu"] is False
    assert loaded.extra["split_bn_layers_averaged"] == 20
    assert "no ReLU after the stem" in loaded.note


def test_split_batch_norm_statistics_are_averaged(source, tmp_path):
    state = _torchvision(source)
    mean_a, mean_b = torch.randn(16), torch.randn(16)
    var_a, var_b = torch.rand(16) + 0.5, torch.rand(16) + 0.5
    state["bn1.running_mean"] = torch.cat([mean_a, mean_b])
    state["bn1.running_var"] = torch.cat([var_a, var_b])
    torch.save(state, tmp_path / "split.pth")
    loaded = load_backbone(str(tmp_path / "split.pth"))
    torch.testing.assert_close(loaded.module.bn1.running_mean, (mean_a + mean_b) / 2)
    torch.testing.assert_close(loaded.module.bn1.running_var, (var_a + var_b) / 2)
    assert loaded.extra["split_bn_layers_averaged"] == 1


class _Payload:
    """Unpickling this object opens (creates) ``marker``: code execution, made visible."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickle_that_would_run_code_is_refused_unexecuted(source, tmp_path):
    path = tmp_path / "evil.pth.tar"
    marker = tmp_path / "marker"
    torch.save({"state_dict": _state(source, "module.encoder_q."), "x": _Payload(marker)}, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match=r"evil\.pth\.tar is not a plain weights file"):
        load_backbone(str(path))
    assert not marker.exists()
    # the file really is armed: an unrestricted load runs its code
    probe = tmp_path / "probe.pth"
    torch.save(_Payload(tmp_path / "probe-marker"), probe)
    torch.load(probe, weights_only=False).close()
    assert (tmp_path / "probe-marker").exists()


def test_garbage_and_unsupported_files_are_refused(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.pth is not a readable PyTorch checkpoint"):
        load_backbone(str(junk))
    other = tmp_path / "weights.npy"
    other.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unsupported checkpoint file type"):
        load_backbone(str(other))


def test_wrong_architecture_lists_missing_unexpected_and_shapes(source, tmp_path):
    state = {k: v for k, v in _state(source).items() if not k.startswith("layer4.1.")}
    state["extra.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError) as info:
        load_backbone(str(tmp_path / "partial.pth"))
    msg = str(info.value)
    assert "partial.pth does not hold a resnet18-w16 backbone" in msg
    assert "missing keys ['layer4.1.bn1.bias'" in msg
    assert "unexpected keys ['extra.weight']" in msg
    torch.save(_state(source), tmp_path / "w16.pth")
    with pytest.raises(CheckpointError, match=r"shape mismatches .*conv1.weight \(16, 3, 3, 3\)"):
        load_backbone(str(tmp_path / "w16.pth"), arch="resnet18-w32")


def test_imagenet_stem_loads_as_imagenet_arch_only(tmp_path):
    import torchvision

    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "imagenet.pth")
    # inferred from the 7x7 conv1 (tests/models/test_backbones.py checks the features)
    assert load_backbone(str(tmp_path / "imagenet.pth")).arch == "resnet18-imagenet"
    with pytest.raises(CheckpointError, match=r"\(64, 3, 7, 7\).*ImageNet-stem"):
        load_backbone(str(tmp_path / "imagenet.pth"), arch="resnet18")


def test_explicit_format_override(source, source_features, images, tmp_path):
    path = tmp_path / "backbone_only.ckpt"
    torch.save({"state_dict": _state(source, "backbone.")}, path)
    assert load_backbone(str(path)).extra["format"] == "lightly"  # the guess without solo keys
    loaded = load_backbone(str(path), format="solo")
    assert loaded.extra["format"] == "solo"
    _assert_same_features(loaded, source_features, images)
    with pytest.raises(CheckpointError, match=r"not a 'moco' checkpoint: no key starts with"):
        load_backbone(str(path), format="moco")
    # as 'simattr' (names taken as they are) the backbone. prefix does not fit
    with pytest.raises(CheckpointError, match=r"unexpected keys \['backbone.bn1.bias'"):
        load_backbone(str(path), format="simattr", arch=ARCH)
    with pytest.raises(InvalidInputError, match="unknown checkpoint format"):
        load_backbone(str(path), format="timm")


def _ship(source: nn.Module, path: Path) -> None:
    """Write ``source`` as the shipped default is written: fp16 safetensors plus sidecar."""
    save_file({k: v.half().contiguous() for k, v in source.state_dict().items()}, str(path))
    meta = {
        "kind": "backbone",
        "arch": ARCH,
        "method": "moco",
        "epochs": 3,
        "input_mean": [0.5, 0.45, 0.4],
        "input_std": [0.25, 0.25, 0.25],
        "pretrained": True,
        "note": "moco self-supervised training, 3/3 epochs",
    }
    path.with_name(path.name + ".json").write_text(json.dumps(meta))


def test_shipped_default_is_loaded_when_present(source, images, tmp_path, monkeypatch):
    path = tmp_path / "cifar10-moco-resnet18-w16.safetensors"
    _ship(source, path)
    monkeypatch.setattr(backbones_module, "default_weights_path", lambda: path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no stand-in warning
        loaded = load_backbone("default")
    assert (loaded.name, loaded.arch, loaded.pretrained) == ("default", ARCH, True)
    assert loaded.mean == (0.5, 0.45, 0.4) and loaded.extra["method"] == "moco"
    assert all(t.dtype == torch.float32 for t in loaded.module.parameters())
    rounded = random_init(ARCH)
    rounded.load_state_dict({k: v.half().float() for k, v in source.state_dict().items()})
    expected = extract_features(
        Backbone(module=rounded.eval(), arch=ARCH, name="r", mean=loaded.mean, std=loaded.std),
        images,
        progress=False,
    )
    _assert_same_features(loaded, expected, images)


def test_shipped_default_absent_falls_back_to_stand_in(monkeypatch):
    monkeypatch.setattr(backbones_module, "default_weights_path", lambda: None)
    with pytest.warns(UserWarning, match="randomly initialised"):
        net = load_backbone("default")
    assert net.pretrained is False and net.arch == "resnet18" and "stand-in" in net.note
    monkeypatch.undo()
    monkeypatch.setattr(backbones_module, "DEFAULT_WEIGHTS_PACKAGE", "simattr_no_such_package")
    assert backbones_module.default_weights_path() is None
    monkeypatch.setattr(backbones_module, "DEFAULT_WEIGHTS_PACKAGE", "simattr.models")
    assert backbones_module.default_weights_path() is None  # a package without the file
    monkeypatch.setattr(backbones_module, "DEFAULT_WEIGHTS_FILE", "resnet.py")  # found in place
    assert backbones_module.default_weights_path() == Path(resnet_module.__file__)
    with pytest.raises(InvalidInputError, match="'default' is a fixed network"):
        load_backbone("default", arch=ARCH)


def test_our_safetensors_without_its_sidecar_is_refused(source, source_features, images, tmp_path):
    """Without the sidecar the input statistics are unknown: a guess would move the features,
    so the file is refused by name, and read only when the sidecar is back or the caller says
    the file is foreign (statistics of its stem, said in the note)."""
    path = tmp_path / "net.safetensors"
    _ship(source, path)
    sidecar = tmp_path / "net.safetensors.json"
    with_sidecar = load_backbone(str(path))
    assert with_sidecar.mean == (0.5, 0.45, 0.4)
    sidecar.unlink()
    with pytest.raises(
        CheckpointError, match=r"net\.safetensors: its sidecar .*net\.safetensors\.json"
    ):
        load_backbone(str(path))
    foreign = load_backbone(str(path), format="torchvision")
    assert foreign.mean == backbones_module.CIFAR10_MEAN and "CIFAR-10 mean" in foreign.note
    assert foreign.extra["format"] == "torchvision"
