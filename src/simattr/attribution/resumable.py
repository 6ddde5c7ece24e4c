"""Rank many targets block by block, so that an interrupted run resumes where it stopped.

Ranking 50,000 ImageNet targets takes tens of minutes; losing it all to a closed terminal is
not acceptable (DESIGN.md section 4: long runs resume where they stopped). The targets are cut
into blocks; each finished block is written atomically into a parts folder next to the output
(``OUT.npz.parts/block-00003.npz``); a restarted run loads the finished blocks and computes
only the others, then assembles the ranking, writes it atomically and removes the folder.

The folder holds a ``manifest.json`` that fingerprints everything the blocks depend on
(training and test features, labels, method, C, solver, retrieval settings, k, the targets
and the block plan). A restart whose inputs differ refuses to mix the old blocks with new
ones and names what changed; ``resume=False`` discards the folder and starts again.

In class-conditional mode the block plan sorts the targets by label first, so that a block
touches few classes and each class pool is prepared a few times, not once per block.
"""

from __future__ import annotations

import os
import shutil
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from simattr._progress import progress_bar
from simattr.attribution.attributor import Attributor, SmallPoolWarning
from simattr.errors import InvalidInputError
from simattr.hashing import digest_array, digest_file
from simattr.ranking import Ranking, save_ranking
from simattr.store import Store
from simattr.validation import check_indices, check_positive_int

MANIFEST_VERSION = 1


def parts_dir(out: str | os.PathLike[str]) -> Path:
    """The parts folder of an output ranking: ``OUT.npz`` -> ``OUT.npz.parts``."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


def fingerprint_array(a: np.ndarray | None, max_bytes: int = 64 << 20) -> str | None:
    """A content hash of an array (:func:`simattr.hashing.digest_array`; sampled rows above
    ``max_bytes``, so a change confined to unsampled rows is not seen: file identities,
    :func:`fingerprint_file`, add size and modification time for that)."""
    return digest_array(a, max_bytes)


def fingerprint_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Identity of an input file: resolved path, size, and the SHA-256 of its bytes (so a
    file changed in place, whatever its modification time, is another input)."""
    p = Path(path).resolve()
    st = p.stat()
    return {"path": str(p), "size": st.st_size, "sha256": digest_file(p)}


def block_plan(targets: np.ndarray, labels: np.ndarray | None, block_size: int) -> list[np.ndarray]:
    """Positions (into ``targets``) of each block; by label first when labels are given."""
    n = len(targets)
    order = np.arange(n) if labels is None else np.argsort(labels, kind="stable")
    return [order[i : i + block_size] for i in range(0, n, block_size)]


