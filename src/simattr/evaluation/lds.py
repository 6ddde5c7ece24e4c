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
    check_threads(threads, "--threads")
    out = Path(out_dir)
    check_writable(out, "--out", folder=True)
    test = load_split(data, "test")
    tgt = (
        np.arange(len(test), dtype=np.int64)
        if targets is None
        else check_indices(targets, len(test), "targets")
    )
    check_trainable(recipe, load_split(data, "train"))  # before anything is written
    with lock(out):
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
            "at least 3 (`simattr lds --replicates 20`)"
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
