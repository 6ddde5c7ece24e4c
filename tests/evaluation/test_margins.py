"""Margin effects: grouping, pairing and statistics on known numbers; one real tiny run."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from simattr._io import read_jsonl
from simattr.attribution import Attributor, Ranking, save_ranking
from simattr.baselines import random_ranking
from simattr.cli import app
from simattr.errors import InvalidInputError
from simattr.evaluation.margins import (
    MarginSettings,
    choose_balanced_targets,
    compare_designs,
    effects,
    paired,
    plan_groups,
    removal_sizes,
    run_margins,
    summarise,
)
from simattr.training import recipe_pool


def test_multiplexed_groups_hold_at_most_one_target_per_class():
    targets = np.array([10, 11, 12, 20, 21, 30])
    labels = np.array([1, 1, 1, 2, 2, 3])
    groups = plan_groups(targets, labels, multiplex=True)
    assert [sorted(g.tolist()) for g in groups] == [[10, 20, 30], [11, 21], [12]]
    for g in groups:
        assert len(set(labels[np.isin(targets, g)])) == len(g)
    single = plan_groups(targets, labels, multiplex=False)
    assert [g.tolist() for g in single] == [[t] for t in targets]


def test_removal_sizes_are_fractions_of_the_smallest_class():
    labels = np.repeat([0, 1, 2], [400, 300, 500])
    assert removal_sizes([0.05, 0.1, 0.2], labels) == {0.05: 15, 0.1: 30, 0.2: 60}
    assert removal_sizes([0.001], labels) == {0.001: 1}


def test_balanced_targets_spread_over_classes_and_are_seeded():
    labels = np.repeat(np.arange(4), 25)
    eligible = np.arange(100)[np.arange(100) % 3 != 0]
    a = choose_balanced_targets(eligible, labels, 8, seed=1)
    assert np.array_equal(a, choose_balanced_targets(eligible, labels, 8, seed=1))
    assert np.isin(a, eligible).all() and len(np.unique(a)) == 8
    assert np.bincount(labels[a]).tolist() == [2, 2, 2, 2]
    with pytest.raises(InvalidInputError, match="cannot draw 90"):
        choose_balanced_targets(eligible, labels, 90)


def _records(margins_full, removed):
    """Hand-built records: ``removed[(ranking, fraction)] = {(target, seed): margin}``."""
    recs = [
        {"kind": "baseline", "seed": s, "targets": list(m), "margins": list(m.values())}
        for s, m in margins_full.items()
    ]
    for (name, f), cell in removed.items():
        for (t, s), v in cell.items():
            recs.append(
                {
                    "kind": "removal",
                    "ranking": name,
                    "fraction": f,
                    "m": 10,
                    "seed": s,
                    "targets": [t],
                    "margins": [v],
                }
            )
    return recs


def test_effects_pair_each_removal_with_the_baseline_of_its_seed():
    full = {0: {1: 2.0, 2: 1.0}, 1: {1: 3.0, 2: 0.5}}
    removed = {
        ("esvm", 0.1): {(1, 0): 0.5, (1, 1): 1.0, (2, 0): 0.0},
        ("random", 0.1): {(1, 0): 1.5, (2, 0): 1.0, (2, 2): -9.0},  # seed 2 has no baseline
    }
    eff = effects(_records(full, removed))
    # target 1: seeds 0 and 1 -> mean(0.5 - 2, 1 - 3) = -1.75; target 2: seed 0 -> -1.0
    assert eff[("esvm", 0.1)] == {1: -1.75, 2: -1.0}
    assert eff[("random", 0.1)] == {1: -0.5, 2: 0.0}


def test_paired_comparison_matches_scipy():
    rng = np.random.default_rng(0)
    a = {t: float(v) for t, v in enumerate(rng.normal(-1, 1, 30))}
    b = {t: float(v) for t, v in enumerate(rng.normal(0, 1, 30))}
    b[99] = 5.0  # only in b: not paired
    out = paired(a, b)
    d = np.array([a[t] - b[t] for t in range(30)])
    assert out["n"] == 30
    assert math.isclose(out["mean"], d.mean())
    assert math.isclose(out["t_p"], stats.ttest_1samp(d, 0).pvalue)
    assert math.isclose(out["wilcoxon_p"], stats.wilcoxon(d).pvalue)
    low, high = stats.t.interval(0.95, 29, loc=d.mean(), scale=stats.sem(d))
    assert math.isclose(out["low"], low) and math.isclose(out["high"], high)
    assert out["a_lower"] + out["b_lower"] == 30


def test_summary_reads_every_ranking_against_the_reference_and_named_pairs():
    full = {0: {t: 1.0 for t in range(6)}}
    removed = {
        ("esvm", 0.1): {(t, 0): -1.0 - 0.1 * t for t in range(6)},
        ("l2", 0.1): {(t, 0): 0.0 - 0.1 * t for t in range(6)},
        ("random", 0.1): {(t, 0): 0.9 + 0.01 * t for t in range(6)},
    }
    table = summarise(_records(full, removed), reference="random", pairs=[("esvm", "l2")])
    cell = table["fractions"]["0.1"]
    assert cell["m"] == 10
    assert math.isclose(cell["rankings"]["esvm"]["effect"]["mean"], -2.25)
    assert "vs_reference" not in cell["rankings"]["random"]
    assert cell["rankings"]["esvm"]["vs_reference"]["a_lower"] == 6
    assert math.isclose(cell["pairs"]["esvm - l2"]["mean"], -1.0)
    control = compare_designs(_records(full, removed), _records(full, removed))
    assert control["esvm @ 0.1"]["mean"] == 0.0
    assert control["esvm - random @ 0.1"]["mean"] == 0.0 and "random - random @ 0.1" not in control
    # a shift shared by every ranking (a class-size effect of single-target models) moves the
    # raw effects but not the comparison with the reference
    shifted = {k: {tk: v - 0.3 for tk, v in cell.items()} for k, cell in removed.items()}
    moved = compare_designs(_records(full, removed), _records(full, shifted))
    assert moved["esvm @ 0.1"]["mean"] == pytest.approx(0.3)
    assert moved["esvm - random @ 0.1"]["mean"] == pytest.approx(0.0, abs=1e-12)


def test_settings_are_validated():
    with pytest.raises(InvalidInputError, match="fractions"):
        MarginSettings(data="d", recipe="tiny", fractions=(0.1, 1.5))
    with pytest.raises(InvalidInputError, match="repeat"):
        MarginSettings(data="d", recipe="tiny", fractions=(0.1, 0.1))
    with pytest.raises(InvalidInputError, match="models"):
        MarginSettings(data="d", recipe="tiny", models=0)
    assert MarginSettings(data="d", recipe="tiny", fractions=(0.2, 0.1)).fractions == (0.2, 0.1)


def _pixel_ranking(train, test, pool, targets, k):
    x = train.images[pool].reshape(len(pool), -1).astype(np.float32)
    t = test.images[targets].reshape(len(targets), -1).astype(np.float32)
    att = Attributor("cosine").fit(x - x.mean(1, keepdims=True), train.labels[pool])
    idx, val = att.topk(t - t.mean(1, keepdims=True), test.labels[targets], k)
    return Ranking(targets=targets, indices=pool[idx], scores=val)


@pytest.mark.slow
def test_a_real_tiny_run_records_paired_models_and_resumes(
    data_root, cifar_train, cifar_test, tmp_path, monkeypatch
):
    data = str(data_root / "cifar10")
    pool = recipe_pool("tiny", cifar_train)
    targets = np.array([0, 1, 2])  # three classes: one multiplexed group
    assert len(set(cifar_test.labels[targets])) == 3
    rankings = {
        "pixels": _pixel_ranking(cifar_train, cifar_test, pool, targets, 40),
        "random": random_ranking(
            cifar_train.labels, cifar_test.labels, targets, 40, candidates=pool, seed=0
        ),
    }
    settings = MarginSettings(data=data, recipe="tiny", fractions=(0.1, 0.3), threads=1)
    out = tmp_path / "margins.jsonl"
    records = run_margins(settings, rankings, targets, out)
    # 1 baseline + 2 fractions x 2 rankings x 1 group
    assert len(records) == 5 and len(read_jsonl(out)) == 5
    base = next(r for r in records if r["kind"] == "baseline")
    assert base["n_removed"] == 0 and base["n_train"] == len(pool)
    for rec in records:
        if rec["kind"] != "removal":
            continue
        m = rec["m"]
        assert m == {0.1: 10, 0.3: 30}[rec["fraction"]]
        # every class of the group loses exactly m images, whatever the ranking
        assert rec["n_removed"] == 3 * m and rec["n_train"] == len(pool) - 3 * m
        assert sorted(rec["targets"]) == [0, 1, 2]
    eff = effects(records)
    rec = next(r for r in records if r["kind"] == "removal" and r["ranking"] == "pixels")
    t = rec["targets"][0]
    expected = rec["margins"][0] - base["margins"][base["targets"].index(t)]
    assert math.isclose(eff[("pixels", rec["fraction"])][t], expected, abs_tol=1e-9)

    # resume: nothing is trained again
    def no_training(job):
        raise AssertionError("a finished model was trained again")

    monkeypatch.setattr("simattr.training.jobs.run_job", no_training)
    again = run_margins(settings, rankings, targets, out)
    assert [r["key"] for r in again] == [r["key"] for r in records]
    assert len(read_jsonl(out)) == 5
    with pytest.raises(InvalidInputError, match="other settings"):
        run_margins(
            MarginSettings(data=data, recipe="tiny", fractions=(0.2,), threads=1),
            rankings,
            targets,
            out,
        )
    # the command line resumes the same file (nothing trained) and reports it
    for name, ranking in rankings.items():
        save_ranking(tmp_path / f"{name}.npz", ranking)
    base = ["--data", data, "--out", str(out), "--recipe", "tiny", "--threads", "1"]
    cli = CliRunner().invoke(
        app,
        [
            "margins",
            *base,
            "--ranking",
            f"pixels={tmp_path / 'pixels.npz'}",
            "--ranking",
            f"random={tmp_path / 'random.npz'}",
            "--fractions",
            "0.1,0.3",
            "--targets",
            "0,1,2",
        ],
    )
    assert cli.exit_code == 0, cli.output
    assert "5 model(s) for 3 target(s)" in cli.output
    report = CliRunner().invoke(
        app,
        [
            "margins-report",
            str(out),
            "--out",
            str(tmp_path / "rep"),
            "--pair",
            "pixels:random",
            "--reference",
            "random",
        ],
    )
    assert report.exit_code == 0, report.output
    table = (tmp_path / "rep" / "margins_table.md").read_text()
    assert "| pixels | 3 |" in table and "pixels - random" in table
    assert (tmp_path / "rep" / "margins_curve.png").read_bytes()[:4] == b"\x89PNG"
    refused = CliRunner().invoke(
        app, ["margins-report", str(out), "--out", str(tmp_path / "r2"), "--reference", "esvm"]
    )
    assert refused.exit_code == 1 and "reference ranking 'esvm'" in refused.output
    assert not (tmp_path / "r2").exists()

    bad = Ranking(targets=targets, indices=np.full((3, 40), pool[0]), scores=np.zeros((3, 40)))
    with pytest.raises(InvalidInputError, match="repeats a training row"):
        run_margins(settings, {"bad": bad}, targets, tmp_path / "other.jsonl")


def test_margin_report_writes_curve_table_and_json_without_data(tmp_path):
    from simattr._io import append_jsonl, read_json
    from simattr.report.margins import margin_report

    full = {0: {t: 1.0 for t in range(8)}}
    removed = {
        (name, f): {(t, 0): 1.0 + shift * (1 + f) + 0.05 * ((t * 7) % 3) for t in range(8)}
        for name, shift in (("esvm", -1.5), ("random", -0.2))
        for f in (0.1, 0.2)
    }
    path = tmp_path / "m.jsonl"
    for rec in _records(full, removed):
        append_jsonl(path, rec)
    png, md, js = margin_report([path], tmp_path / "rep", pairs=[("esvm", "random")])
    assert png.read_bytes()[:4] == b"\x89PNG"
    table = md.read_text()
    assert "minus random" in table and "| esvm | 8 |" in table and "esvm - random" in table
    summary = read_json(js)["summary"]
    cell = summary["fractions"]["0.1"]["rankings"]["esvm"]
    assert cell["vs_reference"]["a_lower"] == 8 and cell["effect"]["mean"] < -1.5
    with pytest.raises(InvalidInputError, match="no ranking 'cosine'"):
        margin_report([path], tmp_path / "r2", pairs=[("esvm", "cosine")])


def test_balanced_bench_targets_are_the_first_half_of_the_margin_draw():
    from simattr.bench import PROFILES, choose_bench_targets
    from simattr.evaluation.ensemble import Ensemble

    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(10), 60)
    probs = rng.dirichlet(np.ones(10), size=(2, 600)).astype(np.float32)
    probs[:, np.arange(600), labels] += 0.5 * (np.arange(600) % 4 != 0)  # 3/4 correct
    ensemble = Ensemble(probs=probs, labels=labels, seeds=(0, 1))
    eligible = np.flatnonzero(ensemble.correct)
    margins_draw = choose_balanced_targets(eligible, labels, 100, seed=0)
    support_draw = choose_bench_targets(ensemble, 50, 0, balanced=True)
    assert np.isin(support_draw, margins_draw).all()
    assert np.bincount(labels[support_draw]).tolist() == [5] * 10
    prof = PROFILES["cpu-k250"]
    assert prof.balanced_targets and prof.k * 4 == 1000 and prof.k / 2**prof.budget <= 20


def test_balanced_targets_draw_exactly_n_and_use_every_eligible_row_when_asked():
    """A draw stops at n even mid-round, and n = all eligible rows returns each of them once,
    however unevenly they fall over classes (no row skipped, no class round skipped)."""
    labels = np.repeat(np.arange(4), 25)
    eligible = np.arange(100)[np.arange(100) % 3 != 0]
    for n in (1, 3, 6, 7):
        a = choose_balanced_targets(eligible, labels, n, seed=2)
        counts = np.bincount(labels[a], minlength=4)
        assert len(a) == n and len(np.unique(a)) == n
        assert counts.max() - counts.min() <= 1  # as even as n allows
    one_each = np.array([3, 30, 60, 90])  # one eligible row per class
    assert choose_balanced_targets(one_each, labels, 4).tolist() == one_each.tolist()
    uneven = np.array([0, 1, 2, 30, 31, 60])  # 3, 2 and 1 rows in classes 0, 1, 2
    assert choose_balanced_targets(uneven, labels, 6).tolist() == uneven.tolist()
    # 5 of 6: the first three rounds take one row per class while it lasts, so only one row of
    # class 0 (which alone reaches the third round) is left out
    five = choose_balanced_targets(uneven, labels, 5, seed=4)
    assert np.bincount(labels[five], minlength=3).tolist() == [2, 2, 1]


def test_balanced_targets_are_integer_rows_even_when_none_exist_or_none_are_asked():
    """The draw returns row indices: an empty eligible list gets the clear refusal (not a numpy
    indexing error), and a draw of 0 targets is still an integer array one can index with."""
    labels = np.repeat(np.arange(3), 5)
    with pytest.raises(InvalidInputError, match="only 0 eligible targets"):
        choose_balanced_targets([], labels, 2)
    none = choose_balanced_targets([1, 6], labels, 0)
    assert none.dtype == np.int64 and labels[none].size == 0
    some = choose_balanced_targets([1, 6, 11], labels, 2)
    assert some.dtype == np.int64


def test_design_control_pairs_only_what_both_designs_measured():
    """The single-target control runs on a sample of targets and rankings and may stop half way:
    readings exist only where both designs (and, for the relative one, the reference) have
    effects, computed on the targets all four cells share; nothing raises on the rest."""
    full = {0: {t: 0.0 for t in range(6)}}  # zero baseline: effects are the removal margins
    multi = {
        ("esvm", 0.1): {(t, 0): -1.0 - t for t in range(6)},
        ("random", 0.1): {(t, 0): -0.1 * t for t in range(6)},
        ("trak", 0.1): {(t, 0): -2.0 for t in range(6)},  # sorts after the reference
        ("l2", 0.1): {(t, 0): -0.5 for t in range(6)},  # not in the single-target run
    }
    single = {
        ("esvm", 0.1): {(t, 0): -0.5 * t for t in (0, 1, 3)},  # target 2's model is missing
        ("random", 0.1): {(t, 0): 0.2 * t for t in (0, 1, 2, 3)},
        ("trak", 0.1): {(t, 0): -1.0 - t for t in (0, 1, 2, 3)},
    }
    out = compare_designs(_records(full, multi), _records(full, single))
    assert sorted(out) == [
        "esvm - random @ 0.1",
        "esvm @ 0.1",
        "random @ 0.1",
        "trak - random @ 0.1",
        "trak @ 0.1",
    ]
    # esvm relative to random on targets {0, 1, 3}: multiplexed (-1 - t) - (-0.1 t),
    # single (-0.5 t) - (0.2 t); their difference is -1 - 0.2 t
    d = np.array([-1.0 - 0.2 * t for t in (0, 1, 3)])
    rel = out["esvm - random @ 0.1"]
    assert rel["n"] == 3 and math.isclose(rel["mean"], d.mean())
    assert math.isclose(rel["t_p"], stats.ttest_1samp(d, 0).pvalue)
    # trak: (-2 - (-0.1 t)) - ((-1 - t) - 0.2 t) = -1 + 1.3 t on targets 0..3
    d = np.array([-1.0 + 1.3 * t for t in range(4)])
    assert out["trak - random @ 0.1"]["n"] == 4
    assert math.isclose(out["trak - random @ 0.1"]["mean"], d.mean())
    assert out["esvm @ 0.1"]["n"] == 3 and out["random @ 0.1"]["n"] == 4
    # the reference missing from one design: raw shifts only, no relative reading
    no_ref = {k: v for k, v in single.items() if k[0] != "random"}
    out = compare_designs(_records(full, multi), _records(full, no_ref))
    assert sorted(out) == ["esvm @ 0.1", "trak @ 0.1"]
    out = compare_designs(_records(full, no_ref), _records(full, multi))
    assert sorted(out) == ["esvm @ 0.1", "trak @ 0.1"]


def test_removal_sizes_ignore_classes_absent_from_the_pool():
    """The smallest class is the smallest one the pool has: a label never used (class 0 here)
    is not a class of size 0."""
    labels = np.repeat([1, 2, 4], [50, 80, 60])
    assert removal_sizes([0.1, 0.5], labels) == {0.1: 5, 0.5: 25}


def test_margin_settings_summary_seeds_and_refusals():
    """The summary is what a resumed results file must match; seeds run seed .. seed+models-1;
    fractions outside (0, 1), none at all, or a non-integer model count are refused."""
    s = MarginSettings(data="d", recipe="tiny", fractions=(0.2, 0.05), models=3, seed=4)
    assert s.summary() == {
        "recipe": "tiny",
        "fractions": [0.2, 0.05],
        "models": 3,
        "seed": 4,
        "multiplex": True,
    }
    assert s.seeds == (4, 5, 6)
    assert MarginSettings(data="d", recipe="tiny", models=np.int64(2)).seeds == (0, 1)
    assert MarginSettings(data="d", recipe="tiny", multiplex=False).summary()["multiplex"] is False
    for fractions in ((), (0.0,), (1.0,), (0.1, -0.2)):
        with pytest.raises(InvalidInputError, match="fractions must lie in"):
            MarginSettings(data="d", recipe="tiny", fractions=fractions)
    with pytest.raises(InvalidInputError, match="models must"):
        MarginSettings(data="d", recipe="tiny", models=1.5)


def test_margin_ranking_check_names_each_problem():
    """A ranking must rank every target, keep at least m images, have no -1 and no repeat in
    its top m, and rank only rows of the recipe's pool (row 0 included)."""
    from simattr.evaluation.margins import _check_ranking

    pool = np.array([0, 2, 4, 6, 8])
    targets = np.array([3, 5])
    ok = Ranking([3, 5, 9], [[0, 2, 4], [8, 6, -1], [2, 4, 6]], np.ones((3, 3)))
    _check_ranking("ok", ok, targets, pool, 2)
    with pytest.raises(InvalidInputError, match="'ok' does not rank target 7"):
        _check_ranking("ok", ok, np.array([3, 7]), pool, 2)
    with pytest.raises(InvalidInputError, match="top 3 images per target but the largest"):
        _check_ranking("ok", ok, targets, pool, 4)
    with pytest.raises(InvalidInputError, match=r"unranked \(-1\) entries within its top 3"):
        _check_ranking("ok", ok, targets, pool, 3)
    outside = Ranking([3, 5], [[0, 2], [2, 5]], np.ones((2, 2)))
    with pytest.raises(InvalidInputError, match="ranks training row 5, outside the 5-image pool"):
        _check_ranking("out", outside, targets, pool, 2)
    _check_ranking("out", outside, targets, pool, 1)
    repeat = Ranking([3, 5], [[0, 2], [4, 4]], np.ones((2, 2)))
    with pytest.raises(InvalidInputError, match=r"repeats a training row .* top 2 of target 5"):
        _check_ranking("rep", repeat, targets, pool, 2)


