"""Backbones by name or path, with the input normalisation they expect.

A :class:`Backbone` is a network plus what is needed to use and describe it: the architecture
name, the per-channel mean and standard deviation of its inputs, and whether its weights were
learned. The description goes into every feature sidecar, so a features file always says
whether it came from a trained or a randomly initialised network, and from which file.

Spec strings understood by :func:`load_backbone`:

* ``"default"``: the shipped self-supervised CIFAR-10 backbone,
  ``simattr/weights/cifar10-moco-resnet18-w16-e140.safetensors`` (fp16, with its ``.json``
  sidecar), found with :mod:`importlib.resources`. When a build ships without it, a randomly
  initialised ResNet-18 (seed 0) stands in, with a ``UserWarning`` and a note saying so.
* ``"shipped:NAME"``: any weights file shipped in the package by its name (with or without
  ``.safetensors``; :func:`shipped_weights` lists them). Results that must stay reproducible
  when the default changes (the committed benchmarks) name their backbone this way.
* ``"random"``, ``"random:SEED"``, ``"random:ARCH"`` or ``"random:ARCH:SEED"``: a randomly
  initialised network (ResNet-18 with the CIFAR stem unless ``ARCH`` or ``arch=``), e.g.
  ``random:resnet50-imagenet``.
* a path to a weights file: our ``.safetensors`` with its ``<file>.json`` sidecar, or a foreign
  checkpoint (``.pth``, ``.pth.tar``, ``.pt``, ``.ckpt``, ``.safetensors``) from MoCo v1/v2/v3,
  DINO, lightly, solo-learn or torchvision, read safely by :mod:`simattr.models.checkpoints`;
  the architecture (stem, block type, width) is inferred from the weights. Foreign files carry
  no input statistics: CIFAR-stem networks get the CIFAR-10 mean and std, ImageNet-stem ones
  the ImageNet mean and std, and the note says so.

Any spec may end in ``@SIZE``, the input side of the backbone's preprocessing (ImageNet stem:
centre crop SIZE after resizing the shorter side to SIZE * 256 / 224; default 224. CIFAR stem:
image files are resized to SIZE x SIZE; default 32), e.g. ``random:resnet18-imagenet@112``;
``input_size=`` does the same. The stem says the preprocessing (:mod:`simattr.data.preprocess`):
``Backbone.preprocessing`` is what every path into the backbone applies, and feature sidecars
record it.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from simattr._io import sidecar_path
from simattr.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from simattr.errors import CheckpointError, InvalidInputError, MissingFileError
from simattr.hashing import digest_file
from simattr.models.checkpoints import FORMATS, Checkpoint, read_checkpoint
from simattr.models.resnet import ARCHITECTURES, is_imagenet_stem, random_init

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
DEFAULT_SEED = 0
DEFAULT_WEIGHTS_PACKAGE = "simattr.weights"
DEFAULT_WEIGHTS_FILE = "cifar10-moco-resnet18-w16-e140.safetensors"
#: Named photo backbones (ImageNet-stem ResNet-50): public checkpoint URL and a description.
#: Fetched into torch hub's cache (``$TORCH_HOME/hub/checkpoints``) and read safely from there.
PHOTO_BACKBONES: dict[str, tuple[str, str]] = {
    "torchvision-resnet50": (
        "https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
        "torchvision ResNet-50, supervised on ImageNet-1k (IMAGENET1K_V2)",
    ),
    "moco-v2-resnet50": (
        "https://dl.fbaipublicfiles.com/moco/moco_checkpoints/moco_v2_800ep/"
        "moco_v2_800ep_pretrain.pth.tar",
        "MoCo v2 ResNet-50, self-supervised on ImageNet-1k for 800 epochs",
    ),
    "dino-resnet50": (
        "https://dl.fbaipublicfiles.com/dino/dino_resnet50_pretrain/dino_resnet50_pretrain.pth",
        "DINO ResNet-50, self-supervised on ImageNet-1k",
    ),
}
#: Set to 1 to never download: a named photo backbone must then be in the cache already.
OFFLINE_ENV = "SIMATTR_OFFLINE"
#: The spec forms :func:`load_backbone` reads, for help texts.
BACKBONE_SPECS = (
    "'default' (the shipped CIFAR-10 MoCo ResNet-18)",
    "'shipped:NAME'",
    "'random[:ARCH][:SEED]' (ARCH: " + ", ".join(ARCHITECTURES) + ")",
    "a photo backbone by name (" + ", ".join(PHOTO_BACKBONES) + "; fetched into torch hub's cache)",
    "a weights file (ours, torchvision, MoCo v1/v2/v3, DINO, lightly, solo-learn; never "
    "unpickled; architecture inferred)",
)
#: One help text for every ``--backbone`` option.
BACKBONE_HELP = (
    "; ".join(BACKBONE_SPECS)
    + ". Append @SIZE for another input size (ImageNet stem: crop SIZE, default 224; "
    "CIFAR stem: 32), e.g. random:resnet50-imagenet@160."
)


@dataclass
class Backbone:
    """A feature network and its provenance."""

    module: nn.Module
    arch: str
    name: str
    mean: tuple[float, float, float] = CIFAR10_MEAN
    std: tuple[float, float, float] = CIFAR10_STD
    pretrained: bool = False
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    #: Input side of the preprocessing; ``None``: the stem's default (224 ImageNet, 32 CIFAR).
    input_size: int | None = None

    @property
    def stem(self) -> str:
        """``"imagenet"`` (7x7 stride-2 conv1 and max-pool) or ``"cifar"`` (3x3 stride 1)."""
        return "imagenet" if is_imagenet_stem(self.arch) else "cifar"

    @property
    def preprocessing(self) -> Preprocessing:
        """How images of any size become this backbone's input (:mod:`simattr.data.preprocess`)."""
        if self.stem == "imagenet":
            if self.input_size is None:
                return Preprocessing.imagenet(mean=self.mean, std=self.std)
            return Preprocessing.imagenet(self.input_size, self.mean, self.std)
        if self.input_size is None:
            return Preprocessing.cifar(self.mean, self.std)
        return Preprocessing.cifar(self.mean, self.std, self.input_size)

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for sidecars."""
        out = {
            "name": self.name,
            "arch": self.arch,
            "stem": self.stem,
            "pretrained": self.pretrained,
            "input_mean": list(self.mean),
            "input_std": list(self.std),
            "preprocessing": self.preprocessing.describe(),
        }
        if self.note:
            out["note"] = self.note
        out.update(self.extra)
        return out

    def to(self, device: str | torch.device) -> Backbone:
        self.module.to(device)
        return self


def _random(seed: int, name: str, note: str, arch: str = "resnet18") -> Backbone:
    mean, std = _stem_statistics(arch)
    return Backbone(
        module=random_init(arch, seed).eval(),
        arch=arch,
        name=name,
        mean=mean,
        std=std,
        pretrained=False,
        note=note,
        extra={"seed": seed},
    )


def _stem_statistics(arch: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """The input statistics assumed when nothing records them: ImageNet's for the ImageNet
    stem, CIFAR-10's for the CIFAR stem."""
    if is_imagenet_stem(arch):
        return IMAGENET_MEAN, IMAGENET_STD
    return CIFAR10_MEAN, CIFAR10_STD


