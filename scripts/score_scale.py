"""How to read an exemplar-SVM score on real CIFAR-10, on pools of 200, 1,000 and 5,000 images.

Class pools of the shared CIFAR-10 copy (the first 200, 1,000 and all 5,000 training cats; each
smaller pool is inside the larger), the shipped backbone, the default method (``esvm``,
C = 0.1, L2-normalised features). Targets: 100 test cats (no copy in the pool), 20 training
cats used as targets (each has its exact copy in every pool), and the same 20 flipped
left-right and re-encoded as JPEG quality 50 (near-duplicates). For each pool size it measures
what a copy, a near-copy and an ordinary target's best image score on four scales:

* the raw score (the SVM's decision value): its scale moves with the pool's size;
* the percentile in the target's own pool (share of the pool scoring lower);
* the pool z-score: ``(score - median of the pool) / (1.4826 * MAD of the pool)``, the score
  in units of the spread of the same target's pool;
* the feature cosine of target and image (no pool at all).

Prints the figures and writes ``benchmarks/results/score_scale.json`` (with the command and
the commit) that the README's "Reading a score" and the report page's legend quote.

    SIMATTR_DATA_ROOT=../shared/datasets python scripts/score_scale.py
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from simattr import Attributor, load_dataset
from simattr.features import extract_features
from simattr.models import load_backbone

CLASS = "cat"
POOLS = (200, 1000, 5000)
#: the cosine above which the report page calls an image a likely copy of its target
COPY_COSINE = 0.95


def _near_copy(image: np.ndarray) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image[:, ::-1]).save(buffer, format="JPEG", quality=50)
    return np.asarray(Image.open(buffer).convert("RGB"))


def pool_z(scores: np.ndarray) -> np.ndarray:
    """Each row's scores in units of its own spread: (s - median) / (1.4826 MAD)."""
    med = np.median(scores, axis=1, keepdims=True)
    mad = np.median(np.abs(scores - med), axis=1, keepdims=True) * 1.4826
    return (scores - med) / np.maximum(mad, 1e-12)


def percentile(scores: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Share of each row's pool scoring strictly below ``values`` (one per row), in percent."""
    return 100.0 * (scores < values[:, None]).sum(axis=1) / scores.shape[1]


def _summary(values: np.ndarray) -> dict[str, float]:
    return {
        "median": round(float(np.median(values)), 4),
        "min": round(float(values.min()), 4),
        "max": round(float(values.max()), 4),
        "p99": round(float(np.percentile(values, 99)), 4),
    }


def _share(cosines: np.ndarray, at_least: float = COPY_COSINE) -> float:
    return round(float((cosines >= at_least).mean()), 4)


def measure(pool: np.ndarray, fresh: np.ndarray, copies: np.ndarray, near: np.ndarray) -> dict:
    """Copy, near-copy and ordinary-best figures on one pool (``copies``: pool positions)."""
    label = np.zeros(len(pool), dtype=np.int64)
    att = Attributor("esvm").fit(pool, label)
    unit = pool / np.linalg.norm(pool, axis=1, keepdims=True)
    out: dict[str, dict] = {}
    s = att.score(fresh, np.zeros(len(fresh), dtype=np.int64))
    top = s.argmax(axis=1)
    rows = np.arange(len(fresh))
    f_unit = fresh / np.linalg.norm(fresh, axis=1, keepdims=True)
    out["ordinary target, best image"] = {
        "score": _summary(s[rows, top]),
        "percentile": _summary(percentile(s, s[rows, top])),
        "pool_z": _summary(pool_z(s)[rows, top]),
        "cosine": _summary(np.einsum("ij,ij->i", f_unit, unit[top])),
        "share_cosine_at_least_0.95": _share(np.einsum("ij,ij->i", f_unit, unit[top])),
        "above_0.3": int((s > 0.3).sum()),
    }
    for name, feats in (("exact copy", pool[copies]), ("flipped + JPEG q50", near)):
        s = att.score(feats, np.zeros(len(feats), dtype=np.int64))
        rows = np.arange(len(copies))
        own = s[rows, copies]
        t_unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
        out[name] = {
            "score": _summary(own),
            "percentile": _summary(percentile(s, own)),
            "pool_z": _summary(pool_z(s)[rows, copies]),
            "cosine": _summary(np.einsum("ij,ij->i", t_unit, unit[copies])),
            "share_cosine_at_least_0.95": _share(np.einsum("ij,ij->i", t_unit, unit[copies])),
            "rank_1": int(((s > own[:, None]).sum(axis=1) == 0).sum()),
        }
    return out


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from _common import write_result

    train, test = load_dataset("cifar10", "train"), load_dataset("cifar10", "test")
    label = train.class_names.index(CLASS)
    pool_rows = np.flatnonzero(train.labels == label)
    test_rows = np.flatnonzero(test.labels == label)[:100]
    copies = np.arange(0, 200, 10)  # positions inside every pool (the first 200 rows)
    net = load_backbone("default")
    pool = extract_features(net, train.subset(pool_rows), progress=False)
    fresh = extract_features(net, test.subset(test_rows), progress=False)
    near = np.stack([_near_copy(img) for img in train.get_images(pool_rows[copies])])
    near_x = extract_features(net, near, progress=False)
    results = {}
    for size in POOLS:
        found = measure(pool[:size], fresh, copies, near_x)
        results[str(size)] = found
        print(f"pool of {size} training {CLASS}s (backbone {net.name}):")
        for what, figures in found.items():
            line = ", ".join(
                f"{scale} {v['median']:+.3f} [{v['min']:+.3f}, {v['max']:+.3f}]"
                for scale, v in figures.items()
                if isinstance(v, dict)
            )
            print(f"  {what}: {line}")
    write_result(
        "score_scale",
        {
            "what": "exemplar-SVM scores of copies, near-copies (flip + JPEG q50) and an "
            "ordinary target's best image on CIFAR-10 cat pools of 200, 1,000 and 5,000 "
            "(medians [min, max, p99] over 100 ordinary / 20 copy targets)",
            "backbone": net.name,
            "pools": results,
        },
    )


if __name__ == "__main__":
    main()
