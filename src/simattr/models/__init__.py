"""Networks: backbone architectures and how they are named, built and loaded."""

from simattr.models.backbones import (
    BACKBONE_HELP,
    Backbone,
    default_weights_path,
    load_backbone,
    shipped_weights,
)
from simattr.models.checkpoints import FORMATS, Checkpoint, read_checkpoint
from simattr.models.resnet import ARCHITECTURES, build_architecture, cifar_resnet18

__all__ = [
    "ARCHITECTURES",
    "BACKBONE_HELP",
    "FORMATS",
    "Backbone",
    "Checkpoint",
    "build_architecture",
    "cifar_resnet18",
    "default_weights_path",
    "load_backbone",
    "read_checkpoint",
    "shipped_weights",
]
