"""The command line answers before it imports anything heavy.

``simattr --help``, ``--version``, every ``COMMAND --help``, usage errors and missing input files
must not import torch, torchvision, scikit-learn, FAISS, SciPy, Ray or traker: those cost seconds
on a small machine, and a mistyped option should not. Each case runs in a fresh interpreter,
because in this process the other tests have imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "torchvision", "sklearn", "faiss", "scipy", "ray", "trak")

#: Runs the CLI in-process on each argument list and prints, per list, its exit code and the heavy
#: modules that were imported after it, as one JSON line.
_PROBE = """
import json, sys
from simattr.cli import app
heavy = {heavy!r}
for args in json.loads(sys.argv[1]):
    try:
        app(args, prog_name="simattr", standalone_mode=True)
        code = 0
    except SystemExit as exc:
        code = exc.code
    print(json.dumps([args, code, [m for m in heavy if m in sys.modules]]), flush=True)
"""


def _probe(cases: list[list[str]], cwd: Path) -> list[tuple[list[str], int, list[str]]]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=HEAVY), json.dumps(cases)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("[")]
    assert len(lines) == len(cases), done.stdout + done.stderr
    return [tuple(json.loads(ln)) for ln in lines]  # type: ignore[misc]


def _commands() -> list[str]:
    from typer.main import get_command

    from simattr.cli import app

    return sorted(get_command(app).commands)  # type: ignore[attr-defined]


def test_help_version_and_every_command_help_import_nothing_heavy(tmp_path: Path) -> None:
    commands = _commands()
    assert {"features", "attribute", "explain", "audit", "support", "lds"} <= set(commands)
    cases = [["--help"], ["--version"]] + [[c, "--help"] for c in commands]
    for args, code, heavy in _probe(cases, tmp_path):
        assert code == 0, args
        assert heavy == [], f"simattr {' '.join(args)} imported {heavy}"


def test_usage_errors_and_missing_files_import_nothing_heavy(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.npy")
    cases = [
        ["attribute", "--bogus"],  # an unknown option
        ["attribute", "--method", "nope", "--train-features", missing],  # a bad choice
        ["attribute", "--train-features", missing, "--test-features", missing, "--out", "r.npz"],
        ["explain", "gone.png", "--data", str(tmp_path), "--train-features", missing],
        ["audit", "--data", str(tmp_path), "--features", missing, "--out", "audit"],
        ["features", "--data", str(tmp_path / "no-root"), "--out", "f.npy"],
        ["features", "--data", "digits", "--out", "f.txt"],  # a wrong suffix
        ["support-report", missing, "--out", "report"],
        ["margins-report", missing, "--out", "report", "--reference", "random"],
    ]
    for args, code, heavy in _probe(cases, tmp_path):
        assert code in (1, 2), args  # 2: usage error (click), 1: refused by simattr
        assert heavy == [], f"simattr {' '.join(args)} imported {heavy}"
    assert not any(tmp_path.glob("*.np*")), "a refused command left an output behind"


@pytest.mark.slow
def test_import_simattr_is_lazy_and_public_names_still_resolve() -> None:
    code = (
        "import sys, simattr; "
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]; "
        "print(heavy); "
        "from simattr import Attributor, load_dataset, ImageDataset, SimattrError; "
        "print(Attributor.__name__, load_dataset.__module__, 'torch' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    first, second = done.stdout.splitlines()
    assert first == "[]"
    assert second.split()[0] == "Attributor" and second.split()[2] == "True"


def test_cli_choices_match_the_registries() -> None:
    """The CLI spells the registries' names to avoid importing them; they must not drift."""
    from simattr.attribution.retrieval import INDEX_KINDS, RETRIEVALS
    from simattr.attribution.scorers import SCORERS, ExemplarSVMScorer
    from simattr.audit.core import LABEL_DETECTORS
    from simattr.cli import _choices
    from simattr.evaluation.support import MODES
    from simattr.ssl.methods import METHODS
    from simattr.training.executors import EXECUTORS

    assert tuple(SCORERS) == _choices.METHODS
    assert tuple(ExemplarSVMScorer.solvers) == _choices.SOLVERS
    assert tuple(RETRIEVALS) == _choices.RETRIEVALS
    assert tuple(INDEX_KINDS) == _choices.INDEX_KINDS
    assert tuple(MODES) == _choices.MODES
    assert tuple(EXECUTORS) == _choices.EXECUTORS
    assert tuple(METHODS) == _choices.SSL_METHODS
    assert tuple(LABEL_DETECTORS) == _choices.LABEL_DETECTORS


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_the_installed_script_answers(flag: str) -> None:
    script = Path(sys.executable).with_name("simattr")
    if not script.exists():
        pytest.skip("the simattr script is not installed beside this interpreter")
    done = subprocess.run([script, flag], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0
    assert (
        ("Usage: simattr" in done.stdout)
        if flag == "--help"
        else done.stdout.startswith("simattr ")
    )
