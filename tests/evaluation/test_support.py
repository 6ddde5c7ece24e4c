"""The support search's logic: bisection, majority early stop, records, journal, report.

These tests drive the search generator with chosen model outcomes (no training), so that the
exact sequence of tested m and of trained models can be checked; the end-to-end tests with real
training are in ``tests/e2e/test_support_e2e.py``.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from simattr._io import append_jsonl, read_jsonl
from simattr.errors import InvalidInputError
from simattr.evaluation.support import SupportSettings, search_support
from simattr.ranking import Ranking
from simattr.report.support import (
    head_to_head,
    head_to_head_table,
    markdown_table,
    summarize,
    support_report,
)
from simattr.training.jobs import JobResult, TrainJob

LABEL, FLIP = 3, 5


def _drive(settings: SupportSettings, outcome, seconds=1.0) -> tuple[dict, list[TrainJob]]:
    """Run a search where ``outcome(m, seed)`` is the class the model predicts."""
    order = np.arange(10_000, 10_000 + settings.k)
    search = search_support(settings, target=7, label=LABEL, flip=FLIP, order=order)
    jobs: list[TrainJob] = []
    value = None
    while True:
        try:
            batch = search.send(value)
        except StopIteration as stop:
            return stop.value, jobs
        jobs.extend(batch)
        value = []
        for job in batch:
            m = len(job.remove) or len(job.relabel)
            logits = np.zeros((1, 10), dtype=np.float32)
            logits[0, outcome(m, job.seed)] = 5.0
            value.append(JobResult(logits=logits, seconds=seconds, n_train=100))


def _settings(**kw) -> SupportSettings:
    base = {"data": "unused", "recipe": "unused", "models": 3, "budget": 7, "k": 128}
    base.update(kw)
    return SupportSettings(**base)


def test_bisection_finds_the_threshold_of_a_monotone_oracle():
    result, jobs = _drive(_settings(), lambda m, seed: FLIP if m >= 37 else LABEL)
    assert result["support"] == 37
    tested = [s["m"] for s in result["steps"]]
    assert tested[0] == 128  # m = k first
    assert tested[1:] == [64, 32, 48, 40, 36, 38, 37]
    # unanimous models settle a majority of 3 after 2 models at every step
    assert [s["models"] for s in result["steps"]] == [2] * 8
    assert result["models_trained"] == len(jobs) == 16
    assert result["seconds"] == pytest.approx(16.0)


def test_budget_limits_the_bisection_and_keeps_the_smallest_flipped_m():
    result, _ = _drive(_settings(budget=2), lambda m, seed: FLIP if m >= 37 else LABEL)
    assert [s["m"] for s in result["steps"]] == [128, 64, 32]
    assert result["support"] == 64


def test_not_flipped_at_k_is_not_found_and_stops():
    result, jobs = _drive(_settings(), lambda m, seed: LABEL)
    assert result["support"] is None and result["found"] is False
    assert len(result["steps"]) == 1 and len(jobs) == 2


def test_majority_early_stop_trains_a_third_model_only_on_disagreement():
    # seed 0 flips, seed 1 does not: the third model decides
    def outcome(m, seed):
        return {0: FLIP, 1: LABEL, 2: FLIP}[seed] if m >= 10 else LABEL

    result, _ = _drive(_settings(budget=1), outcome)
    first = result["steps"][0]
    assert first["models"] == 3 and first["seeds"] == [0, 1, 2]
    assert first["misclassified_by"] == 2 and first["flip_class_votes"] == 2
    assert first["fraction_flipped"] == pytest.approx(2 / 3)
    assert first["flipped"] is True


def test_flipped_means_at_least_half_of_the_models_misclassify():
    # M = 4: two misclassifications out of four is "at least half"
    settings = _settings(models=4, budget=0)
    assert settings.majority == 2
    result, _ = _drive(settings, lambda m, seed: 0 if seed in (1, 3) else LABEL)
    step = result["steps"][0]
    assert step["flipped"] is True and step["misclassified_by"] == 2
    assert step["flip_class_votes"] == 0  # misclassified, but not as the flip class


def test_mislabel_mode_relabels_the_top_m_to_the_flip_class():
    _, jobs = _drive(_settings(mode="mislabel", budget=0), lambda m, s: LABEL)
    assert all(j.relabel_to == FLIP and not j.remove and len(j.relabel) == 128 for j in jobs)
    assert jobs[0].relabel == tuple(range(10_000, 10_128))


def test_settings_are_validated():
    with pytest.raises(InvalidInputError, match="mode"):
        _settings(mode="drop")
    with pytest.raises(InvalidInputError, match="models"):
        _settings(models=0)
    with pytest.raises(InvalidInputError, match="budget"):
        _settings(budget=-1)


def test_job_key_depends_on_the_training_set_not_on_order():
    a = TrainJob(data="d", recipe="tiny", seed=1, remove=(5, 3), predict=(2,))
    b = TrainJob(data="d", recipe="tiny", seed=1, remove=(3, 5), predict=(2,), threads=1)
    c = TrainJob(data="d", recipe="tiny", seed=2, remove=(3, 5), predict=(2,))
    d = TrainJob(data="d", recipe="tiny", seed=1, relabel=(3, 5), relabel_to=1, predict=(2,))
    assert a.key() == b.key()
    assert len({a.key(), c.key(), d.key()}) == 3


def test_jsonl_reader_survives_a_torn_last_line(tmp_path):
    path = tmp_path / "r.jsonl"
    append_jsonl(path, {"a": 1})
    with open(path, "ab") as fh:
        fh.write(b'{"a": 2, "b"')  # a writer killed mid-line
    assert read_jsonl(path) == [{"a": 1}]
    append_jsonl(path, {"a": 3})  # the next append starts on a fresh line
    assert read_jsonl(path) == [{"a": 1}, {"a": 3}]


def _record(target, ranking, support, models=4, status="searched", k=128):
    return {
        "target": target,
        "ranking": ranking,
        "mode": "remove",
        "support": support,
        "status": status,
        "models_trained": models,
        "seconds": 3600.0,
        "settings": {"k": k},
    }


def test_report_curve_table_and_png(tmp_path):
    path = tmp_path / "results.jsonl"
    for rec in [
        _record(1, "esvm", 10),
        _record(2, "esvm", 40),
        _record(3, "esvm", None),
        _record(1, "random", None),
        _record(2, "random", 100),
        _record(3, "random", None),
        _record(4, "random", None, models=0, status="misclassified"),
    ]:
        append_jsonl(path, rec)
    summaries = {s.ranking: s for s in summarize(read_jsonl(path))}
    esvm, rnd = summaries["esvm"], summaries["random"]
    assert (esvm.targets, esvm.found, esvm.median) == (3, 2, 40.0)
    assert rnd.targets == 3 and rnd.found == 1 and np.isinf(rnd.median)
    assert rnd.skipped == 1
    grid = np.array([0, 10, 39, 40, 128])
    np.testing.assert_allclose(esvm.fraction_at_most(grid), [0, 1 / 3, 1 / 3, 2 / 3, 2 / 3])
    table = markdown_table(list(summaries.values()))
    assert "| esvm | remove | 3 | 2 | 40 | 12 | 3.00 |" in table
    assert "| random | remove | 3 | 1 | > 128 |" in table
    png, md = support_report([path], tmp_path / "report")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert md.read_text() == table
    _, md = support_report([path], tmp_path / "paired", reference="esvm")
    assert md.read_text().startswith(table)
    assert "| random | remove | 3 | 0 | 1 | 2 | 0.5 |" in md.read_text()
    with pytest.raises(InvalidInputError, match="'trak' is not in the results"):
        support_report([path], tmp_path / "paired", reference="trak")


def test_head_to_head_pairs_targets_and_counts_misses_as_k_plus_one():
    records = [
        _record(1, "esvm", 10),
        _record(2, "esvm", 40),
        _record(3, "esvm", None),
        _record(5, "esvm", 7),  # searched by esvm only: not shared
        _record(1, "trak", 5),
        _record(2, "trak", 40),
        _record(3, "trak", 128),  # found at k beats a miss (k + 1)
        _record(4, "trak", 1),  # searched by trak only
        _record(4, "random", 1, models=0, status="misclassified"),
        _record(1, "random", None),
        _record(2, "random", 100),
        _record(3, "random", None),
    ]
    rows = {r.ranking: r for r in head_to_head(summarize(records), "esvm")}
    assert set(rows) == {"random", "trak"}
    trak = rows["trak"]
    assert (trak.targets, trak.lower, trak.ties, trak.higher) == (3, 2, 1, 0)
    assert trak.p_value == pytest.approx(0.5)  # 2 of 2 decided targets: 2 * 0.5**2
    rnd = rows["random"]
    assert (rnd.targets, rnd.lower, rnd.ties, rnd.higher) == (3, 0, 1, 2)
    table = head_to_head_table(list(rows.values()))
    assert "| trak | remove | 3 | 2 | 1 | 0 | 0.5 |" in table
    assert head_to_head(summarize(records), "absent") == []
    assert head_to_head_table([]) == ""


def test_report_refuses_missing_and_foreign_files(tmp_path):
    from simattr.errors import MissingFileError

    with pytest.raises(MissingFileError):
        support_report([tmp_path / "nope.jsonl"], tmp_path / "out")
    bad = tmp_path / "bad.jsonl"
    append_jsonl(bad, {"hello": 1})
    with pytest.raises(InvalidInputError, match="not a support record"):
        support_report([bad], tmp_path / "out")
    assert not (tmp_path / "out").exists()


# -- pure helpers: settings, records, journal, targets, resume checks (no training) ------------


def test_settings_summary_majority_and_k_are_checked():
    """The summary is what a resumed results file must match (recipe by name, M, B, k, seed,
    mode); majority is half the models rounded up; k below 1 is refused naming k."""
    s = SupportSettings(data="d", recipe="tiny", mode="mislabel", models=5, budget=3, k=64, seed=2)
    assert s.summary() == {
        "recipe": "tiny",
        "mode": "mislabel",
        "models": 5,
        "budget": 3,
        "k": 64,
        "seed": 2,
    }
    assert [_settings(models=m).majority for m in (1, 2, 3, 5, 6)] == [1, 1, 2, 3, 3]
    assert _settings(k=1, budget=0).k == 1  # the smallest search: m = 1 only
    with pytest.raises(InvalidInputError, match="k must"):
        _settings(k=0)
    with pytest.raises(InvalidInputError, match="models must"):
        _settings(models=2.5)


def test_describe_record_names_target_ranking_mode_and_support():
    """The log line of a finished search says what was searched and what came of it."""
    from simattr.evaluation.support import describe_record

    rec = {"target": 17, "ranking": "esvm", "mode": "remove", "support": 40, "models_trained": 12}
    assert describe_record({**rec, "wall_seconds": 61.4}) == (
        "target 17 / esvm / remove: support 40 (12 models, 61 s)"
    )
    assert describe_record({**rec, "support": None}) == (
        "target 17 / esvm / remove: not found (12 models, 0 s)"
    )


def test_journal_round_trips_models_and_refuses_another_dataset(tmp_path):
    """Each trained model's logits are journaled next to the results (RESULTS.models.jsonl)
    and read back exactly on resume; a journal of another dataset's models is refused."""
    from simattr.evaluation.support import _Journal, journal_path

    assert journal_path(tmp_path / "run.v2.jsonl") == tmp_path / "run.v2.models.jsonl"
    path = journal_path(tmp_path / "r.jsonl")
    job = TrainJob(data="d", recipe="tiny", seed=3, remove=(1, 2, 5), predict=(7,))
    logits = np.array([[0.5, -1.25, 3.0]], dtype=np.float32)
    journal = _Journal(path, "fp-1")
    journal.add(job.key(), job, JobResult(logits=logits, seconds=2.12345, n_train=97))
    (line,) = read_jsonl(path)
    assert line["seed"] == 3 and line["predict"] == [7] and line["n_removed"] == 3
    assert line["n_relabelled"] == 0 and line["data_fingerprint"] == "fp-1"
    again = _Journal(path, "fp-1").results[job.key()]
    np.testing.assert_array_equal(again.logits, logits)
    assert again.logits.dtype == np.float32
    assert (again.seconds, again.n_train) == (2.123, 97)  # seconds kept to the millisecond
    assert job.key() in _Journal(path).results  # no fingerprint to compare: read as is
    with pytest.raises(InvalidInputError, match="another dataset"):
        _Journal(path, "fp-2")


