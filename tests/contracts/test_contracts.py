"""Contracts every plug-in of a registry must keep, parametrised over the registry itself.

A new scorer (``SCORERS``), executor (``EXECUTORS``), recipe (``RECIPES``) or bench method
(``bench.METHODS``) is tested here simply by being registered. Everything runs on synthetic
Gaussian clusters or scikit-learn's digits (nothing to download); the few checks on the shared
CIFAR-10 are marked ``cifar``.

Digits' images are 8 x 8, which the whitened networks of the built-in recipes cannot take (see
``test_training_accepts_or_refuses_the_smallest_images``), so the retraining contracts use
:func:`digits_recipe`: the ``tiny`` recipe with the quarter-width ResNet-9, which pools down to
1 x 1 from 8 x 8, on 30 images per class: a model in a fraction of a second.
"""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
import torch
from numeric import (
    ESVM_BATCHED_ATOL,
    assert_close,
    assert_rankings_agree,
    assert_ties_by_lower_row,
    dyadic_unit_rows,
)

from simattr import Attributor, bench
from simattr.attribution import Ranking, SmallPoolWarning
from simattr.attribution.scorers import SCORERS, ExemplarSVMScorer
from simattr.data import load_dataset
from simattr.data.dataset import ImageDataset
from simattr.errors import InvalidInputError
from simattr.models.classifiers import CLASSIFIERS, build_classifier
from simattr.training.executors import EXECUTORS, make_executor, run_jobs
from simattr.training.jobs import TrainJob, run_job
from simattr.training.recipes import (
    RECIPES,
    PoolSpec,
    Recipe,
    get_recipe,
    recipe_pool,
    shrunk,
)
from simattr.training.trainer import normalise_batch, train_classifier


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Jobs run in this process set torch's thread count; later tests must not inherit it."""
    saved = torch.get_num_threads()
    yield
    torch.set_num_threads(saved)


def digits_recipe() -> Recipe:
    """``tiny`` with a network that takes 8 x 8 inputs and a 30-per-class pool (not registered:
    jobs carry the object to their workers)."""
    return dataclasses.replace(
        get_recipe("tiny"),
        name="tiny-digits",
        arch="resnet9-w0.25",
        epochs=2,
        pool=PoolSpec(30, 0),
    )


# =============================================================================================
# Scorers (SCORERS), through the Attributor and on their own
# =============================================================================================

SCORER_NAMES = sorted(n for n in SCORERS if not SCORERS[n].uses_labels)  # learned: test_learned
#: How two computations of the same scores may differ (other block sizes, another order of the
#: targets, one target at a time): float64 scorers by the rounding of their matrix products
#: (tests/numeric.py's default for float64); the batched ESVM solver works in float32 and
#: documents decision values within about 1e-5 of the optimum (scorers.ExemplarSVMScorer).
SCORE_TOLERANCE: dict[str, dict] = {"esvm": {"atol": ESVM_BATCHED_ATOL}}
DEFAULT_SCORE_TOLERANCE: dict = {"dtype": np.float64}
#: Scorers whose scores of unit rows are their dot products, norms and distances (and a square
#: root): exact for tests/numeric.py's dyadic rows in any order of summation, so duplicated rows
#: tie exactly on every CPU. The others pass the rows through an eigenbasis (esvm) or a Cholesky
#: solve (lda), which rounds by the kernel and a row's position in it.
EXACT_ON_DYADIC_ROWS = {"class-prior", "cosine", "l2", "l2-raw"}


def _tolerance(name: str) -> dict:
    return SCORE_TOLERANCE.get(name, DEFAULT_SCORE_TOLERANCE)


N_CLASSES, DIM = 3, 12
POOL_SIZES = (30, 24, 18)  # class 2's pool is the smallest
N_TARGETS = 15


