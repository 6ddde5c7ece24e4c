"""Removal and mislabel support: how many top-ranked images must go before a prediction flips.

This is how simattr proves an attribution right or wrong (DESIGN.md section 2). For a target test
image correctly classified by the full-data ensemble, and a ranking of training images:

* ``remove`` mode trains ``models`` models (seeds ``seed .. seed + models - 1``) without the top-m
  images; ``mislabel`` mode keeps them but relabels them to the target's *flip class*;
* the target *flips* at m when at least half of the models misclassify it;
* the search tests m = k first (not flipped: support "not found", ``null``), then bisects on
  [0, k] for ``budget`` steps and keeps the smallest m that flipped.

Costs are what matter, so a step stops training seeds as soon as its majority is settled (with
3 models, two that agree settle it), and independent searches run concurrently on any executor
(:mod:`simattr.training.executors`).

Nothing is lost: each finished search appends one record to the results JSON Lines file, and
each trained model appends its prediction to a journal next to it (``RESULTS.models.jsonl``),
keyed by a hash of its training set and seed. A run killed at any moment (even ``kill -9``) and
started again skips finished searches and replays unfinished ones from the journal, so it loses
at most the models that were in flight.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from concurrent.futures import Executor, Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simattr._io import append_jsonl, check_not_input, check_writable, lock, read_jsonl
from simattr._progress import progress_bar
from simattr.errors import InvalidInputError
from simattr.evaluation.ensemble import Ensemble, train_ensemble
from simattr.ranking import Ranking
from simattr.store import check_identity
from simattr.training.executors import executor_for
from simattr.training.jobs import JobResult, TrainJob, load_split, run_job
from simattr.training.recipes import Recipe, get_recipe, recipe_pool
from simattr.training.trainer import check_trainable
from simattr.validation import check_device, check_threads

MODES = ("remove", "mislabel")

#: A search is a generator: it yields the jobs it needs next and receives their results.
Search = Generator[list[TrainJob], list[JobResult], dict[str, Any]]


@dataclass(frozen=True)
class SupportSettings:
    """What one support search does; stored in every record it writes.

    ``models`` is M (models per tested m), ``budget`` is B (bisection steps), ``k`` is the
    largest m tested. ``threads`` fixes torch threads per model (results are identical across
    executors only for the same value).
    """

    data: str
    recipe: str | Recipe
    mode: str = "remove"
    models: int = 5
    budget: int = 7
    k: int = 1280
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InvalidInputError(f"mode must be one of {list(MODES)}, got {self.mode!r}")
        for name, low in (("models", 1), ("budget", 0), ("k", 1)):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value < low:
                raise InvalidInputError(f"{name} must be an integer >= {low}, got {value!r}")

    @property
    def majority(self) -> int:
        """Models that must misclassify the target for it to count as flipped (half, rounded up)."""
        return math.ceil(self.models / 2)

    def summary(self) -> dict[str, Any]:
        """The settings a results file must keep the same from one run to the next."""
        return {
            "recipe": get_recipe(self.recipe).name,
            "mode": self.mode,
            "models": int(self.models),
            "budget": int(self.budget),
            "k": int(self.k),
            "seed": int(self.seed),
        }


def _step(
    settings: SupportSettings, target: int, label: int, flip: int, order: np.ndarray, m: int
) -> Generator[list[TrainJob], list[JobResult], dict[str, Any]]:
    """Train models at ``m`` until the majority is settled; return the step's record."""
    top = tuple(int(i) for i in order[:m])
    flipped = kept = votes = 0
    seeds: list[int] = []
    seconds = 0.0
    while flipped < settings.majority and kept < settings.models - settings.majority + 1:
        need = min(settings.majority - flipped, settings.models - settings.majority + 1 - kept)
        batch = [
            TrainJob(
                data=settings.data,
                recipe=settings.recipe,
                seed=settings.seed + len(seeds) + j,
                remove=top if settings.mode == "remove" else (),
                relabel=top if settings.mode == "mislabel" else (),
                relabel_to=flip if settings.mode == "mislabel" else -1,
                predict=(target,),
                device=settings.device,
                threads=settings.threads,
            )
            for j in range(need)
        ]
        results = yield batch
        for job, result in zip(batch, results, strict=True):
            predicted = int(np.argmax(result.probs[0]))
            flipped += predicted != label
            kept += predicted == label
            votes += predicted == flip
            seeds.append(job.seed)
            seconds += result.seconds
    return {
        "m": m,
        "models": len(seeds),
        "misclassified_by": flipped,
        "fraction_flipped": flipped / len(seeds),
        "flip_class_votes": votes,
        "flipped": flipped >= settings.majority,
        "seeds": seeds,
        "seconds": round(seconds, 3),
    }