def default_weights_path() -> Path | None:
    """Where the shipped default backbone lies, or ``None`` when this build has none.

    Looked up in the package ``simattr.weights`` so that it is found wherever the package is
    installed; an installation must keep package data as files (not zipped).
    """
    try:
        ref = resources.files(DEFAULT_WEIGHTS_PACKAGE) / DEFAULT_WEIGHTS_FILE
    except ModuleNotFoundError:
        return None
    if not isinstance(ref, os.PathLike) or not ref.is_file():
        return None
    return Path(ref)


def shipped_weights() -> dict[str, Path]:
    """Every weights file shipped in the package, by name (file name without the suffix)."""
    try:
        folder = resources.files(DEFAULT_WEIGHTS_PACKAGE)
    except ModuleNotFoundError:
        return {}
    if not isinstance(folder, os.PathLike):
        return {}
    files = sorted(Path(folder).glob("*.safetensors"))
    return {p.name.removesuffix(".safetensors"): p for p in files}


def _refuse_options(spec: str, arch: str | None, format: str) -> None:
    """``default`` and ``shipped:NAME`` are fixed networks: arch= and format= cannot apply."""
    if arch is not None or format != "auto":
        raise InvalidInputError(
            f"backbone {spec!r} is a fixed network: arch= and format= apply to 'random' and to "
            "files only"
        )


def _fixed_file(path: Path, name: str) -> Backbone:
    """A shipped weights file (``default`` or ``shipped:NAME``), named ``name``."""
    backbone = _from_file(path, None, "simattr")
    backbone.name = name
    backbone.extra["file"] = path.name
    return backbone


