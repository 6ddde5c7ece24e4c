"""Backbone quality and speed: CIFAR-10 kNN accuracy and feature-extraction images/second.

For each backbone (default: every shipped one, plus a random ResNet-18 as the untrained
reference) the script embeds the full CIFAR-10 train and test splits, scores the test split by
weighted kNN over the train split (k = 200, T = 0.1, cosine; the monitor used by MoCo, SimCLR
and lightly's benchmarks) and times feature extraction on a fixed 2,048-image batch (median of
3 runs after a warm-up). Raw pixels, centred per image, are scored the same way as the floor any
backbone must clear. Results go to ``benchmarks/results/ssl_knn.json``.

    python benchmarks/ssl_knn.py --data-root ../shared/datasets
    python benchmarks/ssl_knn.py --limit 512 --out /tmp/ssl_knn.json   # quick check
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, write_result

K, TEMPERATURE, TIMED_RUNS = 200, 0.1, 3


def shipped_backbones() -> list[str]:
    """A ``shipped:NAME`` spec for every weights file shipped in the package."""
    from simattr.models import shipped_weights

    return [f"shipped:{name}" for name in shipped_weights()]


def images_per_second(backbone, images: np.ndarray, batch_size: int, device: str) -> dict:
    """Median throughput of feature extraction on ``images`` over timed runs, after a warm-up
    run (first-call allocation and kernel selection are not what a user waits for)."""
    from simattr.features import extract_features

    opts = {"batch_size": batch_size, "device": device, "progress": False}
    extract_features(backbone, images, **opts)
    seconds = []
    for _ in range(TIMED_RUNS):
        start = time.perf_counter()
        extract_features(backbone, images, **opts)
        seconds.append(time.perf_counter() - start)
    return {
        "images": len(images),
        "seconds": [round(s, 4) for s in seconds],
        "images_per_second": round(len(images) / statistics.median(seconds), 1),
    }


def backbone_figures(spec: str, train, test, args: argparse.Namespace) -> dict[str, Any]:
    """kNN accuracy and throughput of one backbone."""
    from simattr.features import extract_features
    from simattr.models import load_backbone
    from simattr.ssl.knn import knn_accuracy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a stand-in says so in its description
        backbone = load_backbone(spec, device=args.device)
    opts = {"batch_size": args.batch_size, "device": args.device, "progress": args.progress}
    start = time.perf_counter()
    train_features = extract_features(backbone, train, **opts)
    test_features = extract_features(backbone, test, **opts)
    extract_seconds = time.perf_counter() - start
    accuracy = knn_accuracy(
        train_features, train.labels, test_features, test.labels, K, TEMPERATURE,
        device=args.device,
    )  # fmt: skip
    timing_images = test.get_images(slice(0, min(args.throughput_images, len(test))))
    return {
        "backbone": spec,
        "description": backbone.describe(),
        "feature_dim": int(train_features.shape[1]),
        "knn_accuracy": round(accuracy, 4),
        "extract_seconds_train_and_test": round(extract_seconds, 1),
        "throughput": images_per_second(backbone, timing_images, args.batch_size, args.device),
    }


def centred_pixels(dataset) -> np.ndarray:
    """Flattened float pixels minus each image's own mean (brightness says little of class)."""
    flat = dataset.images.reshape(len(dataset), -1).astype(np.float32) / 255
    return flat - flat.mean(axis=1, keepdims=True)


def raw_pixel_figures(train, test, device: str) -> dict[str, Any]:
    from simattr.ssl.knn import knn_accuracy

    accuracy = knn_accuracy(
        centred_pixels(train), train.labels, centred_pixels(test), test.labels, K, TEMPERATURE,
        device=device,
    )  # fmt: skip
    return {"backbone": "raw-pixels (centred per image)", "knn_accuracy": round(accuracy, 4)}


def load_splits(data_root: str, limit: int | None):
    from simattr.data import load_dataset

    root = Path(data_root) / "cifar10"
    train, test = load_dataset(root, "train"), load_dataset(root, "test")
    if limit is not None:
        train = train.subset(np.arange(min(limit, len(train))))
        test = test.subset(np.arange(min(limit, len(test))))
    return train, test


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", default=os.environ.get("SIMATTR_DATA_ROOT"))
    parser.add_argument("--out", default=str(RESULTS / "ssl_knn.json"))
    parser.add_argument(
        "--backbones",
        nargs="+",
        default=None,
        help="backbone specs or weights files (default: every shipped backbone, then 'random')",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--throughput-images", type=int, default=2048)
    parser.add_argument(
        "--limit", type=int, default=None, help="first N images of each split (quick checks)"
    )
    parser.add_argument("--progress", action="store_true")
    from _common import parse_args as parse_recorded  # --allow-dirty; commit, command

    args = parse_recorded(parser)
    if not args.data_root:
        parser.error("give --data-root or set SIMATTR_DATA_ROOT")
    if args.backbones is None:
        args.backbones = [*shipped_backbones(), "random"]
    return args


def main() -> None:
    args = parse_args()
    train, test = load_splits(args.data_root, args.limit)
    results = []
    for spec in args.backbones:
        figures = backbone_figures(spec, train, test, args)
        print(
            f"{spec}: kNN {figures['knn_accuracy']:.4f}, "
            f"{figures['throughput']['images_per_second']} images/s",
            flush=True,
        )
        results.append(figures)
    pixels = raw_pixel_figures(train, test, args.device)
    print(f"raw pixels: kNN {pixels['knn_accuracy']:.4f}", flush=True)
    payload = {
        "benchmark": "ssl_knn",
        "data": {
            "name": train.name,
            "train_fingerprint": train.fingerprint,
            "n_train": len(train),
            "n_test": len(test),
            "limit": args.limit,
        },
        "settings": {
            "k": K,
            "temperature": TEMPERATURE,
            "similarity": "cosine",
            "device": args.device,
            "batch_size": args.batch_size,
            "throughput_images": args.throughput_images,
            "timed_runs": TIMED_RUNS,
        },
        "backbones": results,
        "raw_pixels": pixels,
    }
    path = write_result("ssl_knn", payload, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
