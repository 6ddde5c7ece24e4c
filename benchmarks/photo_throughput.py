"""Photo features on a CPU: simattr's path against a plain torchvision inference loop.

Both embed the same photos (random pixels at two common camera aspect ratios, 320x240 and
375x500, as PIL images) with a ResNet-50 at 224 pixels (shorter side resized to 256, centre crop
224, ImageNet normalisation) and global-average-pooled 2048-d output, with the same randomly
initialised weights (speed does not depend on the values). The plain loop is what a user would
write from torchvision's documentation: ``transforms.Compose([Resize(256), CenterCrop(224),
ToTensor(), Normalize(...)])`` per image, batches stacked, ``torch.no_grad()``. simattr's path is
:func:`simattr.features.extract_features` with a ``random:resnet50-imagenet`` backbone. The two
run in turns, ``--rounds`` times each, with ``--threads`` torch threads; reported: images per
second (median over rounds) and the largest difference between the two paths' features.

    python benchmarks/photo_throughput.py [--images 128] [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parse_args, write_result


def photos(n: int, seed: int):
    """``n`` PIL photos of random pixels, landscape 320x240 and portrait 375x500 in turn."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    sizes = [(240, 320), (500, 375)]
    return [
        Image.fromarray(rng.integers(0, 256, (*sizes[i % 2], 3), dtype=np.uint8)) for i in range(n)
    ]


def plain_loop(model, images, batch_size: int) -> tuple[np.ndarray, float]:
    """torchvision's documented inference loop; features and seconds."""
    import torch
    from torchvision import transforms

    tf = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    out = []
    t0 = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = torch.stack([tf(im) for im in images[start : start + batch_size]])
            out.append(model(x).numpy())
    return np.concatenate(out), time.perf_counter() - t0


def ours(backbone, images, batch_size: int) -> tuple[np.ndarray, float]:
    from simattr.features import extract_features

    t0 = time.perf_counter()
    feats = extract_features(backbone, images, batch_size=batch_size, progress=False)
    return feats, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", default=None)
    args = parse_args(ap)

    import torch
    import torchvision

    torch.set_num_threads(args.threads)
    from simattr.models import load_backbone

    backbone = load_backbone("random:resnet50-imagenet:0")
    plain = torchvision.models.resnet50(weights=None)
    plain.load_state_dict(backbone.module.state_dict(), strict=False)
    plain.fc = torch.nn.Identity()
    plain.eval()
    images = photos(args.images, 0)
    ours(backbone, images[:4], 4)  # warm-up, both
    plain_loop(plain, images[:4], 4)
    rates: dict[str, list[float]] = {"plain torchvision loop": [], "simattr": []}
    diff = 0.0
    for _ in range(args.rounds):
        f_plain, t_plain = plain_loop(plain, images, args.batch_size)
        f_ours, t_ours = ours(backbone, images, args.batch_size)
        rates["plain torchvision loop"].append(len(images) / t_plain)
        rates["simattr"].append(len(images) / t_ours)
        scale = np.abs(f_plain).max()
        diff = max(diff, float(np.abs(f_ours - f_plain).max() / scale))
        print({k: round(v[-1], 2) for k, v in rates.items()}, "max rel diff", diff)
    result = {
        "images": args.images,
        "rounds": args.rounds,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "images_per_second_median": {k: float(np.median(v)) for k, v in rates.items()},
        "images_per_second_each_round": rates,
        "features_max_difference_relative_to_largest": diff,
    }
    write_result("photo_throughput", result, args.out)
    print(result)


if __name__ == "__main__":
    main()
