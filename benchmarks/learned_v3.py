"""`learned` against TRAK at an equal number of trained models, on a fresh LDS block (issue 26).

Follows ``benchmarks/plans/2026-12-07-learned-v3.md`` (committed before any figure): a new LDS
block (120 half-pool `cpu-mini` subset models, seed 3, margins of every test row), held-out
models 0-39 x 1,000 held-out targets, fit models 40-119 x 3,000 fit targets; `learned` chosen
and calibrated by cross-validation over its own subset models; TRAK-n from one store of 32
full-pool checkpoints; a margin batch (M1) of single-target models. Stages, each resumable,
all writing into ``--work`` (the large arrays) until ``table`` writes ``--out``:

    python benchmarks/learned_v3.py lds      --work W   # the subset models (about 30 CPU-min)
    python benchmarks/learned_v3.py trak     --work W   # 32 checkpoints, TRAK-n (about 60 CPU-min)
    python benchmarks/learned_v3.py ssl      --work W   # SSL features, the bench's baselines
    python benchmarks/learned_v3.py fit      --work W   # candidates, selection, calibration
    python benchmarks/learned_v3.py m1       --work W [--random]   # margin batch M1
    python benchmarks/learned_v3.py table    --work W   # results/learned-cpu-v3/
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, current_record, parse_args, write_result  # noqa: F401 (table stage)

DATA, RECIPE = "cifar10", "cpu-mini"
OUT = RESULTS / "learned-cpu-v3"
PLAN = "benchmarks/plans/2026-12-07-learned-v3.md"
SUBSETS, SEED, REPLICATES = 120, 3, 20
HELD_MODELS = np.arange(0, 40)
FIT_MODELS = np.arange(40, SUBSETS)
N_HELD, N_FIT = 1000, 3000
TRAK_MODELS, TRAK_SIZES, FUSION_TRAK = 32, (1, 2, 4, 8, 16, 32), 16
BASELINES = ("esvm", "esvm-all-classes", "cosine", "l2-raw", "random", "class-prior")


def split_targets() -> dict[str, np.ndarray]:
    """T_H and T_F (plan: rows neither LDS targets of bench-cpu nor margin-batch targets)."""
    used = set(np.load(RESULTS / "bench-cpu" / "lds" / "targets.npy").tolist())
    for batch in ("margins-cpu", "margins-cpu-b"):
        for line in (RESULTS / batch / "margins.jsonl").read_text().splitlines():
            if line.strip():
                used |= {int(t) for t in json.loads(line)["targets"]}
    eligible = np.array(sorted(set(range(10_000)) - used), dtype=np.int64)
    perm = np.random.default_rng([26, 5]).permutation(eligible)
    return {"held": np.sort(perm[:N_HELD]), "fit": np.sort(perm[N_HELD : N_HELD + N_FIT])}


def stage_lds(work: Path) -> None:
    from simattr.evaluation.lds import run_lds

    run_lds(
        DATA,
        RECIPE,
        work / "lds-v3",
        subsets=SUBSETS,
        seed=SEED,
        replicates=REPLICATES,
        executor="process",
        workers=2,
        threads=1,
        progress=True,
    )


def stage_trak(work: Path) -> None:
    """TRAK-n for T_H (every n of the curve) and TRAK-16 for T_F (the fusion signal)."""
    import torch

    from simattr.baselines.trak import trak_scores_by_models

    torch.set_num_threads(1)
    tg = split_targets()
    start = time.process_time()
    held = trak_scores_by_models(
        DATA,
        RECIPE,
        tg["held"],
        checkpoints=TRAK_MODELS,
        work_dir=work / "trak",
        sizes=TRAK_SIZES,
        progress=True,
    )
    held_cpu = time.process_time() - start
    np.savez(
        work / "trak-held.npz",
        rows=tg["held"],
        pool=held[TRAK_MODELS].pool,
        **{f"n{n}": held[n].scores for n in TRAK_SIZES},
    )
    start = time.process_time()
    fit = trak_scores_by_models(
        DATA,
        RECIPE,
        tg["fit"],
        checkpoints=TRAK_MODELS,
        work_dir=work / "trak",
        sizes=[FUSION_TRAK],
        progress=True,
    )
    fit_cpu = time.process_time() - start
    np.savez(work / "trak-fit.npz", rows=tg["fit"], **{f"n{FUSION_TRAK}": fit[FUSION_TRAK].scores})
    (work / "trak-cost.json").write_text(
        json.dumps({"held_cpu_s": held_cpu, "fit_cpu_s": fit_cpu, "checkpoints": TRAK_MODELS})
    )
    print(f"TRAK: held {held_cpu:.0f} CPU-s (incl. checkpoints, featurizing), fit {fit_cpu:.0f}")


def stage_record(work: Path, stage: str, **fields) -> None:
    """Which commit and command produced a stage's arrays (the table cites them)."""
    (work / f"stage-{stage}.json").write_text(json.dumps({**current_record(), **fields}, indent=1))


