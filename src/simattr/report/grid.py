"""Picture of an attribution: the target image, then its top-ranked training images."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from simattr._io import atomic_path


def save_attribution_grid(
    path: str | os.PathLike[str],
    target_image: np.ndarray,
    target_title: str,
    images: np.ndarray,
    titles: Sequence[str],
    *,
    suptitle: str = "",
) -> Path:
    """Save a one-row PNG: the target (framed in red) followed by ``images`` with ``titles``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n = len(images) + 1
    fig, axes = plt.subplots(1, n, figsize=(1.6 * n, 2.1), squeeze=False)
    panels = [(target_image, target_title), *zip(images, titles, strict=True)]
    for i, (ax, (img, title)) in enumerate(zip(axes[0], panels, strict=True)):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(title, fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
        if i == 0:
            for spine in ax.spines.values():
                spine.set_edgecolor("red")
                spine.set_linewidth(2.5)
    if suptitle:
        fig.suptitle(suptitle, fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(path)
