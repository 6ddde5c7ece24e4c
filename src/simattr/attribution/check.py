"""The scorer contract, shipped with the library: :func:`check_scorer` runs a scorer through it.

A method is a :class:`~simattr.attribution.scorers.Scorer` subclass registered in
:data:`~simattr.attribution.scorers.SCORERS`; everything else (pools, blocks, retrieval, the CLI's
``--method`` choices) is generic. What the generic code relies on is checked here, on small
seeded data, so that a new scorer is checked the day it is written and not when a ranking looks
odd: parameters that survive ``clone``, scores of the declared shape and a float dtype, finite,
the same twice for the same seed, a block scored like its rows one by one, rankings that stay
inside the target's class pool, and bad input refused through :class:`Attributor` with a
:class:`~simattr.errors.InvalidInputError`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from simattr.attribution.attributor import Attributor
from simattr.attribution.scorers import Scorer
from simattr.errors import InvalidInputError

#: Sizes of the check's data: small enough for a second on a CPU, large enough that each class
#: pool holds more images than the top-k asked for.
N_TRAIN, N_TARGETS, DIM, N_CLASSES, K = 48, 6, 8, 3, 4


def check_scorer(scorer: Scorer | type[Scorer], *, seed: int = 0) -> None:
    """Run ``scorer`` (an instance, or a class built with its defaults) through the contract.

    Raises:
        InvalidInputError: naming the scorer and the first clause it breaks.
    """
    instance = scorer.contract_example() if isinstance(scorer, type) else scorer
    label = getattr(instance, "label", type(instance).__name__)
    if not isinstance(instance, Scorer):
        raise InvalidInputError(f"{label} is not a Scorer subclass instance")

    def fail(what: str) -> InvalidInputError:
        return InvalidInputError(f"scorer {label} breaks the contract: {what}")

    _check_params(instance, fail)
    pool, targets, train_labels, target_labels = _data(seed)
    labels = (train_labels, target_labels)
    first = _scores(instance, pool, targets, fail, labels)
    again = _scores(_fresh(instance, seed), pool, targets, fail, labels)
    if not np.array_equal(first, again, equal_nan=True):
        raise fail("two runs on the same data and seed give different scores")
    single = np.vstack(
        [
            _scores(
                instance, pool, targets[i : i + 1], fail, (train_labels, target_labels[i : i + 1])
            )
            for i in range(2)
        ]
    )
    if not np.allclose(single, first[:2], rtol=1e-4, atol=1e-5 * max(1.0, np.abs(first).max())):
        raise fail("a target scores differently alone than in a block")

    att = Attributor(_fresh(instance, seed), block_size=4).fit(pool, train_labels)
    indices, scores = att.topk(targets, target_labels, k=K)
    if indices.shape != (N_TARGETS, K) or scores.shape != (N_TARGETS, K):
        raise fail(f"topk gave shapes {indices.shape} and {scores.shape}, not {(N_TARGETS, K)}")
    if (train_labels[indices] != target_labels[:, None]).any():
        raise fail("a class-conditional ranking holds an image of another class")
    if (np.diff(scores, axis=1) > 0).any():
        raise fail("a ranking's scores do not descend")
    _check_refusals(instance, pool, train_labels, targets, target_labels, seed, fail)


def _check_params(instance: Scorer, fail: Any) -> None:
    """A name, ``validate()`` passing on the scorer as built, parameters surviving ``clone``."""
    from sklearn.base import clone

    if not instance.name:
        raise fail("it has no registered name (class attribute `name`)")
    instance.validate()
    try:
        copy = clone(instance)
    except RuntimeError as exc:  # scikit-learn's own refusal of a constructor that alters them
        raise fail(f"clone() does not keep its parameters ({exc})") from None
    if copy.get_params(deep=False) != instance.get_params(deep=False):
        raise fail("clone() does not keep its parameters (store them unchanged in __init__)")


def _data(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Seeded unit-norm float32 features: a pool of three classes and targets of each class."""
    rng = np.random.default_rng(seed)
    pool = rng.standard_normal((N_TRAIN, DIM)).astype(np.float32)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    targets = rng.standard_normal((N_TARGETS, DIM)).astype(np.float32)
    targets /= np.linalg.norm(targets, axis=1, keepdims=True)
    train_labels = np.arange(N_TRAIN, dtype=np.int64) % N_CLASSES
    target_labels = np.arange(N_TARGETS, dtype=np.int64) % N_CLASSES
    return pool, targets, train_labels, target_labels


def _fresh(instance: Scorer, seed: int) -> Scorer:
    """A clone, with its seed set when it takes one (``seed`` or ``random_state``)."""
    from sklearn.base import clone

    copy = clone(instance)
    for name in ("seed", "random_state"):
        if name in copy.get_params(deep=False):
            copy.set_params(**{name: seed})
    return copy


def _scores(
    instance: Scorer,
    pool: np.ndarray,
    targets: np.ndarray,
    fail: Any,
    labels: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """``score(prepare(pool), targets)`` (``score_labelled`` with ``labels`` = (pool labels,
    target labels) for a scorer that uses labels), checked for shape, dtype and finiteness."""
    if instance.uses_labels:
        raw = instance.score_labelled(instance.prepare(pool), targets, labels[1], labels[0])
    else:
        raw = instance.score(instance.prepare(pool), targets)
    out = np.asarray(raw)
    if out.shape != (len(targets), len(pool)):
        raise fail(
            f"score() gave shape {out.shape}, not (n_targets, n_pool) {(len(targets), len(pool))}"
        )
    if not np.issubdtype(out.dtype, np.floating):
        raise fail(f"score() gave dtype {out.dtype}, not a float dtype")
    if not np.isfinite(out).all():
        raise fail("score() gave NaN or infinite scores on finite features")
    return out


def _check_refusals(
    instance: Scorer,
    pool: np.ndarray,
    train_labels: np.ndarray,
    targets: np.ndarray,
    target_labels: np.ndarray,
    seed: int,
    fail: Any,
) -> None:
    """Non-finite features and targets of another width are refused as InvalidInputError."""
    bad = pool.copy()
    bad[3, 1] = np.nan
    cases = [
        (
            "training features with a NaN",
            lambda: Attributor(_fresh(instance, seed)).fit(bad, train_labels),
        ),
        (
            "targets of another width",
            lambda: (
                Attributor(_fresh(instance, seed))
                .fit(pool, train_labels)
                .topk(targets[:, :-1], target_labels, k=K)
            ),
        ),
    ]
    for what, call in cases:
        try:
            call()
        except InvalidInputError:
            continue
        raise fail(f"{what} were not refused with an InvalidInputError")
