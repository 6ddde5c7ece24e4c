"""LDS: subset masks, real subset models (tiny recipe), margins, resume, scoring, CLI."""

from __future__ import annotations

import re

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
    with pytest.raises(InvalidInputError, match="`replicates=20`"):
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
    assert "Noise ceiling (sqrt of the replicate correlation)" in res.output
    report = read_json(out)
    r = noise_ceiling(result).mean  # a reliability: the ceiling is its square root
    if r > 0:
        assert report["noise_ceiling"] == pytest.approx(np.sqrt(r))
    else:
        assert report["noise_ceiling"] is None and "not positive" in res.output
    assert (out.parent / "lds_per_target.csv").read_text().startswith("method,target,lds,")
    assert -1.0 <= report["rankings"][str(path)]["beyond_class_prior"]["mean"] <= 1.0 + 1e-9


# -- pure pieces on hand-built data (no training) ----------------------------------------------


def test_subset_masks_are_boolean_rows_of_the_asked_size_and_refuse_empty_subsets():
    """Masks select training rows (boolean indexing of the pool) and hold round(f * n) each;
    a fraction of 0 (empty subsets, nothing to correlate) is refused like 1 is."""
    masks = subset_masks(40, 3, seed=0, fraction=0.3)
    assert masks.dtype == np.bool_
    assert (masks.sum(axis=1) == 12).all()
    pool = np.arange(40) + 1000
    assert len(pool[masks[0]]) == 12
    with pytest.raises(InvalidInputError, match="fraction"):
        subset_masks(10, 2, fraction=0.0)


def _small_lds(margins, pool=None, masks=None, manifest=None, replicate=None):
    """An in-memory LDS run: ``margins`` (S, n_targets); targets are test rows 0..n-1."""
    from simattr.evaluation.lds import LdsData

    margins = np.asarray(margins, dtype=np.float64)
    n_subsets, n_targets = margins.shape
    pool = np.arange(12) if pool is None else np.asarray(pool)
    masks = subset_masks(len(pool), n_subsets, seed=5) if masks is None else masks
    return LdsData(
        pool=pool,
        masks=masks,
        targets=np.arange(n_targets),
        margins=margins,
        manifest=manifest or {},
        replicate=replicate,
    )


def test_lds_score_against_a_brute_force_reference_with_unranked_entries_and_centring():
    """Predicted margins are the masks times the dense scores (rows outside the ranking 0,
    unranked -1 entries ignored, row 0 of the pool a ranked image like any other); centring
    subtracts the mean over the ranked entries only. Checked against numpy + scipy."""
    from scipy.stats import spearmanr

    rng = np.random.default_rng(1)
    lds = _small_lds(rng.normal(size=(9, 2)))  # pool rows 0..11, so row 0 is rankable
    indices = np.array([[0, 5, 7, 2, -1, -1], [3, 0, 11, 4, 6, -1]])
    scores = np.array([[9.0, 1.0, -0.5, 0.25, np.nan, np.nan], [2.0, 8.0, -1.0, 0.5, 3.0, np.nan]])
    ranking = Ranking([0, 1], indices, scores)
    masks = lds.masks.astype(float)
    for centre in (False, True):
        expected = []
        for j in range(2):
            ranked = indices[j] >= 0
            shift = scores[j][ranked].mean() if centre else 0.0
            dense = np.zeros(12)
            dense[indices[j][ranked]] = scores[j][ranked] - shift
            expected.append(spearmanr(masks @ dense, lds.margins[:, j]).statistic)
        got = lds_score(lds, ranking, centre=centre).per_target
        np.testing.assert_allclose(got, expected, atol=1e-12)
    # the two differ here (a ranked count that varies by subset): centring does something
    assert not np.allclose(
        lds_score(lds, ranking).per_target, lds_score(lds, ranking, centre=True).per_target
    )


