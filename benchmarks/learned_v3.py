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
from _common import RESULTS

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


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=("lds", "trak", "ssl", "fit", "m1", "table"))
    ap.add_argument("--work", type=Path, required=True, help="large intermediate arrays")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--random", action="store_true", help="m1: the random arm too")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    stages = {"lds": stage_lds, "trak": stage_trak}
    stages[args.stage](args.work)


if __name__ == "__main__":
    main()
