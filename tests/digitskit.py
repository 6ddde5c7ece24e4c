"""A classifier recipe that trains on scikit-learn's bundled digits (no shared data needed).

Digits' 8 x 8 images need a network that pools 8 x 8 down to 1 x 1: quarter-width ResNet-9,
30 images per class, 2 epochs (a fraction of a second per model on one thread).
"""

from __future__ import annotations

import dataclasses

from simattr.training.recipes import PoolSpec, Recipe, get_recipe


def digits_recipe(**changes) -> Recipe:
    base = dataclasses.replace(
        get_recipe("tiny"),
        name="tiny-digits",
        arch="resnet9-w0.25",
        epochs=2,
        pool=PoolSpec(30, 0),
    )
    return dataclasses.replace(base, **changes)
