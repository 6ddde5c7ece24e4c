"""ImageNet-size attribution on this machine: time and peak memory, with synthetic features.

Synthetic clustered features stand in for an SSL backbone's ImageNet embeddings: ``--n-train``
training rows (default 1.28 M) of ``--dim`` (512) in ``--n-classes`` (1,000) classes, each
class a Gaussian around one of four sub-centres near its class centre, and ``--targets``
(50,000) test rows drawn the same way, spread evenly over the classes. The training matrix is
written chunk by chunk to a memory-mapped ``.npy`` (``--float16`` halves it on disk) and read
through the memory map, as a user's features file would be.

Stages, each through the library's resumable ranking (:func:`simattr.attribution.rank_resumable`):

1. class-conditional ESVM top-``k`` (k = 1280) of every target;
2. all-class ESVM top-``k`` through FAISS candidates (``retrieval="faiss"``) of
   ``--all-class-targets`` targets (default all).

Reported per stage: seconds, targets per second, peak resident memory of the process
(``resource.getrusage``: it counts torch's and FAISS's native allocations, which
``tracemalloc`` does not). Results are rewritten after every finished block, so an interrupted
run still reports how far it got; a restarted run resumes from the finished blocks.

    python benchmarks/imagenet_sim.py --threads 1                        # full size (~1 hour?)
    python benchmarks/imagenet_sim.py --scale 0.05 --threads 1           # 1/20 scale, a minute
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result


def peak_rss_gb() -> float:
    """Peak resident set size of this process so far, GB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def current_rss_gb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * resource.getpagesize() / 1e9


def make_features(
    path: Path, n: int, n_classes: int, dim: int, dtype: np.dtype, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Write ``n`` clustered rows to a memory-mapped ``.npy``; return ``(memmap, labels)``."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim)).astype(np.float32)
    subs = centres[:, None, :] + 0.6 * rng.normal(size=(n_classes, 4, dim)).astype(np.float32)
    labels = np.sort(np.arange(n) % n_classes).astype(np.int64)
    if path.exists():
        mm = np.load(path, mmap_mode="r")
        if mm.shape == (n, dim) and mm.dtype == dtype:
            return mm, labels
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(n, dim))
    for start in range(0, n, 65536):
        lab = labels[start : start + 65536]
        sub = rng.integers(0, 4, size=len(lab))
        rows = subs[lab, sub] + 1.2 * rng.standard_normal((len(lab), dim), dtype=np.float32)
        mm[start : start + len(lab)] = rows
    mm.flush()
    del mm
    return np.load(path, mmap_mode="r"), labels


def make_targets(n_classes: int, per_class: int, dim: int, seed: int):
    """Test rows from the same clusters as :func:`make_features` (same seed), ``per_class``
    of each class."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim)).astype(np.float32)
    subs = centres[:, None, :] + 0.6 * rng.normal(size=(n_classes, 4, dim)).astype(np.float32)
    trng = np.random.default_rng(seed + 1)
    labels = np.repeat(np.arange(n_classes), per_class).astype(np.int64)
    sub = trng.integers(0, 4, size=len(labels))
    noise = 1.2 * trng.standard_normal((len(labels), dim), dtype=np.float32)
    return subs[labels, sub] + noise, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-train", type=int, default=1_280_000)
    parser.add_argument("--n-classes", type=int, default=1000)
    parser.add_argument("--targets", type=int, default=50_000)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the three sizes")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=1280)
    parser.add_argument("--float16", action="store_true", help="float16 storage on disk")
    parser.add_argument("--all-class-targets", type=int, default=None)
    parser.add_argument("--skip-class-conditional", action="store_true")
    parser.add_argument("--block-size", type=int, default=1000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/simattr-imagenet-sim"))
    parser.add_argument("--threads", type=int, default=None, help="torch and FAISS threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    from _common import parse_args as parse_recorded  # --allow-dirty; commit, command

    args = parse_recorded(parser)

    import faiss
    import torch

    from simattr import Attributor
    from simattr.attribution import rank_resumable

    if args.threads:
        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    n_train = round(args.n_train * args.scale)
    n_classes = max(2, round(args.n_classes * args.scale))
    n_targets = round(args.targets * args.scale)
    per_class = max(1, n_targets // n_classes)
    k = min(args.k, n_train // n_classes)
    args.workdir.mkdir(parents=True, exist_ok=True)
    dtype = np.dtype(np.float16 if args.float16 else np.float32)
    result: dict[str, Any] = {
        "setup": {
            "n_train": n_train,
            "n_classes": n_classes,
            "n_targets": per_class * n_classes,
            "dim": args.dim,
            "k": k,
            "storage": dtype.name,
            "block_size": args.block_size,
        },
        "status": "generating",
    }

    def save() -> None:
        result["peak_rss_gb"] = peak_rss_gb()
        write_result("imagenet_sim", result, args.out)

    t0 = time.perf_counter()
    train_path = args.workdir / f"train_{n_train}x{args.dim}_{dtype.name}.npy"
    Xtr, ytr = make_features(train_path, n_train, n_classes, args.dim, dtype, args.seed)
    Xte, yte = make_targets(n_classes, per_class, args.dim, args.seed)
    result["generate_s"] = time.perf_counter() - t0
    result["train_file_gb"] = train_path.stat().st_size / 1e9
    save()
    targets = np.arange(len(Xte))

    def stage(name: str, attributor: Attributor, labels, chosen: np.ndarray) -> None:
        info: dict[str, Any] = {"rss_before_gb": current_rss_gb()}
        result[name] = info
        result["status"] = f"running {name}"
        t = time.perf_counter()
        attributor.fit(Xtr, ytr if attributor.class_conditional else None)
        info["fit_s"] = time.perf_counter() - t
        start = time.perf_counter()

        def progress(done: int, total: int) -> None:
            secs = time.perf_counter() - start
            n_done = min(done * args.block_size, len(chosen))
            info.update(
                blocks_done=done,
                blocks=total,
                seconds_so_far=secs,
                targets_per_s_so_far=n_done / secs,
                projected_total_s=info["fit_s"] + secs * total / done,
                peak_rss_gb_so_far=peak_rss_gb(),
            )
            stats = getattr(attributor, "retrieval_stats_", None)
            if stats is not None and stats.n_groups:
                info["retrieval_stats"] = stats.as_dict()
            save()
            print(f"{name}: block {done}/{total}, {n_done / secs:.1f} targets/s", flush=True)

        rank_resumable(
            attributor,
            Xte,
            yte,
            chosen,
            k,
            args.workdir / f"{name}.npz",
            block_size=args.block_size,
            on_block=progress,
        )
        seconds = time.perf_counter() - t
        info.update(
            seconds=seconds,
            targets=len(chosen),
            targets_per_s=len(chosen) / (time.perf_counter() - start),
            peak_rss_gb=peak_rss_gb(),
            done=True,
        )
        save()

    if not args.skip_class_conditional:
        stage("class_conditional_esvm", Attributor("esvm"), yte, targets)
    n_all = len(targets) if args.all_class_targets is None else args.all_class_targets
    rng = np.random.default_rng(args.seed)
    chosen = np.sort(rng.choice(len(targets), size=min(n_all, len(targets)), replace=False))
    stage(
        "all_class_esvm_faiss",
        Attributor("esvm", class_conditional=False, retrieval="faiss"),
        yte,
        chosen,
    )
    result["status"] = "done"
    result["total_s"] = time.perf_counter() - t0
    save()
    print(result, flush=True)


if __name__ == "__main__":
    main()