def test_mean_ci_matches_scipy_and_is_undefined_below_two_values():
    """Mean, standard error and t-interval at any level; with 0 or 1 value only the mean
    (if any) is defined."""
    from simattr.evaluation.margins import mean_ci

    x = [0.5, -1.0, 2.0, 0.25]
    out = mean_ci(x, level=0.9)
    low, high = stats.t.interval(0.9, 3, loc=np.mean(x), scale=stats.sem(x))
    assert out["n"] == 4 and math.isclose(out["mean"], 0.4375)
    assert math.isclose(out["se"], stats.sem(x))
    assert math.isclose(out["low"], low) and math.isclose(out["high"], high)
    two = mean_ci([1.0, 2.0])  # the smallest sample with an interval: se 0.5, 1 dof
    assert two["n"] == 2 and two["se"] == pytest.approx(0.5)
    assert two["high"] == pytest.approx(1.5 + stats.t.ppf(0.975, 1) * 0.5)
    one = mean_ci([3.0])
    assert one["n"] == 1 and one["mean"] == 3.0
    assert all(math.isnan(one[k]) for k in ("se", "low", "high"))
    none = mean_ci([])
    assert none["n"] == 0 and all(math.isnan(none[k]) for k in ("mean", "se", "low", "high"))


def test_paired_counts_each_side_and_has_no_test_for_degenerate_differences():
    """a_lower counts targets where a's effect is lower, b_lower where b's is; ties count for
    neither. Differences all equal have no t-test, all zero no Wilcoxon either."""
    out = paired({1: -1.0, 2: 0.5, 3: 2.0, 4: 1.0}, {1: 0.0, 2: 0.5, 3: 1.0, 4: 3.0})
    assert (out["n"], out["a_lower"], out["b_lower"]) == (4, 2, 1)
    same = paired({1: 1.0, 2: 2.0, 3: 3.0}, {1: 0.5, 2: 1.5, 3: 2.5})  # every difference 0.5
    assert math.isnan(same["t_p"]) and not math.isnan(same["wilcoxon_p"])
    assert same["b_lower"] == 3 and same["a_lower"] == 0
    zero = paired({1: 1.0, 2: 2.0}, {1: 1.0, 2: 2.0})
    assert math.isnan(zero["t_p"]) and math.isnan(zero["wilcoxon_p"])
    one = paired({1: 1.0}, {1: 0.0, 2: 5.0})
    assert one["n"] == 1 and math.isnan(one["t_p"]) and math.isnan(one["wilcoxon_p"])
    assert math.isnan(paired({}, {})["mean"])


