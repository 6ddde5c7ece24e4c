"""Classifier recipes, networks and the trainer, on the real shared CIFAR-10.

Every model here is the ``tiny`` recipe (about 1 s on one CPU thread) or a shrunk copy of a GPU
recipe, so the file stays within a few tens of seconds of CPU.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from simattr.data.dataset import ImageDataset
from simattr.errors import InvalidInputError
from simattr.models.classifiers import CLASSIFIERS, WhitenedNet, build_classifier
from simattr.training.recipes import (
    RECIPES,
    PoolSpec,
    get_recipe,
    pool_dataset,
    recipe_pool,
    shrunk,
)
from simattr.training.trainer import predict_logits, predict_proba, train_classifier

N_TEST = 2000


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_pool(cifar_train) -> ImageDataset:
    return pool_dataset("tiny", cifar_train)


@pytest.fixture(scope="module")
def tiny_model(tiny_pool):
    return train_classifier("tiny", tiny_pool, seed=0)


@pytest.fixture(scope="module")
def test_images(cifar_test) -> tuple[np.ndarray, np.ndarray]:
    return cifar_test.images[:N_TEST], cifar_test.labels[:N_TEST]


# -- recipes and pools ---------------------------------------------------------------------------


def test_builtin_recipes_are_registered_and_name_known_networks():
    assert {"paper-resnet9", "fast", "cpu-mini", "tiny"} <= set(RECIPES)
    for recipe in RECIPES.values():
        assert recipe.arch in CLASSIFIERS
        assert get_recipe(recipe.name) is recipe
        assert get_recipe(recipe) is recipe
    paper = get_recipe("paper-resnet9")
    assert (paper.epochs, paper.batch_size, paper.lr, paper.warmup_epochs) == (24, 512, 0.5, 5)
    assert (paper.augment.translate, paper.augment.cutout, paper.pool.per_class) == (2, 8, None)


def test_unknown_recipe_is_refused():
    with pytest.raises(InvalidInputError, match="unknown recipe 'nope'"):
        get_recipe("nope")


def test_recipe_pool_is_deterministic_balanced_and_sorted(cifar_train):
    rows = recipe_pool("cpu-mini", cifar_train)
    again = recipe_pool("cpu-mini", cifar_train)
    np.testing.assert_array_equal(rows, again)
    assert rows.dtype == np.int64
    assert np.all(np.diff(rows) > 0)
    counts = np.bincount(cifar_train.labels[rows], minlength=10)
    assert counts.tolist() == [1000] * 10
    other_seed = dataclasses.replace(get_recipe("cpu-mini"), pool=PoolSpec(1000, seed=1))
    assert not np.array_equal(recipe_pool(other_seed, cifar_train), rows)
    assert len(recipe_pool("paper-resnet9", cifar_train)) == len(cifar_train)
    assert pool_dataset("paper-resnet9", cifar_train) is cifar_train


def test_recipe_pool_refuses_too_few_images_and_views(cifar_train):
    small = ImageDataset(
        pixels=cifar_train.pixels[:300],
        labels=cifar_train.labels[:300],
        class_names=cifar_train.class_names,
        name="cifar10",
    )
    with pytest.raises(InvalidInputError, match="draws 100 images per class but class"):
        recipe_pool("tiny", small)
    with pytest.raises(InvalidInputError, match="full training split"):
        recipe_pool("tiny", cifar_train.subset(np.arange(5000)))


def test_shrunk_copies_change_only_size_and_name():
    small = shrunk("fast", epochs=1, per_class=10)
    full = get_recipe("fast")
    assert small.name == "fast[epochs=1,per_class=10]"
    assert (small.epochs, small.pool.per_class) == (1, 10)
    assert (small.arch, small.lr, small.batch_size) == (full.arch, full.lr, full.batch_size)
    assert shrunk("fast") is full


# -- networks ----------------------------------------------------------------------------------


def test_build_classifier_outputs_and_errors():
    x = torch.randn(2, 3, 32, 32)
    for arch in ("resnet9-w0.25", "whiten-tiny", "whiten-mini"):
        model = build_classifier(arch, 7).eval()
        assert model(x).shape == (2, 7)
    with pytest.raises(InvalidInputError, match="unknown classifier"):
        build_classifier("vgg", 10)
    with pytest.raises(InvalidInputError, match="at least 2 classes"):
        build_classifier("resnet9", 1)


def test_whitening_stem_whitens_the_patches_it_was_fit_on(cifar_train):
    torch.manual_seed(0)
    net = WhitenedNet(10, widths=(8, 8, 8), stem_stride=2, eps=0.0)
    images = torch.from_numpy(cifar_train.pixels[:500]).permute(0, 3, 1, 2).float() / 255
    net.init_from(images)
    out = net.stem(images)[:, :12]  # first 12 channels: one per eigenvector
    flat = out.permute(0, 2, 3, 1).reshape(-1, 12).double()
    cov = torch.cov(flat.T)
    assert torch.allclose(flat.mean(0), torch.zeros(12, dtype=torch.float64), atol=1e-3)
    assert torch.allclose(cov, torch.eye(12, dtype=torch.float64), atol=2e-2)
    assert not net.stem.weight.requires_grad and net.stem.bias.requires_grad


# -- training ----------------------------------------------------------------------------------


def test_tiny_trains_and_beats_chance(tiny_model, test_images):
    images, labels = test_images
    assert not tiny_model.training
    accuracy = float((predict_logits(tiny_model, "tiny", images).argmax(1) == labels).mean())
    assert accuracy > 0.25, accuracy


def test_same_seed_gives_identical_model_other_seed_does_not(tiny_pool, tiny_model, test_images):
    images = test_images[0][:500]
    first = predict_logits(tiny_model, "tiny", images)
    again = predict_logits(train_classifier("tiny", tiny_pool, seed=0), "tiny", images)
    np.testing.assert_array_equal(first, again)  # exact: a seeded re-run of the same training
    other = predict_logits(train_classifier("tiny", tiny_pool, seed=1), "tiny", images)
    assert np.abs(first - other).max() > 1e-3


def test_training_does_not_touch_the_global_rng(tiny_pool):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_classifier(shrunk("tiny", epochs=1), tiny_pool, seed=5)
    np.testing.assert_array_equal(torch.rand(3).numpy(), expected.numpy())


def test_relabelling_a_class_moves_its_predictions(tiny_pool, tiny_model):
    cars = np.flatnonzero(tiny_pool.labels == 1)  # automobiles become frogs
    images = tiny_pool.get_images(cars)
    before = predict_logits(tiny_model, "tiny", images).argmax(1)
    relabelled = tiny_pool.relabel(cars, 6)
    assert np.all(relabelled.labels[cars] == 6)
    model = train_classifier("tiny", relabelled, seed=0)
    after = predict_logits(model, "tiny", images).argmax(1)
    assert (before == 6).mean() < 0.2, (before == 6).mean()
    assert (after == 6).mean() > 0.6, (after == 6).mean()
    assert (after == 1).mean() < 0.05  # class 1 has no training items left


def test_removed_rows_matter_and_num_classes_is_kept(tiny_pool, test_images):
    keep_two = tiny_pool.subset(np.flatnonzero(tiny_pool.labels < 2))
    model = train_classifier(shrunk("tiny", epochs=2), keep_two, seed=0)
    logits = predict_logits(model, "tiny", test_images[0][:50])
    assert logits.shape == (50, 10)
    assert set(np.unique(logits.argmax(1))) <= {0, 1}


def test_ema_recipe_returns_the_averaged_model_in_eval_mode(tiny_pool, test_images):
    recipe = dataclasses.replace(get_recipe("tiny"), name="tiny-ema", ema=0.9)
    model = train_classifier(recipe, tiny_pool, seed=0)
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    accuracy = (predict_logits(model, recipe, test_images[0]).argmax(1) == test_images[1]).mean()
    assert accuracy > 0.2


@pytest.mark.parametrize("name", ["fast", "paper-resnet9"])
def test_gpu_recipes_run_on_the_cpu_when_shrunk(cifar_train, name):
    recipe = shrunk(name, epochs=1, per_class=10)
    model = train_classifier(recipe, pool_dataset(recipe, cifar_train), seed=0)
    logits = predict_logits(model, recipe, cifar_train.pixels[:8])
    assert logits.shape == (8, 10) and np.isfinite(logits).all()


def test_training_input_errors(tiny_pool):
    with pytest.raises(InvalidInputError, match="empty dataset"):
        train_classifier("tiny", tiny_pool.subset([]), seed=0)
    with pytest.raises(InvalidInputError, match="only class 3"):
        train_classifier("tiny", tiny_pool.subset(np.flatnonzero(tiny_pool.labels == 3)), seed=0)
    with pytest.raises(InvalidInputError, match="ImageDataset"):
        train_classifier("tiny", tiny_pool.images, seed=0)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="seed must be an integer"):
        train_classifier("tiny", tiny_pool, seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="unknown recipe"):
        train_classifier("nope", tiny_pool, seed=0)
    with pytest.raises(InvalidInputError, match="invalid device"):
        train_classifier("tiny", tiny_pool, seed=0, device="potato")


# -- prediction --------------------------------------------------------------------------------


def test_predict_shapes_dtype_and_batching(tiny_model, test_images):
    images = test_images[0][:300]
    logits = predict_logits(tiny_model, "tiny", images)
    assert logits.shape == (300, 10) and logits.dtype == np.float32
    np.testing.assert_allclose(
        predict_logits(tiny_model, "tiny", images, batch_size=7), logits, rtol=1e-4, atol=1e-4
    )
    proba = predict_proba(tiny_model, "tiny", images)
    assert proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    # the class with the largest logit has the largest probability (an exact tie of two
    # probabilities after rounding may name the other)
    rows = np.arange(len(proba))
    np.testing.assert_array_equal(proba[rows, logits.argmax(1)], proba.max(1))
    assert predict_logits(tiny_model, "tiny", images[:0]).shape == (0, 10)


def test_tta_flip_averages_the_image_and_its_mirror(tiny_model, test_images):
    images = test_images[0][:64]
    plain = dataclasses.replace(get_recipe("tiny"), tta_flip=False)
    direct = predict_logits(tiny_model, plain, images)
    mirrored = predict_logits(tiny_model, plain, np.ascontiguousarray(images[:, :, ::-1]))
    averaged = predict_logits(tiny_model, "tiny", images)
    np.testing.assert_allclose(averaged, 0.5 * (direct + mirrored), rtol=1e-4, atol=1e-5)
    assert np.abs(direct - mirrored).max() > 1e-4


def test_predict_input_errors(tiny_model, test_images):
    with pytest.raises(InvalidInputError, match="uint8 array"):
        predict_logits(tiny_model, "tiny", test_images[0].astype(np.float32))
    with pytest.raises(InvalidInputError, match="uint8 array"):
        predict_logits(tiny_model, "tiny", test_images[0][0])
    with pytest.raises(InvalidInputError, match="batch_size"):
        predict_logits(tiny_model, "tiny", test_images[0], batch_size=0)


@pytest.mark.gpu
def test_cuda_training_is_deterministic_and_learns(tiny_pool, test_images):
    images, labels = test_images
    a = predict_logits(
        train_classifier("tiny", tiny_pool, seed=0, device="cuda"), "tiny", images, device="cuda"
    )
    b = predict_logits(
        train_classifier("tiny", tiny_pool, seed=0, device="cuda"), "tiny", images, device="cuda"
    )
    np.testing.assert_array_equal(a, b)
    assert (a.argmax(1) == labels).mean() > 0.25