def _ensemble(correct):
    """A hand-made ensemble over 8 test images: ``correct[t]`` decides its prediction."""
    from simattr.evaluation.ensemble import Ensemble

    labels = np.arange(8) % 3
    probs = np.full((1, 8, 3), 0.1, dtype=np.float32)
    for t, ok in enumerate(correct):
        probs[0, t, labels[t] if ok else (labels[t] + 1) % 3] = 0.8
    return Ensemble(probs=probs, labels=labels, seeds=(0,))


def test_targets_are_those_every_ranking_ranks_and_draws_take_correct_ones():
    """Common targets keep the first ranking's order; given targets must be ranked by all;
    a draw takes only targets the ensemble gets right, seeded, and refuses to draw too many."""
    from simattr.evaluation.support import choose_targets, common_targets

    def ranking(targets):
        return Ranking(targets, np.zeros((len(targets), 2), int), np.zeros((len(targets), 2)))

    rankings = {"a": ranking([6, 1, 4, 0, 7]), "b": ranking([0, 1, 2, 4, 5, 6])}
    assert common_targets(rankings).tolist() == [6, 1, 4, 0]
    with pytest.raises(InvalidInputError, match="at least one ranking"):
        common_targets({})
    ens = _ensemble([True, False, True, True, True, False, True, True])
    assert choose_targets(rankings, ens).tolist() == [6, 1, 4, 0]
    assert choose_targets(rankings, ens, targets=[4, 1]).tolist() == [4, 1]
    with pytest.raises(InvalidInputError, match="target 7 is not ranked"):
        choose_targets(rankings, ens, targets=[4, 7])
    assert choose_targets(rankings, ens, targets=[]).dtype == np.int64  # still row indices
    draws = {tuple(choose_targets(rankings, ens, n_targets=2, seed=s)) for s in range(20)}
    assert draws <= {(0, 4), (0, 6), (4, 6)}  # target 1 is misclassified
    assert len(draws) > 1  # seeded, not fixed
    for s in range(10):  # and the same seed draws the same targets
        a, b = (choose_targets(rankings, ens, n_targets=2, seed=s) for _ in range(2))
        assert a.tolist() == b.tolist()
    assert choose_targets(rankings, ens, n_targets=3, seed=5).tolist() == [0, 4, 6]
    with pytest.raises(InvalidInputError, match="only 3 of the ranked targets"):
        choose_targets(rankings, ens, n_targets=4)


