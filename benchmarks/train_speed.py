"""Classifier recipes: seconds per model and test accuracy (full 10,000-image CIFAR-10 test split).

On the CPU (default) the script trains ``tiny`` and ``cpu-mini`` exactly as registered, several
seeds each, and reports the median wall time of ``train_classifier`` and the accuracy. The GPU
recipes (``fast``, ``paper-resnet9``) would take from minutes to hours per model here, so they are
*probed*: trained for ``--epochs-cap`` epoch(s) on a ``--probe-per-class`` pool, and their time
per model is extrapolated linearly in images x epochs, to the cpu-mini pool and to the full
split; their accuracy is not measured on the CPU (the JSON says so). ``cpu-mini`` is also timed
once with each of ``--compare-threads`` torch threads, because on a shared 2-core machine the
thread count decides the speed more than anything else.

With ``--device cuda`` every recipe runs in full on its own pool (``fast`` and
``paper-resnet9``: the full 50,000-image training split) for each seed. Results go to
``benchmarks/results/train_speed.json``.

    python benchmarks/train_speed.py --data-root ../shared/datasets
    python benchmarks/train_speed.py --device cuda --seeds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, write_result


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def train_and_score(recipe, train, test, seed: int, device: str) -> dict[str, Any]:
    """One model: wall seconds of training, of predicting the test split, and its accuracy."""
    from simattr.training.recipes import pool_dataset
    from simattr.training.trainer import predict_logits, train_classifier

    data = pool_dataset(recipe, train)
    _sync(device)
    start = time.perf_counter()
    model = train_classifier(recipe, data, seed=seed, device=device)
    _sync(device)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    logits = predict_logits(model, recipe, test.images, device=device)
    predict_seconds = time.perf_counter() - start
    return {
        "seed": seed,
        "train_images": len(data),
        "train_seconds": round(train_seconds, 2),
        "predict_seconds": round(predict_seconds, 2),
        "test_accuracy": round(float((logits.argmax(1) == test.labels).mean()), 4),
    }


def measured(recipe, train, test, seeds: list[int], device: str) -> dict[str, Any]:
    """The recipe as registered, one model per seed, with medians."""
    runs = [train_and_score(recipe, train, test, s, device) for s in seeds]
    for run in runs:
        print(
            f"  {recipe.name} seed {run['seed']}: {run['train_seconds']} s, "
            f"accuracy {run['test_accuracy']}",
            flush=True,
        )
    return {
        "recipe": recipe.name,
        "mode": "measured",
        "settings": recipe.to_dict(),
        "runs": runs,
        "median_train_seconds": round(statistics.median(r["train_seconds"] for r in runs), 2),
        "median_test_accuracy": round(statistics.median(r["test_accuracy"] for r in runs), 4),
    }


def probed(recipe, train, test, args: argparse.Namespace, n_cpu_mini: int) -> dict[str, Any]:
    """Time ``--epochs-cap`` epochs on a small pool and extrapolate (accuracy not measured)."""
    from simattr.training.recipes import shrunk

    probe = shrunk(recipe, epochs=args.epochs_cap, per_class=args.probe_per_class)
    run = train_and_score(probe, train, test, 0, args.device)
    per_image_epoch = run["train_seconds"] / (run["train_images"] * probe.epochs)
    n_full = len(train) if recipe.pool.per_class is None else None
    figures = {
        "recipe": recipe.name,
        "mode": "extrapolated",
        "note": (
            f"trained {probe.epochs} epoch(s) on {run['train_images']} images "
            f"({args.probe_per_class} per class) and extrapolated linearly in images x epochs; "
            "the probe's accuracy says nothing about the recipe's and is not reported"
        ),
        "settings": recipe.to_dict(),
        "probe": {k: run[k] for k in ("train_images", "train_seconds", "predict_seconds")},
        "seconds_per_image_epoch": round(per_image_epoch, 6),
        "train_images_per_second": round(1 / per_image_epoch, 1),
        "extrapolated_seconds_on_cpu_mini_pool": round(
            per_image_epoch * n_cpu_mini * recipe.epochs, 1
        ),
        "test_accuracy": None,
    }
    if n_full is not None:
        figures["extrapolated_seconds_on_full_split"] = round(
            per_image_epoch * n_full * recipe.epochs, 1
        )
    print(
        f"  {recipe.name}: {figures['train_images_per_second']} images/s -> "
        f"{figures['extrapolated_seconds_on_cpu_mini_pool']} s per model on the cpu-mini pool",
        flush=True,
    )
    return figures


def thread_comparison(train, test, threads: list[int], device: str) -> list[dict[str, Any]]:
    """cpu-mini, seed 0, once per thread count (restores the caller's setting)."""
    import torch

    from simattr.training.recipes import get_recipe

    saved = torch.get_num_threads()
    out = []
    try:
        for n in threads:
            torch.set_num_threads(n)
            run = train_and_score(get_recipe("cpu-mini"), train, test, 0, device)
            run["threads"] = n
            print(f"  cpu-mini with {n} thread(s): {run['train_seconds']} s", flush=True)
            out.append(run)
    finally:
        torch.set_num_threads(saved)
    return out


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", default=os.environ.get("SIMATTR_DATA_ROOT"))
    parser.add_argument("--out", default=str(RESULTS / "train_speed.json"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--recipes", nargs="+", default=None)
    parser.add_argument("--seeds", type=int, default=3, help="models per measured recipe")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads on the CPU (1: robust on a shared machine; see --compare-threads)",
    )
    parser.add_argument("--compare-threads", type=int, nargs="*", default=[2])
    parser.add_argument(
        "--epochs-cap", type=int, default=1, help="epochs of a probed (CPU) GPU recipe"
    )
    parser.add_argument("--probe-per-class", type=int, default=100)
    from _common import parse_args as parse_recorded  # --allow-dirty; commit, command

    args = parse_recorded(parser)
    if not args.data_root:
        parser.error("give --data-root or set SIMATTR_DATA_ROOT")
    on_gpu = args.device.startswith("cuda")
    if args.recipes is None:
        args.recipes = (
            ["fast", "paper-resnet9"] if on_gpu else ["tiny", "cpu-mini", "fast", "paper-resnet9"]
        )
    if on_gpu:
        args.compare_threads = []
    return args


def main() -> None:
    args = parse_args()
    import torch

    from simattr.data import load_dataset
    from simattr.training.recipes import get_recipe, recipe_pool

    if not args.device.startswith("cuda"):
        torch.set_num_threads(args.threads)
    root = Path(args.data_root) / "cifar10"
    train, test = load_dataset(root, "train"), load_dataset(root, "test")
    n_cpu_mini = len(recipe_pool("cpu-mini", train))
    seeds = list(range(args.seeds))
    results = []
    for name in args.recipes:
        recipe = get_recipe(name)
        gpu_recipe = recipe.pool.per_class is None
        print(f"{name}:", flush=True)
        if gpu_recipe and not args.device.startswith("cuda"):
            results.append(probed(recipe, train, test, args, n_cpu_mini))
        else:
            results.append(measured(recipe, train, test, seeds, args.device))
    threads = thread_comparison(train, test, args.compare_threads, args.device)
    payload = {
        "benchmark": "train_speed",
        "data": {
            "name": train.name,
            "train_fingerprint": train.fingerprint,
            "n_train": len(train),
            "n_test": len(test),
            "cpu_mini_pool": n_cpu_mini,
        },
        "settings": {
            "device": args.device,
            "torch_threads": torch.get_num_threads(),
            "seeds": seeds,
            "epochs_cap": args.epochs_cap,
            "probe_per_class": args.probe_per_class,
            "timing": "wall seconds of train_classifier (includes moving data to the device)",
            "accuracy": "top-1 on the full test split, with the recipe's test-time flip",
        },
        "recipes": results,
        "cpu_mini_by_threads": threads,
        "load_average_at_end": list(np.round(os.getloadavg(), 2)),
    }
    path = write_result("train_speed", payload, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
