"""How to read an exemplar-SVM score on real CIFAR-10: sign, scale, what a duplicate scores.

One class pool of the shared CIFAR-10 copy (all 5,000 training cats), the shipped backbone,
the default method (``esvm``, C = 0.1, L2-normalised features). Targets: 100 test cats (no
copy in the pool), 20 training cats used as targets (each has its exact copy in the pool), and
the same 20 flipped left-right and re-encoded as JPEG quality 50 (near-duplicates). Prints the
figures quoted in the README's "Reading a score".

    SIMATTR_DATA_ROOT=../shared/datasets python scripts/score_scale.py
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from simattr import Attributor, load_dataset
from simattr.features import extract_features
from simattr.models import load_backbone

CLASS = "cat"


def _near_copy(image: np.ndarray) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image[:, ::-1]).save(buffer, format="JPEG", quality=50)
    return np.asarray(Image.open(buffer).convert("RGB"))


def main() -> None:
    train, test = load_dataset("cifar10", "train"), load_dataset("cifar10", "test")
    label = train.class_names.index(CLASS)
    pool_rows = np.flatnonzero(train.labels == label)
    test_rows = np.flatnonzero(test.labels == label)[:100]
    copies = pool_rows[:: len(pool_rows) // 20][:20]
    net = load_backbone("default")
    pool = extract_features(net, train.subset(pool_rows), progress=False)
    fresh = extract_features(net, test.subset(test_rows), progress=False)
    near = np.stack([_near_copy(img) for img in train.get_images(copies)])
    near_x = extract_features(net, near, progress=False)
    att = Attributor("esvm").fit(pool, np.full(len(pool), label))

    scores = att.score(fresh, np.full(len(fresh), label))
    ordered = -np.sort(-scores, axis=1)
    print(f"{len(pool)} training {CLASS}s, backbone {net.name}, {pool.shape[1]}-d features")
    print("ordinary test targets (no copy in the pool), medians over 100 targets:")
    for rank in (1, 10, 100, 1000):
        print(f"  score at rank {rank}: {np.median(ordered[:, rank - 1]):+.3f}")
    print(f"  median score of the pool: {np.median(scores):+.3f}")
    above = np.median((scores > 0).sum(axis=1))
    inside = np.median((scores > -1).sum(axis=1))
    print(f"  pool images scoring above 0: {above:.0f}; above -1 (inside the margin): {inside:.0f}")

    position = {int(r): i for i, r in enumerate(pool_rows)}
    for name, feats in (("exact copy", pool[[position[int(r)] for r in copies]]),
                        ("flipped + JPEG q50", near_x)):  # fmt: skip
        s = att.score(feats, np.full(len(feats), label))
        own = s[np.arange(len(copies)), [position[int(r)] for r in copies]]
        ranks = (s > own[:, None]).sum(axis=1) + 1
        others = s.copy()
        others[np.arange(len(copies)), [position[int(r)] for r in copies]] = -np.inf
        second = others.max(axis=1)
        print(f"{name} of a training image as the target (20 targets):")
        spread = f"min {own.min():+.3f}, max {own.max():+.3f}"
        print(f"  its original scores {np.median(own):+.3f} (median; {spread}), ", end="")
        print(f"rank 1 in {(ranks == 1).sum()}/20")
        print(f"  the best other image scores {np.median(second):+.3f} (median)")


if __name__ == "__main__":
    main()
