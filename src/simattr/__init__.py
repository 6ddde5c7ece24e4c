"""simattr: which training images made an image classifier predict this?

Embed images with a self-supervised backbone, rank the training images of the target's class by
an Exemplar-SVM score, and check the ranking by retraining. See the README for a tour.

The public names are loaded on first use (PEP 562), so ``import simattr`` and the command line's
``--help`` stay fast: :class:`Attributor` and :func:`load_dataset` need torch and scikit-learn,
which take seconds to import; the exceptions and the version need nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from simattr._version import __version__
from simattr.errors import (
    CheckpointError,
    DataError,
    InvalidInputError,
    MissingFileError,
    SimattrError,
)

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from simattr.attribution import Attributor
    from simattr.data import ImageDataset, load_dataset

#: Public names imported on first access: name -> module that defines it.
_LAZY = {
    "Attributor": "simattr.attribution",
    "ImageDataset": "simattr.data",
    "load_dataset": "simattr.data",
}

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


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'simattr' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
