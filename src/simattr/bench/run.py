"""One benchmark table: every attribution method judged on the same targets, the same way.

``simattr bench --profile cpu|gpu`` runs, for one recipe and one set of targets:

1. the full-data ensemble (which targets are correct, their flip classes);
2. one ranking per method (:data:`METHODS`), timed: the exemplar SVM on self-supervised features
   (same class and all classes, and on a randomly initialised backbone, the control that shows
   what the self-supervised training adds), l2 distance, random same-class images,
   supervised-feature similarity and TRAK;
3. removal support for every method, then LDS (subset models trained once, every method scored),
   then mislabel support;
4. a Markdown table, support curves and a JSON summary in the output folder.

Every stage writes as it goes and resumes (the stages are the resumable support search and LDS
of :mod:`simattr.evaluation`), so the CPU profile, which takes hours on a 2-core machine, can be
run in pieces: each call continues where the last stopped and rewrites the table with what is
done. ``methods`` and ``stages`` restrict a call to part of the work.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simattr._io import (
    check_writable,
    lock,
    provenance,
    read_json,
    read_jsonl,
    sidecar_path,
    write_json,
)
from simattr.attribution import Attributor, Ranking, load_ranking, save_ranking
from simattr.errors import InvalidInputError
from simattr.evaluation import SupportSettings, get_recipe, recipe_pool, run_support
from simattr.evaluation.ensemble import Ensemble, train_ensemble
from simattr.evaluation.margins import choose_balanced_targets
from simattr.training.executors import executor_for
from simattr.training.jobs import load_split
from simattr.validation import check_threads


@dataclass(frozen=True)
class Profile:
    """Sizes of one benchmark run.

    ``targets`` (correctly classified test images) get the support searches; LDS, which costs
    the same whatever the number of targets, is measured on ``lds_targets`` random test images
    (its mean over a handful of targets would be mostly noise).
    """

    name: str
    recipe: str
    targets: int
    models: int
    budget: int
    k: int
    ensemble: int
    lds_subsets: int
    lds_targets: int
    trak_checkpoints: int
    backbone: str = "default"
    device: str = "cpu"
    #: second-seed LDS models on the first subsets: the noise ceiling of LDS
    lds_replicates: int = 0
    #: draw the targets evenly over classes (the margin benchmark's draw, so that the support
    #: searches of this profile run on a subset of its targets and pair with them)
    balanced_targets: bool = False


PROFILES: dict[str, Profile] = {
    # cpu-mini: 1,000 images per class, ~25 s per model on one core; k = half a class.
    "cpu": Profile(
        "cpu",
        "cpu-mini",
        targets=10,
        models=3,
        budget=5,
        k=500,
        ensemble=5,
        lds_subsets=40,
        lds_targets=500,
        trak_checkpoints=2,
        # pinned: the committed results were made with these weights, whatever the default is
        backbone="shipped:cifar10-moco-resnet18-w16-e40",
        lds_replicates=20,
    ),
    # The evidence profile: k = a quarter of a 1,000-image class pool, B = 4 resolves the support
    # to 250 / 16 = 16 images (1.6 % of the class), 50 balanced targets (the first half of the
    # margin benchmark's 100). About 12 models per search: 12.5 CPU-hours for esvm, l2-raw and
    # random, so it is run over several sessions (it resumes).
    "cpu-k250": Profile(
        "cpu-k250",
        "cpu-mini",
        targets=50,
        models=3,
        budget=4,
        k=250,
        ensemble=5,
        lds_subsets=40,
        lds_targets=500,
        trak_checkpoints=2,
        backbone="shipped:cifar10-moco-resnet18-w16-e40",
        lds_replicates=20,
        balanced_targets=True,
    ),
    # The paper's sizes (DESIGN.md section 2) with the fast recipe, for a GPU.
    "gpu": Profile(
        "gpu",
        "fast",
        targets=100,
        models=5,
        budget=7,
        k=1280,
        ensemble=10,
        lds_subsets=100,
        lds_targets=1000,
        trak_checkpoints=10,
        device="cuda",
        lds_replicates=20,
    ),
    # Seconds, for tests.
    "tiny": Profile(
        "tiny",
        "tiny",
        targets=2,
        models=1,
        budget=1,
        k=16,
        ensemble=2,
        lds_subsets=4,
        lds_targets=6,
        trak_checkpoints=1,
        lds_replicates=3,
    ),
}

STAGES = ("remove", "lds", "mislabel")
LDS_RANKINGS = "rankings-lds"
REFERENCE_METHOD = "esvm"  # the method every other one is paired with, target by target
#: Stands for the profile's self-supervised backbone (``Profile.backbone``) in :data:`METHODS`.
PROFILE_BACKBONE = "profile"


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
        from simattr.training.classifier_io import train_checkpoints

        return train_checkpoints(
            self.data, self.recipe, n, self.out / "checkpoints", device=self.profile.device
        )


def _rankings(
    ctx: BenchContext,
    methods: Sequence[str],
    log: Callable[[str], None],
    folder: str = "rankings",
) -> dict[str, Ranking]:
    """Compute (or read back) each method's ranking; the sidecar keeps its wall time."""
    out = {}
    for name in methods:
        path = ctx.out / folder / f"{name}.npz"
        if not path.exists():
            log(f"{folder}: {name}")
            start = time.perf_counter()
            ranking = METHODS[name](ctx)
            ranking.metadata = {"seconds": time.perf_counter() - start, **ranking.metadata}
            save_ranking(path, ranking)
        ranking = load_ranking(path)
        if not np.array_equal(ranking.targets, ctx.targets):
            raise InvalidInputError(f"{path} ranks other targets; delete it to recompute")
        _check_backbone(ctx, path, ranking)
        out[name] = ranking
    return out


