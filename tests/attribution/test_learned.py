"""The `learned` attribution: planted bilinear truth recovered, signed scores, files, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from simattr.attribution.learned import LearnedAttribution
from simattr.errors import InvalidInputError
from simattr.evaluation.lds import subset_masks


def _planted(seed=0, n_pool=80, n_targets=40, n_subsets=80, d=6):
    """Margins = sum over the subset of (P x_i) . (Q z_t), a rank-2 bilinear score, + noise."""
    rng = np.random.default_rng(seed)
    pool = rng.normal(size=(n_pool, d))
    targets = rng.normal(size=(n_targets, d))
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    targets /= np.linalg.norm(targets, axis=1, keepdims=True)
    p, q = rng.normal(size=(d, 2)), rng.normal(size=(d, 2))
    truth = (targets @ q) @ (pool @ p).T  # (T, n_pool), signed
    masks = subset_masks(n_pool, n_subsets, seed=seed)
    margins = masks.astype(float) @ truth.T + rng.normal(scale=0.05, size=(n_subsets, n_targets))
    pool_labels = np.arange(n_pool) % 2
    target_labels = np.arange(n_targets) % 2
    return pool, pool_labels, targets, target_labels, masks, margins, truth


def test_recovers_a_planted_bilinear_truth_on_targets_it_was_not_fitted_on():
    pool, pl, tg, tl, masks, margins, truth = _planted()
    model = LearnedAttribution(form="bilinear", dim=6, ridge=0.01)
    model.fit(pool, pl, masks, margins[:, :30], tg[:30], tl[:30])
    got = model.scores(pool, pl, tg[30:], tl[30:])
    for j in range(10):
        assert np.corrcoef(got[j], truth[30 + j])[0, 1] > 0.9
    # in logit units: the scale is the truth's, not an arbitrary one
    slope = np.polyfit(truth[30:].ravel(), got.ravel(), 1)[0]
    assert 0.8 < slope < 1.25
    # a model without the bilinear part cannot find it
    weak = LearnedAttribution(form="class").fit(pool, pl, masks, margins[:, :30], tg[:30], tl[:30])
    w = weak.scores(pool, pl, tg[30:], tl[30:])
    assert np.mean([abs(np.corrcoef(w[j], truth[30 + j])[0, 1]) for j in range(10)]) < 0.5


def test_scores_are_signed_and_cover_every_class():
    pool, pl, tg, tl, masks, margins, truth = _planted(seed=1)
    model = LearnedAttribution(form="bilinear", dim=6).fit(pool, pl, masks, margins, tg, tl)
    s = model.scores(pool, pl, tg, tl)
    assert s.shape == (len(tg), len(pool))
    assert (s > 0).any() and (s < 0).any()
    # the most harmful images (truth < 0) get negative scores
    assert np.mean(np.sign(s[truth < -0.5]) == -1) > 0.9
    assert set(pl[np.argsort(-s[0])[:20]]) == {0, 1}  # the top images span both classes


def test_save_load_round_trip_without_pickle(tmp_path):
    pool, pl, tg, tl, masks, margins, _ = _planted(seed=2)
    model = LearnedAttribution(form="bilinear", dim=4).fit(pool, pl, masks, margins, tg, tl)
    path = model.save(tmp_path / "learned.safetensors")
    assert (tmp_path / "learned.safetensors.json").exists()
    assert path.read_bytes()[:8] != b"\x80\x04\x95"[:8]  # not a pickle stream
    back = LearnedAttribution.load(path)
    np.testing.assert_allclose(back.scores(pool, pl, tg, tl), model.scores(pool, pl, tg, tl))
    assert back.form == "bilinear" and back.feature_dim == pool.shape[1]


def test_refuses_features_of_another_dimension_in_one_line():
    pool, pl, tg, tl, masks, margins, _ = _planted(seed=3)
    model = LearnedAttribution(form="kernel").fit(pool, pl, masks, margins, tg, tl)
    with pytest.raises(InvalidInputError, match="fitted on 6") as err:
        model.scores(np.ones((80, 5)), pl, tg, tl)
    assert "\n" not in str(err.value)
    with pytest.raises(InvalidInputError, match="form"):
        LearnedAttribution(form="mlp")


def test_a_given_signal_is_weighted_into_logits_and_refused_when_missing():
    """Margins driven by an external per-pair score (a TRAK-like signal): the fitted weight
    turns it into logits on targets not fitted on; a missing signal is refused by name."""
    pool, pl, tg, tl, masks, _, _ = _planted(seed=4)
    rng = np.random.default_rng(4)
    signal = rng.normal(size=(len(tg), len(pool)))
    truth = 0.3 * signal * (tl[:, None] == pl[None, :])  # same-class images only
    margins = masks.astype(float) @ truth.T + rng.normal(scale=0.05, size=(len(masks), len(tg)))
    model = LearnedAttribution(form="class", signals=("trak",), ridge=0.01)
    model.fit(pool, pl, masks, margins[:, :30], tg[:30], tl[:30], signals={"trak": signal[:30]})
    got = model.scores(pool, pl, tg[30:], tl[30:], signals={"trak": signal[30:]})
    slope = np.polyfit(truth[30:].ravel(), got.ravel(), 1)[0]
    assert 0.8 < slope < 1.25
    assert abs(model.arrays["signal_weights"][0, 1]) < 0.1 * abs(
        model.arrays["signal_weights"][0, 0]
    )
    with pytest.raises(InvalidInputError, match="'trak'"):
        model.scores(pool, pl, tg, tl)


def test_cosine_signal_and_format_round_trip(tmp_path):
    pool, pl, tg, tl, masks, margins, _ = _planted(seed=5)
    model = LearnedAttribution(form="kernel", signals=("cosine",)).fit(
        pool, pl, masks, margins, tg, tl
    )
    back = LearnedAttribution.load(model.save(tmp_path / "m.safetensors"))
    assert back.signals == ("cosine",)
    np.testing.assert_allclose(back.scores(pool, pl, tg, tl), model.scores(pool, pl, tg, tl))


def test_a_format_1_file_still_loads():
    """The committed v1 model (benchmarks/results/learned-cpu) loads with no signals."""
    from pathlib import Path

    path = (
        Path(__file__).resolve().parents[2] / "benchmarks/results/learned-cpu/learned.safetensors"
    )
    model = LearnedAttribution.load(path)
    assert model.signals == () and model.form == "bilinear"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, model.feature_dim))
    s = model.scores(x, np.arange(30) % 10, x[:3], np.arange(3))
    assert s.shape == (3, 30) and np.isfinite(s).all()


def _saved(tmp_path, **kw):
    pool, pl, tg, tl, masks, margins, _ = _planted(seed=6)
    model = LearnedAttribution(form="bilinear", dim=4, **kw)
    sig = {"trak": np.ones((len(tg), len(pool)))} if "trak" in kw.get("signals", ()) else None
    model.fit(pool, pl, masks, margins, tg, tl, signals=sig)
    return model, str(model.save(tmp_path / "m.safetensors")), pool, pl, tg, tl


def test_registered_as_method_learned_through_the_attributor(tmp_path):
    """Attributor scores with the file's model and the labels, all-class and per class."""
    from simattr.attribution import Attributor, check_scorer
    from simattr.attribution.scorers import SCORERS, LearnedScorer

    assert SCORERS["learned"] is LearnedScorer
    model, path, pool, pl, tg, tl = _saved(tmp_path, signals=("cosine",))
    want = model.scores(pool, pl, tg, tl)
    att = Attributor(LearnedScorer(model_path=path), class_conditional=False, normalize=False)
    got = att.fit(pool, pl).score(tg, tl)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    idx, val = att.topk(tg, tl, k=5)
    np.testing.assert_allclose(val, np.sort(want, axis=1)[:, ::-1][:, :5], rtol=1e-9)
    assert set(pl[idx.ravel()]) == {0, 1}  # all classes ranked
    same = Attributor(LearnedScorer(model_path=path), normalize=False).fit(pool, pl).score(tg, tl)
    inside = pl[None, :] == tl[:, None]
    np.testing.assert_allclose(same[inside], want[inside], rtol=1e-9)
    assert np.isneginf(same[~inside]).all()
    check_scorer(LearnedScorer)  # the contract, on its own 8-dimensional example model


