"""Exemplar SVM: seconds per target, our Newton solver vs scikit-learn's LinearSVC, one run.

Features are 512-d PCA projections of real CIFAR-10 pixels, L2-normalised; each pool is one
full 5,000-image training class. Both solvers fit the same targets (the reference on the first
``--reference-targets`` of them, since it is slow); the ratio of medians and the agreement
(top-100 overlap and Spearman over the pool, per target) are written to
``benchmarks/results/esvm_speed.json``.

    python benchmarks/esvm_speed.py --data-root ../shared/datasets
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result


def pca_features(train, test, cls: int, n_targets: int, dim: int):
    from sklearn.decomposition import PCA

    rows = np.flatnonzero(train.labels == cls)
    flat = train.get_images(rows).reshape(len(rows), -1).astype(np.float32) / 255
    pca = PCA(n_components=dim, svd_solver="randomized", random_state=0).fit(flat)
    trows = np.flatnonzero(test.labels == cls)[:n_targets]
    tflat = test.get_images(trows).reshape(len(trows), -1).astype(np.float32) / 255
    pool, targets = pca.transform(flat), pca.transform(tflat)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    targets /= np.linalg.norm(targets, axis=1, keepdims=True)
    return pool.astype(np.float64), targets.astype(np.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", default=os.environ.get("SIMATTR_DATA_ROOT"))
    parser.add_argument("--classes", type=int, nargs="+", default=[3, 8])
    parser.add_argument("--targets", type=int, default=40, help="targets per class (ours)")
    parser.add_argument("--reference-targets", type=int, default=20, help="per class (sklearn)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--out", default=None)
    from _common import parse_args as parse_recorded  # --allow-dirty; commit, command

    args = parse_recorded(parser)
    if not args.data_root:
        parser.error("give --data-root or set SIMATTR_DATA_ROOT")

    from scipy.stats import spearmanr

    from simattr.attribution.esvm import PoolSystem, fit_newton, fit_reference
    from simattr.data import load_dataset

    root = Path(args.data_root) / "cifar10"
    train, test = load_dataset(root, "train"), load_dataset(root, "test")
    ours_s, ref_s, overlaps, rhos, iters, active = [], [], [], [], [], []
    for cls in args.classes:
        pool, targets = pca_features(train, test, cls, args.targets, args.dim)
        t0 = time.perf_counter()
        system = PoolSystem.build(pool)
        prep = time.perf_counter() - t0
        fits = []
        for t in targets:
            t0 = time.perf_counter()
            fits.append(fit_newton(t, system))
            ours_s.append(time.perf_counter() - t0 + prep / len(targets))
        for t, fit in zip(targets[: args.reference_targets], fits, strict=False):
            t0 = time.perf_counter()
            ref = fit_reference(t, pool)
            ref_s.append(time.perf_counter() - t0)
            a = pool @ fit.coef + fit.intercept
            b = pool @ ref.coef + ref.intercept
            top_a, top_b = np.argsort(-a)[:100], np.argsort(-b)[:100]
            overlaps.append(len(set(top_a) & set(top_b)) / 100)
            rhos.append(float(spearmanr(a, b).statistic))
        iters += [f.iterations for f in fits]
        active += [f.n_active / len(pool) for f in fits]
        print(
            f"class {cls}: ours {statistics.median(ours_s):.4f} s/target, "
            f"sklearn {statistics.median(ref_s):.4f} s/target"
        )

    med_ours, med_ref = statistics.median(ours_s), statistics.median(ref_s)
    payload = {
        "features": f"PCA-{args.dim} of real CIFAR-10 pixels, L2-normalised",
        "pool_size": 5000,
        "classes": args.classes,
        "targets_ours": len(ours_s),
        "targets_reference": len(ref_s),
        "seconds_per_target_median": {"newton": med_ours, "sklearn_linearsvc": med_ref},
        "speedup_median_ratio": med_ref / med_ours,
        "newton_iterations_median": statistics.median(iters),
        "active_fraction_median": statistics.median(active),
        "agreement": {
            "top100_overlap_min": min(overlaps),
            "top100_overlap_mean": float(np.mean(overlaps)),
            "spearman_min": min(rhos),
        },
    }
    path = write_result("esvm_speed", payload, args.out)
    print(
        f"ours {med_ours:.4f} s/target, sklearn {med_ref:.4f} s/target, "
        f"ratio {med_ref / med_ours:.1f}x; overlap min {min(overlaps):.3f}, "
        f"spearman min {min(rhos):.5f} -> {path}"
    )


if __name__ == "__main__":
    main()
