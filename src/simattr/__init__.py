"""simattr: which training images made an image classifier predict this?

Embed images with a self-supervised backbone, rank the training images of the target's class by
an Exemplar-SVM score, and check the ranking by retraining. See the README for a tour.
"""

from __future__ import annotations

from simattr._version import __version__
from simattr.attribution import Attributor
from simattr.data import ImageDataset, load_dataset
from simattr.errors import (
    CheckpointError,
    DataError,
    InvalidInputError,
    MissingFileError,
    SimattrError,
)

__all__ = [
    "Attributor",
    "CheckpointError",
    "DataError",
    "ImageDataset",
    "InvalidInputError",
    "MissingFileError",
    "SimattrError",
    "__version__",
    "load_dataset",
]
