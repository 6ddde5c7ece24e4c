"""Duplicates that survive editing: planted copies of every kind, and CIFAR-10's own.

Part 1, planted: ``--per-kind`` CIFAR-10 test images per kind are edited (a shift of 1-3
pixels with the edges filled in, a round trip through another size, JPEG at quality 50-60, a
horizontal mirror, colour jitter of +-25 % brightness, contrast and saturation, a crop of
70-85 % of the side resized back) and the edited copies are planted into the training split
(appended), embedded with the shipped backbone. The audit's duplicate search then runs on the
train split plus the planted copies: recall per kind (the copy found with its source), and
precision of the reported pairs that involve a planted copy (a reported pair of two unplanted
images is CIFAR-10's own and judged in part 2).

Part 2, unaltered CIFAR-10: how many test images have a confirmed near-copy in the training
split (ciFAIR reports 3.25 % of the test set), and a contact sheet of a random sample of the
reported pairs (``duplicates_cifar10_sample.png``: each row the test image, then its training
copy) plus the feature-close pairs the pixels do not confirm (``duplicates_cifar10_possible.png``),
to be judged by eye. The sheets are CIFAR-10 images: written beside the JSON, never committed.

    python benchmarks/duplicates.py --train-features F.npy --test-features T.npy [--threads 1]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parse_args, write_result

KINDS = ("shift", "resample", "jpeg", "mirror", "jitter", "crop")


def edit(img: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """One edited copy of a uint8 ``H x W x 3`` image, of one kind, at the image's size."""
    from PIL import Image, ImageEnhance

    h, w = img.shape[:2]
    im = Image.fromarray(img)
    if kind == "shift":
        dy, dx = (int(v) * int(rng.choice([-1, 1])) for v in rng.integers(1, 4, 2))
        pad = np.pad(img, ((3, 3), (3, 3), (0, 0)), mode="edge")
        return np.ascontiguousarray(pad[3 + dy : 3 + dy + h, 3 + dx : 3 + dx + w])
    if kind == "resample":
        side = int(rng.choice([16, 20, 24, 40, 48, 64]))
        method = [Image.BILINEAR, Image.BICUBIC, Image.LANCZOS, Image.NEAREST][rng.integers(4)]
        im = im.resize((side, side), method).resize((w, h), Image.BILINEAR)
    elif kind == "jpeg":
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=int(rng.integers(50, 61)))
        im = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    elif kind == "mirror":
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    elif kind == "jitter":
        for enh in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            im = enh(im).enhance(float(rng.uniform(0.75, 1.25)))
    elif kind == "crop":
        s = round(float(rng.uniform(0.7, 0.85)) * h)
        y0, x0 = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        im = im.crop((x0, y0, x0 + s, y0 + s)).resize((w, h), Image.BILINEAR)
    else:
        raise ValueError(kind)
    return np.asarray(im, dtype=np.uint8)


def planted(test_pixels: np.ndarray, per_kind: int, seed: int):
    """Edited copies of distinct test images: ``(copies, source_rows, kinds)``."""
    rng = np.random.default_rng(seed)
    sources = rng.choice(len(test_pixels), per_kind * len(KINDS), replace=False)
    kinds = np.repeat(np.array(KINDS), per_kind)
    copies = np.stack([edit(test_pixels[s], k, rng) for s, k in zip(sources, kinds, strict=True)])
    return copies, sources, kinds