def search_support(
    settings: SupportSettings, target: int, label: int, flip: int, order: np.ndarray
) -> Search:
    """The search of one target along one ranking's ``order``; returns its record's findings."""
    steps: list[dict[str, Any]] = []
    first = yield from _step(settings, target, label, flip, order, settings.k)
    steps.append(first)
    support: int | None = None
    if first["flipped"]:
        lo, hi = 0, settings.k
        for _ in range(settings.budget):
            if hi - lo <= 1:
                break
            mid = (lo + hi) // 2
            step = yield from _step(settings, target, label, flip, order, mid)
            steps.append(step)
            lo, hi = (lo, mid) if step["flipped"] else (mid, hi)
        support = hi
    return {
        "support": support,
        "found": support is not None,
        "steps": steps,
        "models_trained": sum(s["models"] for s in steps),
        "seconds": round(sum(s["seconds"] for s in steps), 3),
    }


def describe_record(record: dict[str, Any]) -> str:
    """One line about a finished search, for logs."""
    found = "not found" if record["support"] is None else f"support {record['support']}"
    return (
        f"target {record['target']} / {record['ranking']} / {record['mode']}: {found} "
        f"({record['models_trained']} models, {record.get('wall_seconds', 0):.0f} s)"
    )


class _Journal:
    """Every trained model's prediction, keyed by :meth:`TrainJob.key`; appended as they finish."""

    def __init__(self, path: Path, data_fingerprint: str | None = None) -> None:
        self.path = path
        self.data_fingerprint = data_fingerprint
        self.results: dict[str, JobResult] = {}
        for rec in read_jsonl(path):
            fp = rec.get("data_fingerprint")
            if data_fingerprint is not None and fp is not None and fp != data_fingerprint:
                raise InvalidInputError(
                    f"{path} journals models trained on another dataset (training fingerprint "
                    f"{fp}, now {data_fingerprint}); use another `out`"
                )
            self.results[rec["key"]] = JobResult(
                logits=np.asarray(rec["logits"], dtype=np.float32),
                seconds=float(rec["seconds"]),
                n_train=int(rec["n_train"]),
            )

    def add(self, key: str, job: TrainJob, result: JobResult) -> None:
        self.results[key] = result
        append_jsonl(
            self.path,
            {
                "key": key,
                "seed": job.seed,
                "predict": list(job.predict),
                "n_removed": len(job.remove),
                "n_relabelled": len(job.relabel),
                "logits": result.logits.tolist(),
                "seconds": round(result.seconds, 3),
                "n_train": result.n_train,
                "data_fingerprint": self.data_fingerprint,
            },
        )


def journal_path(results_path: str | os.PathLike[str]) -> Path:
    """Where the per-model journal of a results file lives."""
    p = Path(results_path)
    return p.with_name(p.name.removesuffix(".jsonl") + ".models.jsonl")


@dataclass
class _Active:
    search: Search
    header: dict[str, Any]
    batch: list[TrainJob]
    results: list[JobResult | None]
    started: float