@pytest.fixture(scope="module")
def clusters() -> dict[str, np.ndarray]:
    """Gaussian clusters: float32 training/target features, every class among the targets."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0.0, 3.0, (N_CLASSES, DIM))
    y_train = np.repeat(np.arange(N_CLASSES), POOL_SIZES)
    y_test = rng.permutation(np.arange(N_TARGETS) % N_CLASSES)
    x_train = centres[y_train] + rng.normal(size=(len(y_train), DIM))
    x_test = centres[y_test] + rng.normal(size=(N_TARGETS, DIM))
    return {
        "x_train": x_train.astype(np.float32),
        "y_train": y_train,
        "x_test": x_test.astype(np.float32),
        "y_test": y_test,
    }


def _fit(name: str, data: dict[str, np.ndarray], **kwargs) -> Attributor:
    labels = data["y_train"] if kwargs.get("class_conditional", True) else None
    return Attributor(name, **kwargs).fit(data["x_train"], labels)


def _labels(data, class_conditional: bool):
    return data["y_test"] if class_conditional else None


@pytest.mark.parametrize("name", SCORER_NAMES)
def test_registered_name_matches_the_scorer(name):
    scorer = SCORERS[name]()
    assert scorer.name == name
    assert callable(scorer.prepare) and callable(scorer.score)


@pytest.mark.parametrize("name", SCORER_NAMES)
def test_scorer_scores_each_target_against_each_candidate_in_float64(name, clusters):
    rng = np.random.default_rng(1)
    pool = rng.normal(size=(23, DIM)).astype(np.float32)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    targets = rng.normal(size=(5, DIM)).astype(np.float32)
    targets /= np.linalg.norm(targets, axis=1, keepdims=True)
    scorer = SCORERS[name]()
    prepared = scorer.prepare(pool)
    out = scorer.score(prepared, targets)
    assert isinstance(out, np.ndarray)
    assert out.shape == (5, 23) and out.dtype == np.float64
    assert np.isfinite(out).all()
    # a target's row does not depend on the other targets of its block (up to rounding)
    one_by_one = np.vstack([scorer.score(prepared, targets[i : i + 1]) for i in range(5)])
    assert_close(one_by_one, out, **_tolerance(name), what="one target at a time")
    # the prepared pool serves any number of blocks: the same call on the same inputs gives
    # the same numbers
    np.testing.assert_array_equal(scorer.score(prepared, targets), out)


@pytest.mark.parametrize("solver", ExemplarSVMScorer.solvers)
def test_every_esvm_solver_keeps_the_scorer_contract(solver):
    rng = np.random.default_rng(2)
    pool = rng.normal(size=(20, DIM))
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    targets = pool[:3] + 0.1 * rng.normal(size=(3, DIM))
    scorer = SCORERS["esvm"](solver=solver)
    out = scorer.score(scorer.prepare(pool.astype(np.float32)), targets.astype(np.float32))
    assert out.shape == (3, 20) and out.dtype == np.float64 and np.isfinite(out).all()
    # each target is most like the candidate it was drawn next to
    np.testing.assert_array_equal(out.argmax(axis=1), [0, 1, 2])


@pytest.mark.parametrize("class_conditional", [True, False], ids=["class", "all-classes"])
@pytest.mark.parametrize("name", SCORER_NAMES)
def test_dense_scores_shape_dtype_and_pools(name, class_conditional, clusters):
    att = _fit(name, clusters, class_conditional=class_conditional)
    dense = att.score(clusters["x_test"], _labels(clusters, class_conditional))
    assert dense.shape == (N_TARGETS, len(clusters["y_train"]))
    assert dense.dtype == np.float64
    if class_conditional:
        same = clusters["y_test"][:, None] == clusters["y_train"][None, :]
        assert np.isfinite(dense[same]).all()
        assert np.all(dense[~same] == -np.inf)
    else:
        assert np.isfinite(dense).all()


@pytest.mark.parametrize("class_conditional", [True, False], ids=["class", "all-classes"])
@pytest.mark.parametrize("name", SCORER_NAMES)
def test_topk_contract_and_agreement_with_dense_scores(name, class_conditional, clusters):
    k = 10
    att = _fit(name, clusters, class_conditional=class_conditional)
    labels = _labels(clusters, class_conditional)
    idx, scores = att.topk(clusters["x_test"], labels, k)
    assert idx.shape == scores.shape == (N_TARGETS, k)
    assert idx.dtype == np.int64 and scores.dtype == np.float64
    assert np.all(np.diff(scores, axis=1) <= 0), "scores must be in descending order"
    assert all(len(np.unique(row)) == k for row in idx), "an index repeats within a row"
    assert idx.min() >= 0 and idx.max() < len(clusters["y_train"])
    if class_conditional:
        np.testing.assert_array_equal(
            clusters["y_train"][idx], np.repeat(clusters["y_test"][:, None], k, axis=1)
        )
    # the dense scores give the same top entries, with the same values: both come from the
    # very same scorer calls on the same blocks, so equality is exact
    dense = att.score(clusters["x_test"], labels)
    np.testing.assert_array_equal(np.take_along_axis(dense, idx, axis=1), scores)
    expected = np.argsort(-dense, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(idx, expected)


@pytest.mark.parametrize("name", SCORER_NAMES)
def test_ties_are_broken_by_the_lower_training_row(name, clusters):
    """Duplicated training rows score the same; the earlier row is ranked first.

    The duplicated rows and the targets are dyadic unit rows (tests/numeric.py): for the
    scorers of ``EXACT_ON_DYADIC_ROWS`` a row and its copy at the end of the pool score the very
    same number on any CPU, so the tie is genuine and its order is the rule's. The other scorers
    round a row by its position in their kernels: their copies agree within the scorer's
    tolerance, and every exact tie of their rankings still goes to the lower row.
    """
    rng = np.random.default_rng(4)
    x = clusters["x_train"].copy()
    y = clusters["y_train"]
    dup_of = np.flatnonzero(y == 0)[:4]  # rows 0..3 of class 0, appended again at the end
    x[dup_of] = dyadic_unit_rows(rng, len(dup_of), DIM)
    x2 = np.vstack([x, x[dup_of]])
    y2 = np.r_[y, y[dup_of]]
    copies = np.arange(len(y), len(y2))
    att = Attributor(name).fit(x2, y2)
    targets = dyadic_unit_rows(rng, 5, DIM)
    n_pool = int((y2 == 0).sum())
    idx, scores = att.topk(targets, np.zeros(len(targets), dtype=np.int64), n_pool)
    assert_ties_by_lower_row(idx, scores, what=name)
    exact = name in EXACT_ON_DYADIC_ROWS
    for row, vals in zip(idx, scores, strict=True):
        pos = {int(r): p for p, r in enumerate(row)}
        for original, copy in zip(dup_of, copies, strict=True):
            if exact:
                assert vals[pos[original]] == vals[pos[copy]]
                assert pos[original] < pos[copy]
            else:  # the floor at the size of the row's scores: a score near 0 cancels
                scale = float(np.abs(vals).max())
                assert_close(vals[pos[copy]], vals[pos[original]], **_tolerance(name), scale=scale)


@pytest.mark.parametrize("name", SCORER_NAMES)
def test_block_size_does_not_change_the_results(name, clusters):
    results = {}
    for block_size in (1, 7, 256):
        att = _fit(name, clusters, block_size=block_size)
        results[block_size] = (
            att.score(clusters["x_test"], clusters["y_test"]),
            *att.topk(clusters["x_test"], clusters["y_test"], 10),
        )
    tol = _tolerance(name)
    dense1, idx1, val1 = results[1]
    for block_size in (7, 256):
        dense, idx, val = results[block_size]
        what = f"block size {block_size} vs 1"
        assert_rankings_agree(idx, val, idx1, val1, **tol, what=what)
        # the pools (-inf outside the target's class) are the same; the scores within rounding
        assert_close(dense, dense1, **tol, what=what)


@pytest.mark.parametrize("class_conditional", [True, False], ids=["class", "all-classes"])
@pytest.mark.parametrize("name", SCORER_NAMES)
def test_permuting_targets_permutes_the_output_rows(name, class_conditional, clusters):
    """A target's scores do not depend on where it sits among the targets: equal up to the
    rounding of its row at another position of the matrix products."""
    att = _fit(name, clusters, class_conditional=class_conditional)
    x, labels = clusters["x_test"], _labels(clusters, class_conditional)
    perm = np.random.default_rng(3).permutation(N_TARGETS)
    labels_p = None if labels is None else labels[perm]
    tol = _tolerance(name)
    assert_close(att.score(x[perm], labels_p), att.score(x, labels)[perm], **tol)
    idx, val = att.topk(x, labels, 8)
    idx_p, val_p = att.topk(x[perm], labels_p, 8)
    assert_rankings_agree(idx_p, val_p, idx[perm], val[perm], **tol)


@pytest.mark.parametrize("name", SCORER_NAMES)
def test_refitting_gives_identical_results(name, clusters):
    a = _fit(name, clusters).topk(clusters["x_test"], clusters["y_test"], 5)
    b = _fit(name, clusters).topk(clusters["x_test"], clusters["y_test"], 5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


REFUSALS = {
    "target-label-absent-from-training": lambda name, d: (
        Attributor(name)
        .fit(d["x_train"][d["y_train"] != 1], d["y_train"][d["y_train"] != 1])
        .topk(d["x_test"][:3], np.array([0, 1, 2]), 3)
    ),
    # refused by fit or, at the latest, before any ranking comes out
    "nan-in-training-features": lambda name, d: _nan_train(name, d),
    "nan-in-training-features-unnormalised": lambda name, d: _nan_train(name, d, normalize=False),
    "nan-in-target-features": lambda name, d: _fit(name, d).topk(
        np.where(np.arange(N_TARGETS)[:, None] == 2, np.nan, d["x_test"]), d["y_test"], 3
    ),
    "inf-in-target-features": lambda name, d: _fit(name, d).score(
        np.where(np.arange(N_TARGETS)[:, None] == 0, np.inf, d["x_test"]), d["y_test"]
    ),
    "wrong-feature-width": lambda name, d: _fit(name, d).topk(d["x_test"][:, :-1], d["y_test"], 3),
    "missing-target-labels": lambda name, d: _fit(name, d).topk(d["x_test"], None, 3),
    "k-zero": lambda name, d: _fit(name, d).topk(d["x_test"], d["y_test"], 0),
    "block-size-zero": lambda name, d: _fit(name, d, block_size=0),
}


def _nan_train(name, d, **kwargs):
    x = np.where(np.arange(len(d["y_train"]))[:, None] == 4, np.nan, d["x_train"])
    att = Attributor(name, **kwargs).fit(x, d["y_train"])
    return att.topk(d["x_test"], d["y_test"], 3)


def _refusal_params():
    return [pytest.param(name, case) for name in SCORER_NAMES for case in sorted(REFUSALS)]


@pytest.mark.parametrize(("name", "case"), _refusal_params())
def test_bad_input_is_refused_with_invalid_input_error(name, case, clusters):
    with pytest.raises(InvalidInputError):
        REFUSALS[case](name, clusters)


@pytest.mark.parametrize("name", SCORER_NAMES)
def test_k_larger_than_a_pool_returns_the_whole_pool_with_a_warning(name, clusters):
    """Not a refusal: a pool smaller than k comes back whole, its rows padded with -1 (score
    NaN) at the end; one SmallPoolWarning says so. Likewise k above the training set."""
    k = POOL_SIZES[2] + 1  # the smallest pool cannot fill it; the others can
    with pytest.warns(SmallPoolWarning, match=f"k={k} .*label 2 .{POOL_SIZES[2]} images"):
        idx, val = _fit(name, clusters).topk(clusters["x_test"], clusters["y_test"], k)
    assert idx.shape == (N_TARGETS, k)
    small = clusters["y_test"] == 2
    assert (idx[small][:, -1] == -1).all() and np.isnan(val[small][:, -1]).all()
    assert set(idx[small][0, :-1]) == set(np.flatnonzero(clusters["y_train"] == 2))
    assert (idx[~small] >= 0).all() and np.isfinite(val[~small]).all()
    Ranking(np.arange(N_TARGETS), idx, val).check(n_train=len(clusters["y_train"]))
    n = len(clusters["y_train"])
    with pytest.warns(SmallPoolWarning, match=f"training set .{n} images"):
        idx, _ = _fit(name, clusters, class_conditional=False).topk(clusters["x_test"], None, n + 5)
    assert idx.shape == (N_TARGETS, n) and (np.sort(idx, axis=1) == np.arange(n)).all()


@pytest.mark.parametrize("name", SCORER_NAMES)
def test_the_largest_possible_k_is_accepted(name, clusters):
    """The boundary of the k refusal: k equal to the smallest pool works."""
    idx, _ = _fit(name, clusters).topk(clusters["x_test"], clusters["y_test"], POOL_SIZES[2])
    smallest = clusters["y_test"] == 2
    assert set(idx[smallest][0]) == set(np.flatnonzero(clusters["y_train"] == 2))


def test_unknown_method_is_refused(clusters):
    with pytest.raises(InvalidInputError, match="method"):
        Attributor("no-such-method").fit(clusters["x_train"], clusters["y_train"])


# =============================================================================================
# Executors (EXECUTORS)
# =============================================================================================

PREDICT = (0, 7, 100, 359)


def _executor_jobs() -> dict[str, TrainJob]:
    """Three tiny jobs on digits that must give three different models, keyed by name."""
    recipe = digits_recipe()
    train = load_dataset("digits", "train")
    pool = recipe_pool(recipe, train)
    first_of_class_1 = tuple(int(r) for r in pool[train.labels[pool] == 1][:20])
    common = {"data": "digits", "recipe": recipe, "predict": PREDICT, "threads": 1}
    return {
        "seed0": TrainJob(seed=0, **common),
        "seed1": TrainJob(seed=1, **common),
        "seed0-remove": TrainJob(seed=0, remove=first_of_class_1, **common),
    }


@pytest.fixture(scope="module")
def reference_results():
    """Each job run directly in this process, in order: what every executor must reproduce."""
    saved = torch.get_num_threads()
    try:
        return {key: run_job(job) for key, job in _executor_jobs().items()}
    finally:
        torch.set_num_threads(saved)


def test_executor_jobs_are_distinct_models(reference_results):
    """The executor comparison would be vacuous if the jobs all gave the same model."""
    logits = {k: r.logits for k, r in reference_results.items()}
    assert logits["seed0"].shape == (len(PREDICT), 10)
    assert not np.array_equal(logits["seed0"], logits["seed1"])
    assert not np.array_equal(logits["seed0"], logits["seed0-remove"])
    assert reference_results["seed0-remove"].n_train == reference_results["seed0"].n_train - 20


@pytest.mark.parametrize("kind", EXECUTORS)
@pytest.mark.slow
def test_every_executor_gives_the_same_results_and_delivers_errors(kind, reference_results):
    if kind == "ray":
        pytest.importorskip("ray")
    jobs = _executor_jobs()
    # submitted in the reverse order, and keyed: completion order must not matter
    reordered = {key: jobs[key] for key in reversed(list(jobs))}
    bad = dataclasses.replace(jobs["seed0"], remove=(-5,))
    # two processes run jobs concurrently; Ray gets one CPU (its start-up dominates the cost)
    workers = {"local": None, "ray": 1}.get(kind, 2)
    executor, slots = make_executor(kind, workers=workers)
    got: dict[str, object] = {}
    try:
        assert slots >= 1
        run_jobs(executor, reordered, lambda key, result: got.__setitem__(key, result))
        # a failing job reaches the caller through its future, whatever ran it
        future = executor.submit(run_job, bad)
        with pytest.raises(Exception, match="-5"):
            future.result(timeout=300)
    finally:
        executor.shutdown(wait=True)
    assert set(got) == set(jobs)
    for key, ref in reference_results.items():
        # exact: the same seeded job, one thread, this CPU's kernels, whatever process runs it
        np.testing.assert_array_equal(got[key].logits, ref.logits, err_msg=f"{kind}: {key}")
        assert got[key].n_train == ref.n_train
        assert got[key].info["threads"] == 1


@pytest.mark.parametrize("kind", ["threads", "", "Local", "dask"])
def test_unknown_executor_kind_is_refused(kind):
    with pytest.raises(InvalidInputError, match="executor"):
        make_executor(kind)


@pytest.mark.parametrize("kind", EXECUTORS)
def test_zero_workers_is_refused(kind):
    with pytest.raises(InvalidInputError, match="workers"):
        make_executor(kind, workers=0)


# =============================================================================================
# Recipes (RECIPES)
# =============================================================================================

RECIPE_NAMES = sorted(RECIPES)
N_CLASSES_SYNTH = 10


@pytest.fixture(scope="module")
def synthetic_train() -> ImageDataset:
    """A 'training split' large enough for every recipe's pool (pools need labels only)."""
    per_class = max((r.pool.per_class or 0) for r in RECIPES.values()) + 13
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(N_CLASSES_SYNTH), per_class))
    pixels = np.zeros((len(labels), 2, 2, 3), dtype=np.uint8)
    names = tuple(f"c{i}" for i in range(N_CLASSES_SYNTH))
    return ImageDataset(pixels=pixels, labels=labels, class_names=names, name="synthetic")


