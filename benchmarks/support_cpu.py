"""Removal (or mislabel) support on the CPU: esvm vs l2 vs random same-class rankings.

Trains the ``cpu-mini`` recipe's full-data ensemble, draws targets it classifies correctly, ranks
the recipe's pool for them by three methods on the features of a backbone (default: the shipped
one), and runs the support search for each. It takes hours on a 2-core machine, so everything is
resumable: run the same command again and it continues where it stopped. Results (JSON Lines,
the per-model journal, the ensemble cache, the rankings) go to ``--out-dir``; a summary
(``support_cpu.json``), the curve and the table are rewritten at the end of every run.

    python benchmarks/support_cpu.py                  # 10 targets, M = 3, B = 5
    python benchmarks/support_cpu.py --targets 2 --models 1 --budget 1 --k 16 --recipe tiny
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="cifar10")
    parser.add_argument("--recipe", default="cpu-mini")
    parser.add_argument("--backbone", default="default")
    parser.add_argument("--mode", default="remove", choices=["remove", "mislabel"])
    parser.add_argument("--targets", type=int, default=10)
    parser.add_argument("--models", type=int, default=3)
    parser.add_argument("--budget", type=int, default=5)
    parser.add_argument("--k", type=int, default=None, help="default: half a class of the pool")
    parser.add_argument("--ensemble", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads per model")
    parser.add_argument("--executor", default="local", choices=["local", "process", "ray"])
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--out-dir", type=Path, default=RESULTS / "support_cpu")
    args = parser.parse_args()

    from simattr.attribution import Attributor, Ranking, load_ranking, save_ranking
    from simattr.attribution.baselines import random_ranking
    from simattr.evaluation import SupportSettings, get_recipe, recipe_pool, run_support
    from simattr.evaluation.ensemble import train_ensemble
    from simattr.evaluation.jobs import load_split
    from simattr.features import extract_features
    from simattr.models import load_backbone
    from simattr.report.support import markdown_table, plot_curves, summarize

    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    recipe = get_recipe(args.recipe)
    train, test = load_split(args.data, "train"), load_split(args.data, "test")
    pool = recipe_pool(recipe, train)
    per_class = int(np.bincount(train.labels[pool]).min())
    k = args.k or min(1280, per_class // 2)
    start = time.perf_counter()

    from simattr.evaluation.executors import make_executor

    executor, _ = make_executor(args.executor, workers=args.workers)
    ensemble = train_ensemble(
        args.data,
        recipe,
        n_models=args.ensemble,
        cache_dir=out_dir / f"ensemble-{recipe.name}",
        executor=executor,
        threads=args.threads,
        progress=True,
    )
    executor.shutdown()
    rng = np.random.default_rng([args.seed, 4242])
    targets = np.sort(rng.choice(np.flatnonzero(ensemble.correct), args.targets, replace=False))

    rankings: dict[str, Ranking] = {}
    for method in ("esvm", "l2", "random"):
        path = out_dir / f"ranking-{method}.npz"
        if not path.exists():
            if method == "random":
                ranking = random_ranking(
                    train.labels, test.labels, targets, k, candidates=pool, seed=args.seed
                )
            else:
                net = load_backbone(args.backbone)
                x_pool = extract_features(net, train.subset(pool), progress=False)
                x_tgt = extract_features(net, test.get_images(targets), progress=False)
                att = Attributor(method).fit(x_pool, train.labels[pool])
                idx, scores = att.topk(x_tgt, test.labels[targets], k)
                ranking = Ranking(
                    targets,
                    pool[idx],
                    scores,
                    {"method": method, "pool": recipe.name, "backbone": args.backbone},
                )
            save_ranking(path, ranking)
        rankings[method] = load_ranking(path)

    settings = SupportSettings(
        data=args.data,
        recipe=recipe,
        mode=args.mode,
        models=args.models,
        budget=args.budget,
        k=k,
        seed=args.seed,
        threads=args.threads,
    )
    results = out_dir / f"{args.mode}.jsonl"
    run_support(
        settings,
        rankings,
        results,
        targets=targets,
        ensemble_models=args.ensemble,
        ensemble_dir=out_dir / f"ensemble-{recipe.name}",
        executor=args.executor,
        workers=args.workers,
        progress=True,
    )
    from simattr._io import read_jsonl

    summaries = summarize(read_jsonl(results))
    plot_curves(out_dir / f"{args.mode}_curve.png", summaries)
    table = markdown_table(summaries)
    (out_dir / f"{args.mode}_table.md").write_text(table, encoding="utf-8")
    print(table)
    write_result(
        f"support_cpu_{args.mode}",
        {
            "recipe": recipe.to_dict(),
            "backbone": args.backbone,
            "targets": targets.tolist(),
            "ensemble_models": args.ensemble,
            "ensemble_accuracy": ensemble.accuracy,
            "settings": settings.summary(),
            "wall_seconds_this_run": round(time.perf_counter() - start, 1),
            "summary": [
                {
                    "ranking": s.ranking,
                    "targets": s.targets,
                    "found": s.found,
                    "median_support": None if np.isinf(s.median) else s.median,
                    "fraction_at_most": {
                        str(m): float(f)
                        for m, f in zip(
                            [k // 8, k // 4, k // 2, k],
                            s.fraction_at_most(np.array([k // 8, k // 4, k // 2, k])),
                            strict=True,
                        )
                    },
                    "models_trained": s.models_trained,
                    "training_seconds": round(s.seconds, 1),
                }
                for s in summaries
            ],
            "table": table,
        },
    )


if __name__ == "__main__":
    main()
