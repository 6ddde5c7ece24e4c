"""Removal support on the CPU: esvm vs l2 vs random same-class rankings on ``cpu-mini``.

The part of ``simattr bench --profile cpu`` that judges the rankings by removal support alone:
the cpu-mini recipe's full-data ensemble (5 models), 10 targets it classifies correctly, the
three rankings of the recipe's pool (self-supervised features of the shipped backbone), and the
support search with M = 3 models, budget B = 5, k = 500 (half a class of the pool). It takes
hours on a 2-core machine and resumes: run it again and it continues where it stopped. It writes
into the bench folder (``benchmarks/results/bench-cpu``), so the full benchmark reuses every model,
and summarises into ``benchmarks/results/support_cpu.json``.

    python benchmarks/support_cpu.py [--executor process --workers 2 --threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, current_record, write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="cifar10")
    parser.add_argument("--profile", default="cpu", help="bench profile (tiny: a smoke test)")
    parser.add_argument("--out-dir", type=Path, default=None)
    parser.add_argument("--executor", default="local", choices=["local", "process", "ray"])
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads per model")
    from _common import parse_args as parse_recorded  # --allow-dirty; commit, command

    args = parse_recorded(parser)

    from simattr.bench import run_bench

    out_dir = args.out_dir or RESULTS / f"bench-{args.profile}"
    start = time.perf_counter()
    summary = run_bench(
        args.data,
        args.profile,
        out_dir,
        methods=["esvm", "l2", "random"],
        stages=["remove"],
        executor=args.executor,
        workers=args.workers,
        threads=args.threads,
        progress=True,
        command=current_record()["command"],
        allow_dirty=args.allow_dirty,
    )
    table = (out_dir / "remove_table.md").read_text(encoding="utf-8")
    print(table)
    write_result(
        "support_cpu" if args.profile == "cpu" else f"support_{args.profile}",
        {
            "profile": summary["profile"],
            "recipe": summary["recipe"],
            "targets": summary["targets"],
            "results": str(out_dir / "remove.jsonl"),
            "curve": str(out_dir / "remove_curve.png"),
            "wall_seconds_this_run": round(time.perf_counter() - start, 1),
            "methods": {m: summary["methods"][m] for m in ("esvm", "l2", "random")},
            "table": table,
        },
    )


if __name__ == "__main__":
    main()