def test_resume_refuses_other_settings_rankings_and_data(tmp_path):
    """What a results file holds is reused only for the same settings, the same ranking under
    each name and the same data; otherwise refused, saying which."""
    from simattr.evaluation.support import _existing

    ranking = Ranking([1, 2], [[0, 1], [1, 0]], [[1.0, 0.5], [1.0, 0.5]])
    other = Ranking([1, 2], [[1, 0], [1, 0]], [[1.0, 0.5], [1.0, 0.5]])
    summary = _settings(recipe="tiny").summary()
    out = tmp_path / "r.jsonl"
    base = {"mode": "remove", "settings": summary, "data_fingerprint": "fp"}
    append_jsonl(out, {**base, "target": 1, "ranking": "esvm", "ranking_digest": ranking.digest})
    append_jsonl(out, {**base, "target": 2, "ranking": "l2"})  # no digest recorded: not compared
    assert _existing(out, summary, {"esvm": ranking, "l2": other}, "fp") == {
        (1, "esvm", "remove"),
        (2, "l2", "remove"),
    }
    assert _existing(tmp_path / "none.jsonl", summary) == set()
    # without rankings or a fingerprint to compare, or resuming with only some of the rankings
    assert len(_existing(out, summary)) == 2
    assert len(_existing(out, summary, {"l2": other}, "fp")) == 2
    with pytest.raises(InvalidInputError, match="another ranking named 'esvm'"):
        _existing(out, summary, {"esvm": other}, "fp")
    with pytest.raises(InvalidInputError, match="another dataset"):
        _existing(out, summary, {"esvm": ranking}, "fp-other")
    with pytest.raises(InvalidInputError, match="other settings"):
        _existing(out, {**summary, "k": 64}, {"esvm": ranking}, "fp")


