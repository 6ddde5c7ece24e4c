"""Classifier networks for counterfactual retraining (the models that attributions are judged on).

Three families, all built from ``num_classes`` alone so that a recipe can name them:

* :class:`ResNet9`: the paper's network, the common CIFAR "ResNet-9" of the DAWNBench entries
  (prep 64, layer1 128 + residual, layer2 256, layer3 512 + residual, max-pools, a pooled
  linear head), with a ``width`` multiplier;
* :class:`WhitenedNet`: an airbench-style network whose first layer is a fixed 2x2
  patch-whitening convolution computed from the training images (PCA of the 2x2 patches, each
  eigenvector and its negative), followed by groups of conv + max-pool + BatchNorm + GELU. The
  whitened input lets plain SGD use a high learning rate from the first step, which is what makes
  such networks train in a few epochs. Its stem needs data, so it has an :meth:`init_from` hook
  that the trainer calls with the (normalised) training images before the first step;
* the same network with a *stride-2* stem and narrow groups (``whiten-mini``: 32-64-128,
  ``whiten-tiny``: 16-32-64), which works on 16 x 16 maps from the first layer and is what trains
  in seconds on a 2-core CPU (``whiten-mini`` trains at about 2,800 images/s on one thread,
  48-96-192 at 1,900 and 64-128-256 at 1,000, for no better accuracy on a 10,000-image pool).

The registry :data:`CLASSIFIERS` maps a recipe's ``arch`` to a constructor.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F

from simattr.errors import InvalidInputError


class _Scale(nn.Module):
    """Multiply by a constant. Small logits at initialisation keep early, high-lr steps stable."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class _Residual(nn.Module):
    """``x + f(x)``: the two identity-shortcut blocks of ResNet-9."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn_relu(channels, channels), _conv_bn_relu(channels, channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNet9(nn.Module):
    """The DAWNBench/FFCV CIFAR ResNet-9; ``width`` scales every layer (1.0: 6.6 M parameters).

    The head max-pools the last map to 1 x 1 (any input size works) and scales the logits by
    0.125, as in the reference implementations, so the initial loss is near ``log(classes)``.
    """

    def __init__(self, num_classes: int = 10, width: float = 1.0) -> None:
        super().__init__()
        c = [max(1, round(k * width)) for k in (64, 128, 256, 512)]
        self.net = nn.Sequential(
            _conv_bn_relu(3, c[0]),
            _conv_bn_relu(c[0], c[1]),
            nn.MaxPool2d(2),
            _Residual(c[1]),
            _conv_bn_relu(c[1], c[2]),
            nn.MaxPool2d(2),
            _conv_bn_relu(c[2], c[3]),
            nn.MaxPool2d(2),
            _Residual(c[3]),
            _GlobalMaxPool(),
            nn.Linear(c[3], num_classes, bias=False),
            _Scale(0.125),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _GlobalMaxPool(nn.Module):
    """Max over the spatial dimensions. ``torch.amax`` rather than ``AdaptiveMaxPool2d``, whose
    CUDA backward is nondeterministic (and counterfactual models must be reproducible)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.amax(x, dim=(2, 3))