def test_lds_score_with_exactly_three_models_and_a_control_on_partly_trained_runs():
    """Three trained subsets are enough; untrained (NaN) subsets drop out of the margins and of
    the control alike, so the partial correlation is the textbook one on the trained rows."""
    from scipy.stats import spearmanr

    rng = np.random.default_rng(2)
    margins = rng.normal(size=(8, 2))
    margins[[1, 4]] = np.nan  # two models not trained yet
    lds = _small_lds(margins)
    control = rng.normal(size=(8, 2))
    ranking = Ranking([0, 1], [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]], rng.normal(size=(2, 5)))
    res = lds_score(lds, ranking, control=control)
    assert res.subsets_used == 6
    trained = ~np.isnan(margins).any(axis=1)
    for j in range(2):
        dense = np.zeros(12)
        dense[ranking.indices[j]] = ranking.scores[j]
        a = lds.masks[trained].astype(float) @ dense
        b, z = margins[trained, j], control[trained, j]
        r_ab, r_az, r_bz = (spearmanr(u, v).statistic for u, v in ((a, b), (a, z), (b, z)))
        expected = (r_ab - r_az * r_bz) / np.sqrt((1 - r_az**2) * (1 - r_bz**2))
        assert res.per_target[j] == pytest.approx(expected, abs=1e-12)
    three = margins.copy()
    three[[0, 2, 3]] = np.nan  # trained: 5, 6, 7
    assert lds_score(_small_lds(three), ranking).subsets_used == 3
    three[5] = np.nan
    with pytest.raises(InvalidInputError, match="only 2 subset models"):
        lds_score(_small_lds(three), ranking)