def test_support_ranking_check_refuses_unranked_and_foreign_rows():
    """The top k of every target must be real training rows of the recipe's pool."""
    from simattr.cli._common import as_flags
    from simattr.evaluation.support import _check_ranking

    pool = np.array([2, 4, 6, 8, 10])
    ok = Ranking([0, 1], [[2, 4, 6], [10, 8, -1]], [[3.0, 2, 1], [3, 2, np.nan]])
    _check_ranking("ok", ok, pool, "tiny", 2)  # -1 beyond the top 2 is fine
    with pytest.raises(InvalidInputError, match=r"'ok' has unranked \(-1\) entries"):
        _check_ranking("ok", ok, pool, "tiny", 3)
    with pytest.raises(InvalidInputError, match="top 3 images per target but the search") as short:
        _check_ranking("ok", ok, pool, "tiny", 4)
    # the parameters to change, in Python; the CLI says them as its options
    assert "`SupportSettings.k=4`; rank with `k=4`" in str(short.value)
    assert "--max-m 4; rank with --topk 4 or lower --max-m" in as_flags(str(short.value))
    foreign = Ranking([0], [[2, 5, 11]], [[3.0, 2, 1]])
    with pytest.raises(InvalidInputError, match=r"training row 5 \(and 1 more\)"):
        _check_ranking("foreign", foreign, pool, "tiny", 3)
    _check_ranking("foreign", foreign, pool, "tiny", 1)
    first_row = Ranking([0], [[0, 4]], [[1.0, 0.5]])  # training row 0 is a row like any other
    _check_ranking("first", first_row, np.array([0, 4, 6]), "tiny", 2)


