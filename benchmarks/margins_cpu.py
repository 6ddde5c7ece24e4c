"""Margin effects on the CPU: nine rankings, 100 targets, paired with random same-class removal.

The evidence protocol of ``simattr.evaluation.margins`` at CPU scale: the ``cpu-mini`` recipe
(1,000 CIFAR-10 training images per class), 100 test images its 5-model full-data ensemble
classifies correctly (10 per class, seeded), and for each of nine rankings of the recipe's pool
the margin change of every target after removing its top m, for m = 10, 20 and 5 % of a class
(100, 200, 50 images). Models are multiplexed: one model carries one target per class, so a
ranking costs 10 models per m and every class loses the same number of images under every
class-conditional ranking. The multiplexing control trains single-target models for 20 of the
targets (esvm and random, m = 10 %) with the same seed, to show that sharing a model does not
bias a target's effect.

Rankings (all over the recipe's pool, from the bench's own makers where it has them):
esvm, esvm-all-classes, esvm-random-backbone, l2-raw (Euclidean on unnormalised features, the
paper code's ``l2knn``), cosine, supervised-cosine, trak, random (same class) and class-prior
(every image of the class scores the same: a fixed, arbitrary same-class order).

Resumable: every trained model is appended to ``margins.jsonl`` / ``control.jsonl`` as it
finishes; run the same command again to continue. ``--report`` only rewrites the summary
(``summary.json`` and ``table.md``) from what is there.

    python benchmarks/margins_cpu.py --executor process --workers 2 --threads 1
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, write_result

RANKINGS = (
    "esvm",
    "l2-raw",
    "cosine",
    "esvm-random-backbone",
    "esvm-all-classes",
    "supervised-cosine",
    "trak",
    "random",
    "class-prior",
)
#: The paper's three claims, each a paired comparison (first minus second; negative = the first
#: ranking's top images matter more to the target).
CLAIMS = {
    "ESVM beats l2 (paper's l2knn)": ("esvm", "l2-raw"),
    "same-class beats all-class": ("esvm", "esvm-all-classes"),
    "SSL features beat random features": ("esvm", "esvm-random-backbone"),
}
EXTRA_PAIRS = (("esvm", "cosine"), ("esvm", "trak"), ("esvm", "supervised-cosine"))
FRACTIONS = (0.10, 0.20, 0.05)
CONTROL_TARGETS, CONTROL_RANKINGS, CONTROL_FRACTION = 20, ("esvm", "random"), 0.10


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _feature_ranking(ctx, method: str, class_conditional: bool, backbone: str, normalize=True):
    """A ranking of the pool from backbone features (the bench's maker, plus ``normalize``)."""
    from simattr.attribution import Attributor
    from simattr.ranking import Ranking

    spec = ctx.backbone_spec(backbone)
    x_pool, x_tgt = ctx.features(spec)
    att = Attributor(method, class_conditional=class_conditional, normalize=normalize)
    att.fit(x_pool, ctx.train.labels[ctx.pool] if class_conditional else None)
    labels = ctx.test.labels[ctx.targets] if class_conditional else None
    idx, scores = att.topk(x_tgt, labels, ctx.rank_k(class_conditional))
    meta = {"method": method, "class_conditional": class_conditional, "normalize": normalize}
    meta.update(backbone=spec, backbone_sha256_16=ctx.backbone_sha[spec])
    return Ranking(ctx.targets, ctx.pool[idx], scores, meta)


def _class_prior(ctx):
    """Every pool image of the target's class scores 1: ties broken by the lower row."""
    from simattr.ranking import Ranking

    k = ctx.rank_k(True)
    labels = ctx.train.labels[ctx.pool]
    idx = np.stack([ctx.pool[labels == ctx.test.labels[t]][:k] for t in ctx.targets])
    meta = {"method": "class-prior", "class_conditional": True}
    return Ranking(ctx.targets, idx, np.ones(idx.shape), meta)


def make_rankings(ctx, folder: Path, names: tuple[str, ...] = RANKINGS) -> dict:
    """Each ranking of ``names``, computed once and read back from ``folder``."""
    from simattr.bench import METHODS, PROFILE_BACKBONE
    from simattr.ranking import load_ranking, save_ranking

    extra = {
        "l2-raw": lambda c: _feature_ranking(c, "l2", True, PROFILE_BACKBONE, normalize=False),
        "cosine": lambda c: _feature_ranking(c, "cosine", True, PROFILE_BACKBONE),
        "class-prior": _class_prior,
    }
    out = {}
    for name in names:
        path = folder / f"{name}.npz"
        if not path.exists():
            _log(f"ranking {name}")
            start = time.perf_counter()
            ranking = (extra.get(name) or METHODS[name])(ctx)
            ranking.metadata = {"seconds": time.perf_counter() - start, **ranking.metadata}
            # keep the top 25 % of a class: the largest removal is 20 %
            keep = int(0.25 * ctx.rank_k(True))
            ranking.indices, ranking.scores = ranking.indices[:, :keep], ranking.scores[:, :keep]
            save_ranking(path, ranking)
        ranking = load_ranking(path)
        if not np.array_equal(ranking.targets, ctx.targets):
            raise SystemExit(f"{path} ranks other targets; delete it to recompute")
        out[name] = ranking
    return out


def _table(summary: dict, control: dict, claims: dict) -> str:
    lines = []
    for f, cell in summary["fractions"].items():
        lines.append(f"\n### m = {cell['m']} ({float(f):.0%} of a class)\n")
        lines.append(
            "| ranking | targets | margin change (95 % CI) | minus random (95 % CI) | "
            "lower than random | paired t p | Wilcoxon p |"
        )
        lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name, row in sorted(cell["rankings"].items(), key=lambda r: r[1]["effect"]["mean"]):
            e = row["effect"]
            v = row.get("vs_reference")
            ref = (
                f"{v['mean']:+.3f} ({v['low']:+.3f}, {v['high']:+.3f}) | {v['a_lower']}/{v['n']} "
                f"| {v['t_p']:.2g} | {v['wilcoxon_p']:.2g}"
                if v
                else "(reference) | | |"
            )
            lines.append(
                f"| {name} | {e['n']} | {e['mean']:+.3f} ({e['low']:+.3f}, {e['high']:+.3f}) "
                f"| {ref} |"
            )
    lines.append("\n### The paper's claims (first minus second; negative favours the first)\n")
    lines.append(
        "Verdict: *shown* at paired t p < 0.01; *honest null* when the whole 95 % interval lies "
        "within +-10 % of the first ranking's effect beyond random removal (the bound column).\n"
    )
    lines.append(
        "| claim | m | targets | difference (95 % CI) | first lower | t p | Wilcoxon p | bound "
        "| verdict |"
    )
    lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for claim, per_f in claims.items():
        for d in sorted(per_f.values(), key=lambda d: d["m"]):
            lines.append(
                f"| {claim} | {d['m']} | {d['n']} | {d['mean']:+.3f} ({d['low']:+.3f}, "
                f"{d['high']:+.3f}) | {d['a_lower']}/{d['n']} | {d['t_p']:.2g} | "
                f"{d['wilcoxon_p']:.2g} | +-{d['null_bound']:.3f} | {d['verdict']} |"
            )
    if control:
        lines.append("\n### Multiplexing control (shared-model effect minus single-target)\n")
        lines.append("| ranking @ fraction | targets | difference (95 % CI) | t p |")
        lines.append("| --- | ---: | ---: | ---: |")
        for key, d in control.items():
            lines.append(
                f"| {key} | {d['n']} | {d['mean']:+.3f} ({d['low']:+.3f}, {d['high']:+.3f}) | "
                f"{d['t_p']:.2g} |"
            )
    return "\n".join(lines) + "\n"


def _verdicts(summary: dict, claims: dict) -> None:
    """Mark each claim cell shown, an honest null, or unresolved (the issue's criterion).

    Shown: the paired difference has p < 0.01. Honest null: otherwise, its whole 95 % interval
    lies within +-10 % of the first ranking's effect beyond random removal at the same m (any
    difference there is, is that small). Anything else is unresolved.
    """
    for (a, _), per_f in zip(CLAIMS.values(), claims.values(), strict=True):
        for f, d in per_f.items():
            beyond = summary["fractions"][f]["rankings"].get(a, {}).get("vs_reference")
            bound = 0.1 * abs(beyond["mean"]) if beyond else math.nan
            d["null_bound"] = bound
            if d["t_p"] < 0.01:
                d["verdict"] = "shown" if d["mean"] < 0 else "reversed"
            elif -bound <= d["low"] and d["high"] <= bound:
                d["verdict"] = "honest null"
            else:
                d["verdict"] = "unresolved"


def _made_by(source: Path) -> dict:
    """The command and commit that trained a source's models (kept through later reports)."""
    from simattr._io import read_json

    path = source / "summary.json"
    previous = read_json(path) if path.exists() else {}
    if previous.get("models_made_by"):
        return previous["models_made_by"][0] if len(previous["models_made_by"]) == 1 else {}
    if "--report" in previous.get("command", "--report"):
        return {}
    return {"source": source.resolve().name, **{k: previous[k] for k in ("command", "commit")}}


def report(out_dir: Path, started: float | None = None, sources: tuple[Path, ...] = ()) -> dict:
    """Summarise the models recorded in ``sources`` (default ``out_dir``) into ``out_dir``.

    Several sources pool disjoint target batches of the same protocol (each batch has its own
    baseline models, paired by target and seed), so a later batch that adds targets to some
    rankings tightens those rankings' intervals without retraining the first.
    """
    from simattr._io import read_jsonl
    from simattr.evaluation.margins import compare_designs, summarise

    sources = sources or (out_dir,)
    made_by = [_made_by(d) for d in sources]
    records = [r for d in sources for r in read_jsonl(d / "margins.jsonl")]
    control_records = [r for d in sources for r in read_jsonl(d / "control.jsonl")]
    pairs = [*CLAIMS.values(), *EXTRA_PAIRS]
    summary = summarise(records, reference="random", pairs=pairs)
    claims = {
        claim: {
            f: {**cell["pairs"][f"{a} - {b}"], "m": cell["m"]}
            for f, cell in summary["fractions"].items()
            if f"{a} - {b}" in cell["pairs"]
        }
        for claim, (a, b) in CLAIMS.items()
    }
    _verdicts(summary, claims)
    shared = [
        r
        for r in records
        if r["kind"] == "baseline"
        or (r["ranking"] in CONTROL_RANKINGS and r["fraction"] == CONTROL_FRACTION)
    ]
    control = compare_designs(shared, control_records) if control_records else {}
    models = [*records, *control_records]
    cpu_hours = sum(r["seconds"] for r in models) / 3600
    table = _table(summary, control, claims)
    (out_dir / "table.md").write_text(table, encoding="utf-8")
    payload = {
        "protocol": "margin change after removing the top m (seed-paired with full-pool models)",
        "recipe": "cpu-mini",
        "sources": [d.resolve().name for d in sources],
        "models_made_by": made_by,
        "models_trained": len(models),
        "training_cpu_hours": round(cpu_hours, 2),
        "summary": summary,
        "claims": claims,
        "multiplexing_control": control,
        "table": table,
    }
    if started is not None:
        payload["wall_seconds_this_run"] = round(time.perf_counter() - started, 1)
    write_result("margins-cpu", payload, out_dir / "summary.json")
    return payload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="cifar10")
    parser.add_argument("--out-dir", type=Path, default=RESULTS / "margins-cpu")
    parser.add_argument("--targets", type=int, default=100)
    parser.add_argument("--executor", default="local", choices=["local", "process", "ray"])
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads per model")
    parser.add_argument(
        "--rankings", default=",".join(RANKINGS), help="comma-separated subset of the rankings"
    )
    parser.add_argument(
        "--fractions",
        default=",".join(str(f) for f in FRACTIONS),
        help="comma-separated removal sizes as fractions of a class pool",
    )
    parser.add_argument(
        "--skip-first",
        type=int,
        default=0,
        help="leave out the targets a draw of this many would choose (a disjoint later batch)",
    )
    parser.add_argument("--no-control", action="store_true", help="skip the multiplexing control")
    parser.add_argument("--report", action="store_true", help="only rewrite the summary")
    parser.add_argument(
        "--sources",
        type=Path,
        nargs="+",
        default=(),
        help="with --report: pool the models of these result folders into --out-dir",
    )
    from _common import parse_args as parse_recorded  # --allow-dirty; commit, command

    args = parse_recorded(parser)
    out_dir: Path = args.out_dir
    if args.report:
        out_dir.mkdir(parents=True, exist_ok=True)
        print(report(out_dir, sources=tuple(args.sources))["table"])
        return
    names = tuple(args.rankings.split(","))
    unknown = sorted(set(names) - set(RANKINGS))
    if unknown:
        parser.error(f"unknown ranking(s) {', '.join(unknown)}; choose from {', '.join(RANKINGS)}")
    fractions = tuple(float(f) for f in args.fractions.split(","))

    from simattr.bench import PROFILES, BenchContext
    from simattr.evaluation.ensemble import train_ensemble
    from simattr.evaluation.margins import MarginSettings, choose_balanced_targets, run_margins
    from simattr.training.jobs import load_split

    started = time.perf_counter()
    profile = PROFILES["cpu"]
    bench_dir = RESULTS / "bench-cpu"
    out_dir.mkdir(parents=True, exist_ok=True)
    ensemble = train_ensemble(
        args.data,
        profile.recipe,
        n_models=profile.ensemble,
        cache_dir=bench_dir / "ensemble",
        threads=args.threads,
    )
    test = load_split(args.data, "test")
    eligible = np.flatnonzero(ensemble.correct)
    targets = choose_balanced_targets(eligible, test.labels, args.targets, seed=0)
    if args.skip_first:
        # the draw is prefix-stable (round by round over classes), so a larger draw contains the
        # smaller one and the difference is a disjoint, still balanced, batch
        first = choose_balanced_targets(eligible, test.labels, args.skip_first, seed=0)
        targets = np.setdiff1d(targets, first)
    ctx = BenchContext(args.data, profile, bench_dir, targets)
    rankings = make_rankings(ctx, out_dir / "rankings", names)
    common = dict(data=args.data, recipe=profile.recipe, models=1, seed=0, threads=args.threads)
    _log(f"{len(targets)} targets, {len(rankings)} rankings; training the multiplexed models")
    run_margins(
        MarginSettings(fractions=fractions, multiplex=True, **common),
        rankings,
        targets,
        out_dir / "margins.jsonl",
        executor=args.executor,
        workers=args.workers,
        log=_log,
    )
    report(out_dir, started)
    if args.no_control:
        return
    control_targets = choose_balanced_targets(targets, test.labels, CONTROL_TARGETS, seed=1)
    _log(f"multiplexing control: {len(control_targets)} single-target models per ranking")
    run_margins(
        MarginSettings(fractions=(CONTROL_FRACTION,), multiplex=False, **common),
        {name: rankings[name] for name in CONTROL_RANKINGS},
        control_targets,
        out_dir / "control.jsonl",
        executor=args.executor,
        workers=args.workers,
        log=_log,
    )
    print(report(out_dir, started)["table"])


if __name__ == "__main__":
    main()
