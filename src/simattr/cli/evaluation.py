"""CLI commands of the evaluation: ``support``, ``support-report``, ``margins``,
``margins-report``, ``lds``, ``lds-score``, ``bench``, ``recipes``.

Registered on the shared app (:mod:`simattr.cli._common`) when :mod:`simattr.cli` is imported;
like the rest of the CLI they only parse options and call the Python API
(:mod:`simattr.evaluation`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from simattr._io import check_not_input, check_writable
from simattr.cli._common import (
    AddressOption,
    DataOption,
    DeviceOption,
    ExecutorKind,
    ExecutorOption,
    Mode,
    RecipeOption,
    ThreadsOption,
    WorkersOption,
    app,
    console,
    err_console,
    friendly_errors,
    parse_targets,
    requires_files,
)
from simattr.errors import InvalidInputError


def _load_rankings(specs: list[str]) -> dict:
    """``--ranking`` options (``NAME=PATH`` or ``PATH``) as name -> loaded ranking."""
    from simattr.attribution import load_ranking

    named = dict(_ranking_arg(r) for r in specs)
    if len(named) != len(specs):
        raise InvalidInputError("two --ranking options have the same name; use NAME=PATH")
    return {name: load_ranking(path) for name, path in named.items()}


def _ranking_arg(spec: str) -> tuple[str, Path]:
    """``NAME=PATH`` or ``PATH`` (named after the file)."""
    if "=" in spec:
        name, _, path = spec.partition("=")
        if not name:
            raise InvalidInputError(f"--ranking {spec!r}: empty name before '='")
        return name, Path(path)
    return Path(spec).stem, Path(spec)


@app.command()
@friendly_errors
def support(
    data: DataOption,
    ranking: Annotated[
        list[str],
        typer.Option(help="Ranking .npz, as PATH or NAME=PATH; repeat to compare rankings."),
    ],
    out: Annotated[Path, typer.Option(help="Results JSON Lines file (appended; resumable).")],
    mode: Annotated[Mode, typer.Option(help="Remove the top-m images, or relabel them.")] = (
        Mode.remove
    ),
    recipe: RecipeOption = ("cpu-mini"),
    models: Annotated[int, typer.Option(help="M: models per tested m (flip = half of them).")] = 5,
    budget: Annotated[int, typer.Option(help="B: bisection steps after m = k.")] = 7,
    k: Annotated[int, typer.Option("--k", help="Largest m tested (not found beyond it).")] = 1280,
    targets: Annotated[
        str | None, typer.Option(help="Comma-separated test rows (default: the rankings' targets).")
    ] = None,
    n_targets: Annotated[
        int | None,
        typer.Option(help="Draw this many targets the ensemble classifies correctly (seeded)."),
    ] = None,
    ensemble: Annotated[int, typer.Option(help="Models of the full-data ensemble.")] = 10,
    ensemble_dir: Annotated[
        Path | None, typer.Option(help="Cache of the ensemble (default: next to --out).")
    ] = None,
    executor: ExecutorOption = ExecutorKind.local,
    workers: WorkersOption = None,
    address: AddressOption = None,
    threads: ThreadsOption = None,
    seed: Annotated[int, typer.Option(help="First seed of the models at each m.")] = 0,
    device: DeviceOption = "cpu",
) -> None:
    """Removal or mislabel support of targets along rankings, by retraining (resumable)."""
    from simattr.evaluation import SupportSettings, run_support
    from simattr.training.jobs import load_split

    if out.suffix != ".jsonl":
        raise InvalidInputError(f"--out must end with .jsonl, got {out}")
    rankings = _load_rankings(ranking)
    chosen = None
    if targets is not None:
        chosen = parse_targets(targets, None, len(load_split(data, "test")))
    settings = SupportSettings(
        data=data,
        recipe=recipe,
        mode=mode.value,
        models=models,
        budget=budget,
        k=k,
        seed=seed,
        device=device,
        threads=threads,
    )
    records = run_support(
        settings,
        rankings,
        out,
        targets=chosen,
        n_targets=n_targets,
        ensemble_models=ensemble,
        ensemble_dir=ensemble_dir,
        executor=executor.value,
        workers=workers,
        address=address,
        progress=sys.stderr.isatty(),
        log=None if sys.stderr.isatty() else lambda line: err_console.print(line, highlight=False),
    )
    found = sum(1 for r in records if r["support"] is not None)
    console.print(
        f"{len(records)} new search(es), {found} with support <= {k}; "
        f"{sum(r['models_trained'] for r in records)} models trained; results in {out}"
    )


@app.command("support-report")
@friendly_errors
@requires_files(results="results file: no such file {path}")
def support_report_command(
    results: Annotated[list[Path], typer.Argument(help="Results .jsonl files of `support`.")],
    out: Annotated[Path, typer.Option(help="Folder for support_curve.png and support_table.md.")],
    reference: Annotated[
        str | None,
        typer.Option(help="Pair every ranking with this one, target by target (sign test)."),
    ] = None,
) -> None:
    """Curve of the fraction of targets with support <= m, and a Markdown table."""
    from simattr.report.support import support_report

    png, md = support_report(results, out, reference=reference)
    console.print(md.read_text(encoding="utf-8"), markup=False)
    console.print(f"wrote {png} and {md}")


def _floats(spec: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in spec.split(",") if v.strip())
    except ValueError:
        raise InvalidInputError(
            f"{option} must be comma-separated numbers, e.g. 0.05,0.1,0.2; got {spec!r}"
        ) from None


@app.command()
@friendly_errors
def margins(
    data: DataOption,
    ranking: Annotated[
        list[str],
        typer.Option(help="Ranking .npz, as PATH or NAME=PATH; include a random one."),
    ],
    out: Annotated[Path, typer.Option(help="Results JSON Lines file (appended; resumable).")],
    recipe: RecipeOption = ("cpu-mini"),
    fractions: Annotated[
        str, typer.Option(help="Removal sizes as fractions of the smallest class pool.")
    ] = "0.05,0.1,0.2",
    models: Annotated[int, typer.Option(help="Seeds per removal (and for the baseline).")] = 1,
    single_target: Annotated[
        bool,
        typer.Option("--single-target", help="One target per model (the control of multiplexing)."),
    ] = False,
    targets: Annotated[
        str | None, typer.Option(help="Comma-separated test rows (default: the rankings' targets).")
    ] = None,
    n_targets: Annotated[
        int | None,
        typer.Option(help="Draw this many correctly classified targets, balanced over classes."),
    ] = None,
    ensemble: Annotated[int, typer.Option(help="Models of the full-data ensemble.")] = 5,
    ensemble_dir: Annotated[
        Path | None, typer.Option(help="Cache of the ensemble (default: next to --out).")
    ] = None,
    executor: ExecutorOption = ExecutorKind.local,
    workers: WorkersOption = None,
    address: AddressOption = None,
    threads: ThreadsOption = None,
    seed: Annotated[int, typer.Option(help="First seed of the models.")] = 0,
    device: DeviceOption = "cpu",
) -> None:
    """Margin change of each target after removing each ranking's top m (resumable)."""

    from simattr.evaluation.ensemble import train_ensemble
    from simattr.evaluation.margins import MarginSettings, choose_balanced_targets, run_margins
    from simattr.evaluation.support import common_targets
    from simattr.training.jobs import load_split

    if out.suffix != ".jsonl":
        raise InvalidInputError(f"--out must end with .jsonl, got {out}")
    if targets is not None and n_targets is not None:
        raise InvalidInputError("give either --targets or --n-targets, not both")
    rankings = _load_rankings(ranking)
    settings = MarginSettings(
        data=data,
        recipe=recipe,
        fractions=_floats(fractions, "--fractions"),
        models=models,
        seed=seed,
        multiplex=not single_target,
        device=device,
        threads=threads,
    )
    test = load_split(data, "test")
    if targets is not None:
        chosen = parse_targets(targets, None, len(test))
    else:
        chosen = common_targets(rankings)
        if n_targets is not None:
            ens = train_ensemble(
                data,
                recipe,
                n_models=ensemble,
                cache_dir=ensemble_dir or out.parent / f"ensemble-{recipe}",
                device=device,
                threads=threads,
            )
            eligible = chosen[ens.correct[chosen]]
            chosen = choose_balanced_targets(eligible, test.labels, n_targets, seed=seed)
    records = run_margins(
        settings,
        rankings,
        chosen,
        out,
        executor=executor.value,
        workers=workers,
        address=address,
        progress=sys.stderr.isatty(),
        log=None if sys.stderr.isatty() else lambda line: err_console.print(line, highlight=False),
    )
    console.print(
        f"{len(records)} model(s) for {len(chosen)} target(s) and {len(rankings)} ranking(s); "
        f"results in {out}"
    )


