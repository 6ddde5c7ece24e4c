"""Pool-restricted rankings (`attribute --pool`) and the `bench` orchestrator, on real CIFAR-10."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from simattr._io import read_json, read_jsonl
from simattr.attribution import load_ranking
from simattr.cli import app
from simattr.evaluation import recipe_pool

runner = CliRunner()


def _block_means(images: np.ndarray) -> np.ndarray:
    """48-d features (mean colour of 8x8 blocks): cheap, real, and class-informative enough."""
    x = images.reshape(len(images), 4, 8, 4, 8, 3).astype(np.float32)
    return x.mean(axis=(2, 4)).reshape(len(images), -1)


@pytest.fixture(scope="module")
def cifar_features(tmp_path_factory, cifar_train, cifar_test):
    out = tmp_path_factory.mktemp("blockfeat")
    np.save(out / "train.npy", _block_means(cifar_train.images))
    np.save(out / "test.npy", _block_means(cifar_test.images))
    return out


def test_attribute_pool_ranks_only_the_recipe_pool(cifar_features, data_root, cifar_train,
                                                   cifar_test, tmp_path):  # fmt: skip
    from simattr.evaluation.support import _check_ranking

    data = str(data_root / "cifar10")

    def attribute(out, *extra):
        return runner.invoke(app, [
            "attribute", "--train-features", str(cifar_features / "train.npy"),
            "--test-features", str(cifar_features / "test.npy"), "--data", data,
            "--targets", "0,1,2", "--topk", "20", "--out", str(out), *extra])  # fmt: skip

    pool = recipe_pool("tiny", cifar_train)
    res = attribute(tmp_path / "pool.npz", "--pool", "tiny")
    assert res.exit_code == 0, res.output
    ranking = load_ranking(tmp_path / "pool.npz")
    assert np.isin(ranking.indices, pool).all()
    assert (cifar_train.labels[ranking.indices] == cifar_test.labels[[0, 1, 2], None]).all()
    assert ranking.metadata["pool"] == "tiny"
    _check_ranking("pool", ranking, pool, "tiny", 20)  # accepted by the support search
    # --train-indices with the same rows gives the same ranking
    np.save(tmp_path / "rows.npy", pool[::-1])
    res = attribute(tmp_path / "rows.npz", "--train-indices", str(tmp_path / "rows.npy"))
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(load_ranking(tmp_path / "rows.npz").indices, ranking.indices)
    # without the restriction the top images come from the whole split
    res = attribute(tmp_path / "free.npz")
    assert res.exit_code == 0, res.output
    assert not np.isin(load_ranking(tmp_path / "free.npz").indices, pool).all()
    np.save(tmp_path / "dup.npy", np.array([1, 1, 2]))
    res = attribute(tmp_path / "dup.npz", "--train-indices", str(tmp_path / "dup.npy"))
    assert res.exit_code == 1 and "twice" in res.output
    res = attribute(
        tmp_path / "both.npz", "--pool", "tiny", "--train-indices", str(tmp_path / "rows.npy")
    )
    assert res.exit_code == 1 and "not both" in res.output
    assert not (tmp_path / "dup.npz").exists() and not (tmp_path / "both.npz").exists()


@pytest.mark.slow
def test_bench_tiny_profile_runs_and_resumes(data_root, tmp_path, cifar_train, monkeypatch):
    from simattr.bench import run_bench

    data = str(data_root / "cifar10")
    methods = ["esvm", "l2", "random", "class-prior"]
    logs: list[str] = []
    # the shared checkout may hold uncommitted work: recorded as '+dirty', as asked
    summary = run_bench(data, "tiny", tmp_path, methods=methods, stages=["remove", "lds"],
                        threads=1, log=logs.append, command="simattr bench --profile tiny",
                        allow_dirty=True)  # fmt: skip
    commit = summary["commit"].removesuffix("+dirty")
    assert re.fullmatch(r"[0-9a-f]{40}", commit), summary["commit"]
    # the checkout's commit (HEAD, or one before it if others committed meanwhile)
    here = Path(__file__).parent
    ancestor = ["git", "merge-base", "--is-ancestor", commit, "HEAD"]
    assert subprocess.run(ancestor, cwd=here).returncode == 0
    assert summary["command"] == "simattr bench --profile tiny"
    assert json.loads((tmp_path / "bench.json").read_text())["commit"] == summary["commit"]
    rows = summary["methods"]
    assert list(rows) == methods
    for name in methods:
        assert rows[name]["remove"]["targets"] == 2
        assert -1.0 <= rows[name]["lds"]["mean"] <= 1.0
        assert -1.0 <= rows[name]["lds"]["centred_mean"] <= 1.0
        assert rows[name]["lds"]["targets"] == 6  # the tiny profile's LDS targets
        assert len(load_ranking(tmp_path / "rankings-lds" / f"{name}.npz").targets) == 6
        ranking = load_ranking(tmp_path / "rankings" / f"{name}.npz")
        assert np.isin(ranking.indices, recipe_pool("tiny", cifar_train)).all()
    assert rows["esvm"]["attribution_seconds"] > 0  # feature extraction is part of the cost
    # LDS controls: the class prior's own ranking has nothing beyond the class prior, and the
    # noise ceiling comes from the tiny profile's 3 second-seed models
    assert rows["class-prior"]["lds"]["beyond_class_prior"]["mean"] == 0.0
    controls = summary["lds_controls"]
    assert controls["noise_ceiling_subsets"] == 3
    assert -1.0 <= controls["noise_ceiling"]["mean"] <= 1.0
    assert "beyond_class_prior_of_ceiling" in rows["esvm"]["lds"]
    paired = rows["l2"]["lds"]["beyond_class_prior_minus_esvm"]
    assert paired["n"] == 6 and paired["low"] <= paired["mean"] <= paired["high"]
    table = (tmp_path / "bench_table.md").read_text()
    assert table == summary["table"] and "| esvm |" in table and "| random |" in table
    assert "Controls: class-prior LDS" in table and "noise ceiling" in table
    assert "each method minus `esvm` target by target" in table
    # every other method is paired with the ESVM on the same two targets
    assert "Target by target against `esvm`" in table and "| l2 | remove | 2 |" in table
    assert "against_esvm" not in rows["esvm"]["remove"]
    for name in ("l2", "random", "class-prior"):
        pair = rows[name]["remove"]["against_esvm"]
        assert pair["targets"] == 2 and pair["fewer"] + pair["ties"] + pair["more"] == 2
    assert read_json(tmp_path / "bench.json")["targets"] == summary["targets"]
    journal = len(read_jsonl(tmp_path / "remove.models.jsonl"))
    stamp = (tmp_path / "rankings" / "esvm.npz").stat().st_mtime_ns
    logs.clear()
    again = run_bench(data, "tiny", tmp_path, methods=methods, stages=["remove", "lds"],
                      threads=1, log=logs.append, allow_dirty=True)  # fmt: skip
    assert again["methods"] == rows
    assert again["command"].startswith("python -c 'from simattr.bench import run_bench; ")
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", again["commit"])
    assert len(read_jsonl(tmp_path / "remove.models.jsonl")) == journal
    assert (tmp_path / "rankings" / "esvm.npz").stat().st_mtime_ns == stamp
    assert not any(msg.startswith("rankings") for msg in logs)
    # a cached ranking made from other weights than its backbone now names is refused
    from simattr.attribution import save_ranking
    from simattr.errors import InvalidInputError
    from simattr.models import load_backbone

    esvm = load_ranking(tmp_path / "rankings" / "esvm.npz")
    assert esvm.metadata["backbone"] == "default"
    assert esvm.metadata["backbone_sha256_16"] == load_backbone("default").extra["sha256_16"]
    esvm.metadata["backbone_sha256_16"] = "0123456789abcdef"
    save_ranking(tmp_path / "rankings" / "esvm.npz", esvm)
    with pytest.raises(InvalidInputError, match="delete it to recompute"):
        run_bench(data, "tiny", tmp_path, methods=methods, stages=[], threads=1, log=logs.append,
                  allow_dirty=True)  # fmt: skip

    # a noise ceiling of 0 (two seeds whose margins agree on nothing beyond the class prior, as
    # tiny models on another CPU gave) has no share: n/a and why, not a ZeroDivisionError
    import simattr.evaluation.lds as lds_module
    from simattr.bench import PROFILES, write_bench_report

    real = lds_module.noise_ceiling

    def zero_beyond_prior(lds, control=None):
        result = real(lds, control)
        if control is not None:
            result.per_target = np.zeros_like(result.per_target)
        return result

    monkeypatch.setattr(lds_module, "noise_ceiling", zero_beyond_prior)
    rankings = {name: load_ranking(tmp_path / "rankings" / f"{name}.npz") for name in methods}
    targets = rankings["esvm"].targets
    report = write_bench_report(tmp_path, PROFILES["tiny"], rankings, targets, data=data)
    assert report["lds_controls"]["noise_ceiling_beyond_class_prior"]["mean"] == 0.0
    cell = report["methods"]["esvm"]["lds"]
    assert cell["beyond_class_prior_of_ceiling"] is None
    assert cell["beyond_class_prior_of_ceiling_note"] == "ceiling is 0"
    row = next(r for r in report["table"].splitlines() if r.startswith("| esvm |"))
    assert "n/a (ceiling is 0)" in row
    assert report["commit"] == "unknown" and again["commit"] in report["earlier_commits"]


def test_bench_refuses_unknown_names(tmp_path):
    from simattr.bench import run_bench
    from simattr.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="profile"):
        run_bench("cifar10", "huge", tmp_path)
    with pytest.raises(InvalidInputError, match="method"):
        run_bench("cifar10", "tiny", tmp_path, methods=["magic"])
    with pytest.raises(InvalidInputError, match="stage"):
        run_bench("cifar10", "tiny", tmp_path, stages=["dance"])
    assert not any(tmp_path.iterdir())
