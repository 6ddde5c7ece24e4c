"""The dataset audit, measured: planted label noise, planted near-duplicates and leaks.

On the CIFAR-10 training split with the default backbone's features: 5 % symmetric label noise
(each chosen row moved to a uniformly drawn other class) and 200 planted near-duplicates (a
training row replaced by a light crop and/or colour jitter of another training image, or of a
test image: a leak), all drawn with one seed, the planted images embedded with the same backbone.
Reported per label-error detector (simattr's, cleanlab's self-confidence on 5-fold logistic
regression probabilities, plain kNN disagreement): precision and recall at k = number injected,
AUROC and wall time; for duplicates and leaks: recall and precision of the reported pairs (a
reported pair that was not planted is shown in a PNG grid to be judged by eye: CIFAR-10 has
near-duplicates of its own) and the time of the whole audit (features given).

    python benchmarks/audit_noise.py --train-features F.npy --test-features T.npy \
        [--png-dir DIR] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

NOISE = 0.05
N_PLANTED_TRAIN, N_PLANTED_TEST = 150, 50


def perturb(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A light crop (26-30 of 32 pixels, resized back), colour jitter (+-20 %), or both."""
    from PIL import Image, ImageEnhance

    im = Image.fromarray(img)
    kind = rng.choice(["crop", "jitter", "both"])
    if kind in ("crop", "both"):
        s = int(rng.integers(26, 31))
        x0, y0 = int(rng.integers(0, 33 - s)), int(rng.integers(0, 33 - s))
        im = im.crop((x0, y0, x0 + s, y0 + s)).resize(img.shape[1::-1], Image.BILINEAR)
    if kind in ("jitter", "both"):
        for enh in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            im = enh(im).enhance(float(rng.uniform(0.8, 1.2)))
    return np.asarray(im, dtype=np.uint8)


def plant(train, test, X: np.ndarray, seed: int, backbone) -> dict[str, np.ndarray]:
    """The benchmark's corrupted copy of the training split: planted near-duplicates and leaks
    (rows replaced by edited copies of other train / test images, re-embedded with ``backbone``)
    and symmetric label noise on rows that play no part in a planted pair."""
    from simattr.features import extract_features

    n, C = len(train), train.num_classes
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_pl = N_PLANTED_TRAIN + N_PLANTED_TEST
    planted_rows = perm[:n_pl]
    src_train = perm[n_pl : n_pl + N_PLANTED_TRAIN]
    src_test = rng.choice(len(test), N_PLANTED_TEST, replace=False)
    sources = [train.pixels[s] for s in src_train] + [test.pixels[s] for s in src_test]
    edited = np.stack([perturb(img, rng) for img in sources])
    X = X.copy()
    X[planted_rows] = extract_features(backbone, edited, progress=False)
    pixels = train.pixels.copy()
    pixels[planted_rows] = edited
    y_clean = train.labels.copy()
    # a copied file keeps its label
    y_clean[planted_rows] = np.concatenate([train.labels[src_train], test.labels[src_test]])
    free = perm[n_pl + N_PLANTED_TRAIN :]
    noisy = rng.choice(free, round(NOISE * n), replace=False)
    y = y_clean.copy()
    y[noisy] = (y_clean[noisy] + rng.integers(1, C, len(noisy))) % C
    truth = np.zeros(n, dtype=bool)
    truth[noisy] = True
    return {
        "X": X,
        "y": y,
        "y_clean": y_clean,
        "truth": truth,
        "pixels": pixels,
        "planted_rows": planted_rows,
        "src_train": src_train,
        "src_test": src_test,
    }


