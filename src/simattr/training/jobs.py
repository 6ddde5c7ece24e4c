"""The unit of retraining work: train one model on a counterfactual dataset, predict targets.

Every expensive step of the evaluation (the full-data ensemble, each model of the support search,
each LDS subset model) is one :class:`TrainJob`, and :func:`run_job` is the only function the
executors run. A job is small, plain data (a dataset root as the user named it, a recipe, a seed,
the rows to remove or relabel, the test rows to predict), so it crosses process and machine
boundaries cheaply: each worker loads the dataset itself, once (decoded arrays are cached on disk
by :mod:`simattr.data.cache`), and keeps it for the next job.

A job's identity (:meth:`TrainJob.key`) hashes what decides its outcome, so a finished job is
looked up rather than retrained, whichever search or ranking asks for it again.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simattr.data.dataset import ImageDataset
from simattr.errors import InvalidInputError
from simattr.hashing import digest_json
from simattr.training.recipes import Recipe, get_recipe, recipe_pool
from simattr.validation import check_threads


@dataclass(frozen=True)
class TrainJob:
    """Train one model of ``recipe`` with ``seed`` and predict ``predict`` test rows.

    ``remove`` and ``relabel`` are rows of the full training split (what rankings index) and must
    lie in the recipe's pool; ``relabel`` rows get label ``relabel_to``. ``predict`` empty means
    the whole test split. ``subset``, when given, replaces the recipe's pool by these rows (LDS
    trains on random halves of the pool). ``threads`` fixes torch's intra-op threads for the job:
    results are bit-identical across executors only when it is the same.
    """

    data: str
    recipe: str | Recipe
    seed: int
    remove: tuple[int, ...] = ()
    relabel: tuple[int, ...] = ()
    relabel_to: int = -1
    predict: tuple[int, ...] = ()
    subset: tuple[int, ...] | None = None
    device: str = "cpu"
    threads: int | None = None

    def __post_init__(self) -> None:
        check_threads(self.threads, "threads")

    def key(self) -> str:
        """A short hash of everything that decides this job's result (not where it runs)."""
        recipe = get_recipe(self.recipe).to_dict()
        ident: dict[str, Any] = {
            "recipe": recipe,
            "seed": self.seed,
            "remove": sorted(self.remove),
            "relabel": sorted(self.relabel),
            "relabel_to": self.relabel_to if self.relabel else None,
            "predict": list(self.predict),
            "subset": None if self.subset is None else digest_json(sorted(self.subset), 20),
        }
        return digest_json(ident, 20)


@dataclass
class JobResult:
    """What a job returns: logits ``(len(predict), C)`` and the cost of the model.

    Logits rather than probabilities, because LDS needs margins (correct-class logit minus the
    log-sum-exp of the others), which probabilities near 1 no longer resolve in float32.
    """

    logits: np.ndarray
    seconds: float
    n_train: int
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def probs(self) -> np.ndarray:
        from simattr.training.trainer import softmax

        return softmax(self.logits)

    def margins(self, labels: np.ndarray) -> np.ndarray:
        """Correct-class logit minus log-sum-exp of the other logits, per predicted row."""
        z = self.logits.astype(np.float64)
        rows = np.arange(len(z))
        correct = z[rows, labels]
        others = z.copy()
        others[rows, labels] = -np.inf
        top = others.max(axis=1, keepdims=True)
        lse = top[:, 0] + np.log(np.exp(others - top).sum(axis=1))
        return correct - lse


@functools.lru_cache(maxsize=4)
def load_split(data: str, split: str) -> ImageDataset:
    """Load (once per process) a split of the dataset ``data`` names."""
    from simattr.data import load_dataset, resolve_root

    return load_dataset(resolve_root(data), split)


@functools.lru_cache(maxsize=8)
def _pool_rows(data: str, recipe: str | Recipe) -> np.ndarray:
    return recipe_pool(recipe, load_split(data, "train"))


def pool_positions(pool: np.ndarray, rows: np.ndarray, what: str, recipe: str) -> np.ndarray:
    """Positions in ``pool`` of training ``rows``; a row outside the pool is an error."""
    rows = np.asarray(rows, dtype=np.int64)
    pos = np.searchsorted(pool, rows)
    pos = np.minimum(pos, len(pool) - 1)
    outside = pool[pos] != rows
    if outside.any():
        raise InvalidInputError(
            f"{what}: training row {int(rows[outside][0])} is not in the pool of recipe "
            f"{recipe!r} ({len(pool)} rows); rank within the pool (`simattr attribute --pool "
            f"{recipe}`)"
        )
    return pos


def training_view(job: TrainJob) -> ImageDataset:
    """The counterfactual training set of ``job``: pool (or subset), minus/relabelled rows."""
    train = load_split(job.data, "train")
    name = get_recipe(job.recipe).name
    if job.subset is not None:
        pool = np.unique(np.asarray(job.subset, dtype=np.int64))
    else:
        pool = _pool_rows(job.data, job.recipe)
    view = train if len(pool) == len(train) else train.subset(pool)
    if job.relabel:
        pos = pool_positions(pool, np.asarray(job.relabel), "relabel", name)
        view = view.relabel(pos, job.relabel_to)
    if job.remove:
        pos = pool_positions(pool, np.asarray(job.remove), "remove", name)
        view = view.remove(pos)
    return view


def run_job(job: TrainJob) -> JobResult:
    """Train the model ``job`` describes and return its test probabilities (any executor)."""
    import torch

    from simattr.training.trainer import predict_logits, train_classifier

    if job.threads is not None:
        torch.set_num_threads(job.threads)
    view = training_view(job)
    test = load_split(job.data, "test")
    rows = np.asarray(job.predict, dtype=np.int64) if job.predict else np.arange(len(test))
    start = time.perf_counter()
    model = train_classifier(job.recipe, view, seed=job.seed, device=job.device)
    seconds = time.perf_counter() - start
    logits = predict_logits(model, job.recipe, test.get_images(rows), device=job.device)
    return JobResult(
        logits=np.asarray(logits, dtype=np.float32),
        seconds=seconds,
        n_train=len(view),
        info={"threads": torch.get_num_threads(), "device": job.device},
    )