@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_recipe_settings_are_valid(name):
    r = get_recipe(name)
    assert r.name == name
    assert isinstance(r.epochs, int) and r.epochs >= 1
    assert r.batch_size >= 1 and r.lr > 0 and r.weight_decay >= 0
    assert 0 <= r.warmup_epochs <= r.epochs
    assert 0 <= r.label_smoothing < 1
    assert r.ema is None or 0 < r.ema < 1
    assert r.arch in CLASSIFIERS
    assert len(r.mean) == len(r.std) == 3 and min(r.std) > 0
    assert r.pool.per_class is None or r.pool.per_class >= 1
    assert r.description, "every recipe says what it is for (`simattr recipes` prints it)"
    # its settings are what identifies a job: plain JSON, and different from other recipes'
    settings = json.loads(json.dumps(r.to_dict()))
    assert settings["name"] == name and settings["epochs"] == r.epochs
    keys = {TrainJob(data="d", recipe=other, seed=0).key() for other in RECIPE_NAMES}
    assert len(keys) == len(RECIPE_NAMES)


@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_recipe_pool_is_sorted_unique_balanced_and_deterministic(name, synthetic_train):
    pool = recipe_pool(name, synthetic_train)
    assert pool.dtype == np.int64
    assert np.all(np.diff(pool) > 0), "pool rows must be sorted and unique"
    assert pool[0] >= 0 and pool[-1] < len(synthetic_train)
    counts = np.bincount(synthetic_train.labels[pool], minlength=N_CLASSES_SYNTH)
    per_class = get_recipe(name).pool.per_class
    if per_class is None:
        np.testing.assert_array_equal(pool, np.arange(len(synthetic_train)))
    else:
        assert np.all(counts == per_class)
    np.testing.assert_array_equal(recipe_pool(name, synthetic_train), pool)
    # a view is not a training split: pools index the full split only
    with pytest.raises(InvalidInputError):
        recipe_pool(name, synthetic_train.subset(np.arange(len(synthetic_train) - 1)))