@app.command("margins-report")
@friendly_errors
@requires_files("control", results="results file: no such file {path}")
def margins_report_command(
    results: Annotated[list[Path], typer.Argument(help="Results .jsonl files of `margins`.")],
    out: Annotated[Path, typer.Option(help="Folder for the curve, the table and the JSON.")],
    reference: Annotated[
        str, typer.Option(help="The control every ranking is paired with, target by target.")
    ] = "random",
    pair: Annotated[
        list[str] | None, typer.Option(help="Also compare A:B target by target; repeatable.")
    ] = None,
    control: Annotated[
        Path | None, typer.Option(help="Results of `margins --single-target` on the same seeds.")
    ] = None,
) -> None:
    """Brittleness curve and table of margin effects, each ranking paired with the control."""
    from simattr.report.margins import margin_report

    pairs = []
    for spec in pair or []:
        a, sep, b = spec.partition(":")
        if not sep or not a or not b:
            raise InvalidInputError(f"--pair must be NAME:NAME, got {spec!r}")
        pairs.append((a, b))
    png, md, js = margin_report(results, out, reference=reference, pairs=pairs, control=control)
    console.print(md.read_text(encoding="utf-8"), markup=False)
    console.print(f"wrote {png}, {md} and {js}")


@app.command()
@friendly_errors
def lds(
    data: DataOption,
    out: Annotated[Path, typer.Option(help="LDS folder (masks, margins; resumable).")],
    subsets: Annotated[int, typer.Option(help="S: subset models (half the pool each).")] = 50,
    recipe: RecipeOption = ("cpu-mini"),
    targets: Annotated[
        str | None, typer.Option(help="Comma-separated test rows (default: the whole test split).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the subsets and models.")] = 0,
    executor: ExecutorOption = ExecutorKind.local,
    workers: WorkersOption = None,
    address: AddressOption = None,
    threads: ThreadsOption = None,
    device: DeviceOption = "cpu",
    replicates: Annotated[
        int,
        typer.Option(help="Second-seed models on the first N subsets: the noise ceiling (>= 20)."),
    ] = 0,
) -> None:
    """Train the LDS subset models of a recipe and store their target margins (resumable)."""
    from simattr.evaluation.lds import run_lds
    from simattr.training.jobs import load_split
    from simattr.validation import check_positive_int, check_threads

    # options checked before anything is created: a refused run leaves no started folder
    if workers is not None:
        check_positive_int(workers, "--workers")
    check_threads(threads, "--threads")
    chosen = None
    if targets is not None:
        chosen = parse_targets(targets, None, len(load_split(data, "test")))
    result = run_lds(
        data,
        recipe,
        out,
        subsets=subsets,
        targets=chosen,
        seed=seed,
        executor=executor.value,
        workers=workers,
        address=address,
        device=device,
        threads=threads,
        progress=sys.stderr.isatty(),
        replicates=replicates,
    )
    console.print(
        f"{int(result.trained.sum())}/{subsets} subset models trained"
        f" ({int(result.replicated.sum())} with a second seed); margins of "
        f"{len(result.targets)} targets in {out}"
    )


