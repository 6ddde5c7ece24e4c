"""Report writers fed degenerate inputs: files written, strict JSON, "n/a" with a reason.

A seeded generator (no hypothesis: the cases are drawn from ``numpy.random.default_rng`` with
fixed seeds, so a failure names its seed and reruns identically) builds bench folders, margin
results, support results and rankings at the edges a stopped or tiny run reaches: no method,
one target, no searched target, every search not found, a noise ceiling of 0, NaN or below 0,
NaN and constant columns. Each writer must write its files, its JSON must parse as strict JSON
(no NaN tokens), and every value it cannot give must read "n/a (reason)".
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from simattr._io import append_jsonl
from simattr.ranking import Ranking
from simattr.report.bench import bench_table, write_bench_report

SEEDS = range(12)
PROFILE = {
    "name": "fuzz",
    "recipe": "tiny",
    "targets": 2,
    "models": 1,
    "budget": 1,
    "k": 4,
    "lds_subsets": 4,
    "lds_targets": 3,
}


def _strict_json(path: Path) -> Any:
    """Parse as strict JSON: NaN, Infinity and -Infinity are refused."""

    def refuse(token: str) -> None:
        raise AssertionError(f"{path} holds {token}, which strict JSON has no place for")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def _ranking(rng: np.random.Generator, targets: np.ndarray, k: int, nan: bool) -> Ranking:
    n = len(targets)
    indices = np.array([rng.permutation(50)[:k] for _ in range(n)], dtype=np.int64)
    indices = indices.reshape(n, k)
    scores = np.sort(rng.normal(size=(n, k)), axis=1)[:, ::-1].copy()
    if nan:
        scores[:] = np.nan
    seconds = float("nan") if nan else float(rng.uniform(0, 5))
    return Ranking(targets, indices.astype(np.int64), scores, {"seconds": seconds})


def _support_case(seed: int, folder: Path) -> dict[str, Any]:
    """A bench folder with a ``remove.jsonl`` drawn at the edges; what the table must say."""
    rng = np.random.default_rng([seed, 24])
    names = [n for n in ("esvm", "l2", "random") if rng.random() < 0.6]
    if seed % 6 == 5:
        names = []  # no method given
    n_targets = int(rng.choice([0, 1, 2, 5]))
    targets = np.arange(n_targets, dtype=np.int64) * 7
    k = PROFILE["k"]
    rankings = {name: _ranking(rng, targets, k, nan=rng.random() < 0.3) for name in names}
    unsearched = set()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "remove.jsonl"
    for name in names:
        searched = 0
        for t in targets.tolist():
            status = "searched" if rng.random() < 0.7 else "misclassified"
            support = rng.choice([None, 0, 1, k]) if status == "searched" else None
            searched += status == "searched"
            append_jsonl(path, {
                "target": t, "ranking": name, "mode": "remove", "status": status,
                "support": None if support is None else int(support), "settings": {"k": k},
                "models_trained": int(rng.integers(0, 4)), "seconds": float(rng.uniform(0, 9)),
            })  # fmt: skip
        if targets.size and not searched:
            unsearched.add(name)
    return {"names": names, "targets": targets, "rankings": rankings, "unsearched": unsearched}


@pytest.mark.parametrize("seed", SEEDS)
def test_bench_report_writes_its_files_whatever_the_support_records(seed, tmp_path):
    case = _support_case(seed, tmp_path)
    record = {"commit": "unknown", "command": f"fuzz seed {seed}"}
    summary = write_bench_report(
        tmp_path, PROFILE, case["rankings"], case["targets"], record=record
    )
    table = (tmp_path / "bench_table.md").read_text(encoding="utf-8")
    saved = _strict_json(tmp_path / "bench.json")
    assert saved["commit"] == "unknown" and saved["command"] == f"fuzz seed {seed}"
    assert saved["table"] == table == summary["table"]
    assert list(saved["methods"]) == case["names"]
    assert "nan" not in table.lower().replace("n/a", "")
    if not case["names"]:
        assert "n/a (no method given)" in table
    for name in case["names"]:
        row = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
        if name in case["unsearched"]:
            assert "n/a (no target searched)" in row
        if math.isnan(case["rankings"][name].metadata["seconds"]):
            assert "n/a (not a number)" in row
    if case["names"] and case["targets"].size:
        remove_table = (tmp_path / "remove_table.md").read_text(encoding="utf-8")
        assert (tmp_path / "remove_curve.png").stat().st_size > 0
        for name in case["unsearched"]:
            assert f"| {name} | remove | 0 | 0 | n/a (no target searched) |" in remove_table


def _lds_rows(rng: np.random.Generator) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """Rows and controls as :func:`write_bench_report` builds them, values at the edges."""
    pick = [0.0, float("nan"), -0.05, 0.21, float("inf")]
    ceiling = float(rng.choice(pick))
    ceilings = {
        "noise_ceiling": {"mean": float(rng.choice(pick)), "standard_error": float("nan")},
        "noise_ceiling_subsets": int(rng.integers(0, 4)),
        "noise_ceiling_beyond_class_prior": {"mean": ceiling, "standard_error": 0.01},
    }
    from simattr.report.bench import _share

    rows: dict[str, Any] = {}
    expected = []
    for name in ("esvm", "class-prior"):
        beyond = float(rng.choice(pick))
        share, why = _share(beyond, ceiling)
        lds = {
            "mean": float(rng.choice(pick)),
            "standard_error": float(rng.choice([float("nan"), 0.01])),
            "centred_mean": float(rng.choice(pick)),
            "centred_standard_error": float("nan"),
            "beyond_class_prior": {"mean": beyond, "standard_error": float("nan")},
            "beyond_class_prior_of_ceiling": share,
        }
        if why is not None:
            lds["beyond_class_prior_of_ceiling_note"] = why
            expected.append(f"n/a ({why})")
        rows[name] = {"attribution_seconds": 1.0, "lds": lds}
    return rows, ceilings, expected


@pytest.mark.parametrize("seed", SEEDS)
def test_bench_table_says_why_an_lds_share_has_no_value(seed):
    rows, ceilings, expected = _lds_rows(np.random.default_rng([seed, 541]))
    table = bench_table(PROFILE, rows, ceilings)
    for text in expected:
        assert text in table
    assert "nan" not in table.lower().replace("n/a", "")
    assert "inf" not in table.lower()


def test_the_share_of_a_zero_nan_or_negative_ceiling_is_refused_with_its_reason():
    from simattr.report.bench import _share

    assert _share(0.1, 0.0) == (None, "ceiling is 0")
    assert _share(0.1, float("nan")) == (None, "ceiling is not a number")
    assert _share(0.1, -0.05) == (None, "ceiling is below 0 (-0.050)")
    assert _share(float("nan"), 0.2) == (None, "LDS is not a number")
    share, why = _share(0.1, 0.2)
    assert why is None and share == pytest.approx(0.5)


# -- margins ------------------------------------------------------------------------------------


def _margin_case(seed: int, path: Path) -> dict[str, Any]:
    rng = np.random.default_rng([seed, 77])
    n_targets = int(rng.choice([1, 2, 6]))
    targets = list(range(n_targets))
    rankings = ["random", *[n for n in ("esvm", "l2") if rng.random() < 0.5]]
    constant = rng.random() < 0.3  # every margin change equal: no test is defined
    for s in range(int(rng.choice([1, 2]))):
        base = rng.normal(size=n_targets)
        append_jsonl(path, {"kind": "baseline", "seed": s, "targets": targets,
                            "margins": base.tolist()})  # fmt: skip
        for name in rankings:
            for fraction, m in ((0.1, 10), (0.2, 20)):
                change = np.full(n_targets, -0.5) if constant else rng.normal(size=n_targets)
                append_jsonl(path, {
                    "kind": "removal", "ranking": name, "fraction": fraction, "m": m, "seed": s,
                    "targets": targets, "margins": (base + change).tolist(),
                })  # fmt: skip
    return {"targets": n_targets, "rankings": rankings, "constant": constant}


@pytest.mark.parametrize("seed", SEEDS)
def test_margin_report_writes_its_files_whatever_the_results(seed, tmp_path):
    from simattr.report.margins import margin_report

    case = _margin_case(seed, tmp_path / "margins.jsonl")
    pairs = [("esvm", "random")] if "esvm" in case["rankings"] else []
    record = {"commit": "unknown", "command": "fuzz"}
    png, md, js = margin_report(
        [tmp_path / "margins.jsonl"], tmp_path / "rep", pairs=pairs, record=record
    )
    assert png.stat().st_size > 0
    saved = _strict_json(js)
    assert saved["commit"] == "unknown" and saved["command"] == "fuzz"
    table = md.read_text(encoding="utf-8")
    assert "nan" not in table.lower().replace("n/a", "")
    if case["targets"] == 1:
        assert "n/a (interval needs 2 values, has 1)" in table
    if (case["targets"] == 1 or case["constant"]) and len(case["rankings"]) > 1:
        assert "n/a (no test: too few or tied values)" in table


# -- support ------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_support_report_writes_its_files_whatever_the_records(seed, tmp_path):
    from simattr.report.support import support_report

    case = _support_case(seed, tmp_path / "run")
    if not case["names"] or not case["targets"].size:
        pytest.skip("no records drawn: support_report refuses an empty results file by name")
    reference = "esvm" if "esvm" in case["names"] else None
    png, md = support_report([tmp_path / "run" / "remove.jsonl"], tmp_path / "rep", reference)
    assert png.stat().st_size > 0
    table = md.read_text(encoding="utf-8")
    for name in case["names"]:
        row = next(line for line in table.splitlines() if line.startswith(f"| {name} | remove"))
        if name in case["unsearched"]:
            assert "n/a (no target searched)" in row
        else:
            assert "n/a" not in row


def test_support_markdown_table_of_nothing_says_so():
    from simattr.report.support import markdown_table

    assert "n/a (no support records)" in markdown_table([])


# -- the ranking table --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_ranking_table_writes_and_parses_whatever_the_ranking(seed, suffix, tmp_path):
    from simattr.report.table import TABLE_COLUMNS, write_ranking_table

    rng = np.random.default_rng([seed, 3])
    n, k = int(rng.choice([0, 1, 3])), int(rng.choice([0, 1, 4]))
    indices = rng.integers(0, 30, size=(n, k))
    indices[rng.random((n, k)) < 0.4] = -1  # unranked slots (a class pool smaller than k)
    scores = rng.normal(size=(n, k))
    if rng.random() < 0.5:
        scores[:] = np.nan  # an all-NaN column
    ranking = Ranking(np.arange(n, dtype=np.int64), indices, scores)
    labels = rng.integers(0, 3, size=30)
    path = write_ranking_table(
        tmp_path / f"t{suffix}", ranking, train_labels=labels, test_labels=labels,
        class_names=["a", "b", "c"],
    )  # fmt: skip
    ranked = int((indices >= 0).sum())
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        assert tuple(rows[0]) == TABLE_COLUMNS and len(rows) == 1 + ranked
        got = [float(r[-1]) for r in rows[1:]]
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        assert tuple(table.column_names) == TABLE_COLUMNS and table.num_rows == ranked
        got = table.column("score").to_pylist()
    np.testing.assert_array_equal(np.array(got, dtype=float), scores[indices >= 0])