@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_recipe_pool_on_digits_is_valid_or_refused(name):
    """Digits has ~140 images per class: a pool drawing more is refused, naming the class."""
    train = load_dataset("digits", "train")
    per_class = get_recipe(name).pool.per_class
    if per_class is not None and per_class > train.class_counts().min():
        with pytest.raises(InvalidInputError, match="class"):
            recipe_pool(name, train)
        return
    pool = recipe_pool(name, train)
    assert np.all(np.diff(pool) > 0) and pool[0] >= 0 and pool[-1] < len(train)


@pytest.mark.cifar
@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_recipe_pool_on_the_shared_cifar10(name, cifar_train):
    pool = recipe_pool(name, cifar_train)
    assert np.all(np.diff(pool) > 0) and pool[0] >= 0 and pool[-1] < len(cifar_train)
    counts = np.bincount(cifar_train.labels[pool], minlength=10)
    per_class = get_recipe(name).pool.per_class
    assert np.all(counts == (5000 if per_class is None else per_class))


def test_unknown_recipe_is_refused_and_a_recipe_object_passes_through():
    with pytest.raises(InvalidInputError, match="recipe"):
        get_recipe("no-such-recipe")
    r = digits_recipe()
    assert get_recipe(r) is r


@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_recipe_network_gives_logits_for_a_cifar_sized_batch(name):
    """One forward pass as the trainer runs it: built from the arch, stem fitted, normalised."""
    r = get_recipe(name)
    torch.manual_seed(0)
    model = build_classifier(r.arch, 10)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    x = normalise_batch(images, r)
    init = getattr(model, "init_from", None)
    if callable(init):
        init(x)
    model.eval()
    with torch.inference_mode():
        logits = model(x)
    assert logits.shape == (4, 10) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    assert not torch.allclose(logits[0], logits[1]), "different images, identical logits"