def test_concurrent_searches_write_records_journal_every_model_and_replay_it(
    tmp_path, monkeypatch, capsys
):
    """The driver runs several searches at once on an executor: each finished search appends its
    record (and a log line), each trained model its journal line; a restart replays every model
    from the journal and trains nothing. Outcomes come from an oracle, not from training."""
    from simattr.evaluation import support
    from simattr.training.executors import InlineExecutor

    threshold = {7: 37, 8: 100, 9: None}  # target 9 never flips
    trained: list[TrainJob] = []

    def fake_run_job(job):
        trained.append(job)
        (t,) = job.predict
        flips = threshold[t] is not None and len(job.remove) >= threshold[t]
        logits = np.zeros((1, 10), dtype=np.float32)
        logits[0, FLIP if flips else LABEL] = 5.0
        return JobResult(logits=logits, seconds=1.0, n_train=100)

    monkeypatch.setattr(support, "run_job", fake_run_job)
    settings = _settings(data="d", recipe="tiny")
    order = np.arange(10_000, 10_000 + settings.k)

    def searches():
        return [
            ({"target": t, "ranking": "esvm", "mode": "remove"}, search_support(
                settings, t, LABEL, FLIP, order
            ))
            for t in (7, 8, 9)
        ]  # fmt: skip

    out = tmp_path / "r.jsonl"
    for slots in (1, 4):
        trained.clear()
        run = tmp_path / f"slots{slots}.jsonl"
        lines: list[str] = []
        journal = support._Journal(support.journal_path(run), "fp")
        written = support._run_searches(searches(), InlineExecutor(), slots, journal, run, False,
                                        lines.append)  # fmt: skip
        by_target = {r["target"]: r for r in written}
        assert sorted(by_target) == [7, 8, 9]
        assert by_target[7]["support"] == 37 and by_target[8]["support"] == 100
        assert by_target[9]["support"] is None and by_target[9]["models_trained"] == 2
        assert read_jsonl(run) == written
        assert sorted(lines) == sorted(support.describe_record(r) for r in written)
        assert len(trained) == sum(r["models_trained"] for r in written)
        if slots == 4:  # two searches of 2 models each fill the 4 slots: the third waits
            assert {job.predict[0] for job in trained[:8]} == {7, 8}
        assert len(read_jsonl(support.journal_path(run))) == len(trained)
        out = run

    # a restart with the journal: the same records, no model trained again
    def no_training(job):
        raise AssertionError("a journaled model was trained again")

    monkeypatch.setattr(support, "run_job", no_training)
    journal = support._Journal(support.journal_path(out), "fp")
    monkeypatch.setenv("SIMATTR_PROGRESS_INTERVAL", "0")  # a progress line per search
    capsys.readouterr()
    again = support._run_searches(searches(), InlineExecutor(), 2, journal, tmp_path / "b.jsonl",
                                  True)  # fmt: skip
    err = capsys.readouterr().err
    assert set(re.findall(r"support search: (\d+)/3", err)) == {"1", "2", "3"}
    first = {r["target"]: r for r in read_jsonl(out)}
    for rec in again:
        old = first[rec["target"]]
        assert rec["support"] == old["support"] and rec["steps"] == old["steps"]