def _check_backbone(ctx: BenchContext, path: Path, ranking: Ranking) -> None:
    """Refuse a cached ranking made from other weights than its backbone spec now names (the
    default backbone can change between releases; results must not mix two backbones)."""
    recorded = ranking.metadata.get("backbone_sha256_16")
    if recorded is None:
        return
    spec = str(ranking.metadata["backbone"])
    current = ctx.current_sha(spec)
    if current != recorded:
        raise InvalidInputError(
            f"{path} was ranked with backbone {spec!r} = weights {recorded}, but {spec!r} is now "
            f"{current}; delete it to recompute, or pin the old weights ('shipped:NAME')"
        )


def choose_lds_targets(n_test: int, n: int, seed: int = 0) -> np.ndarray:
    """``n`` random test rows (any, right or wrong) for LDS, drawn with ``seed`` (sorted)."""
    return np.sort(np.random.default_rng([seed, 777]).choice(n_test, min(n, n_test), False))


def choose_bench_targets(
    ensemble: Ensemble, n: int, seed: int = 0, balanced: bool = False
) -> np.ndarray:
    """``n`` test rows the ensemble classifies correctly, drawn with ``seed`` (sorted);
    ``balanced``: as evenly over classes as possible (:func:`choose_balanced_targets`)."""
    correct = np.flatnonzero(ensemble.correct)
    if balanced:
        return choose_balanced_targets(correct, ensemble.labels, n, seed)
    if len(correct) < n:
        raise InvalidInputError(f"only {len(correct)} correctly classified targets; asked {n}")
    return np.sort(np.random.default_rng([seed, 4242]).choice(correct, n, replace=False))


