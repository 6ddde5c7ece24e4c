"""The full-data ensemble: which targets the recipe gets right, and each target's flip class.

The support search explains *correct* predictions, so it first trains ``n_models`` models of the
recipe on its whole pool and averages their test probabilities: a target counts as correctly
classified when the averaged prediction is its label, and its *flip class* (the label that
mislabel support relabels to) is the class with the highest averaged probability other than the
label (DESIGN.md section 2).

Each model's probabilities over the whole test split are cached in ``cache_dir`` as
``seed-<s>.npy`` with a JSON sidecar naming the recipe, the seed and the dataset fingerprint, so
the ensemble is trained once per recipe and data, shared by every ranking and mode, and a killed
run loses at most the models in flight.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simattr._io import (
    provenance,
    read_json,
    read_sidecar,
    sidecar_path,
    verify_checksum,
    write_with_sidecar,
)
from simattr._progress import progress_bar
from simattr.errors import DamagedFileError, InvalidInputError
from simattr.store import as_json, check_identity
from simattr.training.executors import InlineExecutor, run_jobs
from simattr.training.jobs import JobResult, TrainJob, load_split
from simattr.training.recipes import Recipe, get_recipe


@dataclass
class Ensemble:
    """Averaged test probabilities of the full-data models, and what follows from them."""

    probs: np.ndarray  # (n_models, n_test, C) float32 softmax outputs
    labels: np.ndarray  # (n_test,) true test labels
    seeds: tuple[int, ...]

    @property
    def mean(self) -> np.ndarray:
        return self.probs.mean(axis=0)

    @property
    def predicted(self) -> np.ndarray:
        """Class of the averaged prediction of each test image."""
        return self.mean.argmax(axis=1)

    @property
    def correct(self) -> np.ndarray:
        """Whether the ensemble classifies each test image correctly."""
        return self.predicted == self.labels

    @property
    def flip_class(self) -> np.ndarray:
        """For each test image, the most probable class other than its label."""
        mean = self.mean.copy()
        mean[np.arange(len(mean)), self.labels] = -np.inf
        return mean.argmax(axis=1)

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean())


def _identity(data: str, recipe: Recipe, seed: int) -> dict:
    """What decides an ensemble model, as it reads back from its JSON sidecar."""
    train, test = load_split(data, "train"), load_split(data, "test")
    ident = {
        "recipe": recipe.to_dict(),
        "seed": seed,
        "train_fingerprint": train.fingerprint,
        "test_fingerprint": test.fingerprint,
    }
    return as_json(ident)


def _cached(path: Path, ident: dict, n_test: int) -> np.ndarray | None:
    meta_path = sidecar_path(path)
    if not (path.exists() and meta_path.exists()):
        return None
    check_identity(
        read_json(meta_path).get("identity"),
        ident,
        where=path,
        holds="holds an ensemble model of other settings",
        remedy="use another --ensemble-dir or delete it",
    )
    try:
        verify_checksum(path, read_sidecar(path))
        probs = np.load(path, allow_pickle=False)
    except (DamagedFileError, ValueError, OSError, EOFError) as exc:
        # a damaged cache entry is a model to train again, not an error
        warnings.warn(f"{exc}; retraining that ensemble model", stacklevel=2)
        path.unlink(missing_ok=True)
        return None
    if probs.ndim != 2 or probs.shape[0] != n_test:
        raise InvalidInputError(f"{path} has shape {probs.shape}; expected ({n_test}, C)")
    return probs


def train_ensemble(
    data: str,
    recipe: str | Recipe,
    *,
    n_models: int,
    cache_dir: str | os.PathLike[str],
    executor: Executor | None = None,
    seeds: Sequence[int] | None = None,
    device: str = "cpu",
    threads: int | None = None,
    progress: bool = False,
) -> Ensemble:
    """Train (or read from ``cache_dir``) the ``n_models`` full-data models of ``recipe``.

    Seeds default to ``0 .. n_models - 1``; models already cached are not retrained.
    """
    if n_models < 1:
        raise InvalidInputError(f"the ensemble needs at least one model, got {n_models}")
    recipe = get_recipe(recipe)
    seeds = tuple(range(n_models)) if seeds is None else tuple(int(s) for s in seeds)
    cache = Path(cache_dir)
    test = load_split(data, "test")
    found: dict[int, np.ndarray] = {}
    for s in seeds:
        probs = _cached(cache / f"seed-{s}.npy", _identity(data, recipe, s), len(test))
        if probs is not None:
            found[s] = probs
    missing = [s for s in seeds if s not in found]
    executor = executor or InlineExecutor()
    bar = progress and bool(missing)
    with progress_bar(f"ensemble ({recipe.name})", len(missing), enabled=bar) as advance:

        def save(s: int, result: JobResult) -> None:
            path = cache / f"seed-{s}.npy"
            meta = provenance(
                kind="ensemble-model",
                identity=_identity(data, recipe, s),
                seconds=round(result.seconds, 3),
                n_train=result.n_train,
                test_accuracy=float((result.probs.argmax(1) == test.labels).mean()),
            )
            write_with_sidecar(path, lambda tmp: np.save(tmp, result.probs), meta)
            found[s] = result.probs
            advance(1)

        jobs = {
            s: TrainJob(data=data, recipe=recipe, seed=s, device=device, threads=threads)
            for s in missing
        }
        run_jobs(executor, jobs, save)
    return Ensemble(
        probs=np.stack([found[s] for s in seeds]).astype(np.float32),
        labels=test.labels.copy(),
        seeds=seeds,
    )
