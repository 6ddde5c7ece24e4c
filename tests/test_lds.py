"""LDS: subset masks, real subset models (tiny recipe), margins, resume, scoring, CLI."""

from __future__ import annotations

import numpy as np
import pytest

from simattr.attribution import Ranking, save_ranking
from simattr.errors import InvalidInputError, MissingFileError
from simattr.evaluation.lds import lds_score, load_lds, run_lds, subset_masks
from simattr.training.jobs import JobResult

SUBSETS = 4
TARGETS = (0, 1, 2, 3, 4, 5)


def test_subset_masks_are_halves_seeded_and_extendable():
    a = subset_masks(101, 5, seed=3)
    assert a.shape == (5, 101) and (a.sum(axis=1) == 50).all()
    np.testing.assert_array_equal(subset_masks(101, 8, seed=3)[:5], a)  # extending keeps them
    assert not np.array_equal(subset_masks(101, 5, seed=4), a)
    assert len({m.tobytes() for m in a}) == 5
    with pytest.raises(InvalidInputError, match="fraction"):
        subset_masks(10, 2, fraction=1.0)


def test_margins_are_correct_logit_minus_logsumexp_of_the_others():
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 30.0, -5.0]], dtype=np.float32)
    m = JobResult(logits=logits, seconds=0, n_train=0).margins(np.array([0, 2]))
    np.testing.assert_allclose(m, [2.0 - np.log(2.0), -5.0 - np.logaddexp(0.0, 30.0)], rtol=1e-6)


@pytest.fixture(scope="module")
def lds_dir(data_root, tmp_path_factory, cifar_train):
    out = tmp_path_factory.mktemp("lds")
    run_lds(str(data_root / "cifar10"), "tiny", out, subsets=SUBSETS, targets=TARGETS, threads=1)
    return out


def test_run_lds_writes_masks_and_margins_of_real_models(lds_dir, cifar_train):
    from simattr.evaluation import recipe_pool

    data = load_lds(lds_dir)
    assert data.trained.all() and data.margins.shape == (SUBSETS, len(TARGETS))
    np.testing.assert_array_equal(data.pool, recipe_pool("tiny", cifar_train))
    assert np.isfinite(data.margins).all()
    # different subsets give different models, hence different margins
    assert len({row.tobytes() for row in data.margins}) == SUBSETS


def test_run_lds_resumes_and_extends(lds_dir, data_root):
    data = str(data_root / "cifar10")
    path = lds_dir / "margins" / "subset-00001.npy"
    before = path.stat().st_mtime_ns
    path.unlink()  # as if the model had been in flight when the run was killed
    kept = (lds_dir / "margins" / "subset-00000.npy").stat().st_mtime_ns
    result = run_lds(data, "tiny", lds_dir, subsets=SUBSETS, targets=TARGETS, threads=1)
    assert path.exists() and path.stat().st_mtime_ns != before
    assert (lds_dir / "margins" / "subset-00000.npy").stat().st_mtime_ns == kept
    assert result.trained.all()
    with pytest.raises(InvalidInputError, match="seed"):
        run_lds(data, "tiny", lds_dir, subsets=SUBSETS, targets=TARGETS, seed=9)
    with pytest.raises(InvalidInputError, match="other targets"):
        run_lds(data, "tiny", lds_dir, subsets=SUBSETS, targets=(7, 8))


def _fitted_ranking(data, sign: float, k: int | None = None) -> Ranking:
    """Scores solving masks @ scores = sign * margins exactly (S < pool): LDS = sign."""
    masks = data.masks.astype(np.float64)
    indices, scores = [], []
    for j in range(len(data.targets)):
        dense = np.linalg.lstsq(masks, sign * data.margins[:, j], rcond=None)[0]
        order = np.argsort(-np.abs(dense))[: k or len(dense)]
        indices.append(data.pool[order])
        scores.append(dense[order])
    return Ranking(data.targets, np.array(indices), np.array(scores))


def test_lds_score_of_exact_and_reversed_predictions(lds_dir):
    data = load_lds(lds_dir)
    np.testing.assert_allclose(lds_score(data, _fitted_ranking(data, 1.0)).per_target, 1.0)
    np.testing.assert_allclose(lds_score(data, _fitted_ranking(data, -1.0)).per_target, -1.0)
    # a ranking of training rows outside the pool predicts nothing: LDS 0
    rows = np.setdiff1d(np.arange(50_000), data.pool)[:3]
    n = len(data.targets)
    outside = Ranking(data.targets, np.tile(rows, (n, 1)), np.ones((n, 3)))
    assert lds_score(data, outside).mean == 0.0


def test_lds_score_uses_only_shared_targets_and_needs_three_models(lds_dir, tmp_path):
    data = load_lds(lds_dir)
    r = _fitted_ranking(data, 1.0)
    part = Ranking(r.targets[:2], r.indices[:2], r.scores[:2])
    res = lds_score(data, part)
    assert res.targets.tolist() == list(TARGETS[:2]) and res.subsets_used == SUBSETS
    data.margins[1:] = np.nan
    with pytest.raises(InvalidInputError, match="at least 3"):
        lds_score(data, r)
    with pytest.raises(MissingFileError):
        load_lds(tmp_path)


def test_cli_lds_score(lds_dir, tmp_path):
    from typer.testing import CliRunner

    from simattr._io import read_json
    from simattr.cli import app

    data = load_lds(lds_dir)
    path = save_ranking(tmp_path / "fit.npz", _fitted_ranking(data, 1.0, k=None))
    out = tmp_path / "lds.json"
    res = CliRunner().invoke(app, ["lds-score", str(lds_dir), str(path), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "1.0000" in res.output
    report = read_json(out)["rankings"][str(path)]
    assert report["targets"] == list(TARGETS) and np.allclose(report["lds"], 1.0)


def test_centring_removes_a_shared_score_offset(lds_dir):
    """A constant score carries no attribution: centred, its LDS is exactly 0."""
    data = load_lds(lds_dir)
    n = len(data.targets)
    rows = np.tile(data.pool[:40], (n, 1))
    constant = Ranking(data.targets, rows, np.full((n, 40), -3.0))
    assert lds_score(data, constant, centre=True).mean == 0.0
    raw = lds_score(data, constant)
    assert raw.per_target.shape == (n,) and np.isfinite(raw.standard_error)
    # centring leaves a ranking whose scores already sum the same over every subset unchanged
    fitted = _fitted_ranking(data, 1.0)
    np.testing.assert_allclose(lds_score(data, fitted, centre=True).per_target, 1.0)
