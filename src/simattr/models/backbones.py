"""Backbones by name or path, with the input normalisation they expect.

A :class:`Backbone` is a network plus what is needed to use and describe it: the architecture
name, the per-channel mean and standard deviation of its inputs, and whether its weights were
learned. The description goes into every feature sidecar, so a features file always says
whether it came from a trained or a randomly initialised network.

Spec strings understood by :func:`load_backbone`:

* ``"default"``: the shipped self-supervised CIFAR-10 backbone. Until trained weights ship, a
  randomly initialised ResNet-18 (seed 0) stands in, and says so.
* ``"random"`` or ``"random:SEED"``: a randomly initialised ResNet-18.
* a path to a ``.safetensors`` file in our format (weights plus a ``<file>.json`` sidecar naming
  the architecture and normalisation).
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from simattr._io import read_json, sidecar_path
from simattr.errors import CheckpointError, InvalidInputError, MissingFileError
from simattr.models.resnet import ARCHITECTURES, build_architecture, random_init

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
DEFAULT_SEED = 0


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

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for sidecars."""
        out = {
            "name": self.name,
            "arch": self.arch,
            "pretrained": self.pretrained,
            "input_mean": list(self.mean),
            "input_std": list(self.std),
        }
        if self.note:
            out["note"] = self.note
        out.update(self.extra)
        return out

    def to(self, device: str | torch.device) -> Backbone:
        self.module.to(device)
        return self


def _random(seed: int, name: str, note: str) -> Backbone:
    return Backbone(
        module=random_init("resnet18", seed).eval(),
        arch="resnet18",
        name=name,
        pretrained=False,
        note=note,
        extra={"seed": seed},
    )


def _from_safetensors(path: Path) -> Backbone:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta_path = sidecar_path(path)
    meta = read_json(meta_path) if meta_path.exists() else {}
    arch = meta.get("arch", "resnet18")
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"{meta_path}: unknown architecture {arch!r}")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from None
    module = build_architecture(arch)
    expected = module.state_dict()
    state = {k: v.to(expected[k].dtype) if k in expected else v for k, v in state.items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not hold a {arch} backbone: missing keys {missing[:8]}"
            f"{' ...' if len(missing) > 8 else ''}, unexpected keys {unexpected[:8]}"
            f"{' ...' if len(unexpected) > 8 else ''}"
        )
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise CheckpointError(
                f"{path}: {key} has shape {tuple(tensor.shape)}, {arch} expects "
                f"{tuple(expected[key].shape)}"
            )
    module.load_state_dict(state)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return Backbone(
        module=module.eval(),
        arch=arch,
        name=str(path),
        mean=tuple(meta.get("input_mean", CIFAR10_MEAN)),
        std=tuple(meta.get("input_std", CIFAR10_STD)),
        pretrained=bool(meta.get("pretrained", True)),
        note=str(meta.get("note", "")),
        extra={
            "sha256_16": digest,
            **{k: meta[k] for k in ("method", "epochs", "knn_accuracy") if k in meta},
        },
    )


def load_backbone(spec: str = "default", device: str | torch.device = "cpu") -> Backbone:
    """Resolve a backbone spec (see the module docstring) to an eval-mode :class:`Backbone`."""
    if spec == "default":
        warnings.warn(
            "no trained self-supervised backbone ships with this version: 'default' is a "
            "randomly initialised ResNet-18 (seed 0). Rankings from it are weaker than from a "
            "MoCo backbone.",
            UserWarning,
            stacklevel=2,
        )
        backbone = _random(
            DEFAULT_SEED,
            "default",
            "stand-in: randomly initialised ResNet-18 (seed 0), no self-supervised training yet",
        )
    elif spec == "random" or spec.startswith("random:"):
        seed_text = spec.partition(":")[2] or str(DEFAULT_SEED)
        if not seed_text.isdigit():
            raise InvalidInputError(
                f"backbone {spec!r}: the seed after 'random:' must be an integer"
            )
        backbone = _random(int(seed_text), spec, "randomly initialised ResNet-18")
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise MissingFileError(
                f"backbone {spec!r} is neither a known name ('default', 'random', 'random:SEED') "
                "nor an existing file"
            )
        if path.suffix != ".safetensors":
            raise CheckpointError(
                f"{path}: unsupported checkpoint format {path.suffix!r}; this version reads "
                "simattr .safetensors backbones"
            )
        backbone = _from_safetensors(path)
    return backbone.to(device)