def test_ensemble_cache_entries_are_reused_refused_or_retrained(tmp_path):
    """A cached ensemble model is read back when its sidecar names the same identity, refused
    when it names another, dropped (to be retrained, with a warning) when its bytes are damaged,
    and refused when its shape does not fit the test split."""
    from simattr._io import provenance, write_with_sidecar
    from simattr.evaluation.ensemble import _cached

    ident = {"recipe": {"name": "tiny"}, "seed": 0, "train_fingerprint": "a"}
    probs = np.full((4, 3), 1 / 3, dtype=np.float32)
    path = tmp_path / "seed-0.npy"
    assert _cached(path, ident, 4) is None  # nothing cached yet
    meta = provenance(kind="ensemble-model", identity=ident)
    write_with_sidecar(path, lambda tmp: np.save(tmp, probs), meta)
    np.testing.assert_array_equal(_cached(path, ident, 4), probs)
    # the refusal names the differing setting and the option that fixes it
    with pytest.raises(InvalidInputError, match=r"\(seed was 0, now 1\); use another --ensemble"):
        _cached(path, {**ident, "seed": 1}, 4)
    with pytest.raises(InvalidInputError, match=r"has shape \(4, 3\); expected \(5, C\)"):
        _cached(path, ident, 5)
    path.write_bytes(path.read_bytes()[:-4] + b"\0\0\0\0")  # damaged on disk
    with pytest.warns(UserWarning, match="retraining"):
        assert _cached(path, ident, 4) is None
    assert not path.exists()