@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_shrunk_copy_keeps_the_network_and_renames(name):
    small = shrunk(name, epochs=1, per_class=3)
    assert small.arch == get_recipe(name).arch and small.epochs == 1
    assert small.pool.per_class == 3 and small.name != name and name in small.name


def _tiny_images(size: int, n: int = 20) -> ImageDataset:
    rng = np.random.default_rng(0)
    return ImageDataset(
        pixels=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        labels=np.arange(n) % 2,
        class_names=("a", "b"),
        name=f"noise{size}",
    )


def _smallest_image_params():
    return [pytest.param(name) for name in RECIPE_NAMES]


@pytest.mark.parametrize("name", _smallest_image_params())
def test_training_accepts_or_refuses_the_smallest_images(name):
    """On the smallest images the trainer accepts (8 x 8), a recipe's network trains, or the
    trainer refuses with an InvalidInputError; never a bare error from inside torch."""
    data = _tiny_images(8)
    recipe = shrunk(name, epochs=1)
    try:
        model = train_classifier(recipe, data, seed=0)
    except InvalidInputError:
        return
    with torch.inference_mode():
        out = model(normalise_batch(torch.zeros((2, 3, 8, 8), dtype=torch.uint8), recipe))
    assert out.shape == (2, 2)


def test_images_below_the_minimum_size_are_refused():
    with pytest.raises(InvalidInputError, match="8 x 8"):
        train_classifier(digits_recipe(), _tiny_images(7), seed=0)


