"""Margin effects: how far a target's margin falls when a ranking's top images are removed.

The support search (:mod:`simattr.evaluation.support`) asks a yes/no question per model (did the
prediction flip?) and needs 10-15 models per target before it says anything. A continuous,
paired outcome carries far more evidence per model (MEASURED.md: on cpu-mini, 60 models separate
the ESVM from cosine at p = 0.016 where 250 support models per method could not). So this module
measures, for each target, ranking and removal size m:

    effect = margin(trained without the ranking's top-m) - margin(trained on the full pool),

both with the same seeds, averaged over seeds. Margins are the correct-class logit minus the
log-sum-exp of the other logits (:meth:`~simattr.training.jobs.JobResult.margins`). The sizes
m are fixed fractions of the smallest class pool (by default 5, 10 and 20 %), the same for every
ranking, so rankings are compared target by target against the same control: random
same-class images (the ``random`` ranking) removed in the same number.

**Multiplexing.** A model trained for one target would spend a whole training run on one
number. Here one model carries the removals of a *group* of targets, at most one per class:
each target loses its own top-m from its own class, and the model's margins on all of them are
recorded. Every ranking sees the same groups, so each class loses exactly the same number of
images under every class-conditional ranking and class sizes cannot favour one ranking over
another. What a target's removal does to another class's target is the price; it is measured,
not assumed away: run the same rankings with ``multiplex=False`` (one target per model, same
seeds) on a sample of targets and compare with :func:`compare_designs`.

Everything is resumable: each trained model appends one record (its job key, its targets and
their margins) to the results JSON Lines file as it finishes; a restarted run skips the keys it
finds and trains only the rest.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from simattr._io import append_jsonl, read_jsonl
from simattr._progress import progress_bar
from simattr.errors import InvalidInputError
from simattr.ranking import Ranking
from simattr.store import check_identity
from simattr.training.executors import executor_for, run_jobs
from simattr.training.jobs import JobResult, TrainJob, load_split
from simattr.training.recipes import Recipe, get_recipe, recipe_pool

#: Removal sizes, as fractions of the smallest class pool (DESIGN.md section 2: keep m a modest
#: fraction of the class, or any ranking flips the target).
DEFAULT_FRACTIONS = (0.05, 0.10, 0.20)


@dataclass(frozen=True)
class MarginSettings:
    """What a margin-effect run trains; stored in every record and checked on resume.

    ``models`` seeds (``seed .. seed + models - 1``) are trained per cell and for the full-data
    baseline; ``multiplex`` puts up to one target per class into each model.
    """

    data: str
    recipe: str | Recipe
    fractions: tuple[float, ...] = DEFAULT_FRACTIONS
    models: int = 1
    seed: int = 0
    multiplex: bool = True
    device: str = "cpu"
    threads: int | None = None

    def __post_init__(self) -> None:
        fractions = tuple(float(f) for f in self.fractions)
        if not fractions or any(not (0 < f < 1) for f in fractions):
            raise InvalidInputError(f"fractions must lie in (0, 1), got {self.fractions!r}")
        if len(set(fractions)) != len(fractions):
            raise InvalidInputError(f"fractions repeat a value: {self.fractions!r}")
        object.__setattr__(self, "fractions", fractions)  # in the order given: trained first
        if not isinstance(self.models, int | np.integer) or self.models < 1:
            raise InvalidInputError(f"models must be an integer >= 1, got {self.models!r}")

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(range(self.seed, self.seed + int(self.models)))

    def summary(self) -> dict[str, Any]:
        """The settings a results file must keep from one run to the next."""
        return {
            "recipe": get_recipe(self.recipe).name,
            "fractions": list(self.fractions),
            "models": int(self.models),
            "seed": int(self.seed),
            "multiplex": bool(self.multiplex),
        }


def removal_sizes(fractions: Sequence[float], pool_labels: np.ndarray) -> dict[float, int]:
    """``m`` for each fraction: that share of the smallest class pool, at least 1."""
    smallest = int(np.bincount(pool_labels)[np.unique(pool_labels)].min())
    return {float(f): max(1, round(f * smallest)) for f in fractions}


def plan_groups(targets: np.ndarray, labels: np.ndarray, multiplex: bool) -> list[np.ndarray]:
    """Targets per model: one each, or (multiplexed) at most one per class.

    Group j holds the j-th target (in the order given) of every class that has one, so with
    10 targets per class and 10 classes there are 10 groups of 10 targets, one per class.
    """
    targets = np.asarray(targets, dtype=np.int64)
    if not multiplex:
        return [targets[i : i + 1] for i in range(len(targets))]
    per_class = {int(c): targets[labels == c] for c in np.unique(labels)}
    depth = max(len(v) for v in per_class.values())
    return [
        np.array([v[j] for v in per_class.values() if j < len(v)], dtype=np.int64)
        for j in range(depth)
    ]


def choose_balanced_targets(
    eligible: np.ndarray, labels: np.ndarray, n_targets: int, seed: int = 0
) -> np.ndarray:
    """``n_targets`` test rows drawn (seeded) from ``eligible``, as evenly over classes as possible.

    ``labels`` are the labels of the whole test split. Balanced classes make multiplexed groups
    full (one target per class), so that every model carries as many targets as there are classes.
    """
    eligible = np.asarray(eligible, dtype=np.int64)
    classes = np.unique(labels[eligible])
    rng = np.random.default_rng([seed, 2718])
    per = [rng.permutation(eligible[labels[eligible] == c]) for c in classes]
    chosen: list[int] = []
    depth = 0
    while len(chosen) < n_targets:
        row = [int(p[depth]) for p in per if depth < len(p)]
        if not row:
            raise InvalidInputError(
                f"only {len(chosen)} eligible targets (correctly classified by the full-data "
                f"ensemble); cannot draw {n_targets}"
            )
        chosen.extend(row[: n_targets - len(chosen)])
        depth += 1
    return np.sort(np.array(chosen, dtype=np.int64))


def _check_ranking(name: str, ranking: Ranking, targets: np.ndarray, pool: np.ndarray, m: int):
    missing = targets[~np.isin(targets, ranking.targets)]
    if missing.size:
        raise InvalidInputError(f"ranking {name!r} does not rank target {int(missing[0])}")
    if ranking.k < m:
        raise InvalidInputError(
            f"ranking {name!r} keeps the top {ranking.k} images per target but the largest "
            f"removal is m = {m}; rank with a larger --topk"
        )
    top = ranking.indices[:, :m]
    if (top < 0).any():
        raise InvalidInputError(f"ranking {name!r} has unranked (-1) entries within its top {m}")
    outside = ~np.isin(top, pool)
    if outside.any():
        raise InvalidInputError(
            f"ranking {name!r} ranks training row {int(top[outside][0])}, outside the "
            f"{len(pool)}-image pool of the recipe; rank with `simattr attribute --pool RECIPE`"
        )
    for row in range(len(top)):
        if len(np.unique(top[row])) != m:
            raise InvalidInputError(
                f"ranking {name!r} repeats a training row within the top {m} of target "
                f"{int(ranking.targets[row])}"
            )


@dataclass
class _Cell:
    """One model to train: a job and what its margins mean."""

    kind: str  # "baseline" or "removal"
    job: TrainJob
    header: dict[str, Any] = field(default_factory=dict)


def _cells(
    settings: MarginSettings,
    rankings: Mapping[str, Ranking],
    groups: list[np.ndarray],
    sizes: dict[float, int],
    all_targets: np.ndarray,
) -> list[_Cell]:
    """The baseline models (full pool, every target) and one model per group, ranking, m, seed."""
    cells = [
        _Cell(
            "baseline",
            TrainJob(
                data=settings.data,
                recipe=settings.recipe,
                seed=s,
                predict=tuple(int(t) for t in all_targets),
                device=settings.device,
                threads=settings.threads,
            ),
            {"ranking": None, "fraction": 0.0, "m": 0},
        )
        for s in settings.seeds
    ]
    rows = {name: {int(t): i for i, t in enumerate(r.targets)} for name, r in rankings.items()}
    # Group by group, every ranking in turn: a run stopped half way leaves whole groups measured
    # for every ranking, so what it has is still paired target by target.
    for fraction, m in sizes.items():
        for g, group in enumerate(groups):
            for name, ranking in rankings.items():
                removed = np.unique(
                    np.concatenate([ranking.indices[rows[name][int(t)], :m] for t in group])
                )
                for s in settings.seeds:
                    job = TrainJob(
                        data=settings.data,
                        recipe=settings.recipe,
                        seed=s,
                        remove=tuple(int(i) for i in removed),
                        predict=tuple(int(t) for t in group),
                        device=settings.device,
                        threads=settings.threads,
                    )
                    header = {"ranking": name, "fraction": fraction, "m": m, "group": g}
                    cells.append(_Cell("removal", job, header))
    return cells


def run_margins(
    settings: MarginSettings,
    rankings: Mapping[str, Ranking],
    targets: Sequence[int],
    out: str | os.PathLike[str],
    *,
    executor: str | Executor = "local",
    workers: int | None = None,
    address: str | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Train the baseline and removal models of every target and ranking; append to ``out``.

    Args:
        settings: recipe, fractions, seeds, multiplexing (:class:`MarginSettings`).
        rankings: name -> ranking over rows of the training split inside the recipe's pool
            (include a ``random`` ranking: it is the control every effect is read against).
        targets: test rows to measure (choose them correctly classified by the full-data
            ensemble, e.g. with :func:`choose_balanced_targets`).
        out: results JSON Lines file: one record per trained model; records already there are
            kept and their models not trained again.
        executor, workers, address: where models train (:func:`make_executor`).
        log: called with one line per finished model.

    Returns:
        Every record of ``out`` that belongs to this run (old and new).
    """
    if not rankings:
        raise InvalidInputError("give at least one ranking")
    out = Path(out)
    recipe = get_recipe(settings.recipe)
    train, test = load_split(settings.data, "train"), load_split(settings.data, "test")
    pool = recipe_pool(recipe, train)
    targets = np.asarray(targets, dtype=np.int64)
    if targets.size == 0 or len(np.unique(targets)) != len(targets):
        raise InvalidInputError("give at least one target, each test row once")
    if targets.min() < 0 or targets.max() >= len(test):
        raise InvalidInputError(f"targets must be rows of the {len(test)}-image test split")
    sizes = removal_sizes(settings.fractions, train.labels[pool])
    for name, ranking in rankings.items():
        _check_ranking(name, ranking, targets, pool, max(sizes.values()))
    labels = test.labels[targets]
    groups = plan_groups(targets, labels, settings.multiplex)
    cells = _cells(settings, rankings, groups, sizes, targets)
    summary = settings.summary()
    done: dict[str, dict[str, Any]] = {}
    for rec in read_jsonl(out):
        check_identity(
            rec.get("settings"),
            summary,
            where=out,
            holds="holds results of other settings",
            remedy="use another --out, or the same settings to resume",
        )
        done[rec["key"]] = rec
    keyed = {cell.job.key(): cell for cell in cells}
    todo = {key: cell.job for key, cell in keyed.items() if key not in done}
    with executor_for(executor, workers=workers, address=address) as (pool_exec, _):
        with progress_bar("margin models", len(todo), enabled=progress) as advance:

            def save(key: str, result: JobResult) -> None:
                cell = keyed[key]
                predict = np.asarray(cell.job.predict, dtype=np.int64)
                record = {
                    "key": key,
                    "kind": cell.kind,
                    **cell.header,
                    "seed": cell.job.seed,
                    "targets": predict.tolist(),
                    "labels": test.labels[predict].tolist(),
                    "margins": [round(float(v), 6) for v in result.margins(test.labels[predict])],
                    "n_removed": len(cell.job.remove),
                    "n_train": result.n_train,
                    "seconds": round(result.seconds, 3),
                    "settings": summary,
                }
                append_jsonl(out, record)
                done[key] = record
                advance(1)
                if log is not None:
                    h = cell.header
                    what = (
                        "full pool"
                        if cell.kind == "baseline"
                        else f"{h['ranking']} m={h['m']} group {h['group']}"
                    )
                    log(
                        f"margin model {len(done)}/{len(keyed)}: {what}, seed {cell.job.seed}, "
                        f"{result.seconds:.0f} s"
                    )

            run_jobs(pool_exec, todo, save)
    return [done[key] for key in keyed]


