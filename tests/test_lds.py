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
    # a ranking of training rows outside the pool was made for other data: refused, naming it
    rows = np.setdiff1d(np.arange(50_000), data.pool)[:3]
    n = len(data.targets)
    outside = Ranking(data.targets, np.tile(rows, (n, 1)), np.ones((n, 3)))
    with pytest.raises(InvalidInputError, match=r"outside the .*-image pool"):
        lds_score(data, outside)


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


# -- controls: LDS beyond the class prior, and the noise ceiling -------------------------------


def test_partial_spearman_matches_the_textbook_formula_on_ranks():
    from scipy.stats import spearmanr

    from simattr.evaluation.lds import partial_spearman

    rng = np.random.default_rng(0)
    z = rng.normal(size=200)
    a = z + rng.normal(size=200)
    b = z**3 + 0.5 * a + rng.normal(size=200)
    r_ab, r_az, r_bz = (spearmanr(u, v).statistic for u, v in ((a, b), (a, z), (b, z)))
    expected = (r_ab - r_az * r_bz) / np.sqrt((1 - r_az**2) * (1 - r_bz**2))
    assert partial_spearman(a, b, z) == pytest.approx(expected, abs=1e-12)
    assert partial_spearman(z * 2 + 1, b, z) == 0.0  # nothing beyond z


def _synthetic_lds(n_subsets=60, n_pool=40, seed=0, with_replicate=True):
    """Margins: 0.3 x count of the target's class + 1.0 x (pool image 0 is in) + noise."""
    from simattr.evaluation.lds import LdsData

    rng = np.random.default_rng(seed)
    masks = subset_masks(n_pool, n_subsets, seed=seed)
    pool = np.arange(n_pool) + 100
    train_labels = np.zeros(200, dtype=np.int64)
    train_labels[pool] = np.arange(n_pool) % 2
    test_labels = np.array([0, 1])
    counts = masks.astype(float) @ (train_labels[pool][:, None] == test_labels[None, :])

    def margins():
        m = 0.3 * counts + rng.normal(scale=0.5, size=counts.shape)
        m[:, 0] += 1.0 * masks[:, 0]  # pool image 0 (class 0) matters to target 0
        return m

    data = LdsData(
        pool=pool,
        masks=masks,
        targets=np.array([0, 1]),
        margins=margins(),
        manifest={},
        replicate=margins() if with_replicate else None,
    )
    return data, train_labels, test_labels


def test_class_prior_scores_nothing_beyond_the_class_and_a_real_signal_does():
    from simattr.evaluation.lds import class_counts

    lds, train_labels, test_labels = _synthetic_lds()
    counts = class_counts(lds, train_labels, test_labels)
    same = lds.masks.astype(float) @ (train_labels[lds.pool][:, None] == test_labels[None, :])
    np.testing.assert_array_equal(counts, same)
    pool_labels = train_labels[lds.pool]
    prior_rows = [lds.pool[pool_labels == c] for c in test_labels]
    prior = Ranking([0, 1], np.stack(prior_rows), np.ones((2, 20)))
    raw = lds_score(lds, prior)
    beyond = lds_score(lds, prior, control=counts)
    assert raw.mean > 0.3  # the class count alone predicts the margins
    np.testing.assert_array_equal(beyond.per_target, [0.0, 0.0])
    signal = Ranking([0], [[lds.pool[0]]], [[1.0]])  # the image that matters, for target 0
    assert lds_score(lds, signal, control=counts).per_target[0] > 0.3


def test_noise_ceiling_correlates_two_seeds_and_needs_replicates():
    from simattr.evaluation.lds import class_counts, noise_ceiling

    lds, train_labels, test_labels = _synthetic_lds()
    ceiling = noise_ceiling(lds)
    assert ceiling.subsets_used == 60 and 0.3 < ceiling.mean < 1.0
    beyond = noise_ceiling(lds, class_counts(lds, train_labels, test_labels))
    assert beyond.mean < ceiling.mean
    lds.replicate[3:] = np.nan
    assert noise_ceiling(lds).subsets_used == 3
    lds.replicate[2] = np.nan
    with pytest.raises(InvalidInputError, match="replicates 20"):
        noise_ceiling(lds)


def test_run_lds_trains_replicates_with_other_seeds(lds_dir, data_root):
    from simattr.evaluation.lds import noise_ceiling

    data = str(data_root / "cifar10")
    before = load_lds(lds_dir)
    assert not before.replicated.any()
    result = run_lds(data, "tiny", lds_dir, subsets=SUBSETS, targets=TARGETS, threads=1,
                     replicates=3)  # fmt: skip
    assert result.replicated.tolist() == [True, True, True, False]
    np.testing.assert_array_equal(result.margins, before.margins)  # first models untouched
    assert not np.allclose(result.replicate[:3], result.margins[:3])  # another seed
    assert noise_ceiling(result).subsets_used == 3
    with pytest.raises(InvalidInputError, match="replicates"):
        run_lds(data, "tiny", lds_dir, subsets=SUBSETS, targets=TARGETS, replicates=5)
    from typer.testing import CliRunner

    from simattr._io import read_json
    from simattr.cli import app

    path = save_ranking(lds_dir.parent / "fit-r.npz", _fitted_ranking(result, 1.0, k=None))
    out = lds_dir.parent / "lds-r.json"
    res = CliRunner().invoke(
        app, ["lds-score", str(lds_dir), str(path), "--data", data, "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert "noise ceiling (two seeds on 3 subsets)" in res.output
    report = read_json(out)
    assert report["noise_ceiling"] == pytest.approx(noise_ceiling(result).mean)
    assert -1.0 <= report["rankings"][str(path)]["beyond_class_prior"]["mean"] <= 1.0 + 1e-9