@app.command("lds-score")
@friendly_errors
def lds_score_command(
    lds_dir: Annotated[Path, typer.Argument(help="LDS folder written by `simattr lds`.")],
    rankings: Annotated[list[Path], typer.Argument(help="Ranking .npz files to score.")],
    out: Annotated[
        Path | None, typer.Option(help="Also write per-target LDS of every ranking as JSON.")
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(help="The LDS run's dataset: adds LDS beyond the class prior (its labels)."),
    ] = None,
) -> None:
    """Per-target and mean LDS of rankings, with the noise ceiling and, with --data, LDS beyond
    the class-count prior (a training image without a score counts 0); errors resample subset
    models. With --out, also lds_per_target.csv beside it."""
    from simattr._io import provenance, write_json
    from simattr.evaluation.lds import lds_score_report

    if out is not None:
        check_writable(out)
        check_not_input({"--out": out}, {str(p): p for p in rankings})
    text, payload, table = lds_score_report(lds_dir, rankings, data=data)
    if out is not None:  # written before printing: a closed pipe cannot stop them
        write_json(out, provenance(kind="lds-score", **payload))
        table.write_csv(out.parent / "lds_per_target.csv")
    console.print(text, markup=False)
    if out is not None:
        console.print(f"wrote {out} and {out.parent / 'lds_per_target.csv'}")