def run_bench(
    data: str,
    profile: str | Profile,
    out_dir: str | os.PathLike[str],
    *,
    methods: Sequence[str] | None = None,
    stages: Sequence[str] = STAGES,
    executor: str = "local",
    workers: int | None = None,
    threads: int | None = None,
    seed: int = 0,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run (or continue) the benchmark; return the summary also written to ``bench.json``."""
    prof = PROFILES[profile] if isinstance(profile, str) and profile in PROFILES else profile
    if not isinstance(prof, Profile):
        raise InvalidInputError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    methods = list(methods or METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise InvalidInputError(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise InvalidInputError(f"unknown stage(s) {bad}; choose from {list(STAGES)}")
    out = Path(out_dir)
    check_writable(out, "--out", folder=True)
    check_threads(threads, "--threads")
    with lock(out), executor_for(executor, workers=workers) as (pool_exec, slots):
        ensemble = train_ensemble(
            data,
            prof.recipe,
            n_models=prof.ensemble,
            cache_dir=out / "ensemble",
            executor=pool_exec,
            device=prof.device,
            threads=threads,
            progress=progress,
        )
        targets = choose_bench_targets(ensemble, prof.targets, seed, prof.balanced_targets)
        ctx = BenchContext(data, prof, out, targets)
        rankings = _rankings(ctx, methods, log)
        for stage in stages:
            if stage in ("remove", "mislabel"):
                log(f"support: {stage}")
                settings = SupportSettings(
                    data=data,
                    recipe=prof.recipe,
                    mode=stage,
                    models=prof.models,
                    budget=prof.budget,
                    k=prof.k,
                    seed=seed,
                    device=prof.device,
                    threads=threads,
                )
                run_support(
                    settings,
                    rankings,
                    out / f"{stage}.jsonl",
                    targets=targets,
                    ensemble_models=prof.ensemble,
                    ensemble_dir=out / "ensemble",
                    executor=pool_exec,
                    workers=slots,
                    progress=progress,
                    log=log,
                )
            else:
                from simattr.evaluation.lds import run_lds

                lds_targets = choose_lds_targets(len(ctx.test), prof.lds_targets, seed)
                _rankings(BenchContext(data, prof, out, lds_targets), methods, log, LDS_RANKINGS)
                log("lds: subset models")
                run_lds(
                    data,
                    prof.recipe,
                    out / "lds",
                    subsets=prof.lds_subsets,
                    targets=lds_targets,
                    seed=seed,
                    executor=pool_exec,
                    device=prof.device,
                    threads=threads,
                    progress=progress,
                    replicates=prof.lds_replicates,
                )
            # a report after every stage: an interrupted run still shows what it finished
            write_bench_report(out, prof, rankings, targets, data=data)
    return write_bench_report(out, prof, rankings, targets, data=data)


def write_bench_report(
    out: Path,
    prof: Profile,
    rankings: dict[str, Ranking],
    targets: np.ndarray,
    *,
    data: str | None = None,
) -> dict[str, Any]:
    """Table, curves and JSON of whatever stages are done so far.

    ``data`` (the dataset the bench ran on) adds LDS beyond the class prior, which needs labels.
    """
    from simattr.report.support import (
        head_to_head,
        head_to_head_table,
        markdown_table,
        plot_curves,
        summarize,
    )

    pairs = []
    rows: dict[str, dict[str, Any]] = {
        name: {"attribution_seconds": round(float(r.metadata.get("seconds", 0.0)), 2)}
        for name, r in rankings.items()
    }
    for mode in ("remove", "mislabel"):
        path = out / f"{mode}.jsonl"
        if not path.exists():
            continue
        summaries = [s for s in summarize(read_jsonl(path)) if s.ranking in rankings]
        plot_curves(out / f"{mode}_curve.png", summaries)
        (out / f"{mode}_table.md").write_text(markdown_table(summaries), encoding="utf-8")
        pairs.extend(head_to_head(summaries, REFERENCE_METHOD))
        for s in summaries:
            rows[s.ranking][mode] = {
                "targets": s.targets,
                "found": s.found,
                "median": None if np.isinf(s.median) else s.median,
                "models_trained": s.models_trained,
                "training_seconds": round(s.seconds, 1),
            }
    ceilings: dict[str, Any] = {}
    per_target: dict[str, dict[int, float]] = {}  # LDS beyond the class prior, per target
    if (out / "lds" / "manifest.json").exists():
        from simattr.evaluation.lds import class_counts, lds_score, load_lds, noise_ceiling

        lds = load_lds(out / "lds")
        counts = None
        if data is not None:
            counts = class_counts(
                lds, load_split(data, "train").labels, load_split(data, "test").labels
            )
        if lds.replicated.sum() >= 3:
            ceiling = noise_ceiling(lds)
            ceilings["noise_ceiling"] = _mean_se(ceiling)
            ceilings["noise_ceiling_subsets"] = ceiling.subsets_used
            if counts is not None:
                ceilings["noise_ceiling_beyond_class_prior"] = _mean_se(noise_ceiling(lds, counts))
        for name in rankings:
            path = out / LDS_RANKINGS / f"{name}.npz"
            if lds.trained.sum() < 3 or not path.exists():
                continue
            ranking = load_ranking(path)
            raw, centred = lds_score(lds, ranking), lds_score(lds, ranking, centre=True)
            rows[name]["lds"] = {
                "mean": raw.mean,
                "standard_error": raw.standard_error,
                "centred_mean": centred.mean,
                "centred_standard_error": centred.standard_error,
                "targets": len(raw.targets),
                "subsets": raw.subsets_used,
            }
            if counts is not None:
                beyond = lds_score(lds, ranking, centre=True, control=counts)
                rows[name]["lds"]["beyond_class_prior"] = _mean_se(beyond)
                per_target[name] = dict(
                    zip(beyond.targets.tolist(), beyond.per_target.tolist(), strict=True)
                )
            if counts is not None and "noise_ceiling_beyond_class_prior" in ceilings:
                rows[name]["lds"]["beyond_class_prior_of_ceiling"] = (
                    beyond.mean / ceilings["noise_ceiling_beyond_class_prior"]["mean"]
                )
    table = _bench_table(prof, rows, ceilings)
    if REFERENCE_METHOD in per_target and len(per_target) > 1:
        from simattr.evaluation.margins import paired

        lines = [
            f"\nLDS beyond the class prior, each method minus `{REFERENCE_METHOD}` target by "
            "target (95 % t-interval; paired t-test and Wilcoxon signed-rank test):\n",
            "| method | targets | difference | method higher | t-test p | Wilcoxon p |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, values in per_target.items():
            if name == REFERENCE_METHOD:
                continue
            d = paired(values, per_target[REFERENCE_METHOD])
            rows[name]["lds"]["beyond_class_prior_minus_" + REFERENCE_METHOD] = d
            lines.append(
                f"| {name} | {d['n']} | {d['mean']:+.3f} ({d['low']:+.3f}, {d['high']:+.3f}) | "
                f"{d['b_lower']}/{d['n']} | {d['t_p']:.2g} | {d['wilcoxon_p']:.2g} |"
            )
        table += "\n".join(lines) + "\n"
    if pairs:
        table += (
            f"\nTarget by target against `{REFERENCE_METHOD}` (a target not flipped within k "
            "counts as k + 1; two-sided sign test over the targets that are not ties):\n\n"
            + head_to_head_table(pairs)
        )
        for pair in pairs:
            rows[pair.ranking][pair.mode]["against_" + REFERENCE_METHOD] = {
                "targets": pair.targets,
                "fewer": pair.lower,
                "ties": pair.ties,
                "more": pair.higher,
                "sign_test_p": pair.p_value,
            }
    (out / "bench_table.md").write_text(table, encoding="utf-8")
    summary = provenance(
        kind="bench",
        profile=asdict(prof),
        lds_controls=ceilings,
        recipe=get_recipe(prof.recipe).to_dict(),
        targets=targets.tolist(),
        methods=rows,
        table=table,
    )
    write_json(out / "bench.json", summary)
    return summary


def _fmt_support(cell: dict[str, Any] | None, k: int) -> str:
    if not cell:
        return "-"
    median = "> k" if cell["median"] is None else f"{cell['median']:g}"
    return f"{cell['found']}/{cell['targets']} (median {median})"


def _mean_se(result: Any) -> dict[str, float]:
    return {"mean": result.mean, "standard_error": result.standard_error}


def _pm(cell: dict[str, float] | None) -> str:
    return "-" if not cell else f"{cell['mean']:.3f} +- {cell['standard_error']:.3f}"


def _bench_table(
    prof: Profile, rows: dict[str, dict[str, Any]], ceilings: dict[str, Any] | None = None
) -> str:
    ceilings = ceilings or {}
    prior = rows.get("class-prior", {}).get("lds")
    header = [
        f"Profile `{prof.name}`: recipe `{prof.recipe}`, {prof.targets} targets, M = "
        f"{prof.models}, B = {prof.budget}, k = {prof.k}; LDS over {prof.lds_subsets} subsets "
        f"and {prof.lds_targets} random test images (mean +- standard error; 'centred': each "
        "target's scores minus their mean, which removes an offset such as an SVM's intercept; "
        "'beyond class prior': the centred LDS as a partial Spearman correlation with the "
        "subset's count of the target's class held out; 'of its ceiling': that over the noise "
        "ceiling beyond the class prior).",
    ]
    if prior or ceilings:
        notes = []
        if prior:
            cell = {"mean": prior["mean"], "standard_error": prior["standard_error"]}
            notes.append(f"class-prior LDS {_pm(cell)}")
        if "noise_ceiling" in ceilings:
            notes.append(
                f"noise ceiling {_pm(ceilings['noise_ceiling'])} (two seeds on "
                f"{ceilings['noise_ceiling_subsets']} subsets)"
            )
        if "noise_ceiling_beyond_class_prior" in ceilings:
            notes.append(
                f"ceiling beyond class prior {_pm(ceilings['noise_ceiling_beyond_class_prior'])}"
            )
        header.append("")
        header.append("Controls: " + "; ".join(notes) + ".")
    lines = [
        *header,
        "",
        "| method | removal: flipped (median support) | mislabel: flipped (median support) "
        "| LDS | LDS, centred | beyond class prior | of its ceiling | attribution s (from scratch) "
        "| support models trained |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in rows.items():
        lds = row.get("lds")
        models = sum(row.get(m, {}).get("models_trained", 0) for m in ("remove", "mislabel"))
        raw = cen = beyond = share = "-"
        if lds:
            raw = f"{lds['mean']:.3f} +- {lds['standard_error']:.3f}"
            cen = f"{lds['centred_mean']:.3f} +- {lds['centred_standard_error']:.3f}"
            beyond = _pm(lds.get("beyond_class_prior"))
            if lds.get("beyond_class_prior_of_ceiling") is not None:
                share = f"{lds['beyond_class_prior_of_ceiling']:.2f}"
        lines.append(
            f"| {name} | {_fmt_support(row.get('remove'), prof.k)} | "
            f"{_fmt_support(row.get('mislabel'), prof.k)} | {raw} | {cen} | {beyond} | {share} | "
            f"{row['attribution_seconds']:.1f} | {models} |"
        )
    return "\n".join(lines) + "\n"


__all__ = ["METHODS", "PROFILES", "STAGES", "Profile", "run_bench", "write_bench_report"]
