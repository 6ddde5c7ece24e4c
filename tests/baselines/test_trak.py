"""Baselines in our ranking format: saved classifiers, TRAK, supervised features, random.

All on real CIFAR-10 with the ``tiny`` recipe (1,000-row pool, about 1 s per model).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from numeric import assert_close

from simattr._io import sidecar_path
from simattr.baselines.controls import random_ranking
from simattr.baselines.supervised import head_layer, penultimate_features, supervised_ranking
from simattr.baselines.trak import top_k_ranking, trak_ranking, trak_scores, trak_scores_by_models
from simattr.errors import CheckpointError, InvalidInputError
from simattr.models.classifiers import build_classifier
from simattr.training.classifier_io import (
    load_classifier,
    pool_rows_fingerprint,
    save_classifier,
    train_checkpoints,
)
from simattr.training.recipes import get_recipe, recipe_pool
from simattr.training.trainer import (
    normalise_batch,
    predict_logits,
    to_chw_tensor,
    train_classifier,
)

TARGETS = np.arange(0, 120, 12)  # 10 test rows
PROJ_DIM = 256


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(data_root) -> str:
    return str(data_root / "cifar10")


@pytest.fixture(scope="module")
def pool(cifar_train) -> np.ndarray:
    return recipe_pool("tiny", cifar_train)


@pytest.fixture(scope="module")
def ckpts(data, tmp_path_factory):
    return train_checkpoints(data, "tiny", 2, tmp_path_factory.mktemp("ckpts"), threads=1)


# -- classifier files ------------------------------------------------------------------------
def test_saved_classifier_round_trip_gives_identical_logits(
    tmp_path, cifar_train, cifar_test, pool
):
    view = cifar_train.subset(pool)
    model = train_classifier("tiny", view, seed=3)
    fp = pool_rows_fingerprint(cifar_train, pool)
    path = save_classifier(tmp_path / "m.safetensors", model, "tiny", 10, 3, fp, {"note": "x"})
    loaded, meta = load_classifier(path)
    assert meta["seed"] == 3 and meta["arch"] == "whiten-tiny" and meta["note"] == "x"
    assert meta["pool_rows_fingerprint"] == fp and meta["recipe"]["name"] == "tiny"
    images = cifar_test.get_images(np.arange(64))
    np.testing.assert_array_equal(
        predict_logits(model, "tiny", images), predict_logits(loaded, "tiny", images)
    )


def test_train_checkpoints_is_resumable_and_retrains_a_corrupt_file(data, ckpts):
    assert [p.name for p in ckpts] == ["seed-0.safetensors", "seed-1.safetensors"]
    kept = ckpts[0].stat().st_mtime_ns
    ckpts[1].write_bytes(b"cut short")  # as if killed mid-write (sidecar still there)
    again = train_checkpoints(data, "tiny", 2, ckpts[0].parent, threads=1)
    assert again == ckpts and ckpts[0].stat().st_mtime_ns == kept
    load_classifier(ckpts[1])  # readable again
    with pytest.raises(InvalidInputError, match="other settings"):
        train_checkpoints(data, "cpu-mini", 1, ckpts[0].parent)


def test_bad_checkpoints_raise_checkpoint_error(tmp_path, data, ckpts):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    sidecar_path(garbage).write_text(sidecar_path(ckpts[0]).read_text())
    with pytest.raises(CheckpointError, match=r"garbage\.safetensors"):
        load_classifier(garbage)

    no_sidecar = tmp_path / "alone.safetensors"
    no_sidecar.write_bytes(ckpts[0].read_bytes())
    with pytest.raises(CheckpointError, match="no sidecar"):
        load_classifier(no_sidecar)

    other = tmp_path / "other.safetensors"  # weights of another architecture
    save_classifier(other, build_classifier("whiten-mini", 10), "cpu-mini", 10, 0, "x")
    meta = json.loads(sidecar_path(other).read_text())
    meta["arch"] = "whiten-tiny"
    sidecar_path(other).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="needs"):
        load_classifier(other)

    extra = tmp_path / "extra.safetensors"  # an unexpected tensor
    from safetensors.torch import load_file, save_file

    state = load_file(str(ckpts[0]))
    state["spurious.weight"] = torch.zeros(2)
    save_file(state, str(extra))
    sidecar_path(extra).write_text(sidecar_path(ckpts[0]).read_text())
    with pytest.raises(CheckpointError, match="damaged"):  # another file's checksum
        load_classifier(extra)
    meta = json.loads(sidecar_path(ckpts[0]).read_text())
    for key in ("sha256", "bytes"):  # a sidecar edited by hand: no checksum to hold it to
        meta.pop(key, None)
    sidecar_path(extra).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"spurious\.weight"):
        load_classifier(extra)

    mini = save_classifier(  # a valid model, of another recipe's network
        tmp_path / "mini.safetensors", build_classifier("whiten-mini", 10), "cpu-mini", 10, 0, "x"
    )
    with pytest.raises(CheckpointError, match="arch"):
        supervised_ranking(data, "tiny", [0], 1, checkpoint=mini)


# -- TRAK ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trak_dense(data, ckpts, tmp_path_factory):
    work = tmp_path_factory.mktemp("trak")
    return trak_scores(data, "tiny", TARGETS, checkpoints=ckpts, work_dir=work, proj_dim=PROJ_DIM)


def test_trak_ranking_shape_rows_and_class_conditional(trak_dense, pool, cifar_train, cifar_test):
    assert trak_dense.scores.shape == (len(TARGETS), len(pool))
    assert trak_dense.scores.dtype == np.float32 and np.isfinite(trak_dense.scores).all()
    r = top_k_ranking(trak_dense, 50)
    assert r.indices.shape == (len(TARGETS), 50) and r.indices.dtype == np.int64
    assert np.isin(r.indices, pool).all()
    assert (np.diff(r.scores, axis=1) <= 0).all()
    assert r.metadata["method"] == "trak" and r.metadata["proj_dim"] == PROJ_DIM
    cc = top_k_ranking(trak_dense, 50, class_conditional=True)
    assert (cifar_train.labels[cc.indices] == cifar_test.labels[TARGETS][:, None]).all()
    dense = top_k_ranking(trak_dense, len(pool))  # k = pool: every score, for LDS
    assert np.array_equal(
        np.sort(dense.indices, axis=1), np.broadcast_to(pool, dense.indices.shape)
    )
    with pytest.raises(InvalidInputError, match="larger"):
        top_k_ranking(trak_dense, 101, class_conditional=True)  # 100 rows per class


def test_trak_scores_favour_the_target_class(trak_dense):
    """Wired right, training images of the target's class support its margin on average."""
    same = trak_dense.pool_labels[None, :] == trak_dense.target_labels[:, None]
    per_target = [
        trak_dense.scores[i, same[i]].mean() - trak_dense.scores[i, ~same[i]].mean()
        for i in range(len(TARGETS))
    ]
    assert np.mean(np.array(per_target) > 0) >= 0.8