def contact_sheet(pairs, get_a, get_b, path: Path, scale: int = 3, cols: int = 4) -> None:
    """A PNG of pairs side by side, ``cols`` pairs a row, a gap between pairs."""
    from PIL import Image

    if not pairs:
        return
    tiles = [
        np.concatenate([get_a(a), np.full((32, 2, 3), 255, np.uint8), get_b(b)], 1)
        for a, b in pairs
    ]
    h, w = tiles[0].shape[:2]
    rows = (len(tiles) + cols - 1) // cols
    sheet = np.full((rows * (h + 4), cols * (w + 8), 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        sheet[r * (h + 4) : r * (h + 4) + h, c * (w + 8) : c * (w + 8) + w] = t
    Image.fromarray(sheet).resize(
        (sheet.shape[1] * scale, sheet.shape[0] * scale), Image.NEAREST
    ).save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-features", required=True)
    ap.add_argument("--test-features", required=True)
    ap.add_argument("--per-kind", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/duplicates.json")
    args = parse_args(ap)

    import torch

    torch.set_num_threads(args.threads)
    from simattr.audit import audit
    from simattr.data import load_dataset, resolve_root
    from simattr.features import extract_features, load_features
    from simattr.models import load_backbone

    train = load_dataset(resolve_root("cifar10"), "train")
    test = load_dataset(resolve_root("cifar10"), "test")
    X, T = load_features(args.train_features), load_features(args.test_features)
    n = len(X)
    out_dir = Path(args.out).parent
    backbone = load_backbone("default")

    # part 2 first (part 1 reads it): unaltered CIFAR-10
    t0 = time.perf_counter()
    clean = audit(
        X,
        train.labels,
        num_classes=10,
        test_features=T,
        images=train.pixels,
        test_images=test.pixels,
        k=5,
        folds=2,
        evidence=0,
    )
    t_clean = time.perf_counter() - t0
    c = clean.duplicates
    leaks = c.split_b == "test"
    test_with_copy = np.unique(c.row_b[leaks])
    genuine = set(zip(c.row_a[leaks].tolist(), c.row_b[leaks].tolist(), strict=True))
    rng = np.random.default_rng(args.seed)
    leak_pairs = sorted(zip(c.row_b[leaks].tolist(), c.row_a[leaks].tolist(), strict=True))
    pick = sorted(rng.choice(len(leak_pairs), min(48, len(leak_pairs)), replace=False))
    contact_sheet(
        [leak_pairs[i] for i in pick],
        lambda r: test.pixels[r],
        lambda r: train.pixels[r],
        out_dir / "duplicates_cifar10_sample.png",
    )
    p = c.possible
    pl = np.flatnonzero(p.split_b == "test") if p is not None else np.empty(0, int)
    possible_pairs = [(int(p.row_b[i]), int(p.row_a[i])) for i in pl[:48]]
    contact_sheet(
        possible_pairs,
        lambda r: test.pixels[r],
        lambda r: train.pixels[r],
        out_dir / "duplicates_cifar10_possible.png",
    )

    # part 1: planted copies of test images appended to the training split
    copies, sources, kinds = planted(test.pixels, args.per_kind, args.seed)
    t0 = time.perf_counter()
    Xc = extract_features(backbone, copies, progress=False)
    t_embed = time.perf_counter() - t0
    images = np.concatenate([train.pixels, copies])
    t0 = time.perf_counter()
    result = audit(
        np.concatenate([X, Xc]),
        np.concatenate([train.labels, test.labels[sources]]),
        num_classes=10,
        test_features=T,
        images=images,
        test_images=test.pixels,
        k=5,
        folds=2,
        evidence=0,
    )
    t_audit = time.perf_counter() - t0
    d = result.duplicates
    source_of = {n + i: int(s) for i, s in enumerate(sources)}
    found = np.zeros(len(sources), bool)
    involved = correct = 0
    wrong = []
    for ra, sb, rb in zip(d.row_a.tolist(), d.split_b, d.row_b.tolist(), strict=True):
        if sb == "test" and ra >= n:  # a planted copy and a test image
            involved += 1
            if source_of[ra] == rb:
                correct += 1
                found[ra - n] = True
            elif (ra, rb) in genuine:
                correct += 1
            else:
                wrong.append((ra, ("test", rb)))
        elif sb == "train" and max(ra, rb) >= n:  # a planted copy and a training image
            involved += 1
            copy, other = max(ra, rb), min(ra, rb)
            # a copy of a test image that CIFAR-10 itself has in train: a genuine copy too
            ok = (other, source_of.get(copy, -1)) in genuine or other >= n
            correct += ok
            if not ok:
                wrong.append((copy, ("train", other)))
    contact_sheet(
        [(c, o) for c, o in wrong[:48]],
        lambda r: images[r],
        lambda o: (test.pixels if o[0] == "test" else images)[o[1]],
        out_dir / "duplicates_planted_unexpected.png",
    )
    recall = {k: float(found[kinds == k].mean()) for k in KINDS}
    print("recall per kind", recall, "pairs with a planted copy", involved, "correct", correct)
    missed = [(n + i, int(s)) for i, s in enumerate(sources) if not found[i]][:24]
    contact_sheet(
        missed,
        lambda r: images[r],
        lambda r: test.pixels[r],
        out_dir / "duplicates_planted_missed.png",
    )
    result_json = {
        "planted": {
            "per_kind": args.per_kind,
            "recall": recall,
            "reported_pairs_with_a_planted_copy": involved,
            "correct_pairs": correct,
            "precision_counting_genuine": correct / involved if involved else None,
            "embed_s": round(t_embed, 1),
            "audit_s": round(t_audit, 1),
        },
        "cifar10": {
            "train_pairs": int((~leaks).sum()),
            "test_pairs": int(leaks.sum()),
            "test_images_with_a_copy_in_train": len(test_with_copy),
            "fraction_of_test": len(test_with_copy) / len(T),
            "possible_not_confirmed_leaks": len(pl),
            "note": c.note,
            "audit_s": round(t_clean, 1),
        },
    }
    result_json["threads"] = args.threads
    write_result("duplicates", result_json, args.out)
    print(result_json)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