# -- reading the results ---------------------------------------------------------------------


def effects(records: Sequence[dict[str, Any]]) -> dict[tuple[str, float], dict[int, float]]:
    """``(ranking, fraction) -> {target: effect}``: seed-paired margin change, mean over seeds.

    A target's effect uses only the seeds for which both its removal model and the baseline
    exist, so a run stopped half way gives fewer targets, never unpaired ones.
    """
    base: dict[tuple[int, int], float] = {}
    for rec in records:
        if rec["kind"] == "baseline":
            for t, v in zip(rec["targets"], rec["margins"], strict=True):
                base[(int(t), int(rec["seed"]))] = float(v)
    diffs: dict[tuple[str, float], dict[int, list[float]]] = {}
    for rec in records:
        if rec["kind"] != "removal":
            continue
        cell = diffs.setdefault((str(rec["ranking"]), float(rec["fraction"])), {})
        for t, v in zip(rec["targets"], rec["margins"], strict=True):
            b = base.get((int(t), int(rec["seed"])))
            if b is not None:
                cell.setdefault(int(t), []).append(float(v) - b)
    return {key: {t: float(np.mean(v)) for t, v in cell.items()} for key, cell in diffs.items()}


def mean_ci(values: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """Mean, its standard error and a t-interval; ``n`` the number of values."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    if n < 2:
        return {"n": n, "mean": mean, "se": math.nan, "low": math.nan, "high": math.nan}
    se = float(x.std(ddof=1) / math.sqrt(n))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * se
    return {"n": n, "mean": mean, "se": se, "low": mean - half, "high": mean + half}


def paired(a: Mapping[int, float], b: Mapping[int, float]) -> dict[str, Any]:
    """``a - b`` target by target on the targets both have: interval, t-test, Wilcoxon, wins.

    Negative means ``a`` lowers the margin more (a stronger attribution) than ``b``.
    """
    common = sorted(set(a) & set(b))
    d = np.array([a[t] - b[t] for t in common], dtype=np.float64)
    out: dict[str, Any] = {
        **mean_ci(d),
        "a_lower": int((d < 0).sum()),
        "b_lower": int((d > 0).sum()),
    }
    # Degenerate samples (fewer than two, all zero, or all equal) have no defined test.
    # (differences equal up to rounding count as equal: the t statistic would be noise)
    scale = float(np.abs(d).max()) if len(d) else 0.0
    varied = len(d) >= 2 and float(np.ptp(d)) > 1e-9 * max(1.0, scale)
    nonzero = len(d) >= 2 and np.any(d != 0)
    out["t_p"] = float(stats.ttest_1samp(d, 0.0).pvalue) if varied else math.nan
    out["wilcoxon_p"] = float(stats.wilcoxon(d).pvalue) if nonzero else math.nan
    return out


def summarise(
    records: Sequence[dict[str, Any]],
    reference: str = "random",
    pairs: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """Per ranking and fraction: the mean effect with its interval, and paired comparisons.

    Every ranking is paired with ``reference`` (when present); ``pairs`` adds comparisons such
    as ``("esvm", "l2-raw")``. Effects are margin changes (negative: the removal hurt the
    target's prediction).
    """
    eff = effects(records)
    fractions = sorted({f for _, f in eff})
    names = sorted({r for r, _ in eff})
    m_of = {float(r["fraction"]): int(r["m"]) for r in records if r["kind"] == "removal"}
    table: dict[str, Any] = {"reference": reference, "fractions": {}}
    for f in fractions:
        rows: dict[str, Any] = {}
        for name in names:
            cell = eff.get((name, f))
            if not cell:
                continue
            row: dict[str, Any] = {"effect": mean_ci(list(cell.values()))}
            ref = eff.get((reference, f))
            if ref and name != reference:
                row["vs_reference"] = paired(cell, ref)
            rows[name] = row
        comparisons = {
            f"{a} - {b}": paired(eff[(a, f)], eff[(b, f)])
            for a, b in pairs
            if (a, f) in eff and (b, f) in eff
        }
        table["fractions"][str(f)] = {"m": m_of.get(f), "rankings": rows, "pairs": comparisons}
    return table


def compare_designs(
    multiplexed: Sequence[dict[str, Any]],
    single: Sequence[dict[str, Any]],
    reference: str | None = "random",
) -> dict[str, Any]:
    """The multiplexing control: effects from shared models minus one-target models, paired.

    Run on the same targets, rankings, fractions and seeds. Two readings per ranking and
    fraction: ``"<ranking> @ <fraction>"``, the shift of the effect itself (a single-target
    model shrinks only the target's class, so its effect also holds a class-size change that
    multiplexing removes), and ``"<ranking> - <reference> @ <fraction>"``, the shift of the
    effect *relative to the reference ranking*, which is what the comparisons read: an
    interval around 0 there says that sharing a model does not bias them.
    """
    a, b = effects(multiplexed), effects(single)
    out: dict[str, Any] = {}
    for key in sorted(set(a) & set(b)):
        out[f"{key[0]} @ {key[1]}"] = paired(a[key], b[key])
    if reference is not None:
        for name, f in sorted(set(a) & set(b)):
            ref = (reference, f)
            if name == reference or ref not in a or ref not in b:
                continue
            common = set(a[(name, f)]) & set(b[(name, f)]) & set(a[ref]) & set(b[ref])
            rel_a = {t: a[(name, f)][t] - a[ref][t] for t in common}
            rel_b = {t: b[(name, f)][t] - b[ref][t] for t in common}
            out[f"{name} - {reference} @ {f}"] = paired(rel_a, rel_b)
    return out


__all__ = [
    "DEFAULT_FRACTIONS",
    "MarginSettings",
    "choose_balanced_targets",
    "compare_designs",
    "effects",
    "mean_ci",
    "paired",
    "plan_groups",
    "removal_sizes",
    "run_margins",
    "summarise",
]
