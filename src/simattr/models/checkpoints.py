"""Foreign backbone checkpoints read into our architectures (:mod:`simattr.models.resnet`).

Self-supervised backbones are published by several codebases, each wrapping the same ResNet in
its own nesting of keys. This module reads such a file *safely* (safetensors, or
``torch.load(map_location="cpu", weights_only=True)``: nothing in a downloaded file can run code
in our process), finds the backbone's tensors, renames them to torchvision's module names (ours),
drops heads, momentum copies and queues, and checks the result against the architecture.

Architectures are inferred from the weights (:func:`infer_arch`): a 3x3 ``conv1`` is the CIFAR
stem (``resnet18``, ``resnet18-w32``, ``resnet18-w16`` by its width); a 7x7 ``conv1`` is the
ImageNet stem, ``resnet50-imagenet`` when the blocks are Bottlenecks (``layer1.0.conv3``
exists), else ``resnet18-imagenet``. Every layout below holds either stem.

Layouts understood (``format=``; ``"auto"`` detects them from key prefixes, in this order):

``"moco"`` (official MoCo v1/v2 ``.pth.tar``)
    ``{"state_dict": {"module.encoder_q.<torchvision names>": ...}, "arch": ..., "epoch": ...}``;
    ``module.encoder_q.fc.*`` (the head), ``module.encoder_k.*``, ``module.queue`` and
    ``module.queue_ptr`` are dropped. The ``module.`` prefix is optional.
``"mocov3"`` (official MoCo v3)
    ``{"state_dict": {"module.base_encoder.<torchvision names>": ...}}``; the head
    (``module.base_encoder.fc.*`` / ``head.*``), ``module.momentum_encoder.*`` and
    ``module.predictor.*`` are dropped. The ``module.`` prefix is optional.
``"dino"`` (official DINO ResNet-50)
    The released backbone (``dino_resnet50_pretrain.pth``) is a plain torchvision state dict
    without ``fc`` and is read as ``"torchvision"`` (with a ``backbone.`` prefix, as
    ``"lightly"``: the same reading). A training checkpoint (``checkpoint.pth``) holds
    ``{"teacher": {"module.backbone.<...>", "module.head.<...>"}, "student": {...}, "args":
    Namespace, ...}``: the *teacher* is read (DINO evaluates the teacher), its ``head.*``
    dropped; detected from the ``teacher`` key. ``args`` (an ``argparse.Namespace``) is the one
    object beyond tensors and containers that is unpickled (it can only hold plain values).
``"solo"`` (solo-learn, a PyTorch Lightning checkpoint)
    ``{"state_dict": {"backbone.<torchvision names>": ...}}``; everything outside ``backbone.``
    (``projector.*``, ``momentum_backbone.*``, ``momentum_projector.*``, ``predictor.*``,
    ``classifier.*``) and ``backbone.fc.*`` are dropped. Detected by any of those solo-learn
    names; otherwise a ``backbone.`` checkpoint is taken as lightly's (same reading).
``"lightly"`` (lightly / PyTorch Lightning checkpoints, ``{"state_dict": {"backbone.<...>"}}``)
    Three backbone layouts under ``backbone.``:

    * named modules with torchvision names (``backbone.conv1.weight``,
      ``backbone.layer1.0.conv1.weight``, ...), e.g. our ``CifarResNet`` or a torchvision
      ResNet-18 with a CIFAR stem;
    * lightly's ``ResNetGenerator`` as a named module: the same, except that blocks call their
      projection ``shortcut`` (read as ``downsample``) and the classifier ``linear`` (dropped);
    * an ``nn.Sequential`` of a ResNet's children: ``backbone.0.weight`` (stem conv),
      ``backbone.1.*`` (stem batch norm), then the four stages at consecutive indices ``s``
      to ``s + 3``. ``s = 2`` is lightly's CIFAR benchmark backbone
      (``nn.Sequential(*list(ResNetGenerator("resnet-18").children())[:-1], ...)``), which has
      *no* ReLU after the stem (lightly's ReLU is functional and is lost): the loaded module
      gets ``relu = Identity`` so its features match. ``s = 3`` means a ReLU module sat between
      stem and stages; ``s = 4`` is torchvision's children (``relu``, ``maxpool``): with a
      3x3 stem the max-pool slot is assumed to have been replaced by ``nn.Identity``, as CIFAR
      recipes do (the weights cannot tell); with a 7x7 stem (lightly's ImageNet recipes,
      ``nn.Sequential(*list(torchvision.models.resnet50().children())[:-1])``) the max-pool is
      kept, as in the ImageNet architectures.

    Everything outside ``backbone.`` (``projection_head.*``, ``backbone_momentum.*``, ...) is
    dropped.
``"torchvision"``
    a plain torchvision ResNet state dict (``conv1.weight``, ..., ``fc.*`` dropped; an optional
    ``module.`` prefix from ``DataParallel`` is removed): torchvision's own ``resnet18`` /
    ``resnet50`` files (ImageNet stem), or a ResNet-18 with the CIFAR stem.
``"simattr"``
    our own ``backbone.safetensors`` with its ``.json`` sidecar (taken as is).

In every layout, batch-norm running statistics stored for split batch norm (``running_mean`` /
``running_var`` of shape ``[num_splits * C]``, lightly's ``SplitBatchNorm``) are averaged over
the splits, which is what that layer itself uses in eval mode. The top-level object may be the
state dict itself or hold it under ``"teacher"`` (DINO), ``"state_dict"`` or ``"model"``.
A stem that does not match a given ``arch`` (7x7 for a CIFAR architecture, 3x3 for an ImageNet
one) is refused with a message that says which architecture the file holds.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from simattr._io import read_sidecar, sidecar_path, verify_checksum
from simattr.errors import CheckpointError, InvalidInputError
from simattr.models.resnet import ARCHITECTURES, build_architecture, is_imagenet_stem

FORMATS = ("auto", "simattr", "torchvision", "moco", "mocov3", "dino", "lightly", "solo")
#: File endings read with ``torch.load(weights_only=True)``; ``.safetensors`` is read as such.
TORCH_SUFFIXES = (".pth", ".pth.tar", ".pt", ".ckpt")
SUFFIXES = (*TORCH_SUFFIXES, ".safetensors")
#: CIFAR stem width (``conv1`` output channels) -> architecture name.
WIDTH_TO_ARCH = {64: "resnet18", 32: "resnet18-w32", 16: "resnet18-w16"}
#: Where a checkpoint may keep its network, in the order looked at (DINO: the teacher).
_CONTAINERS = ("teacher", "state_dict", "model")
_SOLO_MARKERS = ("projector.", "momentum_backbone.", "momentum_projector.", "classifier.")
_SHOWN = 8  # how many keys an error lists per kind


@dataclass
class Checkpoint:
    """A backbone state dict fitted to one of our architectures, and where it came from.

    ``stem_relu`` is false for layouts whose network had no ReLU after the stem (see the
    module docstring); ``split_bn_layers`` counts batch norms whose split statistics were
    averaged; ``meta`` is our sidecar (``simattr`` format) and ``info`` what the file says about
    itself (``epoch``, ``arch``, ...) when it says anything.
    """

    state_dict: dict[str, torch.Tensor]
    arch: str
    format: str
    path: Path
    stem_relu: bool = True
    split_bn_layers: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def build(self) -> nn.Module:
        """The architecture with these weights, in eval mode."""
        with torch.device("meta"):  # no random initialisation only to be overwritten
            module = build_architecture(self.arch)
        module.load_state_dict(self.state_dict, assign=True)
        if not self.stem_relu:
            module.relu = nn.Identity()
        return module.eval()


def read_checkpoint(
    path: str | Path, *, arch: str | None = None, format: str = "auto"
) -> Checkpoint:
    """Read ``path`` (any layout of the module docstring) as a state dict for ``arch``.

    ``arch`` defaults to the sidecar's (``simattr`` format), else to the one whose stem width
    matches ``conv1.weight``, else ``resnet18``. Raises :class:`CheckpointError` naming the
    file for an unsafe or unreadable file, an unknown layout, or weights that do not fit.
    """
    path = Path(path)
    if format not in FORMATS:
        raise InvalidInputError(f"unknown checkpoint format {format!r}; choose one of {FORMATS}")
    if arch is not None and arch not in ARCHITECTURES:
        raise InvalidInputError(f"unknown architecture {arch!r}; known: {sorted(ARCHITECTURES)}")
    raw, info, meta = read_weights(path)
    if format != "auto":
        fmt = format
    elif info.get("container") == "teacher":
        fmt = "dino"
    else:
        fmt = detect_format(raw, path)
    state, stem_relu = convert_state_dict(raw, fmt, path)
    if fmt == "simattr" and arch is None and "arch" in meta:
        arch = str(meta["arch"])
        if arch not in ARCHITECTURES:
            raise CheckpointError(f"{sidecar_path(path)}: unknown architecture {arch!r}")
    arch = arch or infer_arch(state, path)
    state, n_split = fit_state_dict(state, arch, path)
    return Checkpoint(state, arch, fmt, path, stem_relu, n_split, meta, info)


# -- reading -------------------------------------------------------------------------------


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """The flat ``name -> tensor`` mapping in ``path``, the file's own scalar fields, and our
    sidecar (empty when absent). Never unpickles anything but tensors and plain containers."""
    name = path.name.lower()
    if not name.endswith(SUFFIXES):
        raise CheckpointError(
            f"{path}: unsupported checkpoint file type; expected one of {', '.join(SUFFIXES)}"
        )
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    meta = read_sidecar(path)
    # our files carry the SHA-256 of their bytes: a damaged one is refused, never loaded
    verify_checksum(path, meta, "weights file")
    if name.endswith(".safetensors"):
        return _read_safetensors(path), {}, meta
    payload = _torch_load(path)
    state, info = _find_state_dict(payload, path)
    return state, info, meta


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from None


def _torch_load(path: Path) -> Any:
    """``torch.load`` restricted to tensors and containers; a pickle that would build any other
    object (and so could run code) is refused before anything of it runs.

    One class is let through: ``argparse.Namespace``, which DINO and other training scripts
    store as ``args``. Unpickling one only sets attributes on an empty namespace (no
    constructor and no method of it runs), and its fields are again plain values."""
    import argparse
    import contextlib

    # torch >= 2.5; before, a checkpoint with args is refused with the message below
    allow = getattr(torch.serialization, "safe_globals", None)
    try:
        with allow([argparse.Namespace]) if allow else contextlib.nullcontext():
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _unpickling_error(path, str(exc)) from None
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})"
        ) from None


def _unpickling_error(path: Path, message: str) -> CheckpointError:
    """Tell a pickle that asks for a Python object (possible code) from a damaged file."""
    # "Unsupported global: GLOBAL mod.Name", or "unsupported GLOBAL os.system whose module os
    # is blocked" for modules torch never lets through
    wanted = re.search(r"unsupported (?:global|class):? (?:GLOBAL )?([\w.]+)", message, re.I)
    if wanted is None:
        detail = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", message, re.S)
        reason = (detail.group(1) if detail else message).strip().splitlines()[0]
        return CheckpointError(f"{path} is not a readable PyTorch checkpoint ({reason})")
    return CheckpointError(
        f"{path} is not a plain weights file: it holds Python objects beyond tensors and "
        f"containers (it asks for {wanted.group(1)}), which simattr refuses to unpickle "
        "because that can run code. Nothing in it was executed. If you trust the file, save "
        "its state dict alone with torch.save(torch.load(file, weights_only=False)"
        "['state_dict'], 'weights.pth') and load that"
    )


def _find_state_dict(payload: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors of ``payload`` (a state dict, or a dict holding one under ``teacher``,
    ``state_dict`` or ``model``) and its top-level scalar fields (``epoch``, ``arch``, ...);
    ``info["container"]`` names the key the tensors were found under."""
    if not isinstance(payload, Mapping):
        raise CheckpointError(
            f"{path} holds a {type(payload).__name__}, not a state dict (a mapping of names to "
            "tensors)"
        )
    info = {k: v for k, v in payload.items() if isinstance(v, (str, int, float, bool))}
    for key in _CONTAINERS:
        inner = payload.get(key)
        if isinstance(inner, Mapping) and any(torch.is_tensor(v) for v in inner.values()):
            payload = inner
            info["container"] = key
            break
    state = {str(k): v for k, v in payload.items() if torch.is_tensor(v)}
    if not state:
        raise CheckpointError(
            f"{path} holds no tensors at its top level nor under {', '.join(_CONTAINERS)}; "
            f"top-level keys: {sorted(map(str, payload))[:_SHOWN]}"
        )
    return state, info


