"""The support search end to end: real CIFAR-10, real (tiny) training, real files, real Ray.

One small configuration is shared by every test: the ``tiny`` recipe, two targets, a ranking of
the tiny pool by raw-pixel cosine similarity, M = 2 models, k = 24, budget 2, one torch thread
per model (so that every executor computes bit-identical models).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from simattr._io import read_jsonl
from simattr.attribution import Attributor, Ranking, load_ranking, save_ranking
from simattr.errors import InvalidInputError
from simattr.evaluation import SupportSettings, recipe_pool, run_support
from simattr.evaluation.ensemble import train_ensemble
from simattr.evaluation.support import journal_path

#: Real support searches that train models end to end (a process pool, Ray, kill -9).
pytestmark = pytest.mark.slow

K, MODELS, BUDGET, ENSEMBLE = 24, 2, 2, 2


def _pixel_features(images: np.ndarray) -> np.ndarray:
    x = images.reshape(len(images), -1).astype(np.float32)
    return x - x.mean(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data(data_root) -> str:
    return str(data_root / "cifar10")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("support")


@pytest.fixture(scope="module")
def ensemble_dir(workdir, data, cifar_train):
    """The full-data ensemble of the tiny recipe, trained once for the module."""
    path = workdir / "ensemble"
    train_ensemble(data, "tiny", n_models=ENSEMBLE, cache_dir=path, threads=1)
    return path


@pytest.fixture(scope="module")
def targets(ensemble_dir, data, cifar_test):
    """Two test images the tiny ensemble classifies correctly, and one it gets wrong."""
    ens = train_ensemble(data, "tiny", n_models=ENSEMBLE, cache_dir=ensemble_dir, threads=1)
    right = np.flatnonzero(ens.correct)[:2]
    wrong = np.flatnonzero(~ens.correct)[:1]
    return right, wrong


@pytest.fixture(scope="module")
def ranking_path(workdir, cifar_train, cifar_test, targets):
    right, wrong = targets
    chosen = np.concatenate([right, wrong])
    pool = recipe_pool("tiny", cifar_train)
    att = Attributor("cosine").fit(
        _pixel_features(cifar_train.get_images(pool)), cifar_train.labels[pool]
    )
    idx, scores = att.topk(
        _pixel_features(cifar_test.get_images(chosen)), cifar_test.labels[chosen], K
    )
    path = workdir / "pixels.npz"
    save_ranking(path, Ranking(targets=chosen, indices=pool[idx], scores=scores))
    return path


def _settings(data: str, mode: str = "remove") -> SupportSettings:
    return SupportSettings(
        data=data, recipe="tiny", mode=mode, models=MODELS, budget=BUDGET, k=K, threads=1
    )


def _essence(records):
    return sorted(
        (
            r["target"],
            r["status"],
            r["support"],
            tuple((s["m"], s["models"], s["misclassified_by"]) for s in r["steps"]),
        )
        for r in records
    )


def _run(data, ranking_path, out, ensemble_dir, **kwargs):
    """The module's support search over the pixel ranking, written to ``out``."""
    settings = kwargs.pop("settings", None) or _settings(data)
    return run_support(
        settings,
        {"pixels": load_ranking(ranking_path)},
        out,
        ensemble_models=ENSEMBLE,
        ensemble_dir=ensemble_dir,
        **kwargs,
    )


@pytest.fixture(scope="module")
def local_run(workdir, data, ranking_path, ensemble_dir):
    out = workdir / "local" / "results.jsonl"
    return out, _run(data, ranking_path, out, ensemble_dir)


def test_records_journal_and_resume(local_run, targets, data, ranking_path, ensemble_dir):
    out, records = local_run
    right, wrong = targets
    assert len(records) == 3 and read_jsonl(out) == records
    by_target = {r["target"]: r for r in read_jsonl(out)}
    assert by_target[int(wrong[0])]["status"] == "misclassified"
    assert by_target[int(wrong[0])]["steps"] == []
    for t in right:
        rec = by_target[int(t)]
        assert rec["status"] == "searched" and rec["ranking"] == "pixels"
        assert rec["steps"][0]["m"] == K
        assert rec["models_trained"] == sum(s["models"] for s in rec["steps"]) >= MODELS // 2
        if rec["support"] is not None:
            flipped = [s["m"] for s in rec["steps"] if s["flipped"]]
            assert rec["support"] == min(flipped)
        assert rec["settings"]["recipe"] == "tiny" and rec["seconds"] > 0
    journal = read_jsonl(journal_path(out))
    assert len(journal) == sum(r["models_trained"] for r in records) >= 2
    # a second call finds everything done: no record, no model
    again = _run(data, ranking_path, out, ensemble_dir)
    assert again == [] and len(read_jsonl(journal_path(out))) == len(journal)


