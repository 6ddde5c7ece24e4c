"""The arithmetic of ``benchmarks/mutation.py``: its sample and its score estimate are claims a
reader takes at face value, so they are checked here on hand-built verdicts."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "mutation.py"


@pytest.fixture(scope="module")
def mutation():
    if not SCRIPT.exists():
        pytest.skip("benchmarks/ is not part of this checkout")
    spec = importlib.util.spec_from_file_location("mutation_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    saved = list(sys.path)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved  # the script puts benchmarks/ on the path for its helpers
    return module


def _names(module: str, n: int) -> list[str]:
    return [f"simattr.{module}.x_f__mutmut_{i}" for i in range(1, n + 1)]


def test_the_sample_is_stratified_and_repeatable(mutation):
    names = _names("_io", 100) + _names("evaluation.lds", 7)
    a = mutation.draw_sample(names, 10, seed=0)
    assert sum(n.startswith("simattr._io.") for n in a) == 10
    assert sorted(n for n in a if ".lds." in n) == sorted(_names("evaluation.lds", 7))
    assert a == mutation.draw_sample(list(reversed(names)), 10, seed=0)  # order-free
    assert a != mutation.draw_sample(names, 10, seed=1)


def test_the_score_is_the_size_weighted_mean_with_its_interval(mutation):
    """Module A: 100 mutants, 10 judged, 8 caught; module B: 300 mutants, 10 judged, 5 caught
    (and one sampled mutant without a verdict, left out)."""
    a, b = _names("_io", 100), _names("validation", 300)
    verdicts = {n: "not_checked" for n in a + b}
    for i, n in enumerate(a[:10]):
        verdicts[n] = "killed" if i < 7 else ("timed_out" if i == 7 else "survived")
    for i, n in enumerate(b[:10]):
        verdicts[n] = "killed" if i < 5 else ("survived" if i < 9 else "no_tests")
    est = mutation.stratified_score(verdicts, a[:10] + b[:11])
    expected = 0.25 * 0.8 + 0.75 * 0.5
    var = 0.25**2 * 0.8 * 0.2 / 10 * (90 / 99) + 0.75**2 * 0.25 / 10 * (290 / 299)
    assert est["score"] == pytest.approx(expected, abs=1e-4)
    assert est["ci95"] == pytest.approx(
        [expected - 1.96 * math.sqrt(var), expected + 1.96 * math.sqrt(var)], abs=1e-4
    )
    assert est["per_module"]["simattr.validation"] == {
        "mutants": 300,
        "sampled": 10,
        "caught": 5,
        "score": 0.5,
    }


def test_each_core_module_has_its_own_tests(mutation):
    esvm = mutation.scope_of("simattr.attribution.esvm.x_fit_newton")
    assert esvm[0] == "attribution/test_esvm.py"
    assert "attribution/test_esvm_batched.py" in mutation.scope_of(
        "simattr.attribution.esvm_batched.x_fit"
    )
    assert "attribution/test_scorers.py" in mutation.scope_of("simattr.attribution.scorers.x_f")
    # every scoped file exists, so no mutant is judged by a file that has moved away
    tests = SCRIPT.parents[1] / "tests"
    for files in mutation.MODULE_TESTS.values():
        assert all((tests / f).is_file() for f in files), files
    with pytest.raises(KeyError, match="add its module to MODULE_TESTS"):
        mutation.scope_of("simattr.report.html.x_page")