def test_learned_method_refuses_missing_file_labels_and_fused_scores(tmp_path):
    from simattr.attribution import Attributor
    from simattr.attribution.scorers import LearnedScorer

    _, path, pool, pl, tg, tl = _saved(tmp_path)
    with pytest.raises(InvalidInputError, match="model_path"):
        Attributor("learned").fit(pool, pl).score(tg, tl)
    att = Attributor(LearnedScorer(model_path=path), class_conditional=False).fit(pool, pl)
    with pytest.raises(InvalidInputError, match="target_labels"):
        att.score(tg)
    _, fused, *_ = _saved(tmp_path, signals=("trak",))
    with pytest.raises(InvalidInputError, match="trak"):
        Attributor(LearnedScorer(model_path=fused)).fit(pool, pl).score(tg, tl)


# -- calibration -------------------------------------------------------------------------------
def _overfit_problem(seed, n_pool=200, n_targets=100, n_subsets=96, d=16):
    """Margins = sum over the subset of a weak rank-4 bilinear truth + unit noise: with 256
    bilinear parameters, a near-unregularised fit on 96 models learns much of the noise."""
    rng = np.random.default_rng(seed)
    pool, targets = rng.normal(size=(n_pool, d)), rng.normal(size=(n_targets, d))
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    targets /= np.linalg.norm(targets, axis=1, keepdims=True)
    truth = 0.015 * (targets @ rng.normal(size=(d, 4))) @ (pool @ rng.normal(size=(d, 4))).T

    def draw(n, mask_seed):
        masks = subset_masks(n_pool, n, seed=mask_seed)
        return masks, masks @ truth.T + rng.normal(size=(n, n_targets))

    labels = (np.arange(n_pool) % 2, np.arange(n_targets) % 2)
    return pool, targets, labels, draw