def test_paired_tests_two_targets_and_reads_rounding_noise_as_no_variation():
    """Two targets are enough for both tests. Differences that agree to about 9 significant
    digits (relative to max(1, |d|)) are equal for the t-test: its statistic would be noise."""
    out = paired({1: 0.25, 2: 1.5}, {1: 0.0, 2: 1.0})
    d = np.array([0.25, 0.5])
    assert math.isclose(out["t_p"], stats.ttest_1samp(d, 0).pvalue)
    assert math.isclose(out["wilcoxon_p"], stats.wilcoxon(d).pvalue)
    assert not math.isnan(out["low"])
    zeros = {1: 0.0, 2: 0.0, 3: 0.0}
    big = paired({1: 3e6, 2: 3e6 + 1e-6, 3: 3e6 - 1e-6}, zeros)  # spread 2e-6 on 3e6
    assert math.isnan(big["t_p"]) and not math.isnan(big["wilcoxon_p"])
    # near 0 the tolerance is absolute, 1e-9 inclusive
    assert math.isnan(paired({1: 0.0, 2: 1e-9}, {1: 0.0, 2: 0.0})["t_p"])
    assert not math.isnan(paired({1: 0.0, 2: 1.5e-9}, {1: 0.0, 2: 0.0})["t_p"])