def test_constant_margins_or_predictions_score_zero_not_nan():
    """A target whose margins do not vary over the subsets (or a prediction that does not)
    carries no ranking information: LDS and the noise ceiling read 0 there, never NaN."""
    rng = np.random.default_rng(3)
    margins = rng.normal(size=(7, 2))
    margins[:, 1] = 0.75  # constant margins for target 1
    replicate = rng.normal(size=(7, 2))
    lds = _small_lds(margins, replicate=replicate)
    ranking = Ranking([0, 1], [[1, 2, 3], [4, 5, 6]], [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    res = lds_score(lds, ranking)
    assert np.isfinite(res.per_target[0]) and res.per_target[0] != 0.0
    assert res.per_target[1] == 0.0
    from simattr.evaluation.lds import noise_ceiling

    ceiling = noise_ceiling(lds)
    assert ceiling.per_target[1] == 0.0 and np.isfinite(ceiling.per_target[0])
    lds.replicate[:, 0] = -2.0  # the second seed constant instead
    assert noise_ceiling(lds).per_target[0] == 0.0


def test_lds_score_refuses_a_ranking_of_other_data_naming_the_split():
    """The LDS run records its data's fingerprints; a ranking whose sidecar records others was
    made on another train or test split and is refused, naming which."""
    fps = {"train_fingerprint": "train-aaa", "test_fingerprint": "test-bbb"}
    lds = _small_lds(np.random.default_rng(4).normal(size=(5, 1)), manifest=fps)

    def ranking(train, test):
        meta = {"data_fingerprints": {"train": train, "test": test}}
        return Ranking([0], [[1, 2]], [[1.0, 0.5]], metadata=meta)

    assert len(lds_score(lds, ranking("train-aaa", "test-bbb")).per_target) == 1
    with pytest.raises(InvalidInputError, match="another train split"):
        lds_score(lds, ranking("train-zzz", "test-bbb"))
    with pytest.raises(InvalidInputError, match="another test split"):
        lds_score(lds, ranking("train-aaa", "test-zzz"))


def _write_lds_folder(out, pool, masks, targets, margins=None, replicate=None):
    """An LDS folder laid out as the module docstring documents, written through the store."""
    from simattr.store import Store

    store = Store(out, "lds", {"subsets": len(masks)})
    store.write_array("pool.npy", np.asarray(pool))
    store.write_array("masks.npy", np.asarray(masks))
    store.write_array("targets.npy", np.asarray(targets))
    for s, row in (margins or {}).items():
        store.write_array(f"margins/subset-{s:05d}.npy", np.asarray(row, dtype=np.float64))
    for s, row in (replicate or {}).items():
        store.write_array(f"replicate/subset-{s:05d}.npy", np.asarray(row, dtype=np.float64))
    store.save()
    return out


def test_load_lds_reads_the_documented_layout_and_refuses_arrays_that_do_not_fit(tmp_path):
    """margins/subset-<s>.npy and replicate/subset-<s>.npy fill their rows (missing: NaN);
    masks, pool and targets that do not fit together are refused with one clear line."""
    masks = subset_masks(6, 3, seed=1)
    out = _write_lds_folder(
        tmp_path / "ok",
        np.arange(6) + 10,
        masks,
        [4, 9],
        margins={0: [1.0, 2.0], 2: [3.0, 4.0]},
        replicate={0: [5.0, 6.0]},
    )
    data = load_lds(out)
    np.testing.assert_array_equal(data.margins, [[1, 2], [np.nan, np.nan], [3, 4]])
    np.testing.assert_array_equal(data.replicate[0], [5, 6])
    assert np.isnan(data.replicate[1:]).all()
    assert data.trained.tolist() == [True, False, True]
    assert data.replicated.tolist() == [True, False, False]
    np.testing.assert_array_equal(data.masks, masks)
    np.testing.assert_array_equal(data.targets, [4, 9])
    bad = _write_lds_folder(tmp_path / "short", np.arange(6), masks, [4, 9], margins={1: [1.0]})
    with pytest.raises(InvalidInputError, match=r"subset-00001\.npy holds"):
        load_lds(bad)
    for name, pool, m, targets in (
        ("pool", np.arange(5), masks, [4, 9]),  # masks have 6 columns
        ("masks", np.arange(6), masks[0], [4, 9]),  # one mask, not a table
        ("targets", np.arange(6), masks, [[4, 9]]),
    ):
        folder = _write_lds_folder(tmp_path / name, pool, m, targets)
        with pytest.raises(InvalidInputError, match="do not fit together"):
            load_lds(folder)


def test_run_lds_plans_seeded_subset_jobs_and_resumes_with_fake_models(
    data_root, cifar_train, cifar_test, tmp_path, monkeypatch, capsys
):
    """What run_lds asks to train, checked without training (the models are faked): one job per
    subset on exactly the pool rows its mask selects, seeds ``seed * 100003 + s`` (replicates
    another seed each), predicting the targets; each result stored as its margins; a rerun
    trains only what is missing; bad arguments are refused before anything is written."""
    from simattr.evaluation import lds as lds_module
    from simattr.evaluation import recipe_pool
    from simattr.evaluation.lds import REPLICATE_SEED_OFFSET

    planned: list[dict] = []

    def fake_run_jobs(executor, jobs, on_result):
        planned.append(dict(jobs))
        for key, job in jobs.items():
            logits = np.zeros((len(job.predict), 10), dtype=np.float32)
            logits[:, 0] = job.seed % 1000 / 100  # a margin that tells the models apart
            on_result(key, JobResult(logits=logits, seconds=0.0, n_train=len(job.subset)))

    monkeypatch.setattr(lds_module, "run_jobs", fake_run_jobs)
    monkeypatch.setenv("SIMATTR_PROGRESS_INTERVAL", "0")  # a progress line per model, if shown
    data = str(data_root / "cifar10")
    out = tmp_path / "lds"
    targets = (0, 1, 2)
    result = run_lds(data, "tiny", out, subsets=2, targets=targets, seed=3, replicates=2)
    (jobs,) = planned
    assert capsys.readouterr().err == ""  # quiet unless progress is asked for
    assert sorted(jobs) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    pool = recipe_pool("tiny", cifar_train)
    masks = subset_masks(len(pool), 2, seed=3)
    np.testing.assert_array_equal(result.masks, masks)
    for (s, r), job in jobs.items():
        assert job.seed == 3 * 100_003 + s + r * REPLICATE_SEED_OFFSET
        assert job.subset == tuple(pool[masks[s]].tolist())
        assert job.predict == targets and not job.remove
    assert len({job.seed for job in jobs.values()}) == 4
    labels = cifar_test.labels[list(targets)]
    for s in range(2):
        for r, got in ((0, result.margins[s]), (1, result.replicate[s])):
            logits = np.zeros((3, 10), dtype=np.float32)
            logits[:, 0] = jobs[(s, r)].seed % 1000 / 100
            want = JobResult(logits=logits, seconds=0, n_train=0).margins(labels)
            np.testing.assert_allclose(got, want)
    assert (out / "margins" / "subset-00001.npy").exists()
    assert (out / "replicate" / "subset-00001.npy").exists()
    # the manifest records what the run depends on (docstring), the data by fingerprint...
    manifest = result.manifest
    assert manifest["recipe"]["name"] == "tiny" and manifest["recipe"]["epochs"] >= 1
    assert (manifest["seed"], manifest["fraction"], manifest["subsets"]) == (3, 0.5, 2)
    assert manifest["train_fingerprint"] == cifar_train.fingerprint
    assert manifest["test_fingerprint"] == cifar_test.fingerprint
    # ... so that scoring refuses a ranking made on another test split
    other = Ranking([0], [[int(pool[0])]], [[1.0]], metadata={"data_fingerprints": {"test": "x"}})
    with pytest.raises(InvalidInputError, match="another test split"):
        lds_score(result, other)
    # a rerun trains nothing; more subsets train only the new ones (replicates as asked)
    run_lds(data, "tiny", out, subsets=2, targets=targets, seed=3, replicates=2)
    assert planned[-1] == {}
    run_lds(data, "tiny", out, subsets=4, targets=targets, seed=3, progress=True)
    assert sorted(planned[-1]) == [(2, 0), (3, 0)]
    err = capsys.readouterr().err
    assert set(re.findall(r"LDS models \(tiny\): (\d+)/2", err)) == {"1", "2"}
    # all of the test split when no targets are given
    whole = run_lds(data, "tiny", tmp_path / "whole", subsets=2, seed=0)
    assert np.array_equal(whole.targets, np.arange(len(cifar_test)))
    assert planned[-1][(1, 0)].seed == 1 and planned[-1][(0, 0)].seed == 0
    # refusals, before anything is written
    bad = tmp_path / "bad"
    for kwargs, match in (
        ({"subsets": 1}, "at least 2 subsets"),
        ({"subsets": 2, "replicates": 1.5}, "replicates must be an integer"),
        ({"subsets": 2, "replicates": 3}, "replicates must be an integer"),
        ({"subsets": 2, "threads": 0}, "`threads`"),
        ({"subsets": 2, "targets": (0, 10_000)}, "targets"),
        ({"subsets": 2, "device": "nonsense"}, "device"),
    ):
        with pytest.raises(InvalidInputError, match=match):
            run_lds(data, "tiny", bad, **kwargs)
    assert not bad.exists()
    afile = tmp_path / "a-file"
    afile.write_text("")
    with pytest.raises(InvalidInputError, match=r"^`out_dir` .* is a file; give a folder"):
        run_lds(data, "tiny", afile, subsets=2)
    with pytest.raises(InvalidInputError, match="fraction"):
        run_lds(data, "tiny", out, subsets=4, targets=targets, seed=3, fraction=0.4)


# -- the protocol of issue 26 ------------------------------------------------------------------


def test_per_target_lds_matches_spearman_and_partial_spearman_column_by_column():
    from scipy.stats import spearmanr

    from simattr.evaluation.lds import partial_spearman, per_target_lds

    rng = np.random.default_rng(1)
    z = rng.normal(size=(30, 1))
    a = z + rng.normal(size=(30, 4))
    b = z + 0.5 * a + rng.normal(size=(30, 4))
    np.testing.assert_allclose(
        per_target_lds(a, b), [spearmanr(a[:, j], b[:, j]).statistic for j in range(4)], atol=1e-12
    )
    np.testing.assert_allclose(
        per_target_lds(a, b, z),
        [partial_spearman(a[:, j], b[:, j], z[:, 0]) for j in range(4)],
        atol=1e-12,
    )


def test_class_count_prior_holds_every_class_not_only_the_targets_own():
    """Margins driven by the count of *another* class: the own-class control leaves the
    prediction that knows it a high LDS; the every-class control removes it."""
    from simattr.evaluation.lds import class_count_matrix, class_counts, lds_table

    lds, train_labels, test_labels = _synthetic_lds(n_subsets=40)
    train_labels[lds.pool] = np.arange(len(lds.pool)) % 3  # three classes: counts vary freely
    pool_labels = train_labels[lds.pool]
    other = class_count_matrix(lds, train_labels)[:, 1]  # class 1's count
    assert class_count_matrix(lds, train_labels).sum(axis=1).tolist() == [20.0] * 40
    lds.margins[:, 0] = -other + np.random.default_rng(2).normal(scale=0.1, size=40)
    rows = lds.pool[pool_labels == 1]
    knows = Ranking([0], [rows], [-np.ones(len(rows))])
    own = lds_score(lds, knows, control=class_counts(lds, train_labels, test_labels))
    assert own.per_target[0] > 0.5
    table = lds_table(lds, {"knows": knows}, train_labels=train_labels, targets=[0])
    assert table.per_target["knows"]["raw"][0] > 0.5
    assert table.per_target["knows"]["beyond_prior"][0] == 0.0


def test_jackknife_errors_resample_subsets_and_pair_by_target():
    from simattr.evaluation.lds import jackknife_mean, per_target_lds

    rng = np.random.default_rng(3)
    shared = rng.normal(size=(20, 1))  # every target sees the same subset noise
    margins = shared + 0.3 * rng.normal(size=(20, 50))
    good = margins + rng.normal(size=(20, 50))
    bad = rng.normal(size=(20, 50))
    j = jackknife_mean(good, margins)
    np.testing.assert_allclose(j["mean"], per_target_lds(good, margins).mean())
    assert j["se"] >= j["se_targets"] and j["se_subsets"] > 0
    d = jackknife_mean(good, margins, baseline=bad)
    assert d["mean"] > 0 and d["low"] < d["mean"] < d["high"] and d["p"] < 0.01
    # the same predictions compared with themselves: no difference
    assert jackknife_mean(good, margins, baseline=good)["mean"] == 0.0


def test_lds_table_writes_per_target_csv_and_the_sqrt_ceiling(tmp_path):
    import csv

    from simattr.evaluation.lds import lds_table, per_target_lds

    lds, train_labels, _ = _synthetic_lds()
    p = lds.pool  # two ranked images each, so that centred scores still differ
    signal = Ranking([0, 1], [[p[0], p[7]], [p[1], p[7]]], [[1.0, 0.0], [1.0, 0.0]])
    rnd = Ranking([0, 1], [[p[5], p[7]], [p[6], p[7]]], [[1.0, 0.0], [1.0, 0.0]])
    table = lds_table(
        lds, {"signal": signal, "other": rnd}, train_labels=train_labels, reference="other"
    )
    r = per_target_lds(lds.margins, lds.replicate)
    assert table.ceiling["raw"] == pytest.approx(np.sqrt(r.mean()))
    assert (
        table.cells["signal"]["beyond_prior"]["mean"] > table.cells["other"]["beyond_prior"]["mean"]
    )
    assert "signal - other" in table.comparisons
    path = table.write_csv(tmp_path / "lds_per_target.csv")
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0]) == ["method", "target", "lds", "lds_beyond_prior"] and len(rows) == 4
    assert float(rows[0]["lds"]) == pytest.approx(table.per_target["signal"]["raw"][0], abs=1e-6)
    assert "signal" in table.markdown()


@pytest.mark.parametrize("case", ["one subset", "one target", "no ceiling"])
def test_lds_table_degenerate_inputs_say_n_a_with_a_reason(case):
    from simattr.evaluation.lds import lds_table

    lds, train_labels, _ = _synthetic_lds()
    signal = Ranking([0, 1], [[lds.pool[0]], [lds.pool[1]]], [[1.0], [1.0]])
    kwargs: dict = {}
    if case == "one subset":
        kwargs["subsets"] = [0]
    elif case == "one target":
        kwargs["targets"] = [0]
    else:
        lds.replicate = np.zeros_like(lds.margins)  # no variation: no ceiling
    table = lds_table(lds, {"signal": signal}, train_labels=train_labels, **kwargs)
    text = table.markdown()
    if case == "no ceiling":
        assert table.ceiling["raw"] is None and "not positive" in table.na["ceiling"]
    else:
        assert table.cells["signal"]["raw"]["se"] is None and "n/a" in text
        assert any("at least" in why for why in table.na.values())
