"""The bench's run driver: ensemble, targets, one ranking per method, then the stages.

:func:`run_bench` trains (or reads back) the full-data ensemble, draws the targets, ranks them
with every method of :data:`~simattr.bench.methods.METHODS` and runs the stages in order, writing
the report (:func:`simattr.report.bench.write_bench_report`) after each, so an interrupted run
shows what it finished and the same call continues it. The report records the commit and the
command (:mod:`simattr.bench.record`).
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from simattr._io import check_writable, lock
from simattr.attribution import Ranking, load_ranking, save_ranking
from simattr.bench.methods import METHODS, BenchContext
from simattr.bench.profiles import LDS_RANKINGS, PROFILES, STAGES, Profile
from simattr.bench.record import relative_path, source_commit
from simattr.errors import InvalidInputError
from simattr.evaluation import SupportSettings, run_support
from simattr.evaluation.ensemble import Ensemble, train_ensemble
from simattr.evaluation.margins import choose_balanced_targets
from simattr.report.bench import write_bench_report
from simattr.training.executors import executor_for
from simattr.validation import check_threads


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
    command: str | None = None,
    allow_dirty: bool = False,
) -> dict[str, Any]:
    """Run (or continue) the benchmark; return the summary also written to ``bench.json``.

    ``command`` is recorded as the command that made the results (the CLI passes its command
    line; default: this call written as Python). The commit of simattr's checkout is recorded
    too, and a checkout with uncommitted changes is refused unless ``allow_dirty``
    (:func:`simattr.bench.record.source_commit`), so a committed result names code that
    exists; an installed package records the commit "unknown" and its version.
    """
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
    check_writable(out, "`out_dir`", folder=True)
    check_threads(threads, "`threads`")
    if command is None:
        call = (
            f"from simattr.bench import run_bench; run_bench({data!r}, {prof.name!r}, "
            f"{relative_path(out)!r}, methods={methods!r}, stages={list(stages)!r}, seed={seed})"
        )
        command = shlex.join(["python", "-c", call])
    record = {"commit": source_commit(allow_dirty=allow_dirty), "command": command}
    with lock(out, "`out_dir`"), executor_for(executor, workers=workers) as (pool_exec, slots):
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
            write_bench_report(out, prof, rankings, targets, data=data, record=record)
    return write_bench_report(out, prof, rankings, targets, data=data, record=record)


__all__ = ["choose_bench_targets", "choose_lds_targets", "run_bench"]
