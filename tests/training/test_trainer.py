"""The trainer (:mod:`simattr.training.trainer`): real tiny training on scikit-learn's bundled
digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from digitskit import digits_recipe

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_trained_digits_model_beats_chance_by_far(digits_model, digits):
    from simattr.training.trainer import predict_logits

    _, test = digits
    logits = predict_logits(digits_model, digits_recipe(), test.images)
    assert logits.shape == (len(test), 10) and logits.dtype == np.float32
    accuracy = float((logits.argmax(1) == test.labels).mean())
    assert accuracy > 0.4, accuracy  # chance is 0.1
    assert not digits_model.training  # returned in eval mode


def test_training_is_seeded_and_leaves_the_global_rngs_alone(digits_model, digits_pool, digits):
    from simattr.training.trainer import predict_logits, train_classifier

    _, test = digits
    images = test.images[:50]
    # the legacy global generators are exactly what a caller's unseeded code draws from
    torch_state, np_state = torch.random.get_rng_state(), np.random.get_state()  # noqa: NPY002
    again = train_classifier(digits_recipe(), digits_pool, seed=0)
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state[1])  # noqa: NPY002
    other = train_classifier(digits_recipe(), digits_pool, seed=1)
    reference = predict_logits(digits_model, digits_recipe(), images)
    np.testing.assert_array_equal(predict_logits(again, digits_recipe(), images), reference)
    assert not np.array_equal(predict_logits(other, digits_recipe(), images), reference)


def test_predicting_no_images_gives_an_empty_logit_array(digits_model):
    from simattr.training.trainer import predict_logits

    out = predict_logits(digits_model, digits_recipe(), np.zeros((0, 8, 8, 3), dtype=np.uint8))
    assert out.shape == (0, 10) and out.dtype == np.float32
