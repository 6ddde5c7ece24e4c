"""CLI commands of the evaluation: ``support``, ``support-report``, ``margins``,
``margins-report``, ``lds``, ``lds-score``, ``learn``, ``bench``, ``recipes``.

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

from simattr.cli._common import (
    AddressOption,
    DataOption,
    DeviceOption,
    EnsembleDirOption,
    EnsembleOption,
    ExecutorKind,
    ExecutorOption,
    Mode,
    NTargetsOption,
    OptionalDataOption,
    OptionalOutOption,
    OutOption,
    RankingOption,
    RecipeOption,
    ReferenceOption,
    RequiredReferenceOption,
    SeedOption,
    TargetsOption,
    TestFeaturesOption,
    ThreadsOption,
    TrainFeaturesOption,
    WorkersOption,
    app,
    check_not_input,
    check_writable,
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
    ranking: RankingOption,
    out: OutOption,
    mode: Annotated[Mode, typer.Option(help="Remove the top-m images, or relabel them.")] = (
        Mode.remove
    ),
    recipe: RecipeOption = ("cpu-mini"),
    models: Annotated[int, typer.Option(help="M: models per tested m (flip = half of them).")] = 5,
    budget: Annotated[int, typer.Option(help="B: bisection steps after m = k.")] = 7,
    max_m: Annotated[int, typer.Option(help="Largest m tested (not found beyond it).")] = 1280,
    targets: TargetsOption = None,
    n_targets: NTargetsOption = None,
    ensemble: EnsembleOption = 10,
    ensemble_dir: EnsembleDirOption = None,
    executor: ExecutorOption = ExecutorKind.local,
    workers: WorkersOption = None,
    address: AddressOption = None,
    threads: ThreadsOption = None,
    seed: SeedOption = 0,
    device: DeviceOption = "cpu",
) -> None:
    """Removal or mislabel support of targets along rankings, by retraining (resumable).

    --out: the results JSON Lines file (appended; a rerun resumes). The targets: --targets, or
    --n-targets drawn among those the full-data ensemble classifies correctly, or every target
    all the rankings rank. --seed is the first seed of the models at each m.
    """
    from simattr.evaluation import SupportSettings, run_support

    settings = SupportSettings(data=data, recipe=recipe, mode=mode.value, models=models,
                               budget=budget, k=max_m, seed=seed, device=device,
                               threads=threads)  # fmt: skip
    records = run_support(
        settings, _load_rankings(ranking), out, targets=_rows(targets, data),
        n_targets=n_targets, ensemble_models=ensemble, ensemble_dir=ensemble_dir,
        executor=executor.value, workers=workers, address=address, **_progress(),
    )  # fmt: skip
    found = sum(1 for r in records if r["support"] is not None)
    console.print(
        f"{len(records)} new search(es), {found} with support <= {max_m}; "
        f"{sum(r['models_trained'] for r in records)} models trained; results in {out}"
    )


def _rows(targets: str | None, data: str):
    """The test rows of --targets (``None`` when not given)."""
    from simattr.training.jobs import load_split

    return None if targets is None else parse_targets(targets, None, len(load_split(data, "test")))


def _progress() -> dict:
    """A progress bar on a terminal, plain lines in a log."""
    tty = sys.stderr.isatty()
    return {
        "progress": tty,
        "log": None if tty else lambda line: err_console.print(line, highlight=False),
    }


@app.command("support-report")
@friendly_errors
@requires_files(results="results file: no such file {path}")
def support_report_command(
    results: Annotated[list[Path], typer.Argument(help="Results .jsonl files of `support`.")],
    out: OutOption,
    reference: ReferenceOption = None,
) -> None:
    """Curve of the fraction of targets with support <= m, and a Markdown table.

    --out: the folder for support_curve.png and support_table.md. With --reference, every
    other ranking is also paired with it target by target (wins, ties, a sign test).
    """
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
    ranking: RankingOption,
    out: OutOption,
    recipe: RecipeOption = ("cpu-mini"),
    fractions: Annotated[
        str, typer.Option(help="Removal sizes as fractions of the smallest class pool.")
    ] = "0.05,0.1,0.2",
    seeds: Annotated[int, typer.Option(help="Seeds per removal (and for the baseline).")] = 1,
    single_target: Annotated[
        bool,
        typer.Option("--single-target", help="One target per model (the control of multiplexing)."),
    ] = False,
    targets: TargetsOption = None,
    n_targets: NTargetsOption = None,
    ensemble: EnsembleOption = 10,
    ensemble_dir: EnsembleDirOption = None,
    executor: ExecutorOption = ExecutorKind.local,
    workers: WorkersOption = None,
    address: AddressOption = None,
    threads: ThreadsOption = None,
    seed: SeedOption = 0,
    device: DeviceOption = "cpu",
) -> None:
    """Margin change of each target after removing each ranking's top m (resumable).

    --out: the results JSON Lines file (appended; a rerun resumes). Give a random ranking among
    --ranking: the control. The targets: --targets, or --n-targets drawn balanced over classes
    among those the full-data ensemble classifies correctly, or every target all the rankings
    rank. --seed is the first seed of the models.
    """
    from simattr.evaluation.margins import MarginSettings, run_margins
    from simattr.evaluation.targets import margin_targets

    if out.suffix != ".jsonl":
        raise InvalidInputError(f"--out must end with .jsonl, got {out}")
    rankings = _load_rankings(ranking)
    settings = MarginSettings(data=data, recipe=recipe, fractions=_floats(fractions, "--fractions"),
                              models=seeds, seed=seed, multiplex=not single_target, device=device,
                              threads=threads)  # fmt: skip
    chosen = margin_targets(
        data, recipe, rankings, targets=_rows(targets, data), n_targets=n_targets,
        ensemble_models=ensemble, ensemble_dir=ensemble_dir or out.parent / f"ensemble-{recipe}",
        seed=seed, device=device, threads=threads,
    )  # fmt: skip
    records = run_margins(settings, rankings, chosen, out, executor=executor.value,
                          workers=workers, address=address, **_progress())  # fmt: skip
    console.print(
        f"{len(records)} model(s) for {len(chosen)} target(s) and {len(rankings)} ranking(s); "
        f"results in {out}"
    )


@app.command("margins-report")
@friendly_errors
@requires_files("control", results="results file: no such file {path}")
def margins_report_command(
    results: Annotated[list[Path], typer.Argument(help="Results .jsonl files of `margins`.")],
    out: OutOption,
    reference: RequiredReferenceOption,
    pair: Annotated[
        list[str] | None, typer.Option(help="Also compare A:B target by target; repeatable.")
    ] = None,
    control: Annotated[
        Path | None, typer.Option(help="Results of `margins --single-target` on the same seeds.")
    ] = None,
) -> None:
    """Brittleness curve and table of margin effects, each ranking paired with the control.

    --out: the folder for the curve, the table and the JSON. --reference names the control
    ranking (the random one of `margins`) every ranking is paired with, target by target.
    """
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
    out: OutOption,
    subsets: Annotated[int, typer.Option(help="S: subset models (half the pool each).")] = 50,
    recipe: RecipeOption = ("cpu-mini"),
    targets: TargetsOption = None,
    seed: SeedOption = 0,
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
    """Train the LDS subset models of a recipe and store their target margins (resumable).

    --out: the LDS folder (masks, margins; a rerun resumes). Without --targets, every test row.
    """
    from simattr.evaluation.lds import run_lds
    from simattr.validation import check_positive_int, check_threads

    # options checked before anything is created: a refused run leaves no started folder
    if workers is not None:
        check_positive_int(workers, "--workers")
    check_threads(threads, "--threads")
    result = run_lds(data, recipe, out, subsets=subsets, targets=_rows(targets, data), seed=seed,
                     executor=executor.value, workers=workers, address=address, device=device,
                     threads=threads, progress=sys.stderr.isatty(),
                     replicates=replicates)  # fmt: skip
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
    out: OptionalOutOption = None,
    data: OptionalDataOption = None,
) -> None:
    """Per-target and mean LDS of rankings, with the noise ceiling and, with --data (the LDS
    run's dataset, for its labels), LDS beyond the class-count prior (a training image without
    a score counts 0); errors resample subset models. With --out, also the per-target LDS of
    every ranking as JSON there, and lds_per_target.csv beside it."""
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
@requires_files("train_features", "test_features")
def learn(
    lds_dir: Annotated[Path, typer.Argument(help="LDS folder written by `simattr lds`.")],
    train_features: TrainFeaturesOption,
    test_features: TestFeaturesOption,
    out: OutOption,
    data: OptionalDataOption = None,
    ridge: Annotated[
        float | None,
        typer.Option(help="Ridge penalty (relative); default: chosen by the folds from 1 to 1e6."),
    ] = None,
    folds: Annotated[int, typer.Option(help="K: calibration folds over the subset models.")] = 4,
    seed: SeedOption = 0,
) -> None:
    """Fit a calibrated `learned` attribution on the trained models of an LDS folder.

    --out: the model (.safetensors, with a .json sidecar) for `simattr attribute --method
    learned --learned-model`. Its scores are in logits, scaled on subset models held out by
    K-fold cross-validation. Labels come from --data, else from the features' recorded dataset.
    """
    from simattr.evaluation.learn import fit_learned

    model = fit_learned(lds_dir, train_features, test_features, out, ridge=ridge, folds=folds,
                        seed=seed, data=data)  # fmt: skip
    cal = model.calibration_info
    console.print(
        f"{cal['subsets']} subset models, {cal['targets']} targets, {cal['folds']} folds, "
        f"ridge {model.ridge:g}: calibration slope {cal['slope']:.3f}, out-of-fold R^2 "
        f"{cal['r2']:.3f}; wrote {out}",
        soft_wrap=True,
    )


@app.command()
@friendly_errors
def bench(
    data: DataOption,
    profile: Annotated[str, typer.Option(help="cpu, gpu or tiny (sizes of the run).")] = "cpu",
    out: OptionalOutOption = None,
    methods: Annotated[
        str | None, typer.Option(help="Comma-separated subset of the methods (default: all).")
    ] = None,
    stages: Annotated[
        str, typer.Option(help="Comma-separated stages, in order: remove, lds, mislabel.")
    ] = "remove,lds,mislabel",
    executor: ExecutorOption = ExecutorKind.local,
    workers: WorkersOption = None,
    threads: ThreadsOption = None,
    seed: SeedOption = 0,
    allow_dirty: Annotated[
        bool, typer.Option(help="Run from a checkout with uncommitted changes (recorded).")
    ] = False,
) -> None:
    """Every method on the same targets: support curves, LDS and cost (resumable).

    --out: the results folder (default benchmarks/results/bench-PROFILE).
    """
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


__all__ = [
    "bench",
    "lds",
    "lds_score_command",
    "learn",
    "recipes",
    "support",
    "support_report_command",
]