def test_summary_defaults_to_random_and_skips_what_was_not_measured():
    """The reference defaults to the random ranking; a ranking measured at only some fractions
    appears only there, and a pair naming an unmeasured ranking is left out (not an error)."""
    full = {0: {t: 1.0 for t in range(4)}}
    removed = {
        ("esvm", 0.1): {(t, 0): -1.0 - t for t in range(4)},  # only at 0.1
        ("l2", 0.1): {(t, 0): -0.5 * t for t in range(4)},
        ("l2", 0.2): {(t, 0): -0.7 * t for t in range(4)},
        ("random", 0.1): {(t, 0): 0.9 for t in range(4)},
        ("random", 0.2): {(t, 0): 0.8 for t in range(4)},
    }
    table = summarise(_records(full, removed), pairs=[("l2", "esvm"), ("l2", "trak")])
    assert table["reference"] == "random"
    at1, at2 = table["fractions"]["0.1"], table["fractions"]["0.2"]
    assert sorted(at1["rankings"]) == ["esvm", "l2", "random"]
    assert sorted(at2["rankings"]) == ["l2", "random"]
    # l2 vs random at 0.2: effects -1 - 0.7 t vs -0.2, differences -0.8 - 0.7 t, mean -1.85
    assert at2["rankings"]["l2"]["vs_reference"]["a_lower"] == 4
    assert math.isclose(at2["rankings"]["l2"]["vs_reference"]["mean"], -1.85)
    assert list(at1["pairs"]) == ["l2 - esvm"] and at2["pairs"] == {}
    no_ref = summarise(_records(full, removed), reference="trak")
    assert all("vs_reference" not in row for row in no_ref["fractions"]["0.1"]["rankings"].values())


