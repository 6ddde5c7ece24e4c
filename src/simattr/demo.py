"""The main job on the embedded default dataset (scikit-learn's ``digits``), end to end.

Runs every stage with nothing to download: load the data, build the backbone, extract features,
rank the training images of a few test targets with the exemplar SVM, save one picture per
target and return a summary. ``simattr demo`` prints it as a table.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simattr.attribution import Attributor, Ranking, rank, save_ranking
from simattr.data import load_dataset
from simattr.features import extract_features, save_features
from simattr.models import load_backbone
from simattr.report import save_attribution_grid


@dataclass
class DemoResult:
    """What the demo produced: the ranking, the picture files and the wall time."""

    ranking: Ranking
    train_labels: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]
    grids: list[Path]
    seconds: float
    backbone_note: str


def _describe(backbone) -> str:
    """One line saying what the backbone is: trained (how) or a random stand-in.

    Read from the weights' sidecar, the one source of these figures: the epochs in all (a
    warm-started run counts the epochs it started from) and the kNN accuracy as recorded.
    ``tests/test_demo_description.py`` holds the README and docs to the same line.
    """
    if not backbone.pretrained:
        return backbone.note or f"{backbone.name}: randomly initialised {backbone.arch}"
    extra = backbone.extra
    parts = [str(extra.get("method", "self-supervised")), backbone.arch]
    if "epochs" in extra:
        total = int(extra["epochs"]) + int(extra.get("prior_epochs") or 0)
        parts.append(f"{total} epochs")
    if extra.get("knn_accuracy") is not None:
        parts.append(f"CIFAR-10 kNN accuracy {float(extra['knn_accuracy']):.4f}")
    return f"{backbone.name} ({', '.join(parts)})"


def run_demo(
    out_dir: str | os.PathLike[str] = "simattr-demo",
    *,
    n_targets: int = 4,
    k: int = 8,
    seed: int = 0,
    method: str = "esvm",
    progress: bool = True,
) -> DemoResult:
    """Attribute ``n_targets`` random digits test images to their top-``k`` training images."""
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train = load_dataset("digits", "train")
    test = load_dataset("digits", "test")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the stand-in is reported in the result
        backbone = load_backbone("default")
    train_features = extract_features(backbone, train, progress=progress)
    test_features = extract_features(backbone, test, progress=progress)
    save_features(
        out / "train_features.npy", train_features, backbone=backbone, dataset=train, root="digits"
    )
    save_features(
        out / "test_features.npy", test_features, backbone=backbone, dataset=test, root="digits"
    )

    targets = np.sort(np.random.default_rng(seed).choice(len(test), n_targets, replace=False))
    attributor = Attributor(method).fit(train_features, train.labels)
    ranking = rank(attributor, test_features, test.labels, targets, k)
    ranking.metadata.update(method=method, class_conditional=True, dataset="digits", seed=seed)
    save_ranking(out / "ranking.npz", ranking)

    names = train.class_names
    grids = []
    for row, target in enumerate(ranking.targets):
        idx, sc = ranking.indices[row], ranking.scores[row]
        grids.append(
            save_attribution_grid(
                out / f"target_{target:04d}.png",
                test.get_images([target])[0],
                f"test #{target}\nlabel {names[test.labels[target]]}",
                train.get_images(idx),
                [
                    f"#{i} ({names[train.labels[i]]})\n{s:+.3f}"
                    for i, s in zip(idx, sc, strict=True)
                ],
                suptitle=f"{method}: top-{k} training images (backbone: {backbone.name})",
            )
        )
    return DemoResult(
        ranking=ranking,
        train_labels=train.labels,
        test_labels=test.labels,
        class_names=names,
        grids=grids,
        seconds=time.perf_counter() - start,
        backbone_note=_describe(backbone),
    )