# -- layouts -------------------------------------------------------------------------------


def detect_format(state: Mapping[str, torch.Tensor], path: Path | None = None) -> str:
    """Guess the layout from key prefixes (see the module docstring); ``"simattr"`` for a
    safetensors file with our sidecar or any other key set (the fit check then reports it)."""
    keys = [_strip(k, "module.") for k in state]
    if path is not None and path.name.endswith(".safetensors") and sidecar_path(path).exists():
        return "simattr"
    if any(k.startswith("encoder_q.") for k in keys):
        return "moco"
    if any(k.startswith("base_encoder.") for k in keys):
        return "mocov3"
    if any(k.startswith("backbone.") for k in keys):
        return "solo" if any(k.startswith(_SOLO_MARKERS) for k in keys) else "lightly"
    if "conv1.weight" in keys and path is not None and not path.name.endswith(".safetensors"):
        return "torchvision"
    if any(k.startswith("fc.") for k in keys):
        return "torchvision"
    return "simattr"


def convert_state_dict(
    state: Mapping[str, torch.Tensor], fmt: str, path: Path
) -> tuple[dict[str, torch.Tensor], bool]:
    """Rename ``state`` from layout ``fmt`` to our names and drop what is not the backbone.

    Returns the backbone's tensors and whether its stem is followed by a ReLU.
    """
    if fmt == "simattr":
        return dict(state), True
    unwrapped = {_strip(k, "module."): v for k, v in state.items()}
    if fmt == "dino":
        # DINO: the teacher's (or student's) ``backbone.`` next to ``head.``; the released
        # backbone-only files are plain torchvision names without ``fc``
        if any(k.startswith("backbone.") for k in unwrapped):
            unwrapped = {k: v for k, v in unwrapped.items() if k.startswith("backbone.")}
            unwrapped = {k[len("backbone.") :]: v for k, v in unwrapped.items()}
        kept = {k: v for k, v in unwrapped.items() if not k.startswith(("head.", "fc."))}
        if not kept:
            raise CheckpointError(f"{path} is not a 'dino' checkpoint: it holds no backbone")
        return kept, True
    prefix, heads = {
        "torchvision": ("", ("fc.",)),
        "moco": ("encoder_q.", ("fc.",)),
        "mocov3": ("base_encoder.", ("fc.", "head.")),
        "lightly": ("backbone.", ("fc.", "linear.")),
        "solo": ("backbone.", ("fc.", "linear.")),
    }[fmt]
    inner = {k[len(prefix) :]: v for k, v in unwrapped.items() if k.startswith(prefix)}
    if not inner:
        raise CheckpointError(
            f"{path} is not a {fmt!r} checkpoint: no key starts with {prefix!r}; its keys start "
            f"with {sorted({k.split('.')[0] + '.' for k in unwrapped})[:_SHOWN]}. Pass the right "
            f"format= (one of {FORMATS})"
        )
    inner = {k: v for k, v in inner.items() if not k.startswith(heads)}
    stem_relu = True
    if prefix == "backbone.":
        inner, stem_relu = _from_sequential(inner, path)
    inner = {k.replace(".shortcut.", ".downsample."): v for k, v in inner.items()}
    return inner, stem_relu