@pytest.mark.slow
def test_trak_is_deterministic_and_a_training_image_supports_itself(data, ckpts, pool, tmp_path):
    first = trak_ranking(
        data, "tiny", TARGETS, 20, checkpoints=ckpts, work_dir=tmp_path, proj_dim=PROJ_DIM
    )
    again = trak_ranking(  # same store: features reused, targets rescored
        data, "tiny", TARGETS, 20, checkpoints=ckpts, work_dir=tmp_path, proj_dim=PROJ_DIM
    )
    np.testing.assert_array_equal(again.indices, first.indices)
    np.testing.assert_array_equal(again.scores, first.scores)
    rows = pool[::100]  # training images as targets: self-influence must rank first
    own = trak_scores(
        data,
        "tiny",
        rows,
        checkpoints=ckpts,
        work_dir=tmp_path,
        proj_dim=PROJ_DIM,
        target_split="train",
    )
    pos = np.searchsorted(pool, rows)
    ranks = [int((own.scores[i] > own.scores[i, p]).sum()) for i, p in enumerate(pos)]
    assert max(ranks) <= 2, ranks


def test_trak_matches_a_fresh_store(data, ckpts, trak_dense, tmp_path):
    fresh = trak_scores(
        data, "tiny", TARGETS, checkpoints=ckpts, work_dir=tmp_path, proj_dim=PROJ_DIM
    )
    np.testing.assert_array_equal(fresh.scores, trak_dense.scores)


