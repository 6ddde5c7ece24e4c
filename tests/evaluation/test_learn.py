"""``fit_learned`` and ``simattr learn``: an LDS folder and features -> a calibrated model file.

Real inputs: a small LDS run of the ``tiny`` recipe on the shared CIFAR-10 copy (8 subset models,
24 targets, a few seconds), and features of both CIFAR-10 splits saved through ``save_features``
with their dataset (so the sidecars carry the splits' fingerprints and the root). The features
are the images' pixels averaged over 4x4 blocks (192 numbers): embedding 60,000 images with a
network takes minutes on this machine, and what is tested here is the plumbing (rows, labels,
fingerprints, the file), not the quality of a backbone.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from clikit import invoke

from simattr.errors import InvalidInputError

SUBSETS = 8
TARGETS = tuple(range(24))


@pytest.fixture(scope="module")
def data(data_root) -> str:
    return str(data_root / "cifar10")


@pytest.fixture(scope="module")
def lds_dir(data, tmp_path_factory, cifar_train) -> Path:
    from simattr.evaluation.lds import run_lds

    out = tmp_path_factory.mktemp("learn-lds")
    run_lds(data, "tiny", out, subsets=SUBSETS, targets=TARGETS, threads=1)
    return out


@pytest.fixture(scope="module")
def features(data, tmp_path_factory, cifar_train, cifar_test) -> dict[str, Path]:
    from simattr.features import save_features

    root = tmp_path_factory.mktemp("learn-features")
    paths = {}
    for ds in (cifar_train, cifar_test):
        pixels = ds.pixels.astype(np.float32) / 255
        blocks = pixels.reshape(len(ds), 8, 4, 8, 4, 3).mean(axis=(2, 4)).reshape(len(ds), -1)
        paths[ds.split] = save_features(root / f"{ds.split}.npy", blocks, dataset=ds, root=data)
    return paths


def _learn(lds_dir: Path, features: dict[str, Path], out: Path, *extra: object):
    return invoke("learn", lds_dir, "--train-features", features["train"], "--test-features",
                  features["test"], "--out", out, *extra)  # fmt: skip


def _by_hand(lds_dir: Path, features: dict[str, Path], data: str, folds: int, ridge: float):
    """The same model fitted directly on the arrays: the rows and labels picked by hand."""
    from simattr.attribution.learned import LearnedAttribution
    from simattr.data import load_dataset
    from simattr.evaluation.lds import load_lds

    lds = load_lds(lds_dir)
    x_tr, x_te = np.load(features["train"]), np.load(features["test"])
    y_tr, y_te = load_dataset(data, "train").labels, load_dataset(data, "test").labels
    model = LearnedAttribution(form="bilinear", dim=16, ridge=ridge, signals=("cosine",))
    return model.calibrate(
        x_tr[lds.pool], y_tr[lds.pool], lds.masks, lds.margins, x_te[lds.targets],
        y_te[lds.targets], folds=folds, seed=0,
    ), lds  # fmt: skip


def test_cli_learn_writes_a_calibrated_model_that_attribute_applies(
    lds_dir, features, data, tmp_path
):
    from simattr._io import read_json
    from simattr.attribution import load_ranking
    from simattr.attribution.learned import LearnedAttribution
    from simattr.hashing import digest_json

    out = tmp_path / "learned.safetensors"
    done = _learn(lds_dir, features, out, "--folds", 2, "--ridge", 30)
    assert done.exit_code == 0, done.output
    model = LearnedAttribution.load(out)
    cal = model.calibration_info
    assert model.calibrated and cal["folds"] == 2 and cal["subsets"] == SUBSETS
    assert cal["targets"] == len(TARGETS) and model.ridge == 30.0
    summary = done.output.strip()
    assert len(summary.splitlines()) == 1, summary
    assert f"{SUBSETS} subset models, {len(TARGETS)} targets" in summary
    assert f"calibration slope {cal['slope']:.3f}" in summary and f"{cal['r2']:.3f}" in summary
    assert str(out) in summary
    recorded = model.info["lds"]
    assert recorded["subsets"] == list(range(SUBSETS)) and recorded["targets"] == list(TARGETS)
    assert recorded["recipe"] == "tiny"
    manifest = read_json(lds_dir / "manifest.json")
    identity = {k: v for k, v in manifest.items() if k not in ("simattr_version", "created")}
    assert recorded["manifest_digest"] == digest_json(identity)
    # the same model as one fitted by hand on the right rows, features and labels
    hand, lds = _by_hand(lds_dir, features, data, folds=2, ridge=30.0)
    assert model.calibration == pytest.approx(hand.calibration, rel=1e-6)
    x_tr, x_te = np.load(features["train"]), np.load(features["test"])
    from simattr.data import load_dataset

    y_tr, y_te = load_dataset(data, "train").labels, load_dataset(data, "test").labels
    args = (x_tr[lds.pool], y_tr[lds.pool], x_te[lds.targets], y_te[lds.targets])
    np.testing.assert_allclose(model.scores(*args), hand.scores(*args), rtol=1e-6, atol=1e-9)

    ranking_path = tmp_path / "r.npz"
    applied = invoke("attribute", "--train-features", features["train"], "--test-features",
                     features["test"], "--data", data, "--pool", "tiny", "--targets", "0,1",
                     "--topk", 5, "--method", "learned", "--learned-model", out,
                     "--out", ranking_path)  # fmt: skip
    assert applied.exit_code == 0, applied.output
    ranking = load_ranking(ranking_path)
    assert ranking.indices.shape == (2, 5) and np.isin(ranking.indices, lds.pool).all()
    assert ranking.metadata["score_meaning"]["calibrated"] is True
    assert ranking.metadata["score_meaning"]["calibration"] == pytest.approx(model.calibration)


def test_fit_learned_holds_out_subsets_and_targets_and_skips_untrained_models(
    lds_dir, features, tmp_path
):
    from simattr.attribution.learned import RIDGE_GRID, LearnedAttribution
    from simattr.evaluation.learn import fit_learned

    args = (features["train"], features["test"])
    part = fit_learned(lds_dir, *args, tmp_path / "part.safetensors", folds=3,
                       subsets=[5, 0, 1, 2, 3, 4], targets=TARGETS[4:16])  # fmt: skip
    assert part.calibration_info["subsets"] == 6 and part.calibration_info["targets"] == 12
    # no ridge given: the folds chose it from the grid, by the best held-out R^2
    search = part.calibration_info["ridge_search"]
    assert sorted(float(r) for r in search) == sorted(RIDGE_GRID)
    positive = {float(r): v["r2"] for r, v in search.items() if v["slope"] > 0}
    assert part.ridge == max(positive, key=positive.get)
    assert part.info["lds"]["subsets"] == [0, 1, 2, 3, 4, 5]
    assert part.info["lds"]["targets"] == list(TARGETS[4:16])
    saved = LearnedAttribution.load(tmp_path / "part.safetensors")
    assert saved.info["lds"] == part.info["lds"] and saved.calibrated

    # a model not trained yet (its margins file gone) is left out, and cannot be asked for
    partial = tmp_path / "partial-lds"
    shutil.copytree(lds_dir, partial)
    (partial / "margins" / "subset-00006.npy").unlink()
    model = fit_learned(partial, *args, tmp_path / "m.safetensors", folds=2)
    assert model.info["lds"]["subsets"] == [0, 1, 2, 3, 4, 5, 7]
    assert model.calibration_info["subsets"] == 7
    with pytest.raises(InvalidInputError, match=r"subset model 6, which .* has not trained"):
        fit_learned(partial, *args, tmp_path / "n.safetensors", subsets=[0, 1, 2, 6])
    with pytest.raises(InvalidInputError, match="test row 99, which is not a target"):
        fit_learned(lds_dir, *args, tmp_path / "n.safetensors", targets=[0, 99])
    with pytest.raises(InvalidInputError, match="signals"):
        fit_learned(lds_dir, *args, tmp_path / "n.safetensors", signals=("trak",))
    assert not (tmp_path / "n.safetensors").exists()


def _refused(result, *phrases: str) -> None:
    """Exit status 1 and one line naming the culprit; no traceback."""
    assert result.exit_code == 1, result.output
    text = result.output.strip()
    assert "Traceback" not in text and text.startswith("error:"), text
    assert len(text.splitlines()) == 1, text
    for phrase in phrases:
        assert phrase in text, text


def test_cli_learn_refusals_are_one_line_and_write_nothing(lds_dir, features, tmp_path):
    from simattr.data import load_dataset
    from simattr.features import save_features

    out = tmp_path / "m.safetensors"
    _refused(_learn(lds_dir, features, out, "--folds", 5), "--folds 5", "needs 10 subset models")
    swapped = invoke("learn", lds_dir, "--train-features", features["test"], "--test-features",
                     features["train"], "--out", out)  # fmt: skip
    _refused(swapped, "--train-features", "'test' split")
    digits = load_dataset("digits", "train")
    other = save_features(tmp_path / "digits.npy", digits.pixels.reshape(len(digits), -1) / 16.0,
                          dataset=digits, root="digits")  # fmt: skip
    other_data = {"train": other, "test": features["test"]}
    _refused(_learn(lds_dir, other_data, out), "--train-features", "fingerprint")
    empty = tmp_path / "empty-lds"
    shutil.copytree(lds_dir, empty)
    shutil.rmtree(empty / "margins")
    _refused(_learn(empty, features, out), "no trained subset model")
    _refused(_learn(lds_dir, features, tmp_path / "m.npy"), "--out", ".safetensors")
    _refused(_learn(lds_dir, features, lds_dir / "m.safetensors"), "inside the LDS folder")
    missing = {"train": tmp_path / "gone.npy", "test": features["test"]}
    _refused(_learn(lds_dir, missing, out), "--train-features: no such file")
    assert not out.exists() and not (lds_dir / "m.safetensors").exists()
    assert not (tmp_path / "m.npy").exists()