def _held_out_slope(model, pool, targets, labels, masks, observed):
    """Observed on predicted margin (sum of scores over each subset), centred per target."""
    pred = masks @ model.scores(pool, labels[0], targets, labels[1]).T
    pred, obs = pred - pred.mean(axis=0), observed - observed.mean(axis=0)
    return float(np.sum(pred * obs) / np.sum(pred * pred))


def test_calibration_brings_the_held_out_slope_of_an_overfit_model_near_one():
    """On fresh subset models drawn from the same truth (never used to fit or calibrate), an
    overfit model's scores are too large (slope well below 1); calibrated ones are close to 1.
    Three independent problems: one slope is noisy (the full fit's own errors are not the
    folds'), their mean is not."""
    raw_slopes, cal_slopes = [], []
    for seed in range(3):
        pool, tg, labels, draw = _overfit_problem(seed)
        masks, margins = draw(96, seed + 10)
        fresh, fresh_margins = draw(100, seed + 20)
        raw = LearnedAttribution(form="bilinear", dim=16, ridge=1e-3)
        raw.fit(pool, labels[0], masks, margins, tg, labels[1])
        cal = LearnedAttribution(form="bilinear", dim=16, ridge=1e-3)
        cal.calibrate(pool, labels[0], masks, margins, tg, labels[1], folds=8, seed=seed)
        assert not raw.calibrated and cal.calibrated and 0 < cal.calibration < 1
        raw_slopes.append(_held_out_slope(raw, pool, tg, labels, fresh, fresh_margins))
        cal_slopes.append(_held_out_slope(cal, pool, tg, labels, fresh, fresh_margins))
        assert raw_slopes[-1] < 0.7  # overstated
        assert abs(np.log(cal_slopes[-1])) < abs(np.log(raw_slopes[-1]))  # nearer 1, each time
        # the same fit underneath: calibrated scores are the raw ones times the factor
        np.testing.assert_allclose(
            cal.scores(pool, labels[0], tg, labels[1]),
            cal.calibration * raw.scores(pool, labels[0], tg, labels[1]),
            rtol=1e-6,
            atol=1e-9,
        )
    assert 0.85 < np.mean(cal_slopes) < 1.25