def _strip(key: str, prefix: str) -> str:
    return key[len(prefix) :] if key.startswith(prefix) else key


def _from_sequential(
    state: dict[str, torch.Tensor], path: Path
) -> tuple[dict[str, torch.Tensor], bool]:
    """Rename an ``nn.Sequential`` of ResNet children (``0.weight``, ``1.*``, stages at ``s`` to
    ``s + 3``) to module names; names that are not numbered pass through unchanged."""
    top = {k.split(".", 1)[0] for k in state}
    if not all(t.isdigit() for t in top):
        return state, True
    stages = sorted(int(t) for t in top if int(t) >= 2)
    start = stages[0] if stages else -1
    if start not in (2, 3, 4) or stages != list(range(start, start + 4)):
        raise CheckpointError(
            f"{path}: the backbone is an nn.Sequential with parameters at indices "
            f"{sorted(int(t) for t in top)}; simattr reads stem conv 0, stem batch norm 1 and "
            "four stages at consecutive indices starting at 2, 3 or 4"
        )
    names = {"0": "conv1", "1": "bn1"} | {str(start + i): f"layer{i + 1}" for i in range(4)}
    renamed = {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        renamed[f"{names.get(head, head)}.{rest}"] = value
    return renamed, start != 2


# -- fitting -------------------------------------------------------------------------------


def infer_arch(state: Mapping[str, torch.Tensor], path: Path) -> str:
    """The architecture the weights fit: the stem (``conv1.weight``: 3x3 CIFAR, 7x7 ImageNet),
    the block type (``layer1.0.conv3`` only in Bottleneck blocks: ResNet-50) and, for the
    CIFAR stem, its width; ``resnet18`` without a ``conv1``."""
    bottleneck = "layer1.0.conv3.weight" in state
    conv1 = state.get("conv1.weight")
    if conv1 is None or conv1.ndim != 4:
        return "resnet50-imagenet" if bottleneck else "resnet18"
    width, kernel = int(conv1.shape[0]), tuple(conv1.shape[2:])
    if kernel == (7, 7):
        if width != 64:
            raise CheckpointError(
                f"{path}: the ImageNet-stem conv1 has {width} output channels; simattr's "
                "resnet18-imagenet and resnet50-imagenet have 64"
            )
        return "resnet50-imagenet" if bottleneck else "resnet18-imagenet"
    if kernel != (3, 3):
        raise CheckpointError(
            f"{path}: conv1.weight has shape {tuple(conv1.shape)}: neither the CIFAR stem (3x3) "
            "nor the ImageNet stem (7x7) of a ResNet"
        )
    if bottleneck:
        raise CheckpointError(
            f"{path}: a Bottleneck ResNet (layer1.0.conv3) with the CIFAR stem (3x3 conv1); "
            "simattr reads Bottleneck ResNets with the ImageNet stem only (resnet50-imagenet)"
        )
    if width not in WIDTH_TO_ARCH:
        raise CheckpointError(
            f"{path}: conv1 has {width} output channels; simattr's ResNet-18 variants have "
            f"{sorted(WIDTH_TO_ARCH)} ({', '.join(WIDTH_TO_ARCH.values())})"
        )
    return WIDTH_TO_ARCH[width]


def _check_stem(conv1: torch.Tensor, arch: str, path: Path) -> None:
    """A clear word when the stem of the file is not the stem of ``arch``."""
    kernel = tuple(conv1.shape[2:])
    if is_imagenet_stem(arch) and kernel != (7, 7):
        raise CheckpointError(
            f"{path}: conv1.weight has shape {tuple(conv1.shape)}, but {arch} has the ImageNet "
            "stem (7x7 stride-2 conv1, then max-pool). The file looks like a CIFAR-stem "
            "network: leave arch unset (it is inferred) or pass a CIFAR architecture "
            f"({', '.join(a for a in ARCHITECTURES if not is_imagenet_stem(a))})"
        )
    if not is_imagenet_stem(arch) and kernel != (3, 3):
        raise CheckpointError(
            f"{path}: conv1.weight has shape {tuple(conv1.shape)}, but {arch} has the CIFAR "
            f"stem, a 3x3 stride-1 conv1 without max-pool (shape ({conv1.shape[0]}, 3, 3, 3)). "
            "This looks like an ImageNet-stem ResNet (7x7 stride-2 conv1 and max-pool): leave "
            "arch unset (it is inferred) or pass resnet18-imagenet or resnet50-imagenet"
        )


def fit_state_dict(
    state: Mapping[str, torch.Tensor], arch: str, path: Path
) -> tuple[dict[str, torch.Tensor], int]:
    """``state`` checked against ``arch``: split batch-norm statistics averaged, dtypes cast to
    the architecture's (fp16 files load as float32), missing ``num_batches_tracked`` counters
    (unused in eval mode) filled. Returns it and the number of split batch norms averaged."""
    with torch.device("meta"):  # names, shapes and dtypes only: nothing allocated or drawn
        expected = build_architecture(arch).state_dict()
    if "conv1.weight" in state:
        _check_stem(state["conv1.weight"], arch, path)
    out, n_split = {}, 0
    for key, value in state.items():
        if key in expected and _is_split_stat(key, value, expected[key]):
            channels = expected[key].shape[0]
            value = value.reshape(-1, channels).mean(dim=0)
            n_split += key.endswith("running_mean")
        out[key] = value.to(expected[key].dtype) if key in expected else value
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in out:
            out[key] = torch.zeros_like(value, device="cpu")
    _check_fit(out, expected, arch, path)
    return out, n_split


def _is_split_stat(key: str, value: torch.Tensor, want: torch.Tensor) -> bool:
    return (
        key.endswith(("running_mean", "running_var"))
        and value.ndim == 1
        and want.ndim == 1
        and len(value) > len(want)
        and len(value) % len(want) == 0
    )


def _check_fit(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], arch: str, path: Path
) -> None:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    ]
    if not (missing or unexpected or shapes):
        return
    parts = [f"missing keys {_first(missing)}", f"unexpected keys {_first(unexpected)}"]
    if shapes:
        parts.append(f"shape mismatches (file vs {arch}) {_first(shapes)}")
    hint = ""
    if any(".conv3." in k for k in unexpected):
        hint = "; it looks like a Bottleneck ResNet: pass arch='resnet50-imagenet'"
    elif any(".conv3." in k for k in missing):
        hint = "; it looks like a ResNet with basic blocks (ResNet-18), not a Bottleneck one"
    elif any(k.startswith(("layer1.2.", "layer3.6.")) for k in unexpected):
        hint = (
            "; it looks like a deeper ResNet (34, 101 or 152), and simattr reads ResNet-18 and "
            "ResNet-50"
        )
    raise CheckpointError(
        f"{path} does not hold a {arch} backbone: {', '.join(parts)}{hint}. Pass arch= or "
        f"format= if the guess was wrong (formats: {FORMATS[1:]})"
    )


def _first(items: list[str]) -> str:
    return f"{items[:_SHOWN]}{' ...' if len(items) > _SHOWN else ''}"


__all__ = [
    "FORMATS",
    "SUFFIXES",
    "Checkpoint",
    "convert_state_dict",
    "detect_format",
    "fit_state_dict",
    "infer_arch",
    "read_checkpoint",
    "read_weights",
]
