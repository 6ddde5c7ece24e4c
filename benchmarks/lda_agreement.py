"""The closed-form whitened exemplar (``method="lda"``) against the exemplar SVM.

For every CIFAR-10 class, the class's 5,000 training images form the pool and its first
``--targets`` test images the targets. Features: 512-d PCA of pixels (per class, as
``esvm_batched.py``) and the shipped self-supervised backbone's features. For each target the
reference is scikit-learn's ``LinearSVC`` (DESIGN.md section 1, tol 1e-6); reported are the
top-100 overlap and Spearman correlation over the pool of ``lda`` (at several shrinkages), of
the batched ESVM solver and of plain cosine similarity, and seconds per target (one thread).

    python benchmarks/lda_agreement.py [--targets 5] [--classes 0 1 2 ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result
from esvm_batched import pca_features


def _agreement(scores: np.ndarray, refs: list[np.ndarray]) -> tuple[float, float]:
    from scipy.stats import spearmanr

    overlap, rho = [], []
    for s, r in zip(scores, refs, strict=True):
        overlap.append(len(set(np.argsort(-s)[:100]) & set(np.argsort(-r)[:100])) / 100)
        rho.append(spearmanr(s, r).statistic)
    return statistics.fmean(overlap), statistics.fmean(rho)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="cifar10")
    parser.add_argument("--targets", type=int, default=5, help="targets per class")
    parser.add_argument("--classes", type=int, nargs="*", default=list(range(10)))
    parser.add_argument("--shrinkage", type=float, nargs="*", default=[0.8, 0.9, 0.93, 0.97])
    parser.add_argument("--threads", type=int, default=1)
    from _common import parse_args as parse_recorded  # --allow-dirty; commit, command

    args = parse_recorded(parser)

    import torch

    torch.set_num_threads(args.threads)
    from simattr.attribution.esvm import fit_reference
    from simattr.attribution.esvm_batched import BatchedPool, fit_batched
    from simattr.attribution.scorers import WhitenedExemplarScorer
    from simattr.features import extract_features
    from simattr.models import load_backbone
    from simattr.training.jobs import load_split
    from simattr.validation import l2_normalize

    train, test = load_split(args.data, "train"), load_split(args.data, "test")
    net = load_backbone("default")
    rows: dict[str, dict[str, list[float]]] = {}

    def add(feats: str, method: str, overlap: float, rho: float, seconds: float) -> None:
        cell = rows.setdefault(f"{feats}/{method}", {"overlap": [], "spearman": [], "s": []})
        cell["overlap"].append(overlap)
        cell["spearman"].append(rho)
        cell["s"].append(seconds)

    for cls in args.classes:
        pool_pca, tgt_pca = pca_features(train, test, cls, args.targets, 512, 0)[:2]
        pool_rows = np.flatnonzero(train.labels == cls)
        tgt_rows = np.flatnonzero(test.labels == cls)[: args.targets]
        pool_ssl = l2_normalize(extract_features(net, train.subset(pool_rows), progress=False))
        tgt_ssl = l2_normalize(extract_features(net, test.get_images(tgt_rows), progress=False))
        for feats, pool, tgt in (("pca512", pool_pca, tgt_pca), ("ssl", pool_ssl, tgt_ssl)):
            pool = np.asarray(pool, dtype=np.float64)
            tgt = np.asarray(tgt, dtype=np.float64)
            start = time.perf_counter()
            fits = [fit_reference(t, pool, 0.1) for t in tgt]
            ref_s = (time.perf_counter() - start) / len(tgt)
            refs = [pool @ f.coef + f.intercept for f in fits]
            add(feats, "linearsvc", 1.0, 1.0, ref_s)
            start = time.perf_counter()
            sol = fit_batched(tgt, BatchedPool.build(pool))
            add(feats, "esvm-batched", *_agreement(sol.decision.double().numpy(), refs),
                (time.perf_counter() - start) / len(tgt))  # fmt: skip
            start = time.perf_counter()
            cos = tgt @ pool.T
            add(feats, "cosine", *_agreement(cos, refs), (time.perf_counter() - start) / len(tgt))
            for shrink in args.shrinkage:
                scorer = WhitenedExemplarScorer(shrink)
                start = time.perf_counter()
                lda = scorer.score(scorer.prepare(pool), tgt)
                add(feats, f"lda-{shrink:g}", *_agreement(lda, refs),
                    (time.perf_counter() - start) / len(tgt))  # fmt: skip
        print(f"class {cls} done", flush=True)

    summary = {
        name: {
            "top100_overlap_mean": round(statistics.fmean(c["overlap"]), 4),
            "spearman_mean": round(statistics.fmean(c["spearman"]), 5),
            "seconds_per_target_mean": statistics.fmean(c["s"]),
        }
        for name, c in rows.items()
    }
    for name, row in summary.items():
        ms = row["seconds_per_target_mean"] * 1000
        print(f"{name:24s} overlap {row['top100_overlap_mean']:.3f}  spearman "
              f"{row['spearman_mean']:.4f}  {ms:.2f} ms/target")  # fmt: skip
    write_result(
        "lda_agreement",
        {
            "pool": "one CIFAR-10 class (5,000 training images) per pool",
            "targets_per_class": args.targets,
            "classes": args.classes,
            "reference": "sklearn LinearSVC(C=0.1, class_weight='balanced', tol=1e-6)",
            "note": "lda seconds include the per-pool whitening spread over the pool's targets "
            "(5 per pool here: with more targets per pool it amortises further)",
            "results": summary,
        },
    )


if __name__ == "__main__":
    main()
