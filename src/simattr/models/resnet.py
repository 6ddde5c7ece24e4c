"""Backbone architectures: torchvision's ResNet-18 with the CIFAR stem.

For 32x32 images the ImageNet stem (7x7 stride-2 convolution, then max-pool) throws away most of
the resolution before the first block, so self-supervised CIFAR work replaces it with a 3x3
stride-1 convolution and no max-pool. We keep torchvision's module names so that torchvision
and MoCo-style state dicts load without renaming beyond their prefixes.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet18


def cifar_resnet18() -> nn.Module:
    """ResNet-18 with a 3x3 stride-1 stem, no max-pool and no classifier: 512-d pooled output."""
    net = resnet18(weights=None)
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net


ARCHITECTURES = {"resnet18": cifar_resnet18}
FEATURE_DIMS = {"resnet18": 512}


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