def test_removing_the_top_images_changes_the_model(local_run):
    """The search really trains without the images: probabilities differ across m."""
    out, _ = local_run
    journal = read_jsonl(journal_path(out))
    ns = {j["n_train"] for j in journal}
    assert len(ns) >= 2  # models trained on training sets of different sizes
    # same seed, same target, different training sets: different models
    by_seed: dict = {}
    for j in journal:
        by_seed.setdefault((j["seed"], tuple(j["predict"])), []).append(j["logits"][0])
    assert any(len({tuple(v) for v in group}) > 1 for group in by_seed.values())


@pytest.mark.parametrize("executor", ["process", "ray"])
def test_executors_give_the_same_results(
    executor, local_run, workdir, data, ranking_path, ensemble_dir
):
    if executor == "ray":
        import ray  # noqa: F401  (a declared dev dependency: a missing Ray fails, not skips)
    out = workdir / executor / "results.jsonl"
    records = _run(data, ranking_path, out, ensemble_dir, executor=executor, workers=2)
    assert _essence(records) == _essence(local_run[1])


def test_kill_9_then_resume_loses_only_models_in_flight(
    local_run, workdir, data, ranking_path, ensemble_dir
):
    out = workdir / "killed" / "results.jsonl"
    cmd = [
        sys.executable, "-m", "simattr", "support",
        "--data", data, "--ranking", f"pixels={ranking_path}", "--out", str(out),
        "--recipe", "tiny", "--models", str(MODELS), "--budget", str(BUDGET), "--max-m", str(K),
        "--ensemble", str(ENSEMBLE), "--ensemble-dir", str(ensemble_dir), "--threads", "1",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ)
    journal = journal_path(out)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if len(read_jsonl(journal)) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = len(read_jsonl(journal))
    assert before >= 2
    _run(data, ranking_path, out, ensemble_dir)
    final = read_jsonl(out)
    assert sorted(r["target"] for r in final) == sorted(r["target"] for r in local_run[1])
    searched = [r for r in final if r["status"] == "searched"]
    assert _essence(final) == _essence(local_run[1])
    # every model was trained exactly once: nothing journaled before the kill was redone
    assert len(read_jsonl(journal)) == sum(r["models_trained"] for r in searched)


def test_mislabel_mode_runs_and_relabels(workdir, data, ranking_path, ensemble_dir, targets):
    out = workdir / "mislabel" / "results.jsonl"
    right, _ = targets
    lines: list[str] = []
    records = _run(data, ranking_path, out, ensemble_dir, settings=_settings(data, "mislabel"),
                   targets=right[:1], log=lines.append)  # fmt: skip
    assert len(records) == 1 and records[0]["mode"] == "mislabel"
    assert len(lines) == 1 and f"target {int(right[0])} / pixels / mislabel" in lines[0]
    journal = read_jsonl(journal_path(out))
    assert journal and all(j["n_relabelled"] > 0 and j["n_removed"] == 0 for j in journal)


def test_rankings_outside_the_pool_or_too_short_are_refused(
    workdir, data, cifar_train, ranking_path, ensemble_dir
):
    good = load_ranking(ranking_path)
    pool = recipe_pool("tiny", cifar_train)
    outside = np.setdiff1d(np.arange(len(cifar_train)), pool)[: good.k]
    bad = Ranking(good.targets, np.tile(outside, (len(good.targets), 1)), good.scores)
    out = workdir / "refused" / "results.jsonl"
    with pytest.raises(InvalidInputError, match="`pool=tiny`"):
        run_support(_settings(data), {"bad": bad}, out, ensemble_dir=ensemble_dir)
    short = Ranking(good.targets, good.indices[:, :5], good.scores[:, :5])
    with pytest.raises(InvalidInputError, match="top 5"):
        run_support(_settings(data), {"short": short}, out, ensemble_dir=ensemble_dir)
    assert not out.exists()