def test_bisection_stops_when_the_interval_closes_and_reaches_support_one():
    """A budget larger than needed does not test any m twice; a target flipped by its top
    image alone has support 1 (the bisection starts from 0 removed images, not 1)."""
    result, _ = _drive(_settings(budget=20), lambda m, seed: FLIP if m >= 37 else LABEL)
    assert [s["m"] for s in result["steps"]] == [128, 64, 32, 48, 40, 36, 38, 37]
    assert result["support"] == 37
    result, _ = _drive(_settings(budget=20), lambda m, seed: FLIP if m >= 1 else LABEL)
    assert [s["m"] for s in result["steps"]] == [128, 64, 32, 16, 8, 4, 2, 1]
    assert result["support"] == 1


def test_five_models_stop_as_soon_as_the_majority_is_settled():
    """With M = 5 (majority 3) a step trains 3 models, then only as many as could still change
    the outcome: one more after 2 flips and 1 keep; one more after 1 flip and 2 keeps."""
    flips = {0, 2, 3}  # seeds 0, 2 flip in the first three; seed 3 settles it
    result, _ = _drive(_settings(models=5, budget=0), lambda m, s: FLIP if s in flips else LABEL)
    step = result["steps"][0]
    assert step["seeds"] == [0, 1, 2, 3] and step["flipped"] is True
    assert step["misclassified_by"] == 3 and step["fraction_flipped"] == 0.75
    kept = {0}  # only seed 0 flips: after 1 flip and 2 keeps, seed 3 keeps too
    result, _ = _drive(_settings(models=5, budget=0), lambda m, s: FLIP if s in kept else LABEL)
    step = result["steps"][0]
    assert step["seeds"] == [0, 1, 2, 3] and step["flipped"] is False
    assert step["misclassified_by"] == 1


def test_seconds_add_up_over_models_and_steps_to_the_millisecond():
    """A step's seconds are the sum over its models, the record's the sum over steps, each
    rounded to the millisecond."""
    result, _ = _drive(_settings(budget=1), lambda m, s: FLIP, seconds=0.12345)
    assert [s["seconds"] for s in result["steps"]] == [0.247, 0.247]  # 2 x 0.12345
    assert result["seconds"] == 0.494


def test_a_search_refuses_a_reply_with_fewer_results_than_jobs():
    """Each job the search asks for must come back with one result; a short reply from a
    driver is an error, not a silently smaller vote."""
    search = search_support(_settings(), 7, LABEL, FLIP, np.arange(128))
    batch = search.send(None)
    assert len(batch) == 2
    logits = np.zeros((1, 10), dtype=np.float32)
    with pytest.raises(ValueError):
        search.send([JobResult(logits=logits, seconds=1.0, n_train=100)])