def stage_ssl(work: Path) -> None:
    """SSL features (the `cpu` bench profile's pinned backbone) of the pool, T_H and T_F, and
    the bench's baseline rankings of T_H."""
    import torch

    from simattr.bench import PROFILES, BenchContext
    from simattr.bench.run import _rankings

    torch.set_num_threads(1)
    tg = split_targets()
    rows = np.concatenate([tg["held"], tg["fit"]])
    ctx = BenchContext(DATA, PROFILES["cpu"], work / "bench", tg["held"])
    spec = ctx.backbone_spec("profile")
    start = time.process_time()
    x_pool, x_held = ctx.features(spec)
    x_fit = BenchContext(DATA, PROFILES["cpu"], work / "bench", tg["fit"]).features(spec)[1]
    feat_cpu = time.process_time() - start
    np.savez(
        work / "ssl.npz",
        pool=x_pool,
        pool_rows=ctx.pool,
        rows=rows,
        targets=np.vstack([x_held, x_fit]),
    )
    start = time.process_time()
    _rankings(ctx, list(BASELINES), lambda m: print(m, flush=True), "rankings-v3")
    stage_record(work, "ssl", features_cpu_s=feat_cpu, baselines_cpu_s=time.process_time() - start)


def _inputs(work: Path) -> dict:
    """Everything the fit and table stages read: LDS block, labels, features, TRAK scores."""
    from simattr.evaluation.lds import load_lds
    from simattr.training.jobs import load_split

    lds = load_lds(work / "lds-v3")
    train, test = load_split(DATA, "train"), load_split(DATA, "test")
    tg = split_targets()
    ssl = np.load(work / "ssl.npz")
    assert np.array_equal(ssl["pool_rows"], lds.pool)
    assert np.array_equal(lds.targets, np.arange(len(test)))  # margins of every test row
    return {
        "lds": lds,
        "train": train,
        "test": test,
        "tg": tg,
        "pool": ssl["pool"],
        "pool_labels": train.labels[lds.pool],
        "z_held": ssl["targets"][:N_HELD],
        "z_fit": ssl["targets"][N_HELD:],
    }


#: (name, fit models used, TRAK checkpoints fused): the claim's two candidates at 32 models,
#: then the descriptive curve (plan: "Descriptive curve").
CANDIDATES = (
    ("ssl-32", 32, 0),
    ("fusion-32", 16, FUSION_TRAK),
    ("ssl-8", 8, 0),
    ("ssl-16", 16, 0),
    ("ssl-64", 64, 0),
    ("ssl-80", 80, 0),
    ("fusion-96", 80, FUSION_TRAK),
)
RIDGES = (1.0, 10.0, 100.0)


def stage_fit(work: Path) -> None:
    """Each candidate x ridge calibrated by 4-fold CV over its own subset models (T_F only);
    the ridge with the best out-of-fold R^2 kept; held-out scores of T_H saved (float32)."""
    from simattr.attribution.learned import LearnedAttribution

    d = _inputs(work)
    lds, tg = d["lds"], d["tg"]
    fl, hl = d["test"].labels[tg["fit"]], d["test"].labels[tg["held"]]
    trak_fit = np.load(work / "trak-fit.npz")
    trak_held = np.load(work / "trak-held.npz")
    assert np.array_equal(trak_fit["rows"], tg["fit"]) and np.array_equal(
        trak_held["pool"], lds.pool
    )
    (work / "fits").mkdir(exist_ok=True)
    summary = {}
    for name, n_fit, n_trak in CANDIDATES:
        models = FIT_MODELS[:n_fit]
        signals = ("cosine", "trak") if n_trak else ("cosine",)
        given_fit = {"trak": trak_fit[f"n{n_trak}"]} if n_trak else None
        given_held = {"trak": trak_held[f"n{n_trak}"]} if n_trak else None
        per_ridge = {}
        for ridge in RIDGES:
            start = time.process_time()
            model = LearnedAttribution(form="bilinear", dim=16, ridge=ridge, signals=signals)
            model.calibrate(
                d["pool"],
                d["pool_labels"],
                lds.masks[models],
                lds.margins[np.ix_(models, tg["fit"])],
                d["z_fit"],
                fl,
                signals=given_fit,
                folds=4,
                seed=26,
            )
            cpu = time.process_time() - start
            info = dict(model.calibration_info)
            per_ridge[ridge] = {**info, "cpu_s": cpu}
            print(name, ridge, json.dumps(info), f"{cpu:.0f} CPU-s", flush=True)
            if max(per_ridge.values(), key=lambda v: v["r2"]) is per_ridge[ridge]:
                best_model = model
        best = max(per_ridge, key=lambda r: per_ridge[r]["r2"])
        start = time.process_time()
        held = best_model.scores(d["pool"], d["pool_labels"], d["z_held"], hl, signals=given_held)
        score_cpu = (time.process_time() - start) / N_HELD
        best_model.info.update(plan=PLAN, candidate=name, fit_models=n_fit, trak_models=n_trak)
        best_model.save(work / "fits" / f"{name}.safetensors")
        np.save(work / "fits" / f"{name}-held.npy", held.astype(np.float32))
        summary[name] = {
            "fit_models": n_fit,
            "trak_models": n_trak,
            "trained_models": n_fit + n_trak,
            "ridge": best,
            "per_ridge": {str(k): v for k, v in per_ridge.items()},
            "score_cpu_s_per_target_given_inputs": score_cpu,
        }
    stage_record(work, "fit", candidates=summary)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=("lds", "trak", "ssl", "fit", "m1", "table"))
    ap.add_argument("--work", type=Path, required=True, help="large intermediate arrays")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--random", action="store_true", help="m1: the random arm too")
    return parse_args(ap, argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    stages = {"lds": stage_lds, "trak": stage_trak, "ssl": stage_ssl, "fit": stage_fit}
    stages[args.stage](args.work)


if __name__ == "__main__":
    main()