# =============================================================================================
# Bench methods (bench.METHODS) and profiles (bench.PROFILES)
# =============================================================================================


def test_bench_method_names_are_distinct_file_and_option_names():
    names = list(bench.METHODS)
    assert len({n.lower() for n in names}) == len(names)
    for n in names:
        # rankings are saved as ``{name}.npz`` and chosen with ``--methods a,b``
        assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", n), n
        assert callable(bench.METHODS[n])
    assert bench.REFERENCE_METHOD in bench.METHODS


@pytest.mark.parametrize("profile", sorted(bench.PROFILES))
def test_bench_profile_is_consistent(profile):
    from simattr.models import load_backbone

    prof = bench.PROFILES[profile]
    assert prof.name == profile
    r = get_recipe(prof.recipe)  # a registered recipe
    for size in (prof.targets, prof.models, prof.budget, prof.k, prof.ensemble):
        assert isinstance(size, int) and size >= 1
    assert prof.lds_subsets >= 3 and prof.lds_targets >= 1 and prof.trak_checkpoints >= 1
    if r.pool.per_class is not None:
        # the support search removes up to k images of the target's class from the pool
        assert prof.k <= r.pool.per_class
    if prof.device == "cpu":
        net = load_backbone(prof.backbone)  # the pinned weights ship with the package
        assert net is not None