def _shipped(spec: str, arch: str | None, format: str) -> Backbone:
    """A shipped weights file by name (``shipped:NAME``)."""
    _refuse_options(spec, arch, format)
    name = spec.partition(":")[2].removesuffix(".safetensors")
    available = shipped_weights()
    if name not in available:
        known = ", ".join(f"'shipped:{n}'" for n in available) or "none in this build"
        raise MissingFileError(f"backbone {spec!r}: no such shipped weights file; shipped: {known}")
    return _fixed_file(available[name], f"shipped:{name}")


def _default(arch: str | None, format: str) -> Backbone:
    """The shipped backbone, or the random stand-in (with a warning) when none ships."""
    _refuse_options("default", arch, format)
    path = default_weights_path()
    if path is not None:
        return _fixed_file(path, "default")
    warnings.warn(
        "no trained self-supervised backbone ships with this build: 'default' is a randomly "
        "initialised ResNet-18 (seed 0). Rankings from it are weaker than from a MoCo backbone.",
        UserWarning,
        stacklevel=3,
    )
    return _random(
        DEFAULT_SEED,
        "default",
        "stand-in: randomly initialised ResNet-18 (seed 0), no self-supervised training yet",
    )


def _from_file(path: Path, arch: str | None, format: str) -> Backbone:
    """A backbone from a weights file of any supported layout (see the module docstring)."""
    ckpt = read_checkpoint(path, arch=arch, format=format)
    extra: dict[str, Any] = {"format": ckpt.format, "sha256_16": digest_file(path, 16)}
    if ckpt.format == "simattr":
        meta = ckpt.meta
        if not meta:
            # without the sidecar the input statistics are unknown, and a guess moves features
            raise CheckpointError(
                f"{path}: its sidecar {sidecar_path(path)} (input mean and std, architecture) "
                "is missing; put it back next to the file, or pass format='torchvision' to read "
                "the file as foreign weights normalised with the statistics of their stem"
            )
        extra.update(
            {k: meta[k] for k in ("method", "epochs", "prior_epochs", "knn_accuracy") if k in meta}
        )
        return Backbone(
            module=ckpt.build(),
            arch=ckpt.arch,
            name=str(path),
            mean=tuple(meta.get("input_mean", CIFAR10_MEAN)),
            std=tuple(meta.get("input_std", CIFAR10_STD)),
            pretrained=bool(meta.get("pretrained", True)),
            note=str(meta.get("note", "")),
            extra=extra,
        )
    mean, std = _stem_statistics(ckpt.arch)
    return Backbone(
        module=ckpt.build(),
        arch=ckpt.arch,
        name=str(path),
        mean=mean,
        std=std,
        pretrained=True,
        note=_foreign_note(ckpt),
        extra=extra | _foreign_extra(ckpt),
    )


def _foreign_note(ckpt: Checkpoint) -> str:
    statistics = "ImageNet" if is_imagenet_stem(ckpt.arch) else "CIFAR-10"
    note = (
        f"{ckpt.format} checkpoint ({ckpt.arch}); the file stores no input statistics, so "
        f"inputs are normalised with the {statistics} mean and std"
    )
    if not ckpt.stem_relu:
        note += "; no ReLU after the stem, as in the source network"
    return note


def _foreign_extra(ckpt: Checkpoint) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if not ckpt.stem_relu:
        extra["stem_relu"] = False
    if ckpt.split_bn_layers:
        extra["split_bn_layers_averaged"] = ckpt.split_bn_layers
    for key in ("arch", "epoch"):
        if key in ckpt.info:
            extra[f"source_{key}"] = ckpt.info[key]
    return extra


def _random_spec(spec: str, arch: str | None, format: str) -> Backbone:
    parts = spec.split(":")[1:]
    named_arch = parts.pop(0) if parts and parts[0] in ARCHITECTURES else None
    seed_text = parts.pop(0) if parts else str(DEFAULT_SEED)
    if parts or not seed_text.isdigit():
        raise InvalidInputError(
            f"backbone {spec!r}: write 'random', 'random:SEED', 'random:ARCH' or "
            f"'random:ARCH:SEED' with SEED an integer and ARCH one of {list(ARCHITECTURES)}"
        )
    if format != "auto":
        raise InvalidInputError(f"backbone {spec!r}: format= applies to files only")
    if arch is not None and arch not in ARCHITECTURES:
        raise InvalidInputError(f"unknown architecture {arch!r}; known: {sorted(ARCHITECTURES)}")
    if named_arch is not None and arch is not None and arch != named_arch:
        raise InvalidInputError(f"backbone {spec!r} names {named_arch}, but arch={arch!r}")
    arch = named_arch or arch or "resnet18"
    return _random(int(seed_text), spec, f"randomly initialised {arch}", arch)