class _ConvGroup(nn.Module):
    """conv -> max-pool -> BN -> GELU -> conv -> BN -> GELU (pooling before BN halves its cost)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.norm1(self.pool(self.conv1(x))))
        return F.gelu(self.norm2(self.conv2(x)))


class WhitenedNet(nn.Module):
    """Airbench-style network: a data-initialised 2x2 patch-whitening stem, then conv groups.

    Args:
        num_classes: size of the output.
        widths: output channels of each conv group (each group halves the spatial size).
        stem_stride: 1 (overlapping patches, 32 -> 31, the GPU setting) or 2 (non-overlapping
            patches, 32 -> 16, four times cheaper for everything after the stem).
        eps: added to the patch covariance's eigenvalues before inverting them, so that
            near-constant directions are not amplified into noise.
        logit_scale: multiplies the logits (small logits let label smoothing and a high lr work
            from the first step).

    The stem's weights are *not* trained (they are set by :meth:`init_from`); its bias is.
    Until ``init_from`` runs the stem is a random projection, so a model used without it
    still works, only worse.
    """

    def __init__(
        self,
        num_classes: int = 10,
        widths: Sequence[int] = (64, 256, 256),
        stem_stride: int = 1,
        eps: float = 5e-4,
        logit_scale: float = 1 / 9,
    ) -> None:
        super().__init__()
        if stem_stride not in (1, 2):
            raise InvalidInputError(f"stem_stride must be 1 or 2, got {stem_stride}")
        self.eps = eps
        self.stem = nn.Conv2d(3, 24, kernel_size=2, stride=stem_stride, padding=0, bias=True)
        self.stem.weight.requires_grad_(False)
        groups = []
        c_in = 24
        for w in widths:
            groups.append(_ConvGroup(c_in, w))
            c_in = w
        self.groups = nn.Sequential(*groups)
        self.head = nn.Linear(c_in, num_classes, bias=False)
        self.logit_scale = logit_scale

    @torch.no_grad()
    def init_from(self, images: torch.Tensor) -> None:
        """Set the stem to whiten the 2x2 patches of ``images`` (N x 3 x H x W, normalised).

        The eigendecomposition runs in float64 on the CPU, so the result does not depend on the
        device the model trains on.
        """
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] < 1:
            raise InvalidInputError(
                f"init_from needs images N x 3 x H x W with N >= 1, got {tuple(images.shape)}"
            )
        k, s = self.stem.kernel_size[0], self.stem.stride[0]
        x = images.detach().to("cpu", torch.float64)
        patches = F.unfold(x, kernel_size=k, stride=s)  # N x 12 x L
        patches = patches.transpose(1, 2).reshape(-1, patches.shape[1])
        mean = patches.mean(0)
        centred = patches - mean
        cov = centred.T @ centred / max(1, len(centred) - 1)
        eigval, eigvec = torch.linalg.eigh(cov)
        w = eigvec.T / torch.sqrt(eigval.clamp_min(0) + self.eps)[:, None]  # 12 x 12
        w = torch.cat([w, -w], dim=0)  # each direction and its negative: GELU keeps both signs
        bias = -(w @ mean)
        self.stem.weight.copy_(w.reshape(24, 3, k, k).to(self.stem.weight))
        self.stem.bias.copy_(bias.to(self.stem.bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.stem(x))
        x = self.groups(x)
        x = torch.amax(x, dim=(2, 3))
        return self.head(x) * self.logit_scale


#: Classifier constructors by the name a :class:`~simattr.training.recipes.Recipe` uses.
CLASSIFIERS: dict[str, Callable[[int], nn.Module]] = {
    "resnet9": ResNet9,
    "resnet9-w0.5": partial(ResNet9, width=0.5),
    "resnet9-w0.25": partial(ResNet9, width=0.25),
    "whiten": partial(WhitenedNet, widths=(64, 256, 256), stem_stride=1),
    "whiten-mini": partial(WhitenedNet, widths=(32, 64, 128), stem_stride=2),
    "whiten-tiny": partial(WhitenedNet, widths=(16, 32, 64), stem_stride=2),
}


def build_classifier(arch: str, num_classes: int) -> nn.Module:
    """A freshly initialised classifier ``arch`` with ``num_classes`` outputs."""
    if arch not in CLASSIFIERS:
        raise InvalidInputError(f"unknown classifier {arch!r}; choose one of {sorted(CLASSIFIERS)}")
    if int(num_classes) < 2:
        raise InvalidInputError(f"a classifier needs at least 2 classes, got {num_classes}")
    return CLASSIFIERS[arch](int(num_classes))


@functools.cache
def min_input_size(arch: str) -> int:
    """The smallest square image side ``arch`` can classify (at least 8).

    Found by running the untrained network on blank images of growing size, once per process:
    the stride-2 whitened nets halve the image four times and need 16 x 16, which a formula
    per architecture would have to repeat. The trainer refuses smaller images with this number
    instead of letting torch fail deep inside a pooling layer.
    """
    net = build_classifier(arch, 2).eval()
    with torch.no_grad():
        for side in range(8, 257):
            try:
                net(torch.zeros((2, 3, side, side)))
            except RuntimeError:
                continue
            return side
    raise InvalidInputError(
        f"classifier {arch!r} accepts no image up to 256 x 256"
    )  # pragma: no cover
