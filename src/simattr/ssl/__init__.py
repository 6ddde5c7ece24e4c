"""Self-supervised training of backbones (MoCo v2, SimCLR, BYOL) and the kNN monitor.

:func:`train_ssl` trains a backbone on an :class:`~simattr.data.ImageDataset` with batched
on-device augmentation (:mod:`simattr.ssl.augment`), checkpoints it so that an interrupted run
resumes exactly, and writes ``backbone.safetensors`` for :func:`simattr.models.load_backbone`.
"""

from simattr.ssl.augment import AugmentConfig, SSLAugment, sample_crop_boxes
from simattr.ssl.knn import knn_accuracy, knn_monitor
from simattr.ssl.methods import BYOL, METHODS, MoCo, SimCLR, SSLMethod, build_method
from simattr.ssl.train import SSLConfig, TrainResult, channel_stats, default_lr, train_ssl

__all__ = [
    "BYOL",
    "METHODS",
    "AugmentConfig",
    "MoCo",
    "SSLAugment",
    "SSLConfig",
    "SSLMethod",
    "SimCLR",
    "TrainResult",
    "build_method",
    "channel_stats",
    "default_lr",
    "knn_accuracy",
    "knn_monitor",
    "sample_crop_boxes",
    "train_ssl",
]
