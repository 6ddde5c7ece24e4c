"""Backbone architectures: ResNet-18 with the CIFAR stem, and ImageNet-stem ResNet-18/50.

For 32x32 images the ImageNet stem (7x7 stride-2 convolution, then max-pool) throws away most of
the resolution before the first block, so self-supervised CIFAR work replaces it with a 3x3
stride-1 convolution and no max-pool. The network is assembled from torchvision's
``BasicBlock`` with torchvision's module names (``conv1``, ``bn1``, ``layer1.0.conv1``, ...), so
at full width a torchvision ``resnet18`` state dict (minus its stem and ``fc``) loads unchanged.
Reduced widths (``resnet18-w32``, ``resnet18-w16``: 1/2 and 1/4 of the channels) exist because
self-supervised training of the full network costs about 40 minutes per epoch on a 2-core CPU.

Photos need the ImageNet stem: ``resnet18-imagenet`` and ``resnet50-imagenet`` are torchvision's
``resnet18`` / ``resnet50`` themselves (built without weights: nothing is ever downloaded), with
``fc = Identity`` so that ``forward`` returns the pooled 512- or 2048-d embedding. Their input
preprocessing (shorter side 256, centre crop 224, ImageNet statistics) is the backbone's, see
:mod:`simattr.data.preprocess`.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock


class CifarResNet(nn.Module):
    """ResNet with a 3x3 stride-1 stem, no max-pool, and global-average-pooled output.

    ``forward`` returns the pooled embedding (``8 * width`` dimensions); there is no classifier.
    """

    def __init__(self, layers: tuple[int, ...] = (2, 2, 2, 2), width: int = 64) -> None:
        super().__init__()
        self.width = width
        self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        inplanes = width
        for i, blocks in enumerate(layers):
            planes, stride = width * 2**i, 1 if i == 0 else 2
            downsample = None
            if stride != 1 or inplanes != planes:
                downsample = nn.Sequential(
                    nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False),
                    nn.BatchNorm2d(planes),
                )
            stage = [BasicBlock(inplanes, planes, stride, downsample)]
            stage += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
            inplanes = planes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = inplanes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def cifar_resnet18(width: int = 64) -> CifarResNet:
    """ResNet-18 with the CIFAR stem; ``width`` channels in the first stage (64 = standard)."""
    return CifarResNet((2, 2, 2, 2), width)


def imagenet_resnet(depth: int) -> nn.Module:
    """torchvision's ResNet-``depth`` (18 or 50, ImageNet stem), randomly initialised, with
    ``fc = Identity``; ``out_dim`` is the embedding size."""
    from torchvision.models import resnet18, resnet50

    module = {18: resnet18, 50: resnet50}[depth](weights=None)
    module.out_dim = module.fc.in_features
    module.fc = nn.Identity()
    return module


ARCHITECTURES = {
    "resnet18": lambda: cifar_resnet18(64),
    "resnet18-w32": lambda: cifar_resnet18(32),
    "resnet18-w16": lambda: cifar_resnet18(16),
    "resnet18-imagenet": lambda: imagenet_resnet(18),
    "resnet50-imagenet": lambda: imagenet_resnet(50),
}
#: Architectures with the ImageNet stem (7x7 stride-2 conv1 and max-pool).
IMAGENET_ARCHITECTURES = frozenset({"resnet18-imagenet", "resnet50-imagenet"})


def is_imagenet_stem(name: str) -> bool:
    """Whether architecture ``name`` has the ImageNet stem (and so ImageNet preprocessing)."""
    return name in IMAGENET_ARCHITECTURES


def build_architecture(name: str) -> nn.Module:
    """Instantiate an architecture by name (see :data:`ARCHITECTURES`)."""
    from simattr.errors import InvalidInputError

    if name not in ARCHITECTURES:
        raise InvalidInputError(f"unknown architecture {name!r}; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name]()


def random_init(name: str, seed: int = 0) -> nn.Module:
    """A randomly initialised architecture, identical for identical ``seed``."""
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return build_architecture(name)
    finally:
        torch.random.set_rng_state(generator_state)
