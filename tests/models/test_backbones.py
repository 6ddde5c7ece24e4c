"""ImageNet-stem backbones: checkpoints in every layout users have, and per-backbone preprocessing.

Every checkpoint is written here, in the nesting its codebase uses (heads, momentum encoders,
queues, DINO's student and ``args`` included), from a randomly initialised torchvision network
whose batch norms are randomised too; nothing downloads. Loading goes through the public
:func:`load_backbone` with the architecture inferred. Images reach the networks at a 64-pixel
crop (resize 73) to keep the forward passes cheap on a CPU.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from netkit import randomise_bn
from PIL import Image
from safetensors.torch import save_file
from torch import nn
from typer.testing import CliRunner

from simattr import CheckpointError, SimattrError
from simattr._io import provenance, write_with_sidecar
from simattr.cli import app
from simattr.data import load_dataset
from simattr.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from simattr.errors import DamagedFileError
from simattr.features import extract_features, load_features_metadata
from simattr.models import Backbone, load_backbone
from simattr.models.checkpoints import infer_arch

SIZE = 64  # centre crop of the tests (resize 73)


def _torchvision(depth: int, seed: int) -> nn.Module:
    """A torchvision ResNet with its 1000-way ``fc``, as torchvision saves it."""
    torch.manual_seed(seed)
    net = {18: torchvision.models.resnet18, 50: torchvision.models.resnet50}[depth](weights=None)
    return randomise_bn(net, seed).eval()


def _state(module: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + k: v.clone().contiguous() for k, v in module.state_dict().items()}


def _without_fc(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def _mlp(prefix: str, d_in: int) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}0.weight": torch.randn(32, d_in),
        f"{prefix}0.bias": torch.randn(32),
        f"{prefix}2.weight": torch.randn(16, 32),
        f"{prefix}2.bias": torch.randn(16),
    }


def _reference(net: nn.Module, arch: str) -> Backbone:
    """The source network as a backbone: its own modules with ``fc = Identity``."""
    module = copy.deepcopy(net)
    module.fc = nn.Identity()
    return Backbone(
        module=module.eval(),
        arch=arch,
        name="source",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        input_size=SIZE,
    )


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(2, 70, 90, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def r18() -> nn.Module:
    return _torchvision(18, 1)


@pytest.fixture(scope="module")
def r18_features(r18, images) -> np.ndarray:
    return extract_features(_reference(r18, "resnet18-imagenet"), images, progress=False)


# -- the layouts, built from a torchvision ResNet ----------------------------------------------
def torchvision_pth(net: nn.Module, path: Path) -> Path:
    torch.save(_state(net), path / "resnet.pth")
    return path / "resnet.pth"


def torchvision_safetensors(net: nn.Module, path: Path) -> Path:
    save_file(_state(net), str(path / "resnet.safetensors"))
    return path / "resnet.safetensors"


def moco_v2(net: nn.Module, path: Path) -> Path:
    d = net.fc.in_features
    state = _state(net, "module.encoder_q.")
    state = {k: v for k, v in state.items() if ".fc." not in k} | _mlp("module.encoder_q.fc.", d)
    state |= _state(_torchvision(18, 9), "module.encoder_k.")
    state |= {"module.queue": torch.randn(16, 64), "module.queue_ptr": torch.zeros(1)}
    torch.save({"epoch": 200, "arch": "resnet", "state_dict": state}, path / "moco.pth.tar")
    return path / "moco.pth.tar"


def moco_v3(net: nn.Module, path: Path) -> Path:
    d = net.fc.in_features
    state = _without_fc(_state(net, "module.base_encoder.").copy())
    state = {k: v for k, v in state.items() if ".fc." not in k}
    state |= _mlp("module.base_encoder.fc.", d) | _mlp("module.predictor.", 16)
    state |= _state(_torchvision(18, 9), "module.momentum_encoder.")
    torch.save({"epoch": 100, "arch": "resnet50", "state_dict": state}, path / "mocov3.pth.tar")
    return path / "mocov3.pth.tar"


def dino_backbone(net: nn.Module, path: Path) -> Path:
    """``dino_resnet50_pretrain.pth``: a torchvision state dict without ``fc``."""
    torch.save(_without_fc(_state(net)), path / "dino_pretrain.pth")
    return path / "dino_pretrain.pth"


def dino_full(net: nn.Module, path: Path) -> Path:
    """DINO's ``checkpoint.pth``: teacher and student (``module.backbone.``/``module.head.``),
    optimiser, loss centre and ``args`` (an ``argparse.Namespace``)."""
    d = net.fc.in_features

    def wrapper(module: nn.Module) -> dict[str, torch.Tensor]:
        return _without_fc(_state(module)) | _mlp("head.mlp.", d)

    teacher = {
        f"module.backbone.{k}" if not k.startswith("head.") else f"module.{k}": v
        for k, v in wrapper(net).items()
    }
    student = {
        f"module.backbone.{k}" if not k.startswith("head.") else f"module.{k}": v
        for k, v in wrapper(_torchvision(18, 9)).items()
    }
    torch.save(
        {
            "student": student,
            "teacher": teacher,
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
            "epoch": 100,
            "args": argparse.Namespace(arch="resnet50", out_dim=60000, lr=0.3),
            "dino_loss": {"center": torch.zeros(1, 16)},
        },
        path / "checkpoint.pth",
    )
    return path / "checkpoint.pth"


def lightly_named(net: nn.Module, path: Path) -> Path:
    state = _without_fc(_state(net, "backbone.")) | _mlp("projection_head.layers.", 512)
    torch.save({"state_dict": state, "epoch": 5}, path / "lightly.ckpt")
    return path / "lightly.ckpt"


def lightly_sequential(net: nn.Module, path: Path) -> Path:
    """``nn.Sequential(*list(resnet.children())[:-1])``: stages at indices 4 to 7."""
    seq = nn.Sequential(*list(copy.deepcopy(net).children())[:-1])
    state = _state(seq, "backbone.") | _mlp("projection_head.layers.", 512)
    torch.save({"state_dict": state}, path / "lightly-seq.ckpt")
    return path / "lightly-seq.ckpt"


def solo(net: nn.Module, path: Path) -> Path:
    state = _without_fc(_state(net, "backbone.")) | _mlp("projector.", 512)
    state |= _without_fc(_state(_torchvision(18, 9), "momentum_backbone."))
    torch.save({"state_dict": state, "epoch": 400}, path / "solo.ckpt")
    return path / "solo.ckpt"


LAYOUTS = {
    "torchvision": torchvision_pth,
    "torchvision-safetensors": torchvision_safetensors,
    "moco": moco_v2,
    "mocov3": moco_v3,
    "dino-backbone": dino_backbone,
    "dino": dino_full,
    "lightly": lightly_named,
    "lightly-sequential": lightly_sequential,
    "solo": solo,
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_resnet18_layouts_load_to_the_source_network(layout, r18, images, r18_features, tmp_path):
    path = LAYOUTS[layout](r18, tmp_path)
    loaded = load_backbone(str(path), input_size=SIZE)  # architecture inferred: 7x7 stem
    assert loaded.arch == "resnet18-imagenet" and loaded.stem == "imagenet"
    assert loaded.preprocessing.kind == "imagenet" and loaded.preprocessing.size == SIZE
    assert loaded.mean == IMAGENET_MEAN
    np.testing.assert_allclose(
        extract_features(loaded, images, progress=False), r18_features, rtol=1e-5, atol=1e-5
    )
    if layout == "dino":
        assert loaded.extra["format"] == "dino"  # the teacher, not the student


def test_resnet50_checkpoints_moco_v2_and_dino_teacher(images, tmp_path):
    net = _torchvision(50, 3)
    moco = load_backbone(str(moco_v2(net, tmp_path)), input_size=SIZE)
    dino = load_backbone(str(dino_full(net, tmp_path)), input_size=SIZE)
    assert moco.arch == dino.arch == "resnet50-imagenet"
    expected = _without_fc(net.state_dict())
    for loaded in (moco, dino):
        got = loaded.module.state_dict()
        assert set(got) == set(expected)
        assert all(torch.equal(got[k], expected[k]) for k in expected)
    # one forward pass each: the loaded network computes what its source computes
    one = images[:1]
    ref = extract_features(_reference(net, "resnet50-imagenet"), one, progress=False)
    out = extract_features(moco, one, progress=False)
    assert out.shape == (1, 2048)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_infer_arch_from_stem_and_blocks(r18):
    path = Path("x.pth")
    assert infer_arch(_state(r18), path) == "resnet18-imagenet"
    r50_keys = {"conv1.weight": torch.zeros(64, 3, 7, 7), "layer1.0.conv3.weight": torch.zeros(1)}
    assert infer_arch(r50_keys, path) == "resnet50-imagenet"
    assert infer_arch({"conv1.weight": torch.zeros(16, 3, 3, 3)}, path) == "resnet18-w16"
    with pytest.raises(CheckpointError, match="CIFAR stem"):
        infer_arch({"conv1.weight": torch.zeros(64, 3, 3, 3), **{"layer1.0.conv3.weight": 0}}, path)


def test_wrong_stem_for_the_given_arch_is_named(r18, tmp_path):
    path = torchvision_pth(r18, tmp_path)
    with pytest.raises(CheckpointError, match="ImageNet-stem ResNet"):
        load_backbone(str(path), arch="resnet18")
    with pytest.raises(CheckpointError, match="Bottleneck"):
        load_backbone(str(path), arch="resnet50-imagenet")


def test_bit_flipped_safetensors_is_refused(r18, tmp_path):
    # a foreign file: a flipped bit in its header makes it unreadable, and it is refused
    path = torchvision_safetensors(r18, tmp_path)
    data = bytearray(path.read_bytes())
    data[8] ^= 0x01  # the '{' opening the JSON header
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_backbone(str(path))
    # our own file: its sidecar's SHA-256 catches a flipped bit anywhere, weights included
    ours = tmp_path / "ours.safetensors"
    state = _without_fc(_state(r18))
    meta = provenance(
        kind="backbone",
        arch="resnet18-imagenet",
        input_mean=list(IMAGENET_MEAN),
        input_std=list(IMAGENET_STD),
        pretrained=True,
    )
    write_with_sidecar(ours, lambda tmp: save_file(state, str(tmp)), meta)
    assert load_backbone(str(ours)).arch == "resnet18-imagenet"
    data = bytearray(ours.read_bytes())
    data[-100] ^= 0x10  # inside the last tensor
    ours.write_bytes(bytes(data))
    with pytest.raises(DamagedFileError):
        load_backbone(str(ours))


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_run_code_is_refused(r18, tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": _state(r18), "hook": _RunsCode(marker)}, path)
    with pytest.raises(CheckpointError, match="refuses to unpickle"):
        load_backbone(str(path))
    assert not marker.exists()


def test_backbone_names_say_stem_and_size():
    net = load_backbone("random:resnet18-imagenet:5@96")
    assert (net.arch, net.stem, net.name) == ("resnet18-imagenet", "imagenet", net.name)
    assert net.name == "random:resnet18-imagenet:5@96"
    prep = net.preprocessing
    assert (prep.size, prep.resize, prep.mean) == (96, 110, IMAGENET_MEAN)
    default = load_backbone("random:resnet18-imagenet")
    assert (default.preprocessing.size, default.preprocessing.resize) == (224, 256)
    # the recorded name loads the same network with the same preprocessing
    again = load_backbone(net.name)
    assert again.preprocessing == prep
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            again.module.state_dict().values(), net.module.state_dict().values(), strict=True
        )
    )
    cifar = load_backbone("random:3")
    assert cifar.stem == "cifar" and cifar.preprocessing.size == 32
    with pytest.raises(SimattrError, match="input size after '@'"):
        load_backbone("random:resnet18-imagenet@big")


def test_preprocessing_geometry():
    prep = Preprocessing.imagenet(SIZE)
    wide = np.zeros((40, 100, 3), dtype=np.uint8)
    wide[:, 50:] = 255  # right half white: the centre crop keeps both halves
    out = prep.prepare(wide)
    assert out.shape == (SIZE, SIZE, 3) and out.dtype == np.uint8
    assert out[:, 0].max() == 0 and out[:, -1].min() == 255
    cifar = Preprocessing.cifar((0.5,) * 3, (0.5,) * 3)
    assert cifar.prepare(Image.fromarray(wide)).shape == (32, 32, 3)


# -- the same folder image through the CLI and the API ----------------------------------------
SIZES = [(40, 48, "png"), (96, 64, "jpg"), (150, 120, "png"), (320, 280, "jpg"), (33, 77, "png")]


@pytest.fixture(scope="module")
def photo_folder(cifar_test, tmp_path_factory) -> Path:
    """Five CIFAR-10 test images upscaled to mixed sizes, PNG and JPEG, in two class folders."""
    root = tmp_path_factory.mktemp("photos")
    for i, (w, h, ext) in enumerate(SIZES):
        label = cifar_test.class_names[int(cifar_test.labels[i])]
        folder = root / "train" / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(cifar_test.get_images([i])[0]).resize((w, h), Image.BICUBIC)
        image.save(folder / f"{i}-{label}.{ext}", quality=90)
    return root


@pytest.mark.parametrize("spec", ["random:resnet18-imagenet:1@64", "random:2"])
def test_cli_and_api_give_the_same_features(photo_folder, tmp_path, spec):
    out = tmp_path / "f.npy"
    result = CliRunner().invoke(
        app, ["features", "--data", str(photo_folder), "--backbone", spec, "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    cli = np.load(out)
    meta = load_features_metadata(out)
    backbone = load_backbone(spec)
    assert meta["preprocessing"] == backbone.preprocessing.describe()
    assert meta["backbone"]["name"] == spec
    # the API, given the dataset, the files, or PIL images of them: the very same vectors
    dataset = load_dataset(photo_folder)
    files = [str(f) for f in dataset.files]
    np.testing.assert_array_equal(extract_features(backbone, dataset, progress=False), cli)
    np.testing.assert_array_equal(extract_features(backbone, files, progress=False), cli)
    one = extract_features(backbone, files[2], progress=False)  # a single image, one row
    np.testing.assert_allclose(one, cli[2:3], rtol=1e-5, atol=1e-5)  # batch of 1: other kernels
    # decoded arrays of the PNG files too (JPEGs opened by simattr may decode at reduced scale)
    png = [i for i, f in enumerate(files) if f.endswith(".png")]
    arrays = [np.asarray(Image.open(files[i]).convert("RGB")) for i in png]
    np.testing.assert_array_equal(extract_features(backbone, arrays, progress=False), cli[png])
    if backbone.stem == "imagenet":
        assert cli.shape == (len(SIZES), 512)
        assert meta["preprocessing"]["size"] == 64


def test_cli_reads_a_torchvision_file_without_arch(photo_folder, r18, tmp_path):
    path = torchvision_pth(r18, tmp_path)
    out = tmp_path / "f.npy"
    result = CliRunner().invoke(
        app,
        [
            "features",
            "--data",
            str(photo_folder),
            "--backbone",
            f"{path}@{SIZE}",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    meta = json.loads(Path(f"{out}.json").read_text())
    assert meta["backbone"]["arch"] == "resnet18-imagenet"
    assert meta["backbone"]["format"] == "torchvision"
    files = load_dataset(photo_folder).files
    expected = extract_features(_reference(r18, "resnet18-imagenet"), list(files), progress=False)
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-5, atol=1e-5)


def test_named_photo_backbone_offline_names_the_file_to_place(tmp_path, monkeypatch):
    from simattr.errors import MissingFileError
    from simattr.models.backbones import PHOTO_BACKBONES, photo_weights_path

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("SIMATTR_OFFLINE", "1")  # nothing downloads in tests
    for name, (url, _) in PHOTO_BACKBONES.items():
        place = tmp_path / "torch" / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
        assert photo_weights_path(name) == place
        with pytest.raises(MissingFileError) as err:
            load_backbone(name)
        message = str(err.value)
        assert url in message and str(place) in message and "SIMATTR_OFFLINE=1" in message
        assert not place.exists()


def test_named_photo_backbones_load_from_torch_hubs_cache(images, tmp_path, monkeypatch):
    """A torchvision file and a MoCo v2 file placed in the cache under their published names
    load as the named backbones, to the source network's features, with ImageNet's geometry
    (shorter side resized, centre crop: the aspect ratio kept)."""
    from simattr.models.backbones import photo_weights_path

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("SIMATTR_OFFLINE", "1")
    net = _torchvision(50, 4)
    place = photo_weights_path("torchvision-resnet50")
    place.parent.mkdir(parents=True)
    torch.save(net.state_dict(), place)
    moco = photo_weights_path("moco-v2-resnet50")
    moco.write_bytes(moco_v2(net, tmp_path).read_bytes())
    ref = extract_features(_reference(net, "resnet50-imagenet"), images[:1], progress=False)
    for name in ("torchvision-resnet50", "moco-v2-resnet50"):
        loaded = load_backbone(f"{name}@{SIZE}")
        assert loaded.arch == "resnet50-imagenet" and loaded.pretrained
        assert loaded.extra["url"].endswith(place.name if "torch" in name else moco.name)
        prep = loaded.preprocessing
        assert (prep.kind, prep.size) == ("imagenet", SIZE)
        out = extract_features(loaded, images[:1], progress=False)
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    # a wide photo is not squashed: the centre crop of its resized self
    wide = np.zeros((40, 120, 3), np.uint8)
    wide[:, 40:80] = 255  # a white square in the middle
    crop = load_backbone(f"torchvision-resnet50@{SIZE}").preprocessing.prepare(wide)
    assert crop.shape == (SIZE, SIZE, 3) and crop[SIZE // 2, 2:-2].min() > 200