@app.command()
@friendly_errors
def bench(
    profile: Annotated[str, typer.Option(help="cpu, gpu or tiny (sizes of the run).")] = "cpu",
    data: DataOption = "cifar10",
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default benchmarks/results/bench-PROFILE).")
    ] = None,
    methods: Annotated[
        str | None, typer.Option(help="Comma-separated subset of the methods (default: all).")
    ] = None,
    stages: Annotated[
        str, typer.Option(help="Comma-separated stages, in order: remove, lds, mislabel.")
    ] = "remove,lds,mislabel",
    executor: ExecutorOption = ExecutorKind.local,
    workers: WorkersOption = None,
    threads: ThreadsOption = None,
    seed: Annotated[int, typer.Option(help="Seed of targets, subsets and models.")] = 0,
    allow_dirty: Annotated[
        bool, typer.Option(help="Run from a checkout with uncommitted changes (recorded).")
    ] = False,
) -> None:
    """Every method on the same targets: support curves, LDS and cost (resumable)."""
    from simattr.bench import run_bench
    from simattr.bench.record import cli_command

    folder = out or Path("benchmarks") / "results" / f"bench-{profile}"
    summary = run_bench(
        data,
        profile,
        folder,
        methods=None if methods is None else [m.strip() for m in methods.split(",") if m.strip()],
        stages=[s.strip() for s in stages.split(",") if s.strip()],
        executor=executor.value,
        workers=workers,
        threads=threads,
        seed=seed,
        progress=sys.stderr.isatty(),
        log=lambda msg: err_console.print(f"[bold]bench:[/] {msg}", highlight=False),
        command=cli_command("bench"),
        allow_dirty=allow_dirty,
    )
    console.print(summary["table"], markup=False)
    console.print(f"results in {folder}")


@app.command()
@friendly_errors
def recipes() -> None:
    """List the training recipes of the support search and LDS."""
    from simattr.evaluation import RECIPES

    table = Table("name", "arch", "epochs", "batch", "pool", "description")
    for r in RECIPES.values():
        pool = "full split" if r.pool.per_class is None else f"{r.pool.per_class}/class"
        table.add_row(r.name, r.arch, str(r.epochs), str(r.batch_size), pool, r.description)
    console.print(table)


__all__ = ["bench", "lds", "lds_score_command", "recipes", "support", "support_report_command"]
