"""Networks: backbone architectures and how they are named, built and loaded."""

from simattr.models.backbones import Backbone, load_backbone
from simattr.models.resnet import ARCHITECTURES, build_architecture, cifar_resnet18

__all__ = ["ARCHITECTURES", "Backbone", "build_architecture", "cifar_resnet18", "load_backbone"]
