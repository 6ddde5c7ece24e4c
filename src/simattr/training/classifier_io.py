"""Trained classifiers on disk: save, load and cache the models of a recipe.

The model-based baselines (TRAK, supervised-feature similarity) explain *the classifiers that
the evaluation retrains*, so they need those classifiers as files: trained once, shared by every
baseline and every run, and never trusted blindly. A classifier is stored as

* ``<name>.safetensors``: the state dict (weights and BatchNorm buffers; safetensors, so reading
  a file cannot run code), and
* ``<name>.safetensors.json``: a sidecar with the recipe's settings, the number of classes, the
  seed and a fingerprint of the training rows, which is what :func:`load_classifier` rebuilds
  the network from (``build_classifier(recipe["arch"], num_classes)``).

:func:`train_checkpoints` trains seeds ``0 .. n-1`` of a recipe on its pool into a folder and is
resumable: a model already there (and readable, with the same identity) is not retrained.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from simattr._io import (
    provenance,
    read_json,
    sidecar_path,
    verify_checksum,
    write_with_sidecar,
)
from simattr._progress import progress_bar
from simattr.data.dataset import ImageDataset
from simattr.errors import CheckpointError, DamagedFileError, InvalidInputError, MissingFileError
from simattr.hashing import digest_bytes
from simattr.models.classifiers import build_classifier
from simattr.store import as_json, check_identity
from simattr.training.recipes import Recipe, get_recipe, recipe_pool

#: ``kind`` written in every classifier sidecar (a sidecar of another artifact is refused).
KIND = "classifier"
SUFFIX = ".safetensors"


def pool_rows_fingerprint(train: ImageDataset, rows: np.ndarray) -> str:
    """A short hash of the training data a model saw: the split's source and the rows used.

    Two models with the same fingerprint were trained on the same images of the same dataset,
    whichever process computed it (rows are sorted first; labels are those of the source).
    """
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    parts = (str(train.fingerprint).encode(), str(train.split).encode(), rows.tobytes())
    return digest_bytes(parts, 20)


def save_classifier(
    path: str | os.PathLike[str],
    model: nn.Module,
    recipe: str | Recipe,
    num_classes: int,
    seed: int,
    pool_rows_fingerprint: str,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model``'s state dict as safetensors and its JSON sidecar, both atomically.

    Args:
        path: destination, ending in ``.safetensors``.
        model: a network built by ``build_classifier(recipe.arch, num_classes)``.
        recipe: the recipe it was trained with (its settings go into the sidecar).
        num_classes: outputs of the network (needed to rebuild it).
        seed: the training seed.
        pool_rows_fingerprint: :func:`pool_rows_fingerprint` of the rows it was trained on.
        extra: more JSON-ready fields for the sidecar (e.g. accuracy, seconds).

    The weights are written first and the sidecar second, so a killed write leaves either
    nothing or a weights file without a sidecar, which :func:`load_classifier` refuses and
    :func:`train_checkpoints` retrains.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != SUFFIX:
        raise InvalidInputError(f"classifiers are written as {SUFFIX}; got output path {path}")
    recipe = get_recipe(recipe)
    # safetensors needs contiguous, unshared CPU tensors (models train in channels_last)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    if not tensors:
        raise InvalidInputError(f"model {type(model).__name__} has no weights to save to {path}")
    meta = provenance(
        kind=KIND,
        recipe=recipe.to_dict(),
        arch=recipe.arch,
        num_classes=int(num_classes),
        seed=int(seed),
        pool_rows_fingerprint=str(pool_rows_fingerprint),
        **dict(extra or {}),
    )
    # the sidecar records the checksum of the weights; load_classifier checks it
    write_with_sidecar(
        path, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}), meta
    )
    return path


def read_classifier_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The sidecar of classifier ``path``, checked to be one (CheckpointError otherwise)."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"no such classifier file: {path}")
    meta_path = sidecar_path(path)
    if not meta_path.exists():
        raise CheckpointError(
            f"{path} has no sidecar {meta_path.name}: it was not written by save_classifier "
            "(or its write was interrupted); retrain it with train_checkpoints"
        )
    try:
        meta = read_json(meta_path)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{meta_path} is not readable JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("kind") != KIND:
        raise CheckpointError(
            f"{meta_path} describes a {meta.get('kind') if isinstance(meta, dict) else '?'!r}, "
            f"not a {KIND!r}: {path} is not a classifier saved by save_classifier"
        )
    for key in ("arch", "num_classes", "recipe"):
        if key not in meta:
            raise CheckpointError(f"{meta_path} lacks the field {key!r}; re-save {path}")
    return meta


def load_classifier(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the classifier saved at ``path``; returns ``(model in eval mode, sidecar)``.

    The network is built from the sidecar's architecture and number of classes and the state
    dict must match it exactly: a missing or unexpected tensor, or one of another shape, is a
    :class:`~simattr.errors.CheckpointError` naming the file and the tensors.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_classifier_meta(path)
    try:
        verify_checksum(path, meta, "classifier")
    except DamagedFileError as exc:
        raise CheckpointError(str(exc)) from None
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from None
    try:
        model = build_classifier(str(meta["arch"]), int(meta["num_classes"]))
    except InvalidInputError as exc:
        raise CheckpointError(
            f"{path}: cannot rebuild the classifier its sidecar names: {exc}"
        ) from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not hold a {meta['arch']!r} classifier with {meta['num_classes']} "
            f"classes: missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
            f"unexpected tensors {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
        )
    wrong = [k for k, v in state.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:
        k = wrong[0]
        raise CheckpointError(
            f"{path}: tensor {k!r} has shape {tuple(state[k].shape)}, but a {meta['arch']!r} "
            f"classifier with {meta['num_classes']} classes needs {tuple(expected[k].shape)}"
        )
    model.load_state_dict(state, strict=True)
    return model.to(torch.device(device)).eval(), meta


def check_compatible(meta: Mapping[str, Any], recipe: str | Recipe, path: object) -> None:
    """Refuse a classifier whose inputs differ from ``recipe``'s (architecture, mean, std).

    A model trained on other rows (an LDS subset, another pool) is fine for the model-based
    baselines; one that expects differently normalised inputs, or another network, is not.
    """
    recipe = get_recipe(recipe)
    saved = meta.get("recipe", {})
    mine = as_json(recipe.to_dict())
    for key in ("arch", "mean", "std"):
        if as_json(saved.get(key)) != mine[key]:
            raise CheckpointError(
                f"classifier {path} was trained with {key}={saved.get(key)!r}, but recipe "
                f"{recipe.name!r} has {key}={mine[key]!r}; use checkpoints of this recipe"
            )


def _identity(recipe: Recipe, seed: int, fingerprint: str) -> dict[str, Any]:
    """The sidecar fields that decide a cached model (:func:`save_classifier` writes them)."""
    return as_json({"recipe": recipe.to_dict(), "seed": seed, "pool_rows_fingerprint": fingerprint})


def _valid_cached(path: Path, ident: dict[str, Any]) -> bool:
    """Whether ``path`` already holds the model ``ident`` describes (resumability).

    An unreadable or half-written file is not valid (it is retrained); a readable model of
    *other* settings is an error, so that a folder is never silently mixed.
    """
    if not path.exists():
        return False
    try:
        _, meta = load_classifier(path)
    except CheckpointError:
        return False
    check_identity(
        {key: meta.get(key) for key in ident},
        ident,
        where=path,
        holds="holds a classifier of other settings",
        remedy="use another checkpoint folder or delete it",
    )
    return True


def train_checkpoints(
    data: str,
    recipe: str | Recipe,
    n_models: int,
    out_dir: str | os.PathLike[str],
    device: str = "cpu",
    threads: int | None = None,
    progress: bool = False,
) -> list[Path]:
    """Train (or find in ``out_dir``) models of ``recipe`` on its pool with seeds ``0..n-1``.

    Returns the paths ``out_dir/seed-<s>.safetensors`` in seed order. ``threads`` sets torch's
    intra-op threads for the duration of the call (one thread per model is the fast setting on
    a shared 2-core machine); the caller's setting is restored.
    """
    from simattr.training.jobs import load_split
    from simattr.training.trainer import train_classifier

    if isinstance(n_models, bool) or not isinstance(n_models, (int, np.integer)) or n_models < 1:
        raise InvalidInputError(f"n_models must be a positive integer, got {n_models!r}")
    recipe = get_recipe(recipe)
    train = load_split(data, "train")
    pool = recipe_pool(recipe, train)
    fingerprint = pool_rows_fingerprint(train, pool)
    out = Path(out_dir)
    paths = [out / f"seed-{s}{SUFFIX}" for s in range(int(n_models))]
    todo = [
        (s, p)
        for s, p in enumerate(paths)
        if not _valid_cached(p, _identity(recipe, s, fingerprint))
    ]
    if not todo:
        return paths
    view = train if len(pool) == len(train) else train.subset(pool)
    saved_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        with progress_bar(f"classifiers ({recipe.name})", len(todo), enabled=progress) as advance:
            for s, p in todo:
                start = time.perf_counter()
                model = train_classifier(recipe, view, seed=s, device=device)
                seconds = time.perf_counter() - start
                save_classifier(
                    p,
                    model,
                    recipe,
                    view.num_classes,
                    s,
                    fingerprint,
                    extra={
                        "n_train": len(view),
                        "dataset": data,
                        "threads": torch.get_num_threads(),
                        "seconds": round(seconds, 3),
                    },
                )
                advance(1)
    finally:
        torch.set_num_threads(saved_threads)
    return paths