@pytest.fixture(scope="module")
def bench_context(tmp_path_factory):
    """The bench's shared context on digits, with :func:`digits_recipe` as the profile recipe."""
    recipe = digits_recipe()
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(RECIPES, recipe.name, recipe)
        # TRAK's projection matrix (n_params x proj_dim) dominates its cost on the CPU: a small
        # projection keeps it to about a second without changing what the ranking must satisfy
        mp.setattr("simattr.baselines.trak.default_proj_dim", lambda device: 128)
        prof = bench.Profile(
            "contract",
            recipe.name,
            targets=3,
            models=1,
            budget=1,
            k=8,
            ensemble=1,
            lds_subsets=4,
            lds_targets=3,
            trak_checkpoints=1,
        )
        out = tmp_path_factory.mktemp("bench-contract")
        saved = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield bench.BenchContext("digits", prof, out, np.array([0, 5, 17, 200]))
        finally:
            torch.set_num_threads(saved)


@pytest.mark.parametrize("method", list(bench.METHODS))
def test_every_bench_method_ranks_the_pool_for_the_support_search(method, bench_context):
    from simattr.evaluation.support import _check_ranking

    ctx = bench_context
    ranking = bench.METHODS[method](ctx)
    np.testing.assert_array_equal(ranking.targets, ctx.targets)
    n, k = ranking.indices.shape
    assert n == len(ctx.targets) and k >= ctx.profile.k
    assert ranking.indices.dtype == np.int64 and ranking.scores.shape == (n, k)
    assert np.all(np.diff(ranking.scores, axis=1) <= 0)
    assert all(len(np.unique(row)) == k for row in ranking.indices)
    # accepted by the support search: every ranked row lies in the recipe's pool
    _check_ranking(method, ranking, ctx.pool, ctx.recipe.name, ctx.profile.k)
    if ranking.metadata.get("class_conditional"):
        target_labels = ctx.test.labels[ctx.targets]
        np.testing.assert_array_equal(
            ctx.train.labels[ranking.indices], np.repeat(target_labels[:, None], k, axis=1)
        )


def test_executor_for_owns_only_what_it_builds():
    from concurrent.futures import ThreadPoolExecutor

    from simattr.training.executors import InlineExecutor, executor_for

    with executor_for("local") as (built, slots):
        assert isinstance(built, InlineExecutor) and slots == 1
    mine = ThreadPoolExecutor(max_workers=1)
    with executor_for(mine, workers=3) as (given, slots):
        assert given is mine and slots == 3
    assert mine.submit(lambda: 7).result() == 7  # the caller's executor is left running
    mine.shutdown()
    with pytest.raises(InvalidInputError, match="unknown executor"):
        with executor_for("cluster"):
            pass