def test_calibration_is_the_k_fold_slope_of_fits_on_the_other_models():
    """The factor and its record agree with the documented recipe done by hand with fit() and
    scores(): folds from default_rng(seed).permutation, per-target centring, one pooled slope."""
    pool, pl, tg, tl, masks, margins, _ = _planted(seed=7, n_subsets=24)
    margins = margins + np.random.default_rng(7).normal(scale=0.5, size=margins.shape)
    folds, seed = 3, 5
    held = np.array_split(np.random.default_rng(seed).permutation(len(masks)), folds)
    sxy = sxx = syy = 0.0
    for h in held:
        rest = np.setdiff1d(np.arange(len(masks)), h)
        part = LearnedAttribution(form="bilinear", dim=6, ridge=0.1)
        part.fit(pool, pl, masks[rest], margins[rest], tg, tl)
        pred = masks[h] @ part.scores(pool, pl, tg, tl).T
        pred, obs = pred - pred.mean(axis=0), margins[h] - margins[h].mean(axis=0)
        sxy, sxx, syy = sxy + np.sum(pred * obs), sxx + np.sum(pred**2), syy + np.sum(obs**2)
    model = LearnedAttribution(form="bilinear", dim=6, ridge=0.1)
    model.calibrate(pool, pl, masks, margins, tg, tl, folds=folds, seed=seed)
    info = model.calibration_info
    assert info["slope"] == pytest.approx(sxy / sxx, rel=1e-6)
    assert model.calibration == pytest.approx(sxy / sxx, rel=1e-6)
    assert info["r2"] == pytest.approx(sxy**2 / (sxx * syy), rel=1e-6)
    assert (info["cells"], info["folds"], info["subsets"], info["targets"]) == (
        24 * len(tg),
        3,
        24,
        len(tg),
    )
    assert model.info["calibrated"] is True
    # refitting resets it: fit() gives raw, uncalibrated scores again
    full = LearnedAttribution(form="bilinear", dim=6, ridge=0.1).fit(
        pool, pl, masks, margins, tg, tl
    )
    np.testing.assert_allclose(
        model.scores(pool, pl, tg, tl), model.calibration * full.scores(pool, pl, tg, tl), rtol=1e-6
    )
    model.fit(pool, pl, masks, margins, tg, tl)
    assert not model.calibrated and model.calibration == 1.0 and model.info["calibrated"] is False
    np.testing.assert_allclose(model.scores(pool, pl, tg, tl), full.scores(pool, pl, tg, tl))


def test_calibrate_chooses_the_ridge_with_the_best_held_out_fit():
    """With ``ridges``, each penalty's folds are judged on their held-out models; the one with
    the highest pooled R^2 is kept, and the model is then exactly what calibrating at that
    ridge alone gives. An overfit problem needs a far larger penalty than 1e-3."""
    pool, tg, labels, draw = _overfit_problem(3)
    masks, margins = draw(48, 30)
    grid = [1e-3, 1.0, 1e2, 1e4]
    model = LearnedAttribution(form="bilinear", dim=16, ridge=1e-3)
    model.calibrate(pool, labels[0], masks, margins, tg, labels[1], folds=4, seed=1, ridges=grid)
    search = model.calibration_info["ridge_search"]
    assert sorted(float(k) for k in search) == grid
    usable = {float(k): v["r2"] for k, v in search.items() if v["slope"] > 0}
    assert model.ridge == max(usable, key=usable.get) and model.ridge > 1e-3
    alone = LearnedAttribution(form="bilinear", dim=16, ridge=model.ridge)
    alone.calibrate(pool, labels[0], masks, margins, tg, labels[1], folds=4, seed=1)
    assert model.calibration == pytest.approx(alone.calibration, rel=1e-6)
    assert model.calibration_info["r2"] == pytest.approx(search[str(model.ridge)]["r2"], rel=1e-9)
    np.testing.assert_allclose(
        model.scores(pool, labels[0], tg, labels[1]),
        alone.scores(pool, labels[0], tg, labels[1]),
        rtol=1e-6,
        atol=1e-12,
    )
    with pytest.raises(InvalidInputError, match="ridges"):
        model.calibrate(pool, labels[0], masks, margins, tg, labels[1], ridges=[-1.0])