def test_ensemble_trains_the_seeds_asked_caches_each_with_its_record(
    data_root, cifar_train, cifar_test, tmp_path, monkeypatch
):
    """train_ensemble with faked models: the seeds given are the seeds trained (default
    0..n-1), each model's probabilities are cached with a sidecar recording kind, identity,
    seconds, size and test accuracy, and a second call reads the cache without training."""
    from simattr._io import read_sidecar
    from simattr.evaluation import ensemble as ensemble_module

    n_test = len(cifar_test)
    trained: list[int] = []

    def fake_run_jobs(executor, jobs, on_result):
        for key, job in jobs.items():
            trained.append(job.seed)
            logits = np.zeros((n_test, 10), dtype=np.float32)
            logits[np.arange(n_test), cifar_test.labels] = 1.0 + job.seed  # always right
            on_result(key, JobResult(logits=logits, seconds=1.23456, n_train=777))

    monkeypatch.setattr(ensemble_module, "run_jobs", fake_run_jobs)
    splits = {"train": cifar_train, "test": cifar_test}  # the session's copies, decoded once
    monkeypatch.setattr(ensemble_module, "load_split", lambda data, split: splits[split])
    data = str(data_root / "cifar10")
    ens = ensemble_module.train_ensemble(data, "tiny", n_models=2, seeds=[3, 7], cache_dir=tmp_path)
    assert trained == [3, 7] and ens.seeds == (3, 7)
    assert ens.probs.shape == (2, n_test, 10) and ens.accuracy == 1.0
    meta = read_sidecar(tmp_path / "seed-7.npy")
    assert meta["kind"] == "ensemble-model" and meta["identity"]["seed"] == 7
    assert meta["seconds"] == 1.235 and meta["n_train"] == 777 and meta["test_accuracy"] == 1.0
    again = ensemble_module.train_ensemble(data, "tiny", n_models=2, seeds=[7, 3],
                                           cache_dir=tmp_path)  # fmt: skip
    assert trained == [3, 7] and again.seeds == (7, 3)  # read back, in the order asked
    np.testing.assert_array_equal(again.probs[0], ens.probs[1])
    default = ensemble_module.train_ensemble(data, "tiny", n_models=2, cache_dir=tmp_path / "d")
    assert default.seeds == (0, 1) and trained[-2:] == [0, 1]


def test_run_support_draws_its_targets_with_the_settings_seed(
    data_root, cifar_train, cifar_test, tmp_path, monkeypatch
):
    """run_support with the ensemble and the models faked: ``n_targets`` are drawn among the
    ranked targets with the settings' seed (the same draw choose_targets makes), one record
    per target and ranking, each naming its target's label and flip class."""
    from simattr.evaluation import support
    from simattr.evaluation.ensemble import Ensemble
    from simattr.training import recipe_pool

    splits = {"train": cifar_train, "test": cifar_test}  # the session's copies, decoded once
    monkeypatch.setattr(support, "load_split", lambda data, split: splits[split])
    labels = cifar_test.labels
    probs = np.full((1, len(labels), 10), 0.05, dtype=np.float32)
    probs[0, np.arange(len(labels)), labels] = 0.5
    probs[0, np.arange(len(labels)), (labels + 1) % 10] = 0.3  # the flip class: label + 1
    ensemble = Ensemble(probs=probs, labels=labels.copy(), seeds=(0,))
    monkeypatch.setattr(support, "train_ensemble", lambda *a, **k: ensemble)

    def never_flips(job):
        logits = np.zeros((1, 10), dtype=np.float32)
        logits[0, labels[job.predict[0]]] = 5.0
        return JobResult(logits=logits, seconds=0.5, n_train=100)

    monkeypatch.setattr(support, "run_job", never_flips)
    pool = recipe_pool("tiny", cifar_train)
    ranked = np.arange(12)
    ranking = Ranking(ranked, np.tile(pool[:4], (12, 1)), np.ones((12, 4)))
    data = str(data_root / "cifar10")
    for seed in (0, 5):
        settings = SupportSettings(data=data, recipe="tiny", models=1, budget=1, k=4, seed=seed)
        out = tmp_path / f"r{seed}.jsonl"
        records = support.run_support(settings, {"pixels": ranking}, out, n_targets=3)
        want = support.choose_targets({"pixels": ranking}, ensemble, None, 3, seed)
        assert sorted(r["target"] for r in records) == want.tolist()
        for rec in records:
            t = rec["target"]
            assert (rec["label"], rec["flip_class"]) == (labels[t], (labels[t] + 1) % 10)
            assert rec["support"] is None and rec["models_trained"] == 1
            assert rec["ensemble_prob_label"] == 0.5 and rec["status"] == "searched"
    bad = SupportSettings(data=data, recipe="tiny", models=1, budget=1, k=4, threads=0)
    with pytest.raises(InvalidInputError, match="`threads`"):  # named as the parameter
        support.run_support(bad, {"pixels": ranking}, tmp_path / "bad.jsonl", n_targets=3)
