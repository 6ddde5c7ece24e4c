"""All-class ESVM through FAISS candidates against the exact all-class solver, on CIFAR-10 size.

Features: 512-d PCA of real CIFAR-10 pixels (one PCA fitted on the 50,000 training images, a
seeded randomised SVD), L2-normalised. Targets: a seeded sample of test images. The exact
solver fits each target's exemplar SVM against all 50,000 training images; the retrieval path
(``Attributor(class_conditional=False, retrieval="faiss")``) against its ``n_candidates``
nearest images by cosine, with the full problem's class weights. Reported per candidate
count: top-k overlap with the exact ranking (mean and minimum over targets), Spearman
correlation of the scores of the exact top-k, the largest score difference, targets per
second of both paths, and how many negatives are active in the exact solution (the ones a
candidate set must contain for the candidate SVM to be the exact one).

    python benchmarks/retrieval_agreement.py --data-root ../shared/datasets
    python benchmarks/retrieval_agreement.py --targets 10 --candidates 2048   # quick check
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result


def pca_features(data_root: Path, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised PCA-``dim`` pixel features of the CIFAR-10 train and test splits."""
    import torch

    from simattr.data import load_dataset

    train = load_dataset(data_root / "cifar10", "train")
    test = load_dataset(data_root / "cifar10", "test")

    def flat(ds) -> torch.Tensor:
        imgs = ds.get_images(np.arange(len(ds.labels)))
        return torch.from_numpy(imgs.reshape(len(imgs), -1).astype(np.float32) / 255)

    X, T = flat(train), flat(test)
    mean = X.mean(0)
    torch.manual_seed(seed)
    _, _, basis = torch.svd_lowrank(X - mean, q=dim, niter=2)
    feats = []
    for A in (X, T):
        F = (A - mean) @ basis
        feats.append((F / torch.linalg.vector_norm(F, dim=1, keepdim=True)).numpy())
    return feats[0], feats[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=os.environ.get("SIMATTR_DATA_ROOT"))
    parser.add_argument("--targets", type=int, default=40)
    parser.add_argument("--k", type=int, nargs="+", default=[100, 1280])
    parser.add_argument("--candidates", type=int, nargs="+", default=[1024, 2048, 5120])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch and FAISS threads (1 on a busy machine)"
    )
    parser.add_argument("--out", type=Path, default=None)
    from _common import parse_args as parse_recorded  # --allow-dirty; commit, command

    args = parse_recorded(parser)
    import torch
    from scipy.stats import spearmanr

    from simattr import Attributor
    from simattr.attribution.esvm_batched import BatchedPool, fit_batched

    if args.threads:
        import faiss

        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    t0 = time.perf_counter()
    Xtr, Xte = pca_features(args.data_root, args.dim, args.seed)
    rng = np.random.default_rng(args.seed)
    targets = np.sort(rng.choice(len(Xte), size=args.targets, replace=False))
    T = Xte[targets]
    print(f"features {Xtr.shape} in {time.perf_counter() - t0:.1f} s", flush=True)

    # Exact all-class reference: every training image a negative.
    t0 = time.perf_counter()
    pool = BatchedPool.build(Xtr, C=0.1)
    exact = fit_batched(T, pool)
    exact_s = time.perf_counter() - t0
    dec = exact.decision.double().numpy()
    n_active = exact.n_active.numpy()
    # Rank among the cosine neighbours of the deepest active negative: how many candidates
    # a target needs for its candidate set to contain the whole active set.
    sims = T.astype(np.float64) @ Xtr.T.astype(np.float64)
    cos_rank = np.argsort(np.argsort(-sims, axis=1, kind="stable"), axis=1)
    needed = np.array([int(cos_rank[i][dec[i] > -1].max()) + 1 for i in range(len(T))])
    print(
        f"exact: {len(T) / exact_s:.2f} targets/s, active negatives median "
        f"{int(np.median(n_active))} max {int(n_active.max())}, candidates needed to cover "
        f"the active set: median {int(np.median(needed))} max {int(needed.max())}",
        flush=True,
    )
    rows = []
    for n_cand in args.candidates:
        for k in args.k:
            if k > n_cand:
                continue
            att = Attributor(
                "esvm", class_conditional=False, retrieval="faiss", n_candidates=n_cand
            ).fit(Xtr)
            t0 = time.perf_counter()
            idx, val = att.topk(T, k=k)
            secs = time.perf_counter() - t0
            ref = np.argsort(-dec, axis=1, kind="stable")[:, :k]
            overlap = np.array(
                [len(np.intersect1d(a, b)) / k for a, b in zip(idx, ref, strict=True)]
            )
            rho, diff = [], []
            for i in range(len(T)):
                # Scores of the retrieval path on the exact top-k that it also ranked.
                common, ia, _ = np.intersect1d(idx[i], ref[i], return_indices=True)
                diff.append(float(np.abs(val[i][ia] - dec[i][common]).max()))
                rho.append(float(spearmanr(val[i][ia], dec[i][common]).statistic))
            row = {
                "n_candidates": n_cand,
                "k": k,
                "overlap_mean": float(overlap.mean()),
                "overlap_min": float(overlap.min()),
                "exact_top1_agree": float(np.mean(idx[:, 0] == ref[:, 0])),
                "spearman_common_mean": float(np.mean(rho)),
                "max_abs_score_diff": float(max(diff)),
                "targets_per_s": len(T) / secs,
                "covered_active_set": float(np.mean(needed <= n_cand)),
                "retrieval_stats": att.retrieval_stats_.as_dict(),
            }
            rows.append(row)
            print(row, flush=True)
    write_result(
        "retrieval_agreement",
        {
            "features": f"PCA-{args.dim} of CIFAR-10 pixels, L2-normalised, n_train={len(Xtr)}",
            "n_targets": len(T),
            "exact_targets_per_s": len(T) / exact_s,
            "exact_active_negatives_median": float(np.median(n_active)),
            "exact_active_negatives_max": int(n_active.max()),
            "candidates_needed_median": float(np.median(needed)),
            "candidates_needed_max": int(needed.max()),
            "results": rows,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