def test_calibrate_refuses_fewer_than_two_models_per_fold_in_one_line():
    pool, pl, tg, tl, masks, margins, _ = _planted(seed=8, n_subsets=7)
    model = LearnedAttribution(form="kernel")
    with pytest.raises(InvalidInputError, match="2 subset models per fold") as err:
        model.calibrate(pool, pl, masks, margins, tg, tl, folds=4)
    assert "\n" not in str(err.value) and "folds=4" in str(err.value)
    with pytest.raises(InvalidInputError, match="folds"):
        model.calibrate(pool, pl, masks, margins, tg, tl, folds=1)
    assert not model.calibrated


def test_calibrate_refuses_a_model_that_does_not_predict_held_out_margins():
    """Pure-noise margins: the held-out slope is at best near 0; a factor <= 0 is refused."""
    pool, pl, tg, tl, masks, margins, _ = _planted(seed=9, n_subsets=16)
    rng = np.random.default_rng(9)
    for seed in range(20):  # some seeds give a slope just above 0: those calibrate to ~0
        noise = rng.normal(size=(16, len(tg)))
        model = LearnedAttribution(form="bilinear", dim=6, ridge=1e-3)
        model.fit(pool, pl, masks, margins, tg, tl)
        before = model.scores(pool, pl, tg, tl)
        try:
            model.calibrate(pool, pl, masks, noise, tg, tl, seed=seed)
        except InvalidInputError as err:
            assert "<= 0" in str(err) and "\n" not in str(err)
            # refused: the fitted model is left as it was
            assert not model.calibrated
            np.testing.assert_allclose(model.scores(pool, pl, tg, tl), before)
            return
        assert model.calibration < 0.5
    pytest.fail("no noise draw gave a slope <= 0")


def test_calibrated_file_round_trip_keeps_the_factor(tmp_path):
    pool, pl, tg, tl, masks, margins, _ = _planted(seed=10, n_subsets=24)
    margins = margins + np.random.default_rng(10).normal(scale=0.5, size=margins.shape)
    model = LearnedAttribution(form="bilinear", dim=6, ridge=0.01)
    model.calibrate(pool, pl, masks, margins, tg, tl, folds=3)
    path = model.save(tmp_path / "cal.safetensors")
    import json

    meta = json.loads((tmp_path / "cal.safetensors.json").read_text())
    assert meta["format"] == 3 and meta["calibration"] == pytest.approx(model.calibration)
    back = LearnedAttribution.load(path)
    assert back.calibrated and back.calibration == pytest.approx(model.calibration)
    assert back.calibration_info == model.calibration_info
    assert back.calibration != 1.0
    np.testing.assert_allclose(back.scores(pool, pl, tg, tl), model.scores(pool, pl, tg, tl))


def test_a_format_2_file_still_loads_uncalibrated():
    """The committed v2 model (benchmarks/results/learned-cpu-v2) has no calibration."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "benchmarks/results/learned-cpu-v2"
    model = LearnedAttribution.load(root / "learned-v2.safetensors")
    assert not model.calibrated and model.calibration == 1.0
    assert model.signals == ("trak", "ssl-cosine")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, model.feature_dim))
    given = {"trak": rng.normal(size=(3, 30)), "ssl-cosine": rng.normal(size=(3, 30))}
    s = model.scores(x, np.arange(30) % 10, x[:3], np.arange(3), signals=given)
    assert s.shape == (3, 30) and np.isfinite(s).all()