def rank_resumable(
    attributor: Attributor,
    test_features: np.ndarray,
    test_labels: np.ndarray | None,
    targets: np.ndarray,
    k: int,
    out: str | os.PathLike[str],
    *,
    block_size: int = 1024,
    resume: bool = True,
    progress: bool = False,
    inputs: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    on_block: Callable[[int, int], None] | None = None,
    train_rows: np.ndarray | None = None,
) -> Ranking:
    """Rank ``targets`` (rows of ``test_features``) with a fitted ``attributor`` and write the
    ranking to ``out`` (an ``.npz`` with its sidecar), block by block, resumably.

    Args:
        attributor: fitted :class:`Attributor`.
        test_features, test_labels: the test split (labels: the labels to explain, needed in
            class-conditional mode).
        targets: test rows to rank.
        k: training images kept per target.
        out: output ``.npz``; finished blocks go to ``OUT.npz.parts/`` meanwhile.
        block_size: targets per saved block (the most work a crash can lose).
        resume: reuse finished blocks of an earlier run with the same inputs; ``False``
            discards them.
        progress: rich progress bar over targets.
        inputs: identities of the inputs for the manifest (the CLI passes file fingerprints);
            by default, content fingerprints of the arrays.
        metadata: extra sidecar fields of the final ranking.
        on_block: called as ``on_block(done, total)`` after each block is saved (tests use it
            to simulate an interruption).
        train_rows: when the attributor was fitted on a subset of the training split (a
            recipe's pool), the split's row of each of its training items: the saved indices
            are mapped back to rows of the full split, which is what rankings index.

    Returns:
        The assembled :class:`Ranking`, targets in the order given.
    """
    attributor._check_fitted()
    out = Path(out)
    if out.suffix != ".npz":
        raise InvalidInputError(f"rankings are written as .npz; got output path {out}")
    block_size = check_positive_int(block_size, "block_size")
    k = check_positive_int(k, "k")
    test_features = np.asarray(test_features)
    targets = check_indices(targets, len(test_features), "targets")
    if len(targets) == 0:
        raise InvalidInputError("no targets given: pass at least one test row to rank")
    labels = None
    if attributor.needs_target_labels_:
        if test_labels is None:
            raise InvalidInputError(
                "class-conditional attribution needs test labels (the label to explain)"
                if attributor.class_conditional
                else "this method scores with labels: it needs test labels (the label to explain)"
            )
        labels = np.asarray(test_labels)[targets]
    plan = block_plan(targets, labels, block_size)
    manifest = {
        "version": MANIFEST_VERSION,
        "settings": attributor.describe(),
        "k": k,
        "block_size": block_size,
        "n_blocks": len(plan),
        "targets": fingerprint_array(targets),
        "n_targets": len(targets),
        "inputs": inputs
        if inputs is not None
        else {
            "train_features": fingerprint_array(attributor.train_features_),
            "train_labels": fingerprint_array(attributor.train_labels_),
            "test_features": fingerprint_array(test_features),
        },
        "target_labels": fingerprint_array(labels),
        "train_rows": fingerprint_array(None if train_rows is None else np.asarray(train_rows)),
    }
    folder = parts_dir(out)
    if folder.exists() and not resume:
        shutil.rmtree(folder)
    store = Store(
        folder,
        None,
        manifest,
        holds="holds blocks of an earlier run with different inputs",
        remedy="resuming would mix two rankings. Delete the folder or pass `resume=False` "
        "to start again",
    )
    store.check()
    # Bad targets are refused before anything is written (``_check_targets`` is cheap).
    _, checked = attributor._check_targets(test_features[targets], labels)
    # a pool smaller than k is ranked whole: one warning, rows as wide as the largest pool
    width, note = attributor.topk_width(checked, k)
    if note is not None:
        warnings.warn(note, SmallPoolWarning, stacklevel=2)

    indices = np.empty((len(targets), width), dtype=np.int64)
    scores = np.empty((len(targets), width), dtype=np.float64)
    todo = []
    for b, positions in enumerate(plan):
        # a damaged block (its checksum does not match) is deleted and computed again
        part = _load_part(store.verified(f"block-{b:05d}.npz"), positions, width)
        if part is None:
            todo.append(b)
        else:
            indices[positions], scores[positions] = part
    done = len(plan) - len(todo)
    description = f"attribution ({manifest['settings']['method']})"
    with progress_bar(description, len(targets), progress) as advance:
        advance(sum(len(plan[b]) for b in range(len(plan)) if b not in set(todo)))
        for b in todo:
            positions = plan[b]
            rows = targets[positions]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SmallPoolWarning)  # given once, above
                idx, val = attributor.topk(
                    test_features[rows], None if labels is None else labels[positions], width
                )
            idx, val = _widen(idx, val, width)
            if not store.exists():  # written with the first block: a run refused before
                store.save()  # it leaves nothing behind
            arrays = {"positions": positions, "indices": idx, "scores": val}
            store.write(f"block-{b:05d}.npz", lambda tmp, a=arrays: np.savez(tmp, **a))
            indices[positions], scores[positions] = idx, val
            done += 1
            advance(len(positions))
            if on_block is not None:
                on_block(done, len(plan))
    if train_rows is not None:
        mapped = np.asarray(train_rows, dtype=np.int64)[np.maximum(indices, 0)]
        indices = np.where(indices >= 0, mapped, -1)
    ranking = Ranking(targets=targets, indices=indices, scores=scores, metadata=metadata or {})
    save_ranking(out, ranking)
    shutil.rmtree(folder, ignore_errors=True)
    return ranking


def _widen(idx: np.ndarray, val: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A block's answer padded to the ranking's width (a block of small pools only is
    narrower than one that holds a larger pool)."""
    missing = width - idx.shape[1]
    if missing <= 0:
        return idx, val
    pad = ((0, 0), (0, missing))
    return np.pad(idx, pad, constant_values=-1), np.pad(val, pad, constant_values=np.nan)


def _load_part(
    path: Path | None, positions: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """A finished block, or ``None`` when missing or unreadable (it is then recomputed)."""
    if path is None or not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            pos, idx, val = npz["positions"], npz["indices"], npz["scores"]
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile):
        return None
    if not np.array_equal(pos, positions) or idx.shape != (len(positions), k):
        return None
    return idx, val
