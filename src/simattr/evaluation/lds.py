"""The linear datamodeling score (LDS): do summed attribution scores predict retrained margins?

DESIGN.md section 2: draw S random halves of a recipe's training pool, train one model on each,
and record every test image's margin (correct-class logit minus the log-sum-exp of the others).
An attribution method predicts the margin of a target under subset s as the sum of its scores
over the images in s; its LDS on that target is the Spearman correlation between predicted and
actual margins over the subsets, and the method's LDS is the mean over targets.

The expensive half (:func:`run_lds`) does not depend on any attribution: it trains the subset
models once, through the same jobs and executors as the support search, and stores in ``out_dir``

* ``manifest.json``: recipe, data fingerprints, seed, fraction, number of subsets;
* ``pool.npy`` (training rows of the pool), ``masks.npy`` (S x pool, bool), ``targets.npy``;
* ``margins/subset-<s>.npy``: the margins of all targets under model s, one file per model,
  written atomically as each model finishes, so a killed run resumes losing only models in flight;
* ``replicate/subset-<s>.npy``: with ``replicates=R``, a second model (another seed) on each of
  the first R subsets: the noise ceiling (:func:`noise_ceiling`).

The cheap half (:func:`lds_score`) scores any number of rankings against it.

**Controls** (DESIGN.md section 2). A random half changes how many images of the target's class
are trained on, and that alone moves the margin: a ranking that knows only the class scores
LDS 0.10 on the CPU benchmark, as much as the methods. So LDS is also reported *beyond the class
prior* (``control=class_counts(...)``): the partial Spearman correlation of predicted and actual
margins with the subset's count of the target's class held out, i.e. the Pearson correlation of
their ranks after each is regressed linearly on the count's rank. We chose the partial rank
correlation over regressing margins on the count before LDS because it treats prediction and
margin alike, stays a rank statistic like LDS itself, and gives the class-prior ranking exactly
0 (its prediction *is* the count). And LDS is read against the *noise ceiling*: two models
trained on the same subset with different seeds disagree, and the Spearman correlation of their
margins over the subsets bounds what any attribution can reach.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simattr._io import check_writable, lock, read_json
from simattr._progress import progress_bar
from simattr.errors import InvalidInputError, MissingFileError
from simattr.ranking import Ranking
from simattr.store import MANIFEST, Store
from simattr.training.executors import executor_for, run_jobs
from simattr.training.jobs import JobResult, TrainJob, load_split
from simattr.training.recipes import Recipe, get_recipe, recipe_pool
from simattr.training.trainer import check_trainable
from simattr.validation import check_device, check_indices, check_threads


def subset_masks(n_pool: int, n_subsets: int, seed: int = 0, fraction: float = 0.5) -> np.ndarray:
    """``n_subsets`` random subsets of a pool, each exactly ``round(fraction * n_pool)`` items.

    Subset s depends only on ``(seed, s)``, so adding subsets later keeps the earlier ones.
    """
    if not 0 < fraction < 1:
        raise InvalidInputError(f"fraction must be in (0, 1), got {fraction}")
    size = round(fraction * n_pool)
    masks = np.zeros((n_subsets, n_pool), dtype=bool)
    for s in range(n_subsets):
        masks[s, np.random.default_rng([seed, 2711, s]).choice(n_pool, size, replace=False)] = True
    return masks


@dataclass
class LdsData:
    """Subset masks and the margins of the models trained on them (NaN rows: not trained)."""

    pool: np.ndarray  # (n_pool,) training rows
    masks: np.ndarray  # (S, n_pool) bool
    targets: np.ndarray  # (n_targets,) test rows
    margins: np.ndarray  # (S, n_targets) float64, NaN where the model is not trained yet
    manifest: dict[str, Any]
    #: (S, n_targets) margins of the second-seed models; NaN rows where there is none
    replicate: np.ndarray | None = None

    @property
    def trained(self) -> np.ndarray:
        """Which subsets have a model."""
        return ~np.isnan(self.margins).any(axis=1)

    @property
    def replicated(self) -> np.ndarray:
        """Which subsets have both a model and a second-seed model."""
        if self.replicate is None:
            return np.zeros(len(self.masks), dtype=bool)
        return self.trained & ~np.isnan(self.replicate).any(axis=1)


def _store(out: Path, data: str, recipe: Recipe, subsets: int, seed: int, fraction: float) -> Store:
    """The LDS folder: refused when another recipe, data, seed or fraction made it; ``subsets``
    may grow (subset s depends only on ``(seed, s)``, so the models already trained stay)."""
    train, test = load_split(data, "train"), load_split(data, "test")
    identity = {
        "recipe": recipe.to_dict(),
        "train_fingerprint": train.fingerprint,
        "test_fingerprint": test.fingerprint,
        "subsets": subsets,
        "seed": seed,
        "fraction": fraction,
    }
    return Store(
        out,
        "lds",
        identity,
        growing=("subsets",),
        holds="holds an LDS run with other settings",
        remedy="use another folder",
    )


def run_lds(
    data: str,
    recipe: str | Recipe,
    out_dir: str | os.PathLike[str],
    *,
    subsets: int,
    targets: Sequence[int] | None = None,
    seed: int = 0,
    fraction: float = 0.5,
    executor: str | Executor = "local",
    workers: int | None = None,
    address: str | None = None,
    device: str = "cpu",
    threads: int | None = None,
    progress: bool = False,
    replicates: int = 0,
) -> LdsData:
    """Train the subset models that are not trained yet in ``out_dir``; return all margins.

    ``targets`` defaults to the whole test split (margins are cheap next to training). Calling
    again with more ``subsets`` extends the run; other settings must stay the same.
    ``replicates=R`` also trains a second model, with another seed, on each of the first R
    subsets (the noise ceiling; DESIGN.md asks for at least 20).
    """
    if subsets < 2:
        raise InvalidInputError(f"LDS needs at least 2 subsets, got {subsets}")
    if not isinstance(replicates, int) or not 0 <= replicates <= subsets:
        raise InvalidInputError(
            f"replicates must be an integer from 0 to subsets ({subsets}), got {replicates!r}"
        )
    recipe = get_recipe(recipe)
    check_device(device)
    check_threads(threads, "`threads`")
    out = Path(out_dir)
    check_writable(out, "`out_dir`", folder=True)
    test = load_split(data, "test")
    tgt = (
        np.arange(len(test), dtype=np.int64)
        if targets is None
        else check_indices(targets, len(test), "targets")
    )
    check_trainable(recipe, load_split(data, "train"))  # before anything is written
    with lock(out, "`out_dir`"):
        return _run_lds(
            data=data,
            recipe=recipe,
            out=out,
            subsets=subsets,
            tgt=tgt,
            seed=seed,
            fraction=fraction,
            executor=executor,
            workers=workers,
            address=address,
            device=device,
            threads=threads,
            progress=progress,
            replicates=replicates,
            test=test,
        )


def _run_lds(
    *,
    data: str,
    recipe: Recipe,
    out: Path,
    subsets: int,
    tgt: np.ndarray,
    seed: int,
    fraction: float,
    executor: str | Executor,
    workers: int | None,
    address: str | None,
    device: str,
    threads: int | None,
    progress: bool,
    replicates: int,
    test: Any,
) -> LdsData:
    """The body of :func:`run_lds`, run while it holds the lock of ``out``."""
    store = _store(out, data, recipe, subsets, seed, fraction)
    if store.check() is not None:
        old_targets = store.read_array("targets.npy")
        if not np.array_equal(old_targets, tgt):
            raise InvalidInputError(f"{out} holds an LDS run over other targets")
    train = load_split(data, "train")
    pool = recipe_pool(recipe, train)
    masks = subset_masks(len(pool), subsets, seed, fraction)
    store.write_array("pool.npy", pool)
    store.write_array("masks.npy", masks)
    store.write_array("targets.npy", tgt)
    store.save()  # last: a folder with a manifest has its arrays
    # a damaged margins file is a lost model: deleted by ``verified`` and trained again
    todo = [(s, 0) for s in range(subsets) if store.verified(_margin_path(s)) is None]
    todo += [(s, 1) for s in range(replicates) if store.verified(_margin_path(s, 1)) is None]
    labels = test.labels[tgt]
    with executor_for(executor, workers=workers, address=address) as (pool_exec, _):
        with progress_bar(f"LDS models ({recipe.name})", len(todo), enabled=progress) as advance:

            def save(key: tuple[int, int], result: JobResult) -> None:
                store.write_array(_margin_path(*key), result.margins(labels))
                advance(1)

            jobs = {
                (s, r): TrainJob(
                    data=data,
                    recipe=recipe,
                    seed=seed * 100_003 + s + r * REPLICATE_SEED_OFFSET,
                    subset=tuple(int(r) for r in pool[masks[s]]),
                    predict=tuple(int(t) for t in tgt),
                    device=device,
                    threads=threads,
                )
                for s, r in todo
            }
            run_jobs(pool_exec, jobs, save)
    return load_lds(out)


#: Added to a subset model's seed for its replicate: far from every seed ``seed * 100_003 + s``
#: of the first models for any realistic number of subsets.
REPLICATE_SEED_OFFSET = 50_000_017


def _margin_path(s: int, replicate: int = 0) -> str:
    return f"{'replicate' if replicate else 'margins'}/subset-{s:05d}.npy"


def load_lds(out_dir: str | os.PathLike[str]) -> LdsData:
    """Read an LDS folder written by :func:`run_lds` (models not trained yet are NaN rows)."""
    out = Path(out_dir)
    if not (out / MANIFEST).exists():
        raise MissingFileError(f"{out} is not an LDS folder (no {MANIFEST}); run `simattr lds`")
    manifest = read_json(out / MANIFEST)
    store = Store(out, None, {}, remedy="run `simattr lds` again into a new folder")
    pool = store.read_array("pool.npy")
    masks = store.read_array("masks.npy")
    targets = store.read_array("targets.npy")
    if masks.ndim != 2 or masks.shape[1] != len(pool) or targets.ndim != 1:
        raise InvalidInputError(
            f"{out}: masks {masks.shape}, pool {pool.shape} and targets {targets.shape} do not "
            "fit together; run `simattr lds` again into a new folder"
        )
    margins = np.full((len(masks), len(targets)), np.nan)
    replicate = np.full((len(masks), len(targets)), np.nan)
    for s in range(len(masks)):
        for r, into in ((0, margins), (1, replicate)):
            # a damaged margins file is deleted (with a warning) and counts as not trained:
            # `simattr lds` trains that model again
            path = store.verified(_margin_path(s, r))
            if path is not None:
                values = np.load(path, allow_pickle=False)
                if values.shape != (len(targets),):
                    raise InvalidInputError(
                        f"{path} holds {values.shape} margins, not ({len(targets)},); delete it "
                        "and run `simattr lds` again to retrain that model"
                    )
                into[s] = values
    return LdsData(
        pool=pool,
        masks=masks,
        targets=targets,
        margins=margins,
        manifest=manifest,
        replicate=replicate,
    )


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0  # a constant prediction carries no ranking information
    return float(spearmanr(a, b).statistic)


def partial_spearman(a: np.ndarray, b: np.ndarray, z: np.ndarray) -> float:
    """Spearman correlation of ``a`` and ``b`` with ``z`` held out.

    The ranks of ``a`` and ``b`` are each regressed (least squares, with an intercept) on the
    ranks of ``z``; the result is the Pearson correlation of the residuals. 0 when either
    residual is constant: ``a`` carries no ranking information beyond ``z``.
    """
    from scipy.stats import rankdata

    design = np.column_stack([np.ones(len(z)), rankdata(z)])
    residuals = []
    for v in (a, b):
        rv = rankdata(v)
        coef, *_ = np.linalg.lstsq(design, rv, rcond=None)
        residuals.append(rv - design @ coef)
    ra, rb = residuals
    scale = np.linalg.norm(ra) * np.linalg.norm(rb)
    if scale <= 1e-9 * len(a):
        return 0.0
    return float(ra @ rb / scale)


def class_counts(lds: LdsData, train_labels: np.ndarray, test_labels: np.ndarray) -> np.ndarray:
    """``(S, n_targets)``: how many images of each target's class each subset trains on.

    ``train_labels`` and ``test_labels`` are the labels of the whole splits (the pool and the
    targets are rows of them); this is the class prior's prediction, the control of LDS.
    """
    pool_labels = np.asarray(train_labels)[lds.pool]
    n_classes = int(max(pool_labels.max(), np.asarray(test_labels)[lds.targets].max())) + 1
    onehot = np.zeros((len(lds.pool), n_classes))
    onehot[np.arange(len(lds.pool)), pool_labels] = 1.0
    per_class = lds.masks.astype(np.float64) @ onehot  # (S, n_classes)
    return per_class[:, np.asarray(test_labels)[lds.targets]]


def noise_ceiling(lds: LdsData, control: np.ndarray | None = None) -> LdsResult:
    """Per target, the correlation of two seeds' margins over the replicated subsets.

    No ranking can predict a model's margins better than another training run of the same
    subset does, so this bounds LDS; with ``control`` (:func:`class_counts`) it is the partial
    correlation, the bound of LDS beyond the class prior.
    """
    both = lds.replicated
    if both.sum() < 3 or lds.replicate is None:
        raise InvalidInputError(
            f"only {int(both.sum())} subsets have a second-seed model; the noise ceiling needs "
            "at least 3 (train them with `replicates=20`)"
        )
    a, b = lds.margins[both], lds.replicate[both]
    values = np.array(
        [
            _spearman(a[:, j], b[:, j])
            if control is None
            else partial_spearman(a[:, j], b[:, j], control[both][:, j])
            for j in range(len(lds.targets))
        ]
    )
    return LdsResult(targets=lds.targets.copy(), per_target=values, subsets_used=int(both.sum()))


@dataclass
class LdsResult:
    """Per-target LDS of one ranking (``targets`` are test rows) and their mean."""

    targets: np.ndarray
    per_target: np.ndarray
    subsets_used: int

    @property
    def mean(self) -> float:
        return float(np.mean(self.per_target)) if len(self.per_target) else float("nan")

    @property
    def standard_error(self) -> float:
        """Standard error of :attr:`mean` over targets (the spread a different draw would show)."""
        n = len(self.per_target)
        return float(np.std(self.per_target, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")


def lds_score(
    lds: LdsData, ranking: Ranking, *, centre: bool = False, control: np.ndarray | None = None
) -> LdsResult:
    """LDS of ``ranking`` on the targets it shares with ``lds`` (unscored images count 0).

    LDS sums scores over each subset, so a score offset shared by a target's ranked images (an
    SVM's intercept, negative distances) enters the prediction as offset x number of ranked
    images in the subset and can dominate it. ``centre=True`` subtracts each target's mean
    score over its ranked images first; the plain definition is the default.

    ``control``: the ``(S, n_targets)`` counts of :func:`class_counts`; the LDS is then the
    partial Spearman correlation with the count held out (LDS beyond the class prior).
    """
    ranking.check(
        pool=np.sort(lds.pool),
        fingerprints={
            "train": lds.manifest.get("train_fingerprint"),
            "test": lds.manifest.get("test_fingerprint"),
        },
    )
    trained = lds.trained
    if trained.sum() < 3:
        raise InvalidInputError(
            f"only {int(trained.sum())} subset models are trained; LDS needs at least 3"
        )
    masks = lds.masks[trained].astype(np.float64)
    margins = lds.margins[trained]
    column = {int(t): i for i, t in enumerate(lds.targets)}
    shared = [i for i, t in enumerate(ranking.targets) if int(t) in column]
    if not shared:
        raise InvalidInputError("the ranking has no target in common with the LDS run")
    pos_in_pool = {int(r): i for i, r in enumerate(lds.pool)}
    values = np.empty(len(shared))
    for out_i, row in enumerate(shared):
        dense = np.zeros(len(lds.pool))
        ranked = ranking.indices[row] >= 0  # a small pool's row ends in -1 (score NaN)
        scores = ranking.scores[row] - (ranking.scores[row][ranked].mean() if centre else 0.0)
        for idx, score in zip(ranking.indices[row], scores, strict=True):
            p = pos_in_pool.get(int(idx))
            if p is not None:
                dense[p] = score
        predicted = masks @ dense
        col = column[int(ranking.targets[row])]
        values[out_i] = (
            _spearman(predicted, margins[:, col])
            if control is None
            else partial_spearman(predicted, margins[:, col], control[trained][:, col])
        )
    return LdsResult(
        targets=ranking.targets[shared].copy(), per_target=values, subsets_used=int(trained.sum())
    )


# -- the protocol of issue 26: every class's count, errors over subset models, sqrt ceiling ------


def class_count_matrix(lds: LdsData, train_labels: np.ndarray) -> np.ndarray:
    """``(S, n_classes)``: how many images of *every* class each subset trains on.

    The class-count prior of :func:`lds_table`: a subset that trains on fewer images of a class
    that the target is easily confused with moves its margin as surely as one with fewer images
    of its own class, and an all-class ranking can exploit that while a class-conditional one
    cannot; holding only the target's own count (:func:`class_counts`) leaves that advantage in.
    """
    pool_labels = np.asarray(train_labels)[lds.pool]
    onehot = np.zeros((len(lds.pool), int(pool_labels.max()) + 1))
    onehot[np.arange(len(lds.pool)), pool_labels] = 1.0
    return lds.masks.astype(np.float64) @ onehot


def _column_ranks(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x, axis=0)


def per_target_lds(
    predicted: np.ndarray, margins: np.ndarray, covariates: np.ndarray | None = None
) -> np.ndarray:
    """Per-target LDS of ``(S, T)`` predictions against ``(S, T)`` margins, vectorised.

    Without ``covariates``: the Spearman correlation of each column pair. With an ``(S, k)``
    ``covariates`` matrix (:func:`class_count_matrix`): the partial Spearman correlation, i.e.
    the ranks of prediction and margin are each regressed on an intercept and the ranks of every
    covariate, and the residuals correlated. A column with no variation left scores 0 (it
    carries no ranking information), never NaN.
    """
    ra, rb = _column_ranks(predicted), _column_ranks(margins)
    design = np.ones((len(predicted), 1))
    if covariates is not None:
        design = np.column_stack([design, _column_ranks(np.asarray(covariates, dtype=float))])
    q, _ = np.linalg.qr(design)
    # a rank-deficient design (counts that sum to a constant) spans fewer columns than it has
    keep = np.abs(np.linalg.qr(design, mode="r")).diagonal() > 1e-9 * len(design)
    q = q[:, keep]
    ra = ra - q @ (q.T @ ra)
    rb = rb - q @ (q.T @ rb)
    scale = np.linalg.norm(ra, axis=0) * np.linalg.norm(rb, axis=0)
    ok = scale > 1e-9 * len(predicted)
    out = np.zeros(predicted.shape[1])
    out[ok] = (ra * rb).sum(axis=0)[ok] / scale[ok]
    return out


def dense_scores(ranking: Ranking, lds: LdsData, *, centre: bool = False) -> np.ndarray:
    """``(n_targets_of_ranking, n_pool)`` scores over the LDS pool (unranked images count 0)."""
    pos = np.full(int(max(lds.pool.max(), ranking.indices.max(initial=0))) + 1, -1)
    pos[lds.pool] = np.arange(len(lds.pool))
    dense = np.zeros((len(ranking.targets), len(lds.pool)))
    for row in range(len(ranking.targets)):
        idx = ranking.indices[row]
        ranked = idx >= 0
        scores = ranking.scores[row][ranked]
        if centre and ranked.any():
            scores = scores - scores.mean()
        p = pos[idx[ranked]]
        inside = p >= 0
        dense[row, p[inside]] = scores[inside]
    return dense


@dataclass
class LdsTable:
    """The LDS report of several rankings on one LDS run: per-target values, errors that resample
    subset models, the noise ceiling as sqrt of the replicate correlation, paired comparisons.

    ``cells[name]`` holds ``mean``, ``se`` (the combined error, see :func:`jackknife_mean`),
    ``se_subsets`` and ``se_targets`` for ``raw`` and ``beyond_prior``; a value that cannot be
    computed is ``None`` with its reason in ``na``.
    """

    targets: np.ndarray
    subsets: int
    per_target: dict[str, dict[str, np.ndarray]]
    cells: dict[str, dict[str, dict[str, float | None]]]
    ceiling: dict[str, float | None]
    comparisons: dict[str, dict[str, Any]]
    na: dict[str, str]

    def rows(self) -> list[dict[str, Any]]:
        """Rows of ``lds_per_target.csv``: method, target, lds, lds_beyond_prior."""
        out = []
        for name, values in self.per_target.items():
            beyond = values.get("beyond_prior")
            for j, t in enumerate(self.targets):
                out.append(
                    {
                        "method": name,
                        "target": int(t),
                        "lds": float(values["raw"][j]),
                        "lds_beyond_prior": None if beyond is None else float(beyond[j]),
                    }
                )
        return out

    def write_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`rows` as CSV, atomically (empty ``lds_beyond_prior`` without labels)."""
        from simattr._io import atomic_write

        lines = ["method,target,lds,lds_beyond_prior"]
        for r in self.rows():
            beyond = "" if r["lds_beyond_prior"] is None else f"{r['lds_beyond_prior']:.6f}"
            lines.append(f"{r['method']},{r['target']},{r['lds']:.6f},{beyond}")
        text = "\n".join(lines) + "\n"
        return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def markdown(self) -> str:
        """The table: mean LDS (raw, beyond every class's count) with combined errors, share of
        the ceiling, and each paired comparison; 'n/a (reason)' where a value cannot be had."""

        def fmt(cell: dict[str, float | None] | None) -> str:
            if not cell or cell.get("mean") is None:
                return "n/a"
            se = cell.get("se")
            return f"{cell['mean']:.3f}" + ("" if se is None else f" +- {se:.3f}")

        ceil = self.ceiling.get("beyond_prior")
        lines = [
            f"LDS on {len(self.targets)} targets x {self.subsets} subset models; errors "
            "resample subset models (delete-one-subset jackknife) and targets: "
            "SE = sqrt(SE_subsets^2 + SE_targets^2). 'beyond prior': partial Spearman with "
            "every class's count of the subset held out.",
            "",
            f"Noise ceiling (sqrt of the replicate correlation): raw {_num(self.ceiling['raw'])}, "
            f"beyond prior {_num(ceil)}"
            + (f" ({self.na['ceiling']})" if "ceiling" in self.na else "")
            + ".",
            "",
            "| method | LDS | beyond prior | of ceiling |",
            "| --- | ---: | ---: | ---: |",
        ]
        for name, cell in self.cells.items():
            beyond = cell.get("beyond_prior")
            share = (
                "n/a"
                if not ceil or not beyond or beyond.get("mean") is None
                else f"{beyond['mean'] / ceil:.2f}"
            )
            lines.append(f"| {name} | {fmt(cell.get('raw'))} | {fmt(beyond)} | {share} |")
        if self.comparisons:
            lines += [
                "",
                "Paired by target, errors resampling subsets (t with S - 1 df):",
                "",
                "| comparison | metric | difference (95 % CI) | p |",
                "| --- | --- | ---: | ---: |",
            ]
            for label, comp in self.comparisons.items():
                for metric, d in comp.items():
                    if d.get("mean") is None:
                        lines.append(f"| {label} | {metric} | n/a ({d.get('reason')}) | |")
                        continue
                    lines.append(
                        f"| {label} | {metric} | {d['mean']:+.3f} ({d['low']:+.3f}, "
                        f"{d['high']:+.3f}) | {d['p']:.2g} |"
                    )
        if self.na:
            lines += ["", *(f"- n/a: {k}: {v}" for k, v in self.na.items() if k != "ceiling")]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (per-target values live in the CSV)."""
        return {
            "targets": len(self.targets),
            "subsets": self.subsets,
            "methods": self.cells,
            "noise_ceiling": self.ceiling,
            "comparisons": self.comparisons,
            "not_available": self.na,
        }


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def jackknife_mean(
    predicted: np.ndarray,
    margins: np.ndarray,
    covariates: np.ndarray | None = None,
    baseline: np.ndarray | None = None,
) -> dict[str, Any]:
    """Mean over targets of per-target LDS (minus ``baseline``'s, paired) and its errors.

    ``predicted`` (and ``baseline``) are ``(S, T)``; every target is scored on the same S subset
    models, so targets are not independent: the error of the mean resamples subset models by
    the delete-one-subset jackknife (each replicate recomputes every target's LDS without one
    subset) and adds the between-target standard error (the crossed design's two main effects;
    slightly conservative). ``p``: two-sided, t with S - 1 degrees of freedom. Degenerate
    inputs give ``mean: None`` and a ``reason``.
    """
    from scipy.stats import t as student

    n_sub, n_tgt = margins.shape
    if n_sub < 4:
        return {"mean": None, "reason": f"{n_sub} subset models; the jackknife needs at least 4"}
    if n_tgt < 2:
        return {"mean": None, "reason": f"{n_tgt} target; errors need at least 2"}

    def stat(rows: np.ndarray) -> np.ndarray:
        cov = None if covariates is None else covariates[rows]
        v = per_target_lds(predicted[rows], margins[rows], cov)
        if baseline is not None:
            v = v - per_target_lds(baseline[rows], margins[rows], cov)
        return v

    full = stat(np.arange(n_sub))
    leave = np.array([stat(np.delete(np.arange(n_sub), s)).mean() for s in range(n_sub)])
    se_sub = float(np.sqrt((n_sub - 1) / n_sub * ((leave - leave.mean()) ** 2).sum()))
    se_tgt = float(full.std(ddof=1) / np.sqrt(n_tgt))
    se = float(np.hypot(se_sub, se_tgt))
    mean = float(full.mean())
    q = float(student.ppf(0.975, n_sub - 1))
    p = float(2 * student.sf(abs(mean) / se, n_sub - 1)) if se > 0 else float("nan")
    return {
        "mean": mean,
        "se": se,
        "se_subsets": se_sub,
        "se_targets": se_tgt,
        "low": mean - q * se,
        "high": mean + q * se,
        "p": p,
        "n_targets": int(n_tgt),
        "n_subsets": int(n_sub),
        "per_target": full,
    }


def sqrt_ceiling(
    lds: LdsData, covariates: np.ndarray | None = None, targets: np.ndarray | None = None
) -> tuple[float | None, str | None]:
    """The noise ceiling: sqrt of the mean replicate correlation over targets, or why not.

    The correlation r of two seeds' margins is a test-retest reliability: the best predictor
    correlates with one noisy run at about sqrt(r), so sqrt(r) bounds LDS (reading r itself as
    the bound overstates every method's share of it).
    """
    if lds.replicate is None or lds.replicated.sum() < 3:
        n = int(lds.replicated.sum())
        return None, f"{n} subsets have a second-seed model; the ceiling needs at least 3"
    both = lds.replicated
    cols = np.arange(len(lds.targets)) if targets is None else targets
    r = per_target_lds(
        lds.margins[both][:, cols],
        lds.replicate[both][:, cols],
        None if covariates is None else covariates[both],
    )
    mean_r = float(np.mean(r))
    if not np.isfinite(mean_r) or mean_r <= 0:
        return None, f"replicate correlation {mean_r:.3g} is not positive: no ceiling"
    return float(np.sqrt(mean_r)), None


def lds_table(
    lds: LdsData,
    rankings: dict[str, Ranking],
    *,
    train_labels: np.ndarray | None = None,
    subsets: np.ndarray | None = None,
    targets: Sequence[int] | None = None,
    reference: str | None = None,
    pairs: Sequence[tuple[str, str]] = (),
) -> LdsTable:
    """Score every ranking on ``lds`` under the protocol of issue 26; the one LDS report.

    ``train_labels`` (labels of the whole training split) adds LDS beyond the class-count prior
    (the ranking's scores centred per target, as the bench does); ``subsets`` (boolean or
    indices) and ``targets`` (test rows) restrict the evaluation, e.g. to a held-out split;
    ``reference`` pairs every method with it, ``pairs`` adds ``(a, b)`` comparisons (a minus b).
    Rankings must cover the chosen targets. Nothing degenerate raises: one subset, one target
    or no positive ceiling gives 'n/a' with the reason.
    """
    rows_s = _table_subsets(lds, subsets)
    want, cols = _table_columns(lds, targets)
    margins = lds.margins[np.ix_(rows_s, cols)]
    all_counts = None if train_labels is None else class_count_matrix(lds, train_labels)
    counts = None if all_counts is None else all_counts[rows_s]
    na: dict[str, str] = {}
    if train_labels is None:
        na["beyond_prior"] = "no training labels given"
    masks = lds.masks[rows_s].astype(np.float64)
    predictions = {
        name: _table_predictions(lds, name, ranking, want, masks, beyond=counts is not None)
        for name, ranking in rankings.items()
    }
    per_target, cells = _table_cells(predictions, margins, counts, na)
    todo = list(pairs)
    if reference is not None and reference in predictions:
        todo += [(n, reference) for n in predictions if n != reference]
    comparisons = _table_comparisons(predictions, margins, counts, todo)
    ceiling = _table_ceiling(lds, all_counts, cols, na)
    return LdsTable(
        targets=want.copy(),
        subsets=len(rows_s),
        per_target=per_target,
        cells=cells,
        ceiling=ceiling,
        comparisons=comparisons,
        na=na,
    )


def _table_subsets(lds: LdsData, subsets: np.ndarray | None) -> np.ndarray:
    """Rows of the subset models the table scores: trained ones, within ``subsets`` if given.

    An untrained model has NaN margins, so it is always left out; ``subsets`` (boolean mask or
    indices) narrows further, e.g. to a held-out split of the subset models.
    """
    trained = lds.trained.copy()
    if subsets is not None:
        chosen = np.zeros(len(lds.masks), dtype=bool)
        chosen[np.asarray(subsets)] = True
        trained &= chosen
    return np.flatnonzero(trained)


def _table_columns(lds: LdsData, targets: Sequence[int] | None) -> tuple[np.ndarray, np.ndarray]:
    """``(test rows, their columns in lds.margins)``; refuses a target the run has no margin of.

    The table reports targets in the caller's order, so the columns are looked up per target
    rather than assumed to follow ``lds.targets``.
    """
    column = {int(t): i for i, t in enumerate(lds.targets)}
    want = lds.targets if targets is None else np.asarray(targets, dtype=np.int64)
    missing = [int(t) for t in want if int(t) not in column]
    if missing:
        raise InvalidInputError(f"targets {missing[:5]} are not in the LDS run")
    return want, np.array([column[int(t)] for t in want], dtype=np.int64)


def _table_predictions(
    lds: LdsData,
    name: str,
    ranking: Ranking,
    want: np.ndarray,
    masks: np.ndarray,
    *,
    beyond: bool,
) -> dict[str, np.ndarray]:
    """``{"raw": (S, T)}`` summed scores per subset and target, plus ``"beyond_prior"``.

    The ranking is checked against the run's pool and data first (a ranking of other data must
    not be scored), then its rows are put in the table's target order. The beyond-prior
    prediction centres each target's scores, as the bench does, so a shared score offset does
    not turn into a count of ranked images in the subset.
    """
    ranking.check(
        pool=np.sort(lds.pool),
        fingerprints={
            "train": lds.manifest.get("train_fingerprint"),
            "test": lds.manifest.get("test_fingerprint"),
        },
    )
    where = {int(t): i for i, t in enumerate(ranking.targets)}
    absent = [int(t) for t in want if int(t) not in where]
    if absent:
        raise InvalidInputError(f"ranking {name!r} does not score targets {absent[:5]}")
    order = [where[int(t)] for t in want]
    sub = Ranking(ranking.targets[order], ranking.indices[order], ranking.scores[order], {})
    out = {"raw": masks @ dense_scores(sub, lds).T}
    if beyond:
        out["beyond_prior"] = masks @ dense_scores(sub, lds, centre=True).T
    return out


def _table_cells(
    predictions: dict[str, dict[str, np.ndarray]],
    margins: np.ndarray,
    counts: np.ndarray | None,
    na: dict[str, str],
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, dict[str, float | None]]]]:
    """Per-target LDS and the table's cell (mean with jackknife errors) per method and metric.

    When the jackknife cannot run (too few subset models or targets) the cell keeps a plain
    mean where one still means something (3 or more models), with ``se`` None, and the reason
    goes into ``na`` so that the report can say 'n/a (reason)' instead of raising.
    """
    n_subsets, n_targets = margins.shape
    per_target: dict[str, dict[str, np.ndarray]] = {}
    cells: dict[str, dict[str, dict[str, float | None]]] = {}
    for name, preds in predictions.items():
        per_target[name], cells[name] = {}, {}
        for metric, p in preds.items():
            cov = counts if metric == "beyond_prior" else None
            per_target[name][metric] = per_target_lds(p, margins, cov)
            j = jackknife_mean(p, margins, cov)
            if j["mean"] is None:
                na[f"{name} {metric}"] = j["reason"]
                enough = n_subsets >= 3 and n_targets >= 1
                j = {"mean": float(per_target[name][metric].mean()) if enough else None}
                j["se"] = None
            cells[name][metric] = {k: v for k, v in j.items() if k != "per_target"}
    return per_target, cells


def _table_comparisons(
    predictions: dict[str, dict[str, np.ndarray]],
    margins: np.ndarray,
    counts: np.ndarray | None,
    todo: Sequence[tuple[str, str]],
) -> dict[str, dict[str, Any]]:
    """``{"a - b": {metric: difference}}``: paired by target on the same subset models.

    Pairing removes the subset noise both methods share, so a difference can be significant
    when the two errors overlap; degenerate inputs give ``mean: None`` with a reason.
    """
    comparisons: dict[str, dict[str, Any]] = {}
    for a, b in todo:
        comp = {}
        for metric in predictions[a]:
            cov = counts if metric == "beyond_prior" else None
            d = jackknife_mean(predictions[a][metric], margins, cov, predictions[b][metric])
            comp[metric] = {k: v for k, v in d.items() if k != "per_target"}
        comparisons[f"{a} - {b}"] = comp
    return comparisons


def _table_ceiling(
    lds: LdsData, all_counts: np.ndarray | None, cols: np.ndarray, na: dict[str, str]
) -> dict[str, float | None]:
    """The sqrt noise ceiling, raw and (with class counts) beyond the prior, on ``cols``.

    The ceiling reads every replicated subset of the run, not only the chosen ones: it bounds
    what any ranking can reach on these targets, whichever models it is scored on. Why a
    ceiling is missing (the raw reason first) goes into ``na["ceiling"]``.
    """
    raw, why = sqrt_ceiling(lds, None, cols)
    beyond = None
    if all_counts is not None:
        beyond, why_b = sqrt_ceiling(lds, all_counts, cols)
        why = why or why_b
    if why:
        na["ceiling"] = why
    return {"raw": raw, "beyond_prior": beyond}


def lds_score_report(
    lds_dir: str | os.PathLike[str],
    ranking_paths: Sequence[str | os.PathLike[str]],
    *,
    data: str | None = None,
) -> tuple[str, dict[str, Any], LdsTable]:
    """What ``simattr lds-score`` prints and writes: ``(text, json payload, table)``.

    Rankings keyed by their path; ``data`` (the run's dataset) adds LDS beyond the class-count
    prior. The payload keeps, per ranking, its targets and per-target raw LDS.
    """
    from simattr.attribution import load_ranking
    from simattr.training.jobs import load_split

    lds = load_lds(lds_dir)
    rankings = {str(p): load_ranking(p) for p in ranking_paths}
    train_labels = None if data is None else load_split(data, "train").labels
    shared = [int(t) for t in lds.targets]
    for r in rankings.values():
        have = {int(t) for t in r.targets}
        shared = [t for t in shared if t in have]
    if not shared:
        raise InvalidInputError("the rankings have no target in common with the LDS run")
    table = lds_table(lds, rankings, train_labels=train_labels, targets=shared)
    ceiling = table.ceiling["raw"]
    report: dict[str, Any] = {}
    lines = []
    for name, cell in table.cells.items():
        raw, beyond = cell["raw"], cell.get("beyond_prior")
        share = None if ceiling is None or raw["mean"] is None else raw["mean"] / ceiling
        report[name] = {
            "mean": raw["mean"],
            "standard_error": raw.get("se"),
            "subsets": table.subsets,
            "targets": table.targets.tolist(),
            "lds": table.per_target[name]["raw"].tolist(),
            "beyond_class_prior": None
            if beyond is None
            else {"mean": beyond["mean"], "standard_error": beyond.get("se")},
            "fraction_of_ceiling": share,
        }
        mean = "n/a" if raw["mean"] is None else f"{raw['mean']:.4f}"
        lines.append(f"{name}: LDS {mean} on {len(table.targets)} targets")
    text = table.markdown() + "\n" + "\n".join(lines) + "\n"
    payload = {
        "lds_dir": str(lds_dir),
        "rankings": report,
        "noise_ceiling": ceiling,
        "noise_ceiling_beyond_class_prior": table.ceiling["beyond_prior"],
        "protocol": table.to_dict(),
    }
    return text, payload, table