def _run_searches(
    searches: list[tuple[dict[str, Any], Search]],
    executor: Executor,
    slots: int,
    journal: _Journal,
    out: Path,
    progress: bool,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Drive the searches concurrently, keeping about ``slots`` jobs in flight."""
    queue = list(reversed(searches))
    active: dict[int, _Active] = {}
    futures: dict[Future, tuple[int, int, str]] = {}
    written: list[dict[str, Any]] = []
    next_id = 0

    def feed(sid: int, value: list[JobResult] | None, advance: Any) -> None:
        """Send ``value`` to a search and submit what it asks for next (journal hits are free)."""
        state = active[sid]
        while True:
            try:
                batch = state.search.send(value)  # type: ignore[arg-type]
            except StopIteration as stop:
                record = {**state.header, **stop.value}
                record["wall_seconds"] = round(time.perf_counter() - state.started, 3)
                append_jsonl(out, record)
                written.append(record)
                if log is not None:
                    log(describe_record(record))
                del active[sid]
                advance(1)
                return
            state.batch, state.results = batch, [None] * len(batch)
            for i, job in enumerate(batch):
                key = job.key()
                if key in journal.results:
                    state.results[i] = journal.results[key]
                else:
                    futures[executor.submit(run_job, job)] = (sid, i, key)
            if any(r is None for r in state.results):
                return
            value = state.results  # type: ignore[assignment]

    with progress_bar("support search", len(searches), enabled=progress) as advance:
        while queue or active:
            while queue and len(futures) < slots:
                header, search = queue.pop()
                active[next_id] = _Active(search, header, [], [], time.perf_counter())
                next_id += 1
                feed(next_id - 1, None, advance)
            if not futures:
                if queue:
                    continue
                # every search waiting on a model must have one in flight
                assert not active, "support search stalled with no model in flight"
                break
            done, _ = wait(list(futures), return_when="FIRST_COMPLETED")
            for fut in done:
                sid, i, key = futures.pop(fut)
                state = active[sid]
                result = fut.result()
                journal.add(key, state.batch[i], result)
                state.results[i] = result
                if all(r is not None for r in state.results):
                    feed(sid, state.results, advance)  # type: ignore[arg-type]
    return written


def _check_ranking(name: str, ranking: Ranking, pool: np.ndarray, recipe: str, k: int) -> None:
    if ranking.k < k:
        raise InvalidInputError(
            f"ranking {name!r} keeps the top {ranking.k} images per target but the search "
            f"tests m up to `SupportSettings.k={k}`; rank with `k={k}` or lower "
            "`SupportSettings.k`"
        )
    top = np.unique(ranking.indices[:, :k])
    if top.size and top[0] < 0:
        raise InvalidInputError(f"ranking {name!r} has unranked (-1) entries within its top {k}")
    pos = np.minimum(np.searchsorted(pool, top), len(pool) - 1)
    outside = top[pool[pos] != top]
    if outside.size:
        raise InvalidInputError(
            f"ranking {name!r} ranks training row {int(outside[0])} (and {outside.size - 1} "
            f"more), outside the {len(pool)}-image pool of recipe {recipe!r}; make a matching "
            f"ranking with `pool={recipe}`"
        )


def _existing(
    out: Path,
    summary: dict[str, Any],
    rankings: Mapping[str, Ranking] | None = None,
    data_fingerprint: str | None = None,
) -> set[tuple[int, str, str]]:
    """What ``out`` already holds, refusing records of other settings, of another data set,
    or of another ranking under the same name (the digest each record keeps of its ranking)."""
    done = set()
    for rec in read_jsonl(out):
        check_identity(
            rec.get("settings"),
            summary,
            where=out,
            holds="holds results of other settings",
            remedy="use another `out`, or the same settings to resume",
        )
        name = str(rec.get("ranking"))
        recorded = rec.get("ranking_digest")
        if rankings is not None and name in rankings and recorded is not None:
            ranking = rankings[name]
            if recorded != ranking.digest:
                raise InvalidInputError(
                    f"{out} holds results of another ranking named {name!r} (ranking digest "
                    f"{recorded}, now {ranking.digest}: {ranking.source or 'given in memory'}); "
                    "resuming would keep those results for this ranking. Use another `out`, "
                    "or the ranking file those results were made with"
                )
        fp = rec.get("data_fingerprint")
        if data_fingerprint is not None and fp is not None and fp != data_fingerprint:
            raise InvalidInputError(
                f"{out} holds results of another dataset (training fingerprint {fp}, now "
                f"{data_fingerprint}); use another `out`"
            )
        done.add((int(rec["target"]), name, str(rec["mode"])))
    return done


def common_targets(rankings: Mapping[str, Ranking]) -> np.ndarray:
    """The targets every ranking ranks, in the first ranking's order."""
    common: np.ndarray | None = None
    for ranking in rankings.values():
        common = ranking.targets if common is None else common[np.isin(common, ranking.targets)]
    if common is None:
        raise InvalidInputError("give at least one ranking")
    return common


def choose_targets(
    rankings: Mapping[str, Ranking],
    ensemble: Ensemble,
    targets: Sequence[int] | None = None,
    n_targets: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Targets to search: ``targets`` as given, else those every ranking covers.

    With ``n_targets``, draw that many (seeded) among them that the ensemble gets right.
    """
    common = common_targets(rankings)
    if targets is not None:
        chosen = np.asarray(targets, dtype=np.int64)
        missing = chosen[~np.isin(chosen, common)]
        if missing.size:
            raise InvalidInputError(
                f"target {int(missing[0])} is not ranked by every ranking given"
            )
        return chosen
    if n_targets is None:
        return common
    eligible = common[ensemble.correct[common]]
    if len(eligible) < n_targets:
        raise InvalidInputError(
            f"only {len(eligible)} of the ranked targets are classified correctly by the "
            f"ensemble; cannot draw {n_targets}"
        )
    rng = np.random.default_rng([seed, 1013])
    return np.sort(rng.choice(eligible, n_targets, replace=False))


def run_support(
    settings: SupportSettings,
    rankings: Mapping[str, Ranking],
    out: str | os.PathLike[str],
    *,
    targets: Sequence[int] | None = None,
    n_targets: int | None = None,
    ensemble_models: int = 10,
    ensemble_dir: str | os.PathLike[str] | None = None,
    executor: str | Executor = "local",
    workers: int | None = None,
    address: str | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Search the support of targets along each ranking; append records to ``out``; resume.

    Args:
        settings: mode, recipe, M, B, k, seeds (:class:`SupportSettings`).
        rankings: name -> ranking (names go into the records).
        out: results JSON Lines file; records already there are kept and not searched again.
        targets, n_targets: see :func:`choose_targets`.
        ensemble_models, ensemble_dir: the full-data ensemble (cached; default
            ``<out folder>/ensemble-<recipe>``).
        executor: ``"local"``, ``"process"``, ``"ray"`` or an Executor; ``workers`` jobs at once;
            ``address`` of a Ray cluster.
        log: called with one line per finished search (long runs in the background).

    Returns:
        The records written by this call (finished earlier ones are in ``out``).
    """
    if not rankings:
        raise InvalidInputError("give at least one ranking")
    out = Path(out)
    if out.suffix != ".jsonl":
        raise InvalidInputError(f"`out` must end with .jsonl, got {out}")
    check_device(settings.device)
    check_threads(settings.threads, "`threads`")
    check_writable(out)
    check_not_input(
        {"`out`": out, "`ensemble_dir`": ensemble_dir},
        {f"ranking {name!r}": r.source for name, r in rankings.items()},
    )
    recipe = get_recipe(settings.recipe)
    train = load_split(settings.data, "train")
    test = load_split(settings.data, "test")
    pool = recipe_pool(recipe, train)
    fingerprints = {"train": train.fingerprint, "test": test.fingerprint}
    for name, ranking in rankings.items():
        _check_ranking(name, ranking, pool, recipe.name, settings.k)
        ranking.check(n_test=len(test), n_train=len(train), pool=pool, fingerprints=fingerprints)
    check_trainable(recipe, train)  # before anything is written
    summary = settings.summary()
    with lock(out):
        done = _existing(out, summary, rankings, train.fingerprint)
        return _search_all(
            settings=settings,
            rankings=rankings,
            out=out,
            recipe=recipe,
            test=test,
            done=done,
            summary=summary,
            targets=targets,
            n_targets=n_targets,
            ensemble_models=ensemble_models,
            ensemble_dir=ensemble_dir,
            executor=executor,
            workers=workers,
            address=address,
            progress=progress,
            log=log,
            data_fingerprint=train.fingerprint,
        )


def _search_all(
    *,
    settings: SupportSettings,
    rankings: Mapping[str, Ranking],
    out: Path,
    recipe: Recipe,
    test: Any,
    done: set[tuple[int, str, str]],
    summary: dict[str, Any],
    targets: Sequence[int] | None,
    n_targets: int | None,
    ensemble_models: int,
    ensemble_dir: str | os.PathLike[str] | None,
    executor: str | Executor,
    workers: int | None,
    address: str | None,
    progress: bool,
    log: Callable[[str], None] | None,
    data_fingerprint: str,
) -> list[dict[str, Any]]:
    """The body of :func:`run_support`, run while it holds the lock of ``out``."""
    with executor_for(executor, workers=workers, address=address) as (pool_exec, slots):
        ensemble = train_ensemble(
            settings.data,
            recipe,
            n_models=ensemble_models,
            cache_dir=ensemble_dir or out.parent / f"ensemble-{recipe.name}",
            executor=pool_exec,
            device=settings.device,
            threads=settings.threads,
            progress=progress,
        )
        chosen = choose_targets(rankings, ensemble, targets, n_targets, settings.seed)
        searches, skipped = [], []
        for t in chosen:
            t = int(t)
            for name, ranking in rankings.items():
                if (t, name, settings.mode) in done:
                    continue
                header = {
                    "target": t,
                    "label": int(test.labels[t]),
                    "ranking": name,
                    "mode": settings.mode,
                    "flip_class": int(ensemble.flip_class[t]),
                    "ensemble_prob_label": round(float(ensemble.mean[t, test.labels[t]]), 6),
                    "settings": summary,
                    "ranking_digest": ranking.digest,
                    "ranking_file": ranking.source,
                    "data_fingerprint": data_fingerprint,
                }
                if not ensemble.correct[t]:
                    record = {
                        **header,
                        "status": "misclassified",
                        "ensemble_prediction": int(ensemble.predicted[t]),
                        "support": None,
                        "found": False,
                        "steps": [],
                        "models_trained": 0,
                        "seconds": 0.0,
                    }
                    append_jsonl(out, record)
                    skipped.append(record)
                    continue
                row = int(np.flatnonzero(ranking.targets == t)[0])
                order = ranking.indices[row, : settings.k]
                header["status"] = "searched"
                search = search_support(settings, t, header["label"], header["flip_class"], order)
                searches.append((header, search))
        journal = _Journal(journal_path(out), data_fingerprint)
        return skipped + _run_searches(searches, pool_exec, slots, journal, out, progress, log)


__all__ = [
    "MODES",
    "SupportSettings",
    "choose_targets",
    "common_targets",
    "journal_path",
    "run_support",
    "search_support",
]
