"""The methods the bench judges, and the context they share (data, pool, targets, features).

Each entry of :data:`METHODS` turns a :class:`BenchContext` into a :class:`Ranking` of the
context's targets over the recipe's pool, with its cost from scratch in ``metadata["seconds"]``
(feature extraction or classifier training included), so the table compares like with like.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simattr._io import read_json, sidecar_path
from simattr.attribution import Attributor, Ranking
from simattr.bench.profiles import PROFILE_BACKBONE, Profile
from simattr.evaluation import get_recipe, recipe_pool
from simattr.training.jobs import load_split


def _rank_features(
    method: str, class_conditional: bool, backbone: str
) -> Callable[[BenchContext], Ranking]:
    def make(ctx: BenchContext) -> Ranking:
        spec = ctx.backbone_spec(backbone)
        x_pool, x_tgt = ctx.features(spec)
        start = time.perf_counter()
        att = Attributor(method, class_conditional=class_conditional)
        att.fit(x_pool, ctx.train.labels[ctx.pool] if class_conditional else None)
        labels = ctx.test.labels[ctx.targets] if class_conditional else None
        idx, scores = att.topk(x_tgt, labels, ctx.rank_k(class_conditional))
        meta = {
            "method": method,
            "class_conditional": class_conditional,
            "backbone": spec,
            "backbone_sha256_16": ctx.backbone_sha[spec],
            # the cost from scratch: this method's share of feature extraction included
            "seconds": time.perf_counter() - start + ctx.feature_seconds[spec],
            "feature_seconds": ctx.feature_seconds[spec],
        }
        # a class pool smaller than k ends its row in -1 (Attributor.topk): kept as -1
        rows = np.where(idx >= 0, ctx.pool[np.maximum(idx, 0)], -1)
        return Ranking(ctx.targets, rows, scores, meta)

    return make


def _rank_random(ctx: BenchContext) -> Ranking:
    from simattr.baselines.controls import random_ranking

    return random_ranking(
        ctx.train.labels, ctx.test.labels, ctx.targets, ctx.rank_k(True), candidates=ctx.pool
    )


def _with_checkpoint_cost(ranking: Ranking, start: float, paths: list[Path]) -> Ranking:
    """Cost from scratch: the method's own time plus training the classifiers it needs."""
    trained = sum(float(read_json(sidecar_path(p)).get("seconds", 0.0)) for p in paths)
    ranking.metadata = {
        **ranking.metadata,
        "seconds": time.perf_counter() - start + trained,
        "checkpoint_seconds": trained,
    }
    return ranking


def _rank_supervised(metric: str) -> Callable[[BenchContext], Ranking]:
    def make(ctx: BenchContext) -> Ranking:
        from simattr.baselines.supervised import supervised_ranking

        paths = ctx.checkpoints(1)
        start = time.perf_counter()
        ranking = supervised_ranking(
            ctx.data,
            ctx.recipe,
            ctx.targets,
            ctx.rank_k(True),
            checkpoint=paths[0],
            metric=metric,
            class_conditional=True,
        )
        return _with_checkpoint_cost(ranking, start, paths)

    return make


def _rank_trak(ctx: BenchContext) -> Ranking:
    from simattr.baselines.trak import trak_ranking

    paths = ctx.checkpoints(ctx.profile.trak_checkpoints)
    start = time.perf_counter()
    ranking = trak_ranking(
        ctx.data,
        ctx.recipe,
        ctx.targets,
        ctx.rank_k(False),
        checkpoints=paths,
        work_dir=ctx.out / "trak",
        device=ctx.profile.device,
    )
    return _with_checkpoint_cost(ranking, start, paths)


#: Method name -> how to rank. Order = order of the table.
METHODS: dict[str, Callable[[BenchContext], Ranking]] = {
    "esvm": _rank_features("esvm", True, PROFILE_BACKBONE),
    "esvm-all-classes": _rank_features("esvm", False, PROFILE_BACKBONE),
    "esvm-random-backbone": _rank_features("esvm", True, "random"),
    "l2": _rank_features("l2", True, PROFILE_BACKBONE),
    "l2-raw": _rank_features("l2-raw", True, PROFILE_BACKBONE),
    "cosine": _rank_features("cosine", True, PROFILE_BACKBONE),
    "random": _rank_random,
    "class-prior": _rank_features("class-prior", True, PROFILE_BACKBONE),
    "supervised-cosine": _rank_supervised("cosine"),
    "supervised-l2": _rank_supervised("l2"),
    "trak": _rank_trak,
}


@dataclass
class BenchContext:
    """What the methods share: data, pool, targets, cached features and checkpoints."""

    data: str
    profile: Profile
    out: Path
    targets: np.ndarray

    def __post_init__(self) -> None:
        self.recipe = get_recipe(self.profile.recipe)
        self.train = load_split(self.data, "train")
        self.test = load_split(self.data, "test")
        self.pool = recipe_pool(self.recipe, self.train)
        self._features: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.feature_seconds: dict[str, float] = {}
        self.backbone_sha: dict[str, str | None] = {}

    def current_sha(self, spec: str) -> str | None:
        """Digest of the weights ``spec`` names now (loading the network, not extracting)."""
        if spec not in self.backbone_sha:
            from simattr.models import load_backbone

            self.backbone_sha[spec] = load_backbone(spec).extra.get("sha256_16")
        return self.backbone_sha[spec]

    def backbone_spec(self, backbone: str) -> str:
        """The backbone spec a method names, with :data:`PROFILE_BACKBONE` resolved."""
        return self.profile.backbone if backbone == PROFILE_BACKBONE else backbone

    def rank_k(self, class_conditional: bool) -> int:
        """Ranking length: the smallest class of the pool (dense within a class), at least k."""
        per_class = int(np.bincount(self.train.labels[self.pool]).min())
        return max(self.profile.k, per_class)

    def features(self, backbone: str) -> tuple[np.ndarray, np.ndarray]:
        """Pool and target features of ``backbone``, extracted once and timed (the time is
        charged to every method that uses them)."""
        if backbone not in self._features:
            from simattr.features import extract_features
            from simattr.models import load_backbone

            start = time.perf_counter()
            net = load_backbone(backbone, self.profile.device)
            dev = self.profile.device
            self._features[backbone] = (
                extract_features(net, self.train.subset(self.pool), device=dev, progress=False),
                extract_features(
                    net, self.test.get_images(self.targets), device=dev, progress=False
                ),
            )
            self.feature_seconds[backbone] = time.perf_counter() - start
            self.backbone_sha[backbone] = net.extra.get("sha256_16")
        return self._features[backbone]

    def checkpoints(self, n: int) -> list[Path]:
        """``n`` classifiers of the recipe, trained once into the output folder and reused."""
        from simattr.training.classifier_io import train_checkpoints

        return train_checkpoints(
            self.data, self.recipe, n, self.out / "checkpoints", device=self.profile.device
        )


__all__ = ["METHODS", "BenchContext"]