def test_trak_by_models_gives_each_ensemble_of_the_first_checkpoints(
    data, ckpts, trak_dense, tmp_path
):
    """One store serves a curve over the number of models: the largest ensemble is the plain
    call's scores, and the one-model ensemble is TRAK on the first checkpoint alone."""
    curve = trak_scores_by_models(
        data,
        "tiny",
        TARGETS,
        checkpoints=ckpts,
        work_dir=tmp_path,
        proj_dim=PROJ_DIM,
        sizes=[len(ckpts), 1],
    )
    assert sorted(curve) == [1, len(ckpts)]
    assert curve[1].metadata["n_models"] == 1 and curve[1].metadata["checkpoints"] == [
        str(ckpts[0])
    ]
    assert_close(curve[len(ckpts)].scores, trak_dense.scores)
    alone = trak_scores(
        data, "tiny", TARGETS, checkpoints=ckpts[:1], work_dir=tmp_path, proj_dim=PROJ_DIM
    )
    assert_close(curve[1].scores, alone.scores)
    assert not np.allclose(curve[1].scores, curve[len(ckpts)].scores)  # the ensemble matters
    for bad in ([0], [len(ckpts) + 1], []):
        with pytest.raises(InvalidInputError, match="sizes"):
            trak_scores_by_models(
                data, "tiny", TARGETS, checkpoints=ckpts, work_dir=tmp_path, sizes=bad
            )


# -- supervised features ---------------------------------------------------------------------
def test_penultimate_features_are_the_heads_input(ckpts, cifar_test):
    model, _ = load_classifier(ckpts[0])
    images = cifar_test.get_images(np.arange(7))
    feats = penultimate_features(model, "tiny", images, batch_size=4)
    head = head_layer(model)
    assert feats.shape == (7, head.in_features) and feats.dtype == np.float32
    # the head applied to them gives the network's own logits (times its constant logit scale)
    x = normalise_batch(to_chw_tensor(images, torch.device("cpu")), get_recipe("tiny"))
    with torch.no_grad():
        through_head = head(torch.from_numpy(feats)).numpy() * model.logit_scale
        direct = model(x).numpy()
    np.testing.assert_allclose(through_head, direct, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_supervised_ranking_class_conditional(data, ckpts, pool, cifar_train, cifar_test, metric):
    r = supervised_ranking(data, "tiny", TARGETS, 30, checkpoint=ckpts[0], metric=metric)
    assert r.indices.shape == (len(TARGETS), 30) and np.isin(r.indices, pool).all()
    assert (cifar_train.labels[r.indices] == cifar_test.labels[TARGETS][:, None]).all()
    assert (np.diff(r.scores, axis=1) <= 0).all()
    assert r.metadata == {**r.metadata, "method": "supervised", "metric": metric}
    every = supervised_ranking(
        data, "tiny", TARGETS, 30, checkpoint=ckpts[0], metric=metric, class_conditional=False
    )
    assert np.isin(every.indices, pool).all()
    # all classes include the class (float32 rounding differs between the two pools' blocks)
    assert (every.scores[:, 0] >= r.scores[:, 0] - 1e-5 * np.abs(r.scores[:, 0]).max()).all()
    with pytest.raises(InvalidInputError, match="larger"):
        supervised_ranking(data, "tiny", TARGETS, 101, checkpoint=ckpts[0], metric=metric)


# -- random ----------------------------------------------------------------------------------
def test_random_ranking_same_class_within_candidates_seeded(cifar_train, cifar_test, pool):
    args = (cifar_train.labels, cifar_test.labels, TARGETS, 40)
    r = random_ranking(*args, candidates=pool, seed=5)
    assert np.isin(r.indices, pool).all()
    assert (cifar_train.labels[r.indices] == cifar_test.labels[TARGETS][:, None]).all()
    assert all(len(set(row)) == 40 for row in r.indices.tolist())
    np.testing.assert_array_equal(r.indices, random_ranking(*args, candidates=pool, seed=5).indices)
    assert not np.array_equal(r.indices, random_ranking(*args, candidates=pool, seed=6).indices)
    # per-target seeding: a target's ranking does not depend on the others
    one = random_ranking(
        cifar_train.labels, cifar_test.labels, TARGETS[3:4], 40, candidates=pool, seed=5
    )
    np.testing.assert_array_equal(one.indices[0], r.indices[3])
