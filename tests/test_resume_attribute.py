"""Resumable attribution: an interrupted run restarts from its finished blocks, computes only
the others and gives exactly the ranking of an uninterrupted run; changed inputs are refused."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from simattr import Attributor, InvalidInputError
from simattr.attribution import load_ranking, rank_resumable
from simattr.attribution.resumable import parts_dir


class Interrupted(RuntimeError):
    pass


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def split():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16))
    ytr, yte = rng.integers(0, 4, 400), rng.integers(0, 4, 60)
    xtr = centres[ytr] + rng.normal(size=(400, 16))
    xte = centres[yte] + rng.normal(size=(60, 16))
    return xtr, ytr, xte, yte


def _count_topk(monkeypatch) -> list[int]:
    calls: list[int] = []
    original = Attributor.topk

    def counting(self, features, labels=None, k=100):
        calls.append(len(features))
        return original(self, features, labels, k)

    monkeypatch.setattr(Attributor, "topk", counting)
    return calls


def test_interrupted_run_resumes_without_recomputing(split, tmp_path, monkeypatch):
    xtr, ytr, xte, yte = split
    att = Attributor("esvm").fit(xtr, ytr)
    targets = np.arange(3, 58)
    full = rank_resumable(att, xte, yte, targets, 10, tmp_path / "full.npz", block_size=8)

    out = tmp_path / "r.npz"

    def stop_after_two(done: int, total: int) -> None:
        if done == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        rank_resumable(att, xte, yte, targets, 10, out, block_size=8, on_block=stop_after_two)
    assert not out.exists()
    assert sorted(p.name for p in parts_dir(out).glob("block-*.npz")) == [
        "block-00000.npz",
        "block-00001.npz",
    ]
    calls = _count_topk(monkeypatch)
    again = rank_resumable(att, xte, yte, targets, 10, out, block_size=8)
    assert len(calls) == 7 - 2 and sum(calls) == len(targets) - 16  # only unfinished blocks
    assert not parts_dir(out).exists()
    np.testing.assert_array_equal(again.targets, targets)
    np.testing.assert_array_equal(again.indices, full.indices)
    np.testing.assert_array_equal(again.scores, full.scores)
    np.testing.assert_array_equal(load_ranking(out).indices, full.indices)


def test_changed_inputs_are_refused_and_no_resume_discards(split, tmp_path):
    xtr, ytr, xte, yte = split
    att = Attributor("cosine").fit(xtr, ytr)
    out = tmp_path / "r.npz"

    def stop(done: int, total: int) -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        rank_resumable(att, xte, yte, np.arange(20), 10, out, block_size=5, on_block=stop)
    with pytest.raises(InvalidInputError, match=r"k was 10, now 7.*--no-resume"):
        rank_resumable(att, xte, yte, np.arange(20), 7, out, block_size=5)
    other = Attributor("cosine").fit(xtr + 1, ytr)
    with pytest.raises(InvalidInputError, match=r"inputs.train_features was"):
        rank_resumable(other, xte, yte, np.arange(20), 10, out, block_size=5)
    ranking = rank_resumable(att, xte, yte, np.arange(20), 7, out, block_size=5, resume=False)
    assert ranking.k == 7 and not parts_dir(out).exists()


def test_cli_attribute_resumes_after_a_crash(split, tmp_path, monkeypatch):
    from simattr.cli import app

    xtr, ytr, xte, yte = split
    paths = {}
    for name, arr in (("xtr", xtr), ("ytr", ytr), ("xte", xte), ("yte", yte)):
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], arr.astype(np.float32) if name.startswith("x") else arr)

    def run(out, *extra):
        args = ["attribute", "--train-features", paths["xtr"], "--test-features", paths["xte"]]
        args += ["--train-labels", paths["ytr"], "--test-labels", paths["yte"], "--out", out]
        args += ["--topk", "12", "--block-size", "16", *extra]
        return CliRunner().invoke(app, [str(a) for a in args])

    reference = tmp_path / "ref.npz"
    assert run(reference).exit_code == 0
    out = tmp_path / "r.npz"
    original = Attributor.topk
    calls: list[int] = []

    def crash_on_third(self, features, labels=None, k=100):
        calls.append(len(features))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, features, labels, k)

    monkeypatch.setattr(Attributor, "topk", crash_on_third)
    result = run(out)
    assert result.exit_code != 0 and not out.exists()
    assert len(list(parts_dir(out).glob("block-*.npz"))) == 2
    monkeypatch.setattr(Attributor, "topk", original)
    calls = _count_topk(monkeypatch)
    result = run(out)
    assert result.exit_code == 0, result.output
    assert len(calls) == 2  # 4 blocks of 16 targets, 2 already done
    np.testing.assert_array_equal(load_ranking(out).indices, load_ranking(reference).indices)
