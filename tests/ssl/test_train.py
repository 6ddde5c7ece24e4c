"""Self-supervised training: batched augmentation, kNN monitor, methods, exact resume, export."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from simattr._io import read_json, sidecar_path
from simattr.errors import InvalidInputError
from simattr.features import extract_features
from simattr.models import Backbone, build_architecture, load_backbone
from simattr.ssl import (
    METHODS,
    AugmentConfig,
    SSLAugment,
    build_method,
    channel_stats,
    knn_accuracy,
    knn_monitor,
    sample_crop_boxes,
    train_ssl,
)
from simattr.ssl.augment import to_float_nchw

ARCH = "resnet18-w16"
CROP_ONLY = AugmentConfig(flip_p=0.0, jitter_p=0.0, grayscale_p=0.0)


@pytest.fixture(autouse=True)
def _two_threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture(scope="module")
def digits():
    from simattr.data import load_dataset

    return load_dataset("digits", "train")


@pytest.fixture(scope="module")
def digits_test():
    from simattr.data import load_dataset

    return load_dataset("digits", "test")


def _pattern_images(n: int, size: int = 32) -> torch.Tensor:
    """``n`` identical uint8 images with structure everywhere (so every crop looks different)."""
    yy, xx = np.mgrid[0:size, 0:size]
    img = np.stack([xx * 255 // size, yy * 255 // size, (xx * yy) % 256], axis=-1)
    return torch.from_numpy(np.repeat(img[None].astype(np.uint8), n, axis=0))


# -- augmentation --------------------------------------------------------------------------


def test_augment_shape_range_and_normalisation() -> None:
    images = torch.randint(0, 256, (12, 32, 32, 3), dtype=torch.uint8)
    raw = SSLAugment((0, 0, 0), (1, 1, 1), AugmentConfig(size=24))
    out = raw(images, torch.Generator().manual_seed(0))
    assert out.shape == (12, 3, 24, 24) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    normed = SSLAugment((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), AugmentConfig(size=24))
    again = normed(images, torch.Generator().manual_seed(0))
    torch.testing.assert_close(again, (out - 0.5) / 0.25)


def test_crop_boxes_follow_the_random_resized_crop_distribution() -> None:
    boxes = sample_crop_boxes(2000, 32, 32, torch.Generator().manual_seed(1))
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 32 + 1e-4).all()
    assert (boxes[:, 3] <= 32 + 1e-4).all()
    area = w * h / 1024
    assert area.min() >= 0.2 - 1e-4 and area.max() <= 1 + 1e-4
    ratio = w / h
    assert ratio.min() >= 3 / 4 - 1e-4 and ratio.max() <= 4 / 3 + 1e-4
    assert len(torch.unique(boxes[:, 0])) == 2000  # independent per image
    assert 0.5 < area.mean() < 0.7  # uniform in [0.2, 1] would give 0.6


def test_batched_augmentation_crops_each_image_differently() -> None:
    images = _pattern_images(8)
    out = SSLAugment((0, 0, 0), (1, 1, 1), CROP_ONLY)(images, torch.Generator().manual_seed(0))
    flat = out.flatten(1)
    distances = torch.cdist(flat, flat)
    off_diagonal = distances[~torch.eye(8, dtype=torch.bool)]
    assert off_diagonal.min() > 1.0


def test_full_crop_is_the_identity() -> None:
    images = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8)
    whole = AugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0, jitter_p=0, grayscale_p=0)
    out = SSLAugment((0, 0, 0), (1, 1, 1), whole)(images, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, to_float_nchw(images), atol=1e-6, rtol=0)


def test_augmentation_is_reproducible_from_the_generator_seed() -> None:
    images = torch.randint(0, 256, (16, 32, 32, 3), dtype=torch.uint8)
    aug = SSLAugment((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    first, second = aug(images, g1), aug(images, g2)
    assert torch.equal(first, second)
    assert not torch.equal(aug(images, g1), first)  # the generator advanced: a new view
    assert not torch.equal(aug(images, torch.Generator().manual_seed(4)), first)
    # float N x 3 x H x W input in [0, 1] gives the same views as uint8 N x H x W x 3
    g3 = torch.Generator().manual_seed(3)
    torch.testing.assert_close(aug(to_float_nchw(images), g3), first)


def test_grayscale_and_jitter_act_per_image() -> None:
    images = _pattern_images(64)
    gray = AugmentConfig(scale=(1, 1), ratio=(1, 1), flip_p=0, jitter_p=0, grayscale_p=1)
    out = SSLAugment((0, 0, 0), (1, 1, 1), gray)(images, torch.Generator().manual_seed(0))
    assert torch.allclose(out[:, 0], out[:, 1]) and torch.allclose(out[:, 1], out[:, 2])
    jitter = AugmentConfig(scale=(1, 1), ratio=(1, 1), flip_p=0, jitter_p=0.5, grayscale_p=0)
    out = SSLAugment((0, 0, 0), (1, 1, 1), jitter)(images, torch.Generator().manual_seed(0))
    unchanged = (out - to_float_nchw(images)).flatten(1).abs().amax(1) < 1e-5
    assert 10 < int(unchanged.sum()) < 54  # about half the images jittered, each differently
    changed = out[~unchanged].flatten(1)
    assert len(torch.unique(changed, dim=0)) == len(changed)


# -- kNN monitor ---------------------------------------------------------------------------


def test_knn_accuracy_hand_made_case() -> None:
    c, s = math.cos(math.pi / 3), math.sin(math.pi / 3)
    # similarities to the query (1, 0): 1.0 (class 1), 0.5 and 0.5 (class 0), -1 (class 2)
    train = np.array([[1.0, 0.0], [c, s], [c, -s], [-1.0, 0.0]])
    labels = np.array([1, 0, 0, 2])
    query = np.array([[2.0, 0.0]])  # not unit length: cosine similarity must normalise
    # sharp weights: one neighbour at similarity 1 beats two at 0.5 (e^10 > 2 e^5) ...
    assert knn_accuracy(train, labels, query, [1], k=3, temperature=0.1) == 1.0
    # ... flat weights: the two class-0 votes win (e^0.1 < 2 e^0.05)
    assert knn_accuracy(train, labels, query, [0], k=3, temperature=10.0) == 1.0
    # k=1 over three queries, one of them closest to a neighbour of another class
    queries = np.array([[1.0, 0.05], [0.1, -1.0], [-1.0, 0.1]])
    assert knn_accuracy(train, labels, queries, [1, 0, 0], k=1) == pytest.approx(2 / 3)


def test_knn_accuracy_of_one_hot_features_is_one() -> None:
    rng = np.random.default_rng(0)
    y_train, y_test = rng.integers(0, 10, 500), rng.integers(0, 10, 123)
    eye = np.eye(10, dtype=np.float32)
    for block_size in (7, 1024):
        acc = knn_accuracy(eye[y_train], y_train, eye[y_test], y_test, block_size=block_size)
        assert acc == 1.0
    shuffled = rng.permutation(y_test)
    assert knn_accuracy(eye[y_train], y_train, eye[y_test], shuffled) < 0.5


def test_knn_accuracy_rejects_mismatched_inputs() -> None:
    with pytest.raises(InvalidInputError, match="dimensions"):
        knn_accuracy(np.ones((4, 3)), [0, 1, 0, 1], np.ones((2, 5)), [0, 1])
    with pytest.raises(InvalidInputError, match="labels"):
        knn_accuracy(np.ones((4, 3)), [0, 1, 0], np.ones((2, 3)), [0, 1])


def _brute_force_knn_accuracy(train, y_train, test, y_test, k, temperature) -> float:
    """Weighted kNN vote in float64 numpy, one test image at a time (ties: lower class)."""
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    test = test / np.linalg.norm(test, axis=1, keepdims=True)
    correct = 0
    for row, label in zip(test, y_test, strict=True):
        sim = train @ row
        nearest = np.argsort(-sim, kind="stable")[:k]
        votes = np.zeros(int(y_train.max()) + 1)
        np.add.at(votes, y_train[nearest], np.exp(sim[nearest] / temperature))
        correct += int(np.argmax(votes) == label)
    return correct / len(y_test)


def test_knn_monitor_restores_the_training_mode(digits, digits_test) -> None:
    """The accuracy is the brute-force kNN vote over the eval-mode embeddings of the images
    normalised by (mean, std), at non-default k and temperature (which both change it here:
    0.82 at k = 7, 0.18 at k = 200 and T = 0.5, 0.40 at the defaults)."""
    torch.manual_seed(0)
    net = build_architecture(ARCH).train()
    mean, std = channel_stats(digits.pixels)
    bank, queries = digits.subset(range(200)), digits_test.subset(range(50))
    got = {
        kt: knn_monitor(net, bank, queries, mean, std, k=kt[0], temperature=kt[1])
        for kt in [(7, 0.5), (200, 0.5)]
    }
    assert net.training

    def embed(pixels: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(pixels).permute(0, 3, 1, 2).double() / 255
        x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        with torch.no_grad():
            return net.eval()(x.float()).double().numpy()

    train, test = embed(bank.images), embed(queries.images)
    y_train, y_test = np.asarray(bank.labels), np.asarray(queries.labels)
    for (k, temperature), acc in got.items():
        expected = _brute_force_knn_accuracy(train, y_train, test, y_test, k, temperature)
        assert acc == pytest.approx(expected, abs=1 / 50 + 1e-9)  # one float32 near-tie at most
    assert abs(got[(7, 0.5)] - got[(200, 0.5)]) > 0.3


def test_channel_stats_match_numpy(digits) -> None:
    mean, std = channel_stats(digits.pixels)
    x = digits.pixels.astype(np.float64) / 255
    np.testing.assert_allclose(mean, x.mean(axis=(0, 1, 2)), atol=1e-6)
    np.testing.assert_allclose(std, x.std(axis=(0, 1, 2)), atol=1e-6)


# -- methods -------------------------------------------------------------------------------


def _views(images: np.ndarray, mean, std, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    aug, g = SSLAugment(mean, std), torch.Generator().manual_seed(seed)
    batch = torch.from_numpy(images)
    return aug(batch, g), aug(batch, g)


@pytest.mark.parametrize("name", METHODS)
def test_each_method_trains(name: str, digits) -> None:
    torch.manual_seed(0)
    model = build_method(name, build_architecture(ARCH)).to(memory_format=torch.channels_last)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    params = [p for p in model.parameters() if p.requires_grad]
    if name != "simclr":
        assert not any(p.requires_grad for p in model.backbone_momentum.parameters())
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    mean, std = channel_stats(digits.pixels)
    for step in range(3):
        view_a, view_b = _views(digits.pixels[step * 32 : (step + 1) * 32], mean, std, step)
        loss = model.training_step(view_a, view_b, step=step, total_steps=3)
        assert loss.ndim == 0 and torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.backbone.state_dict()
    assert not torch.equal(before["conv1.weight"], after["conv1.weight"])
    assert not torch.equal(before["layer4.1.conv2.weight"], after["layer4.1.conv2.weight"])
    if name != "simclr":  # the momentum encoder follows, but lags behind
        momentum = model.backbone_momentum.state_dict()["conv1.weight"]
        assert not torch.equal(momentum, before["conv1.weight"])
        assert not torch.equal(momentum, after["conv1.weight"])


def test_moco_queue_is_part_of_the_state(digits) -> None:
    torch.manual_seed(0)
    model = build_method("moco", build_architecture(ARCH), queue_size=256)
    mean, std = channel_stats(digits.pixels)
    model.training_step(*_views(digits.pixels[:16], mean, std))
    bank = model.criterion.memory_bank
    assert int(bank.bank_ptr) == 32  # both views' keys were enqueued
    state = model.state_dict()
    torch.manual_seed(1)
    fresh = build_method("moco", build_architecture(ARCH), queue_size=256)
    assert not torch.equal(fresh.criterion.memory_bank.bank, bank.bank)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.criterion.memory_bank.bank, bank.bank)
    assert int(fresh.criterion.memory_bank.bank_ptr) == 32


def test_unknown_method_and_bad_temperature_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="unknown"):
        build_method("swav", build_architecture(ARCH))
    with pytest.raises(InvalidInputError, match="temperature"):
        build_method("byol", build_architecture(ARCH), temperature=0.2)


def test_moco_step_on_cifar(cifar_train) -> None:
    """One real 32x32 CIFAR-10 batch through augmentation and MoCo."""
    torch.manual_seed(0)
    model = build_method("moco", build_architecture(ARCH)).to(memory_format=torch.channels_last)
    mean, std = channel_stats(cifar_train.pixels[:2000])
    view_a, view_b = _views(cifar_train.get_images(slice(0, 32)), mean, std)
    assert view_a.shape == (32, 3, 32, 32)
    loss = model.training_step(view_a, view_b)
    assert torch.isfinite(loss) and loss.item() > 0
    np.testing.assert_allclose(mean, (0.4914, 0.4822, 0.4465), atol=0.02)


# -- training, resume and export -----------------------------------------------------------

TINY = {"arch": ARCH, "epochs": 2, "batch_size": 16, "progress": False, "checkpoint_every": 1}


def _final_state(out_dir) -> dict[str, torch.Tensor]:
    payload = torch.load(out_dir / "resume.pt", weights_only=True)
    return payload["model"]


def test_resume_is_bit_identical(digits, tmp_path) -> None:
    data = digits.subset(range(64))  # 4 steps per epoch
    straight = train_ssl(data, out_dir=tmp_path / "straight", **TINY)
    assert straight.finished and straight.epochs_done == 2 and straight.steps_done == 8

    out = tmp_path / "interrupted"
    part = train_ssl(data, out_dir=out, max_steps=3, **TINY)  # stops mid-epoch 1
    assert not part.finished and part.steps_done == 3 and part.epochs_done == 0
    part = train_ssl(data, out_dir=out, max_steps=6, resume=True, **TINY)  # into epoch 2
    assert part.steps_done == 6 and part.epochs_done == 1
    resumed = train_ssl(data, out_dir=out, resume=True, **TINY)
    assert resumed.finished and resumed.steps_done == 8

    a, b = _final_state(tmp_path / "straight"), _final_state(out)
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict):  # the MoCo queue (extra state)
            for sub in a[key]:
                assert torch.equal(a[key][sub], b[key][sub]), key
        else:
            assert torch.equal(a[key], b[key]), key
    wa = load_file(str(straight.backbone_path))
    wb = load_file(str(resumed.backbone_path))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [r["loss"] for r in straight.history] == pytest.approx(
        [r["loss"] for r in resumed.history], rel=1e-6
    )


def test_resume_refuses_other_settings(digits, tmp_path) -> None:
    data = digits.subset(range(32))
    train_ssl(data, out_dir=tmp_path, max_steps=1, **TINY)
    with pytest.raises(InvalidInputError, match="already holds"):
        train_ssl(data, out_dir=tmp_path, **TINY)
    with pytest.raises(InvalidInputError, match=r"method: checkpoint has 'moco'.*'simclr'"):
        train_ssl(data, out_dir=tmp_path, resume=True, method="simclr", **TINY)
    other_arch = {**TINY, "arch": "resnet18-w32"}
    with pytest.raises(InvalidInputError, match="arch: checkpoint has 'resnet18-w16'"):
        train_ssl(data, out_dir=tmp_path, resume=True, **other_arch)
    with pytest.raises(InvalidInputError, match="data"):
        train_ssl(digits.subset(range(32, 64)), out_dir=tmp_path, resume=True, **TINY)


def test_a_config_object_and_keyword_settings_train_the_same_run(digits, tmp_path) -> None:
    """SSLConfig carries the settings; keywords override its fields; the two spellings of one
    run write the same recorded config, and an unknown setting or a mutation is refused."""
    import dataclasses

    from simattr.ssl import SSLConfig

    data = digits.subset(range(32))
    settings = {k: v for k, v in TINY.items() if k != "progress"}
    config = SSLConfig(**settings, max_steps=1)
    by_config = train_ssl(data, config, out_dir=tmp_path / "a", progress=False)
    by_keywords = train_ssl(data, out_dir=tmp_path / "b", max_steps=1, **TINY)
    overridden = train_ssl(data, config, out_dir=tmp_path / "c", progress=False, seed=5)
    assert by_config.epochs_done == by_keywords.epochs_done == overridden.epochs_done
    recorded = [
        torch.load(tmp_path / name / "resume.pt", weights_only=True)["config"]
        for name in ("a", "b", "c")
    ]
    assert recorded[0] == recorded[1]
    assert recorded[2]["seed"] == 5 and recorded[0]["seed"] == 0
    with pytest.raises(InvalidInputError, match=r"unknown setting.*epoch_count"):
        train_ssl(data, config, out_dir=tmp_path / "d", epoch_count=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 3  # type: ignore[misc]


def test_saved_backbone_loads_and_matches(digits, digits_test, tmp_path) -> None:
    data = digits.subset(range(96))
    result = train_ssl(
        data, out_dir=tmp_path, method="byol", knn_dataset=digits_test.subset(range(60)), **TINY
    )
    assert [epoch for epoch, _ in result.knn_history] == [1, 2]
    meta = read_json(sidecar_path(result.backbone_path))
    required = {"arch", "method", "epochs", "knn_accuracy", "input_mean", "input_std"}
    assert required <= meta.keys()
    assert meta["pretrained"] is True and meta["arch"] == ARCH and meta["method"] == "byol"
    assert meta["epochs"] == 2 and meta["knn_accuracy"] == result.knn_history[-1][1]
    assert meta["data"]["fingerprint"] == digits.fingerprint and meta["data"]["n"] == 96
    assert meta["training"]["batch_size"] == 16 and meta["training"]["lr"] > 0
    assert (tmp_path / "history.json").exists()

    loaded = load_backbone(str(result.backbone_path))
    assert loaded.arch == ARCH and loaded.pretrained
    assert loaded.extra["method"] == "byol" and loaded.extra["epochs"] == 2
    assert tuple(loaded.mean) == tuple(meta["input_mean"])
    in_memory = Backbone(result.backbone, ARCH, "trained", loaded.mean, loaded.std)
    images = digits_test.get_images(slice(0, 40))
    expected = extract_features(in_memory, images, progress=False)
    got = extract_features(loaded, images, progress=False)
    np.testing.assert_array_equal(got, expected)


def test_init_from_warm_starts_a_new_schedule(digits, tmp_path) -> None:
    data = digits.subset(range(32))  # 2 steps per epoch
    first = train_ssl(data, out_dir=tmp_path / "first", **TINY)
    source = _final_state(tmp_path / "first")
    # epochs=1 of the warm start, checkpoint before any step: the weights are the source's
    warm = train_ssl(data, out_dir=tmp_path / "warm", init_from=tmp_path / "first",
                     max_steps=0, **{**TINY, "epochs": 1})  # fmt: skip
    assert warm.steps_done == 0
    start = _final_state(tmp_path / "warm")
    for key, value in source.items():
        if not isinstance(value, dict):
            assert torch.equal(value, start[key]), key
    done = train_ssl(data, out_dir=tmp_path / "warm", init_from=tmp_path / "first",
                     resume=True, **{**TINY, "epochs": 1})  # fmt: skip
    assert done.finished and done.epochs_done == 1
    # a new cosine cycle: the source ended at lr 0, the warm start climbs back to the peak
    assert first.history[-1]["lr"] == 0.0
    again = train_ssl(data, out_dir=tmp_path / "warm2", init_from=tmp_path / "first",
                      **{**TINY, "epochs": 2})  # fmt: skip
    from simattr.ssl.train import default_lr

    assert again.history[0]["lr"] > 0.2 * default_lr(TINY["batch_size"])
    meta = json.loads(done.backbone_path.with_name(done.backbone_path.name + ".json").read_text())
    assert meta["prior_epochs"] == 2 and "after 2 warm-start epochs" in meta["note"]
    assert meta["training"]["init_from"]["sha256"]
    with pytest.raises(InvalidInputError, match="method"):
        train_ssl(data, out_dir=tmp_path / "x", init_from=tmp_path / "first", method="simclr",
                  **TINY)  # fmt: skip
    with pytest.raises(InvalidInputError, match="does not exist"):
        train_ssl(data, out_dir=tmp_path / "y", init_from=tmp_path / "nothing", **TINY)


def test_bf16_precision_runs_on_the_cpu_and_is_recorded(digits, tmp_path) -> None:
    data = digits.subset(range(32))
    fp32 = train_ssl(data, out_dir=tmp_path / "fp32", precision="fp32", **TINY)
    bf16 = train_ssl(data, out_dir=tmp_path / "bf16", precision="bf16", **TINY)
    assert read_json(sidecar_path(fp32.backbone_path))["precision"] == "fp32"
    assert read_json(sidecar_path(bf16.backbone_path))["precision"] == "bf16"
    a, b = load_file(fp32.backbone_path), load_file(bf16.backbone_path)
    # Same seed, same data: only the autocast differs, so the weights must (slightly) differ.
    assert a.keys() == b.keys()
    assert any(not torch.equal(a[k], b[k]) for k in a)
    assert all(torch.isfinite(v).all() for v in b.values() if v.is_floating_point())
    with pytest.raises(InvalidInputError, match="precision"):
        train_ssl(data, out_dir=tmp_path / "bad", precision="fp16", **TINY)
    assert not (tmp_path / "bad").exists()
