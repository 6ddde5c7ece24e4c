"""TRAK (Park et al., 2023) as a baseline, in our ranking format.

TRAK is the field's reference for data attribution by LDS (DESIGN.md section 2), so the
self-supervised baseline must be compared with it on the *same* classifiers the evaluation
retrains. This module runs the ``traker`` package on models of a recipe and turns its dense
scores into a :class:`~simattr.ranking.Ranking`:

1. the training set is the recipe's *pool* (the rows its models train on), normalised exactly as
   the trainer normalises it, without augmentation;
2. for each checkpoint (a classifier saved by :mod:`simattr.training.classifier_io`), the
   per-example gradients of the margin are projected to ``proj_dim`` dimensions and stored
   (``featurize``), then whitened (``finalize_features``);
3. targets are projected the same way per checkpoint and scored (``finalize_scores``), giving
   ``(n_pool, n_targets)`` scores averaged over checkpoints;
4. each target's pool rows are sorted by score (optionally within the target's class), and
   pool positions are mapped back to rows of the full training split.

Gradients are taken only with respect to *trained* parameters (the whitening stem of the
``whiten*`` networks is fixed, so its gradient says nothing about the training data).

Costs: the random projection dominates on the CPU. A projection matrix of
``n_params x proj_dim`` that fits in :data:`PROJ_MATRIX_BYTES` is generated once per checkpoint
and reused for every batch (traker's ``BasicProjector`` with a single block); a larger one is
regenerated in blocks for every batch, which is many times slower. Hence ``proj_dim`` defaults to
512 on the CPU and 2048 (TRAK's default) on CUDA.

The TRAK store (projected gradients, features) lives in ``work_dir/trak-<key>``, where the key
hashes everything the features depend on (recipe, training rows, checkpoint files, projection),
spelled out in the folder's ``manifest.json`` (:class:`simattr.store.Store`): a second call
with the same inputs reuses the features and only scores the targets, and a killed run resumes
featurizing where it stopped. Two processes must not share a store at once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simattr._progress import progress_bar
from simattr.errors import CheckpointError, InvalidInputError
from simattr.hashing import digest_file, digest_json
from simattr.ranking import Ranking
from simattr.store import Store
from simattr.training.classifier_io import (
    check_compatible,
    load_classifier,
    pool_rows_fingerprint,
    train_checkpoints,
)
from simattr.training.recipes import Recipe, get_recipe, recipe_pool
from simattr.training.trainer import normalise_batch, to_chw_tensor
from simattr.validation import (
    check_device,
    check_indices,
    check_positive_int,
    target_labels_or_true,
)

#: Largest projection matrix kept whole (generated once per checkpoint); larger ones are made
#: block by block for every batch.
PROJ_MATRIX_BYTES = 1 << 30
#: Columns per block when the projection matrix does not fit in :data:`PROJ_MATRIX_BYTES`.
PROJ_BLOCK = 128


def default_proj_dim(device: str | torch.device) -> int:
    """512 on the CPU (the projection dominates there), 2048 (TRAK's default) on CUDA."""
    return 2048 if torch.device(device).type == "cuda" else 512


@dataclass
class TrakScores:
    """Dense TRAK scores: ``scores[i, j]`` is pool row ``pool[j]``'s score for ``targets[i]``."""

    targets: np.ndarray  # (n_targets,) rows of ``target_split``
    target_labels: np.ndarray  # (n_targets,) labels the scores explain
    pool: np.ndarray  # (n_pool,) rows of the full training split
    pool_labels: np.ndarray  # (n_pool,)
    scores: np.ndarray  # (n_targets, n_pool) float32
    metadata: dict[str, Any] = field(default_factory=dict)


def _digest(obj: Any) -> str:
    """Store and experiment names: 16 hex digits of the canonical JSON (unchanged since 0.1)."""
    return digest_json(obj, 16, default=str)


def _resolve_checkpoints(
    data: str,
    recipe: Recipe,
    checkpoints: Sequence[str | os.PathLike[str]] | int,
    work_dir: Path,
    device: str,
    progress: bool,
) -> list[Path]:
    """Paths of the checkpoints to use: given, or ``checkpoints`` models trained (cached)."""
    if isinstance(checkpoints, bool):
        raise InvalidInputError(
            f"checkpoints must be paths or a number of models, got {checkpoints}"
        )
    if isinstance(checkpoints, (int, np.integer)):
        n = check_positive_int(int(checkpoints), "checkpoints")
        return train_checkpoints(
            data,
            recipe,
            n,
            work_dir / f"checkpoints-{recipe.name}",
            device=device,
            progress=progress,
        )
    if isinstance(checkpoints, (str, os.PathLike)):
        checkpoints = [checkpoints]
    paths = [Path(p) for p in checkpoints]
    if not paths:
        raise InvalidInputError("TRAK needs at least one checkpoint; got an empty list")
    return paths


def _make_projector(grad_dim: int, proj_dim: int, seed: int, device: torch.device) -> Any:
    """traker's ``BasicProjector``, whole (one block, made once per model) when it fits."""
    from trak.projectors import BasicProjector, ProjectionType

    whole = grad_dim * proj_dim * 4 <= PROJ_MATRIX_BYTES
    return BasicProjector(
        grad_dim=grad_dim,
        proj_dim=proj_dim,
        seed=seed,
        proj_type=ProjectionType.rademacher,
        device=device,
        block_size=proj_dim if whole else min(PROJ_BLOCK, proj_dim),
        dtype=torch.float32,
    )


def _batches(
    images: np.ndarray, labels: np.ndarray, recipe: Recipe, dev: torch.device, batch_size: int
):
    """``(positions, (normalised images, labels))`` per batch, as the trainer feeds its model."""
    for start in range(0, len(images), batch_size):
        end = min(start + batch_size, len(images))
        x = normalise_batch(to_chw_tensor(images[start:end], dev), recipe)
        y = torch.from_numpy(np.asarray(labels[start:end], dtype=np.int64)).to(dev)
        yield np.arange(start, end), (x, y)


def _check_settings(
    device: str, proj_dim: int | None, batch_size: int | None, target_split: str
) -> tuple[torch.device, int, int]:
    """The device, projection size and batch size (defaults by device), each checked by name."""
    dev = check_device(device)
    proj_dim = check_positive_int(
        default_proj_dim(dev) if proj_dim is None else proj_dim, "proj_dim"
    )
    batch_size = check_positive_int(
        (512 if dev.type == "cuda" else 128) if batch_size is None else batch_size, "batch_size"
    )
    if target_split not in ("test", "train"):
        raise InvalidInputError(f"target_split must be 'test' or 'train', got {target_split!r}")
    return dev, proj_dim, batch_size


def _load_states(
    paths: list[Path], recipe: Recipe, num_classes: int, dev: torch.device
) -> list[dict[str, torch.Tensor]]:
    """The weights of each classifier file, refused when its recipe or class count differ."""
    states: list[dict[str, torch.Tensor]] = []
    for p in paths:
        model, meta = load_classifier(p)
        check_compatible(meta, recipe, p)
        if int(meta["num_classes"]) != num_classes:
            raise CheckpointError(
                f"classifier {p} has {meta['num_classes']} classes; the data has {num_classes}"
            )
        states.append({k: v.to(dev) for k, v in model.state_dict().items()})
    return states


def _featurize(
    traker: Any,
    states: list[dict[str, torch.Tensor]],
    images: np.ndarray,
    labels: np.ndarray,
    recipe: Recipe,
    dev: torch.device,
    batch_size: int,
    progress: bool,
) -> None:
    """Per-example projected gradients of the pool under each model not yet featurized (the
    store keeps them, so an interrupted run resumes model by model)."""
    todo = [
        m
        for m in range(len(states))
        if traker.saver.model_ids.get(m, {}).get("is_featurized", 0) != 1
    ]
    n_batches = -(-len(images) // batch_size)
    with progress_bar("TRAK featurize", len(todo) * n_batches, enabled=progress) as advance:
        for m in todo:
            traker.load_checkpoint(
                states[m], model_id=m, _allow_featurizing_already_registered=True
            )
            for inds, batch in _batches(images, labels, recipe, dev, batch_size):
                traker.featurize(batch=batch, inds=inds)
                advance(1)


def trak_scores(
    data: str,
    recipe: str | Recipe,
    targets: Sequence[int] | np.ndarray,
    *,
    checkpoints: Sequence[str | os.PathLike[str]] | int,
    work_dir: str | os.PathLike[str],
    proj_dim: int | None = None,
    device: str = "cpu",
    batch_size: int | None = None,
    target_labels: Sequence[int] | np.ndarray | None = None,
    target_split: str = "test",
    projector_seed: int = 0,
    lambda_reg: float = 0.0,
    progress: bool = False,
) -> TrakScores:
    """Dense TRAK scores ``(n_targets, n_pool)`` of ``recipe``'s pool for ``targets``, over
    every checkpoint. See :func:`trak_scores_by_models` for the arguments."""
    by_models = trak_scores_by_models(
        data,
        recipe,
        targets,
        checkpoints=checkpoints,
        work_dir=work_dir,
        proj_dim=proj_dim,
        device=device,
        batch_size=batch_size,
        target_labels=target_labels,
        target_split=target_split,
        projector_seed=projector_seed,
        lambda_reg=lambda_reg,
        progress=progress,
    )
    return by_models[max(by_models)]


def trak_scores_by_models(
    data: str,
    recipe: str | Recipe,
    targets: Sequence[int] | np.ndarray,
    *,
    checkpoints: Sequence[str | os.PathLike[str]] | int,
    work_dir: str | os.PathLike[str],
    sizes: Sequence[int] | None = None,
    proj_dim: int | None = None,
    device: str = "cpu",
    batch_size: int | None = None,
    target_labels: Sequence[int] | np.ndarray | None = None,
    target_split: str = "test",
    projector_seed: int = 0,
    lambda_reg: float = 0.0,
    progress: bool = False,
) -> dict[int, TrakScores]:
    """Dense TRAK scores of ``recipe``'s pool for ``targets``, for ensembles of the first
    ``n`` checkpoints, for each ``n`` of ``sizes`` (default: all of them).

    TRAK improves with the number of models it averages, and how fast it does is what a
    comparison at an equal number of trained models needs: every checkpoint is featurized and
    scored once, and each ensemble only finalizes its first ``n`` models' scores (traker's
    ``finalize_scores(model_ids=...)``), so a whole curve costs what its largest point costs.

    Args:
        data: dataset root as :func:`simattr.training.jobs.load_split` takes it.
        recipe: decides the pool (training rows scored) and the input normalisation.
        targets: rows of ``target_split`` to explain.
        checkpoints: classifier files saved by ``save_classifier`` (models of this recipe's
            architecture; any training rows), or a number of models of the recipe to train on
            its pool (seeds ``0..n-1``, cached in ``work_dir/checkpoints-<recipe>``).
        work_dir: where the TRAK store (and trained checkpoints) go; reused across calls.
        sizes: ensemble sizes to return (the first ``n`` checkpoints each); default all.
        proj_dim: projection dimension (default :func:`default_proj_dim`).
        device: ``"cpu"`` or ``"cuda"``; scores are float32 on either.
        batch_size: images per per-example-gradient batch (default 128 on the CPU, 512 on CUDA).
        target_labels: the label each target's margin is taken for (default: true labels).
        target_split: ``"test"`` (default) or ``"train"`` (self-influence checks).
        projector_seed: seed of the random projection.
        lambda_reg: ridge term added to ``X^T X`` before inverting (TRAK's ``lambda_reg``).
    """
    from trak import TRAKer

    from simattr.models.classifiers import build_classifier
    from simattr.training.jobs import load_split

    recipe = get_recipe(recipe)
    dev, proj_dim, batch_size = _check_settings(device, proj_dim, batch_size, target_split)
    work = Path(work_dir)
    train = load_split(data, "train")
    split = load_split(data, target_split)
    targets = check_indices(targets, len(split), "targets")
    if len(targets) == 0:
        raise InvalidInputError("TRAK needs at least one target; got none")
    t_labels = target_labels_or_true(split.labels, targets, target_labels, train.num_classes)

    pool = recipe_pool(recipe, train)
    fingerprint = pool_rows_fingerprint(train, pool)
    paths = _resolve_checkpoints(data, recipe, checkpoints, work, device, progress)
    sizes = _check_sizes(sizes, len(paths))
    states = _load_states(paths, recipe, train.num_classes, dev)

    model = build_classifier(recipe.arch, train.num_classes).to(dev).eval()
    grad_wrt = [n for n, p in model.named_parameters() if p.requires_grad]
    grad_dim = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad)
    identity = {
        "recipe": recipe.to_dict(),
        "pool": fingerprint,
        "checkpoints": [digest_file(p, 20) for p in paths],
        "proj_dim": proj_dim,
        "projector_seed": projector_seed,
        "projection": "basic-rademacher-fp32",
        "device": dev.type,
        "grad_wrt": grad_wrt,
        "lambda_reg": float(lambda_reg),
    }
    # The folder is named by the digest of its identity; the manifest spells the identity out
    # (and catches the unlikely clash of two 16-digit names).
    trak_store = Store(
        work / f"trak-{_digest(identity)}",
        "trak-store",
        identity,
        holds="holds a TRAK store of other inputs",
        remedy="delete it to recompute",
    )
    if trak_store.check() is None:
        trak_store.save()
    store = trak_store.folder

    traker = TRAKer(
        model=model,
        task="image_classification",
        train_set_size=len(pool),
        save_dir=str(store),
        load_from_save_dir=True,  # with False, traker 0.3.2 never writes experiments.json
        device=str(dev),
        projector=_make_projector(grad_dim, proj_dim, projector_seed, dev),
        use_half_precision=False,
        grad_wrt=grad_wrt,
        lambda_reg=float(lambda_reg),
        logging_level=logging.ERROR,
    )
    model_ids = list(range(len(paths)))
    pool_images = train.get_images(pool)
    pool_labels = train.labels[pool].astype(np.int64)

    _featurize(traker, states, pool_images, pool_labels, recipe, dev, batch_size, progress)
    traker.finalize_features(model_ids=model_ids)

    # finalize_features freed the projector's matrix; a fresh one regenerates it per model
    traker.projector = _make_projector(grad_dim, proj_dim, projector_seed, dev)
    exp_name = "targets-" + _digest(
        {"split": target_split, "rows": targets.tolist(), "labels": t_labels.tolist()}
    )
    target_images = split.get_images(targets)
    # only the models some ensemble uses are scored (all are featurized: one store serves all)
    with progress_bar("TRAK score", max(sizes), enabled=progress) as advance:
        for m in model_ids[: max(sizes)]:
            traker.start_scoring_checkpoint(
                exp_name, states[m], model_id=m, num_targets=len(targets)
            )
            for inds, batch in _batches(target_images, t_labels, recipe, dev, batch_size):
                traker.score(batch=batch, inds=inds)
            advance(1)
    out = {}
    for n in sizes:
        used = model_ids[:n]
        dense = np.asarray(traker.finalize_scores(exp_name, model_ids=used), dtype=np.float32)
        scores = np.ascontiguousarray(dense.T)  # traker returns (n_pool, n_targets)
        if not np.all(np.isfinite(scores)):
            raise InvalidInputError(
                f"TRAK produced non-finite scores (store {store}); X^T X is probably singular: "
                "pass lambda_reg > 0 or a smaller proj_dim than the pool size"
            )
        out[n] = TrakScores(
            targets=targets,
            target_labels=t_labels,
            pool=pool,
            pool_labels=pool_labels,
            scores=scores,
            metadata={
                "method": "trak",
                "recipe": recipe.name,
                "proj_dim": proj_dim,
                "checkpoints": [str(p) for p in paths[:n]],
                "n_models": n,
                "projector_seed": projector_seed,
                "lambda_reg": float(lambda_reg),
                "pool_rows_fingerprint": fingerprint,
                "target_split": target_split,
                "store": str(store),
            },
        )
    return out


def _check_sizes(sizes: Sequence[int] | None, n_checkpoints: int) -> list[int]:
    """Ensemble sizes, each from 1 to the number of checkpoints, ascending and distinct."""
    if sizes is None:
        return [n_checkpoints]
    out = sorted({check_positive_int(n, "sizes") for n in sizes})
    if not out or out[-1] > n_checkpoints:
        raise InvalidInputError(
            f"sizes must be ensemble sizes from 1 to the {n_checkpoints} checkpoints, got "
            f"{list(sizes)!r}"
        )
    return out


def top_k_ranking(dense: TrakScores, k: int, *, class_conditional: bool = False) -> Ranking:
    """The top-``k`` pool rows per target of dense scores (full-split rows, scores descending).

    Ties are broken by pool order (a stable sort), so the result is a function of the scores.
    """
    k = check_positive_int(k, "k")
    n_t = len(dense.targets)
    indices = np.empty((n_t, k), dtype=np.int64)
    scores = np.empty((n_t, k), dtype=np.float64)
    all_pos = np.arange(len(dense.pool))
    for i in range(n_t):
        pos = all_pos[dense.pool_labels == dense.target_labels[i]] if class_conditional else all_pos
        if len(pos) < k:
            raise InvalidInputError(
                f"k={k} is larger than the {len(pos)} candidates of target "
                f"{int(dense.targets[i])} (class {int(dense.target_labels[i])})"
            )
        s = dense.scores[i, pos]
        order = np.argsort(-s, kind="stable")[:k]
        indices[i] = dense.pool[pos[order]]
        scores[i] = s[order]
    meta = {**dense.metadata, "class_conditional": bool(class_conditional)}
    return Ranking(targets=dense.targets, indices=indices, scores=scores, metadata=meta)


def trak_ranking(
    data: str,
    recipe: str | Recipe,
    targets: Sequence[int] | np.ndarray,
    k: int,
    *,
    checkpoints: Sequence[str | os.PathLike[str]] | int,
    work_dir: str | os.PathLike[str],
    proj_dim: int | None = None,
    device: str = "cpu",
    class_conditional: bool = False,
    batch_size: int | None = None,
    target_labels: Sequence[int] | np.ndarray | None = None,
    projector_seed: int = 0,
    lambda_reg: float = 0.0,
    progress: bool = False,
) -> Ranking:
    """TRAK's top-``k`` training rows (of ``recipe``'s pool) for test ``targets``.

    A ranking with ``k`` equal to the pool size (``class_conditional=False``) holds every
    score, which is what LDS needs. See :func:`trak_scores` for the arguments;
    ``class_conditional`` restricts each target's candidates to its class (the label explained).
    """
    k = check_positive_int(k, "k")
    dense = trak_scores(
        data,
        recipe,
        targets,
        checkpoints=checkpoints,
        work_dir=work_dir,
        proj_dim=proj_dim,
        device=device,
        batch_size=batch_size,
        target_labels=target_labels,
        projector_seed=projector_seed,
        lambda_reg=lambda_reg,
        progress=progress,
    )
    return top_k_ranking(dense, k, class_conditional=class_conditional)