def pair_grid(path: Path, a: np.ndarray, b: np.ndarray, captions: list[str], cols: int = 6):
    from PIL import Image, ImageDraw

    h = 32 * 3
    cw, ch = 2 * h + 8, h + 14
    rows = max(1, (len(a) + cols - 1) // cols)
    im = Image.new("RGB", (cols * cw, rows * ch), "white")
    draw = ImageDraw.Draw(im)
    for i in range(len(a)):
        r, c = divmod(i, cols)
        x, y = c * cw, r * ch
        im.paste(Image.fromarray(a[i]).resize((h, h), Image.NEAREST), (x, y))
        if b is not None:
            im.paste(Image.fromarray(b[i]).resize((h, h), Image.NEAREST), (x + h + 2, y))
        draw.text((x, y + h), captions[i][:34], fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def sklearn_probabilities(x, labels, num_classes, *, folds, seed) -> np.ndarray:
    """Out-of-sample probabilities by cross-validated scikit-learn logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    P = np.zeros((len(x), num_classes))
    for fit_rows, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, labels):
        model = LogisticRegression(max_iter=1000).fit(x[fit_rows], labels[fit_rows])
        P[np.ix_(held, model.classes_)] = model.predict_proba(x[held])
    return P


def at_k(score: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    k = int(truth.sum())
    top = np.argsort(-score, kind="stable")[:k]
    hits = int(truth[top].sum())
    return {
        "k": k,
        "precision_at_k": hits / k,
        "recall_at_k": hits / k,
        "auroc": float(roc_auc_score(truth, score)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="cifar10")
    parser.add_argument("--train-features", type=Path, required=True)
    parser.add_argument("--test-features", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--png-dir", type=Path, default=Path("audit-noise-png"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--checked",
        type=Path,
        default=None,
        help="JSON {duplicates: [[row_a, row_b], ...], leaks: [...]}: reported pairs that were"
        " not planted, judged by eye to be genuine near-duplicates of CIFAR-10 (counted correct)",
    )
    parser.add_argument(
        "--no-sklearn",
        action="store_true",
        help="skip the scikit-learn reference (about 4 minutes); cleanlab runs on the audit's",
    )
    from _common import parse_args as parse_recorded  # --allow-dirty; commit, command

    args = parse_recorded(parser)

    import faiss
    import torch

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    from cleanlab.filter import find_label_issues

    from simattr.audit import audit, cleanlab_scores, logistic_probabilities
    from simattr.data import load_dataset, resolve_root
    from simattr.models import load_backbone

    root = resolve_root(args.data)
    train, test = load_dataset(root, "train"), load_dataset(root, "test")
    X = np.load(args.train_features).astype(np.float32)
    XT = np.load(args.test_features).astype(np.float32)
    n, C = len(train), train.num_classes
    t0 = time.perf_counter()
    planted = plant(train, test, X, args.seed, load_backbone("default"))
    embed_s = time.perf_counter() - t0
    X, y, y_clean, truth, pixels = (
        planted["X"],
        planted["y"],
        planted["y_clean"],
        planted["truth"],
        planted["pixels"],
    )
    planted_rows, src_train, src_test = (
        planted["planted_rows"],
        planted["src_train"],
        planted["src_test"],
    )

    t0 = time.perf_counter()
    result = audit(
        X,
        y,
        num_classes=C,
        test_features=XT,
        images=pixels,
        test_images=test.pixels,
        seed=args.seed,
    )
    audit_s = time.perf_counter() - t0

    # cleanlab on the same features, as its documentation runs it: out-of-sample probabilities
    # from 5-fold cross-validated scikit-learn logistic regression, then cleanlab's
    # self-confidence; and cleanlab on the audit's own (torch L-BFGS) logistic probabilities
    t0 = time.perf_counter()
    P_lr = logistic_probabilities(X, y, C, folds=5, seed=args.seed)
    cl_own = cleanlab_scores(y, P_lr)
    cl_own_s = time.perf_counter() - t0
    if args.no_sklearn:
        P_sk, lr_s = P_lr, cl_own_s
    else:
        t0 = time.perf_counter()
        P_sk = sklearn_probabilities(X, y, C, folds=5, seed=args.seed)
        lr_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    cl_score = cleanlab_scores(y, P_sk)
    flagged = find_label_issues(y, P_sk)
    cl_s = time.perf_counter() - t0

    issues = result.label_issues
    detectors = {
        "simattr": (
            issues.scores["simattr"],
            audit_s,
            "the whole audit (labels, duplicates, leaks)",
        ),
        "cleanlab": (
            cl_score,
            lr_s + cl_s,
            "5-fold scikit-learn logistic regression + cleanlab",
        ),
        "cleanlab_audit_probabilities": (
            cl_own,
            cl_own_s,
            "5-fold torch L-BFGS logistic regression (the audit's) + cleanlab",
        ),
        "knn": (
            issues.scores["knn"],
            result.timings["neighbours"],
            "neighbour search (shared with the audit)",
        ),
    }
    labels_table = {}
    for name, (score, secs, what) in detectors.items():
        row = at_k(score, truth)
        row.update(wall_s=round(secs, 1), timed=what)
        labels_table[name] = row
        top = np.argsort(-score, kind="stable")[: int(truth.sum())]
        wrong = top[~truth[top]][:36]
        pair_grid(
            args.png_dir / f"labels-{name}-top-false.png",
            pixels[wrong],
            None,
            [
                f"{r} {train.class_names[y[r]][:5]}>"
                f"{train.class_names[issues.suggested[r]][:5]} {score[r]:.2f}"
                for r in wrong
            ],
        )
        missed = np.argsort(score, kind="stable")
        missed = missed[truth[missed]][:36]
        pair_grid(
            args.png_dir / f"labels-{name}-missed.png",
            pixels[missed],
            None,
            [
                f"{r} given {train.class_names[y[r]][:5]} true {train.class_names[y_clean[r]][:5]}"
                for r in missed
            ],
        )
    labels_table["cleanlab_find_label_issues"] = {
        "flagged": int(flagged.sum()),
        "precision": float(truth[flagged].mean()),
        "recall": float(truth[flagged].sum() / truth.sum()),
    }

    # duplicates and leaks
    d = result.duplicates
    planted_train = {
        (int(min(a, b)), int(max(a, b)))
        for a, b in zip(planted_rows[:N_PLANTED_TRAIN], src_train, strict=False)
    }
    planted_test = {
        (int(a), int(b)) for a, b in zip(planted_rows[N_PLANTED_TRAIN:], src_test, strict=False)
    }
    is_leak = d.leaks
    found = np.array(
        [
            ((int(a), int(b)) in planted_test)
            if leak
            else ((int(min(a, b)), int(max(a, b))) in planted_train)
            for a, b, leak in zip(d.row_a, d.row_b, is_leak, strict=False)
        ],
        dtype=bool,
    )
    checked = {}
    if args.checked is not None:
        checked = {
            k: [list(map(int, p)) for p in v]
            for k, v in json.loads(args.checked.read_text()).items()
            if k in ("duplicates", "leaks")
        }
    dup_table = {}
    for name, mask, n_planted in (
        ("duplicates", ~is_leak, N_PLANTED_TRAIN),
        ("leaks", is_leak, N_PLANTED_TEST),
    ):
        reported = int(mask.sum())
        hits = int((found & mask).sum())
        other = np.flatnonzero(mask & ~found)
        pairs = [[int(d.row_a[i]), int(d.row_b[i])] for i in other]
        genuine = [p for p in pairs if p in checked.get(name, [])]
        dup_table[name] = {
            "planted": n_planted,
            "reported": reported,
            "planted_found": hits,
            "recall": hits / n_planted,
            "precision_planted_only": hits / max(reported, 1),
            "not_planted_reported": len(other),
            "not_planted_checked_genuine": len(genuine),
            "precision": (hits + len(genuine)) / max(reported, 1),
            "not_planted_pairs": [
                [a, b, round(float(d.similarity[i]), 4)]
                for (a, b), i in zip(pairs, other, strict=True)
            ],
        }
        b_pix = test.pixels if name == "leaks" else pixels
        for part in range(0, min(len(other), 288), 48):
            sel = other[part : part + 48]
            pair_grid(
                args.png_dir / f"{name}-not-planted-{part // 48}.png",
                pixels[d.row_a[sel]],
                b_pix[d.row_b[sel]],
                [
                    f"{a},{b} {s:.3f}"
                    for a, b, s in zip(d.row_a[sel], d.row_b[sel], d.similarity[sel], strict=False)
                ],
            )
        # planted pairs that were missed
        miss = [
            p
            for p in (planted_test if name == "leaks" else planted_train)
            if p
            not in {
                (int(a), int(b)) if name == "leaks" else (int(min(a, b)), int(max(a, b)))
                for a, b in zip(d.row_a[mask], d.row_b[mask], strict=False)
            }
        ]
        dup_table[name]["missed_pairs"] = [list(p) for p in miss]

    payload = {
        "setup": {
            "n_train": n,
            "n_test": len(test),
            "noise": NOISE,
            "n_noisy": int(truth.sum()),
            "planted_duplicates": N_PLANTED_TRAIN,
            "planted_leaks": N_PLANTED_TEST,
            "seed": args.seed,
            "threads": args.threads,
            "features": str(args.train_features),
            "dims": int(X.shape[1]),
            "embed_planted_s": round(embed_s, 1),
            "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        },
        "audit_wall_s": round(audit_s, 1),
        "audit_timings_s": {k: round(v, 2) for k, v in result.timings.items()},
        "audit_params": result.params,
        "labels": labels_table,
        "duplicates": dup_table,
    }
    path = write_result("audit_noise", payload, args.out)
    print(f"wrote {path}")

    print(
        json.dumps(
            {k: payload[k] for k in ("audit_wall_s", "audit_timings_s", "labels", "duplicates")},
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