def test_results_of_other_settings_are_not_mixed(local_run, data, ranking_path, ensemble_dir):
    out, _ = local_run
    other = SupportSettings(data=data, recipe="tiny", models=3, budget=BUDGET, k=K, threads=1)
    with pytest.raises(InvalidInputError, match="other settings"):
        run_support(other, {"pixels": load_ranking(ranking_path)}, out, ensemble_dir=ensemble_dir)


def test_cli_support_and_report(local_run, workdir, data, ranking_path, ensemble_dir):
    from typer.testing import CliRunner

    from simattr.cli import app

    out, _ = local_run
    runner = CliRunner()
    # resuming a finished results file through the CLI: nothing new to do
    res = runner.invoke(
        app,
        ["support", "--data", data, "--ranking", f"pixels={ranking_path}", "--out", str(out),
         "--recipe", "tiny", "--models", str(MODELS), "--budget", str(BUDGET), "--max-m", str(K),
         "--ensemble", str(ENSEMBLE), "--ensemble-dir", str(ensemble_dir), "--threads", "1"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "0 new search(es)" in res.output
    report = workdir / "report"
    res = runner.invoke(app, ["support-report", str(out), "--out", str(report)])
    assert res.exit_code == 0, res.output
    assert (report / "support_curve.png").exists()
    assert "| pixels | remove | 2 |" in (report / "support_table.md").read_text()
    res = runner.invoke(app, ["support-report", str(out), "--out", str(report),
                              "--reference", "esvm"])  # fmt: skip
    assert res.exit_code == 1 and "'esvm' is not in the results" in res.output
    res = runner.invoke(app, ["support", "--data", data, "--ranking", str(ranking_path),
                              "--out", str(workdir / "x.csv")])  # fmt: skip
    assert res.exit_code == 1 and ".jsonl" in res.output


def test_resume_refuses_a_name_bound_to_another_ranking(local_run, workdir, data, ensemble_dir):
    """The old results of 'pixels' may not stand for a different file under the same name."""
    import shutil

    out, _ = local_run
    copy = workdir / "renamed" / "results.jsonl"
    copy.parent.mkdir()
    shutil.copy(out, copy)
    shutil.copy(journal_path(out), journal_path(copy))
    good = load_ranking(workdir / "pixels.npz")
    other = Ranking(good.targets, good.indices[:, ::-1].copy(), good.scores[:, ::-1].copy())
    before = copy.read_bytes()
    with pytest.raises(InvalidInputError, match="another ranking named 'pixels'"):
        run_support(_settings(data), {"pixels": other}, copy, ensemble_dir=ensemble_dir)
    assert copy.read_bytes() == before


def test_a_second_run_on_a_locked_out_is_refused(local_run, data, ranking_path, ensemble_dir):
    """While another process holds the output's lock, a run stops before training anything."""
    from simattr.errors import LockedError

    out, _ = local_run
    code = (
        "import sys, time\n"
        "from simattr._io import lock\n"
        "with lock(sys.argv[1]):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        journal = journal_path(out).read_bytes()
        with pytest.raises(LockedError, match=f"pid {holder.pid}"):
            _run(data, ranking_path, out, ensemble_dir)
        assert journal_path(out).read_bytes() == journal
    finally:
        holder.kill()
        holder.wait()
    assert _run(data, ranking_path, out, ensemble_dir) == []  # the dead holder's lock is stale


def test_a_damaged_results_line_is_refused_on_resume(local_run, workdir, data, ranking_path,
                                                     ensemble_dir):  # fmt: skip
    import shutil

    out, _ = local_run
    copy = workdir / "damaged" / "results.jsonl"
    copy.parent.mkdir()
    shutil.copy(out, copy)
    shutil.copy(journal_path(out), journal_path(copy))
    lines = copy.read_bytes().splitlines(keepends=True)
    i = lines[0].index(b'"status":"') + len(b'"status":"')
    lines[0] = lines[0][:i] + bytes([lines[0][i] ^ 0x01]) + lines[0][i + 1 :]
    copy.write_bytes(b"".join(lines))
    from simattr.errors import DamagedFileError

    with pytest.raises(DamagedFileError, match="line 1"):
        _run(data, ranking_path, copy, ensemble_dir)