def test_effects_refuse_records_whose_targets_and_margins_differ_in_length():
    """A record pairs each target with its margin; a damaged one with fewer margins than
    targets must not be silently truncated into effects for the wrong targets."""
    good = _records({0: {1: 1.0, 2: 2.0}}, {("esvm", 0.1): {(1, 0): 0.5}})
    short_base = [dict(good[0], margins=[1.0]), *good[1:]]
    with pytest.raises(ValueError):
        effects(short_base)
    short_removal = [*good[:1], dict(good[1], targets=[1, 2])]
    with pytest.raises(ValueError):
        effects(short_removal)


def test_margin_jobs_remove_each_targets_own_top_m_with_paired_seeds(
    data_root, cifar_train, cifar_test, tmp_path, monkeypatch, capsys
):
    """What run_margins asks to train, checked without training (models faked): baselines on
    the full pool for every seed; per group, ranking, m and seed one model without the union of
    its targets' top-m rows; records carry each target's margin; log lines name each model."""
    from scipy.special import logsumexp

    from simattr.evaluation import margins as margins_module
    from simattr.training.jobs import JobResult

    planned: list[dict] = []

    def fake_run_jobs(executor, jobs, on_result):
        planned.append(dict(jobs))
        for key, job in jobs.items():
            logits = np.zeros((len(job.predict), 10), dtype=np.float32)
            logits[:, 1] = len(job.remove) / 10 + job.seed  # margins that tell models apart
            on_result(key, JobResult(logits=logits, seconds=2.34567, n_train=50_000))

    monkeypatch.setattr(margins_module, "run_jobs", fake_run_jobs)
    monkeypatch.setenv("SIMATTR_PROGRESS_INTERVAL", "0")  # a progress line per model, if shown
    data = str(data_root / "cifar10")
    pool = recipe_pool("tiny", cifar_train)
    labels = cifar_test.labels
    targets = np.array([0, 1, 3, 5])  # labels 3, 8, 0, 0: two groups when multiplexed
    assert labels[targets].tolist() == [3, 8, 0, 0]
    rng = np.random.default_rng(0)
    rows = np.stack([rng.choice(pool, 12, replace=False) for _ in targets])
    rankings = {"r": Ranking(targets, rows, np.ones((4, 12)))}
    settings = MarginSettings(data=data, recipe="tiny", fractions=(0.02,), models=2, seed=5)
    m = removal_sizes([0.02], cifar_train.labels[pool])[0.02]
    lines: list[str] = []
    records = run_margins(settings, rankings, targets, tmp_path / "m.jsonl", log=lines.append)
    (jobs,) = planned
    assert capsys.readouterr().err == ""  # quiet unless progress is asked for
    base = [r for r in records if r["kind"] == "baseline"]
    assert [r["seed"] for r in base] == [5, 6]
    assert all(r["targets"] == [0, 1, 3, 5] and r["n_removed"] == 0 for r in base)
    assert all((r["ranking"], r["fraction"], r["m"]) == (None, 0.0, 0) for r in base)
    assert all(r["seconds"] == 2.346 and r["n_train"] == 50_000 for r in records)
    assert all(round(v, 6) == v for r in records for v in r["margins"])  # 6 decimals kept
    removal = [r for r in records if r["kind"] == "removal"]
    assert len(removal) == 2 * 2  # 2 groups x 2 seeds
    for rec in removal:
        group = rec["targets"]
        assert len(set(labels[group])) == len(group)  # at most one target per class
        want = np.unique(np.concatenate([rows[targets.tolist().index(t), :m] for t in group]))
        job = next(j for j in jobs.values() if j.seed == rec["seed"] and list(j.predict) == group)
        assert job.remove == tuple(want.tolist()) and rec["n_removed"] == len(want)
        assert rec["m"] == m and rec["labels"] == labels[group].tolist()
        z = np.zeros(10)
        z[1] = len(want) / 10 + rec["seed"]  # what the fake model answers (no label is 1)
        for t, margin in zip(group, rec["margins"], strict=True):
            expected = z[labels[t]] - logsumexp(np.delete(z, labels[t]))
            assert margin == pytest.approx(expected, abs=1e-5)
    assert sorted(sorted(r["targets"]) for r in removal) == [[0, 1, 3], [0, 1, 3], [5], [5]]
    assert len(lines) == 6 and lines[0].startswith("margin model 1/6: full pool, seed 5")
    assert any(f"r m={m} group 1, seed 6" in line for line in lines)
    # one target per model: every target its own group, with the same seeds
    single = MarginSettings(data=data, recipe="tiny", fractions=(0.02,), models=2, seed=5,
                            multiplex=False)  # fmt: skip
    records = run_margins(single, rankings, targets, tmp_path / "s.jsonl")
    assert sorted(r["targets"] for r in records if r["kind"] == "removal") == sorted(
        [[0], [1], [3], [5]] * 2
    )
    # progress when asked: one line per model trained, counted once each
    run_margins(settings, rankings, [0], tmp_path / "p.jsonl", progress=True)
    err = capsys.readouterr().err
    assert set(re.findall(r"margin models: (\d+)/4", err)) == {"1", "2", "3", "4"}
    # refusals name what is wrong
    for bad, match in (
        ([], "at least one target"),
        ([1, 1], "each test row once"),
        ([-1, 2], "rows of the 10000-image test split"),
        ([2, 10_000], "rows of the 10000-image test split"),
    ):
        with pytest.raises(InvalidInputError, match=match):
            run_margins(settings, rankings, bad, tmp_path / "x.jsonl")
    with pytest.raises(InvalidInputError, match="at least one ranking"):
        run_margins(settings, {}, [0], tmp_path / "x.jsonl")