def load_backbone(
    spec: str = "default",
    device: str | torch.device = "cpu",
    *,
    arch: str | None = None,
    format: str = "auto",
    input_size: int | None = None,
) -> Backbone:
    """Resolve a backbone spec (see the module docstring) to an eval-mode :class:`Backbone`.

    ``arch`` names the architecture of a random network or a weights file (default: the
    sidecar's, else inferred from the weights: stem, block type, width); ``format`` overrides
    the detection of a file's layout (one of :data:`simattr.models.checkpoints.FORMATS`);
    ``input_size`` (or an ``@SIZE`` suffix) sets the input side of the preprocessing.
    """
    if format not in FORMATS:
        raise InvalidInputError(f"unknown checkpoint format {format!r}; choose one of {FORMATS}")
    spec, input_size = _split_size(spec, input_size)
    backbone = _resolve(spec, arch, format)
    if input_size is not None:
        backbone.input_size = input_size
        backbone.name = f"{backbone.name}@{input_size}"  # load_backbone(name) gives it back
        backbone.preprocessing  # noqa: B018 - checks the size now, not at the first image
    return backbone.to(device)


def _split_size(spec: str, input_size: int | None) -> tuple[str, int | None]:
    """``spec`` without an ``@SIZE`` suffix, and the input size (suffix or ``input_size``)."""
    if input_size is not None and (
        isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1
    ):
        raise InvalidInputError(f"input_size must be a positive integer, got {input_size!r}")
    head, at, tail = spec.rpartition("@")
    if not at or Path(spec).expanduser().exists():
        return spec, input_size
    if not tail.isdigit() or int(tail) < 1:
        raise InvalidInputError(
            f"backbone {spec!r}: the input size after '@' must be a positive integer (e.g. "
            "'random:resnet50-imagenet@224')"
        )
    if input_size is not None and input_size != int(tail):
        raise InvalidInputError(f"backbone {spec!r} says @{tail}, but input_size={input_size}")
    return head, int(tail)


def _resolve(spec: str, arch: str | None, format: str) -> Backbone:
    if spec == "default":
        backbone = _default(arch, format)
    elif spec.startswith("shipped:"):
        backbone = _shipped(spec, arch, format)
    elif spec in PHOTO_BACKBONES:
        backbone = _photo(spec, arch, format)
    elif spec == "random" or spec.startswith("random:"):
        backbone = _random_spec(spec, arch, format)
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise MissingFileError(
                f"backbone {spec!r} is neither a known name ({'; '.join(BACKBONE_SPECS[:3])}) "
                "nor an existing file"
            )
        backbone = _from_file(path, arch, format)
    return backbone


def photo_weights_path(name: str) -> Path:
    """Where torch hub's cache keeps the checkpoint of the named photo backbone (it may not be
    there yet): ``$TORCH_HOME/hub/checkpoints/<file name of the URL>``."""
    url = PHOTO_BACKBONES[name][0]
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[1]


def _photo(name: str, arch: str | None, format: str) -> Backbone:
    """A named photo backbone: its checkpoint from torch hub's cache, downloaded there first
    when missing and allowed (never when ``SIMATTR_OFFLINE=1``), then read like any foreign
    file (never unpickled beyond tensors and plain values)."""
    _refuse_options(name, arch, format)
    url, description = PHOTO_BACKBONES[name]
    path = photo_weights_path(name)
    if not path.is_file():
        reason = f"{OFFLINE_ENV}=1"
        if os.environ.get(OFFLINE_ENV, "") != "1":
            reason = _download(url, path)
        if not path.is_file():
            raise MissingFileError(
                f"backbone {name!r}: its weights are not in torch hub's cache and could not be "
                f"downloaded ({reason}); download {url} and place it as {path} (the cache "
                "follows TORCH_HOME)"
            )
    backbone = _from_file(path, None, "auto")
    backbone.name = name
    backbone.note = f"{description}; {backbone.note}"
    backbone.extra.update({"url": url, "file": path.name})
    return backbone


def _download(url: str, path: Path) -> str:
    """Fetch ``url`` into ``path`` with torch hub (its hash-prefix check when the file name
    carries one, as torchvision's do); the reason it failed, or ``""``."""
    import re

    match = re.search(r"-([a-f0-9]{6,})\.", path.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(path), match.group(1) if match else None)
    except Exception as exc:  # no network, a proxy, a bad hash: all end in the same advice
        path.unlink(missing_ok=True)
        return f"{type(exc).__name__}: {exc}"
    return ""
