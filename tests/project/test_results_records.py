"""Every committed result can be reproduced from its own record: ``commit`` and ``command``.

The scan covers every JSON under ``benchmarks/results/`` except the sidecars of arrays and
weights (``*.npy.json``, ``*.npz.json``, ``*.safetensors.json``) and the identity manifests
of array folders (``manifest.json``, checked by the store). Results made from now on name a
clean commit and a relative command; those made before either was recorded say "unknown" with
a ``record_note`` saying what is known, and those made from a dirty tree before dirty trees
were refused are listed below by name and recorded commit, so no new one can join them. Then
the recording itself, on a scratch git checkout: a dirty tree refused unless asked, outputs
under ``benchmarks/results`` not counted.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from simattr.bench.record import UNKNOWN, cli_command, relative_command, source_commit
from simattr.errors import InvalidInputError

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
#: Sidecars of arrays and weights: they describe a file, the result that made it records the run.
SIDECARS = (".npy.json", ".npz.json", ".safetensors.json", ".pt.json")
#: Results made from a tree with uncommitted changes, before such trees were refused.
DIRTY_BEFORE_REFUSAL = {
    "data_load.json": "3b5436f4056a0cb709c212bbc12589d93490ae7e+dirty",
    "esvm_batched_all_test.json": "9b9dd1f252818ba8d5ef9ddb28b75f5a84454268+dirty",
    "esvm_speed.json": "a3910ffd41ea51c98d81adb822f674e604ce0e28+dirty",
    "imagenet_sim.json": "94047ac6e0640ccd2a16bd0a0bb78c31bcad202b+dirty",
    "lda_agreement.json": "ce30c7dc109e5ff70c15f0f5df61d59ac3fd0af9+dirty",
    "learned-cpu/learned-cpu.json": "b453304298c0351662273200a93fe2d3d45a68a4+dirty",
    "margins-cpu-b/summary.json": "971a76339124f0aaeb2d252bd69324b2f3b8eedc+dirty",
    "margins-cpu-combined/summary.json": "971a76339124f0aaeb2d252bd69324b2f3b8eedc+dirty",
    "margins-cpu/summary.json": "971a76339124f0aaeb2d252bd69324b2f3b8eedc+dirty",
    "retrieval_agreement.json": "5ece8011eed8582ba4d435cf50878b095ee91384+dirty",
    "score_scale.json": "c487b144f0ba3ad79ff58b1b53a7bbd7e364bd43+dirty",
    "support_cpu.json": "972ffb1c9b42eee3cf2ab709e23736fde5857951+dirty",
    "train_speed.json": "47ed326a0c3232853ec0e162e64bcf6bcef67ffe+dirty",
}


def _result_files() -> list[Path]:
    """The committed result JSONs (git's list: a run under way is not a committed result)."""
    if not RESULTS.is_dir():
        return []
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--", "."], cwd=RESULTS, capture_output=True, text=True
    )
    if listed.returncode == 0:
        files = [RESULTS / name for name in listed.stdout.split("\0") if name]
    else:  # not a git checkout (an unpacked archive): every file there
        files = list(RESULTS.rglob("*"))
    return sorted(
        p
        for p in files
        if p.suffix == ".json" and not p.name.endswith(SIDECARS) and p.name != "manifest.json"
    )


def test_the_scan_finds_the_committed_results():
    if not RESULTS.is_dir():
        pytest.skip("benchmarks/results is not part of this checkout")
    names = {p.relative_to(RESULTS).as_posix() for p in _result_files()}
    assert {"bench-cpu/bench.json", "support_cpu.json", "data_load.json"} <= names
    assert set(DIRTY_BEFORE_REFUSAL) <= names


@pytest.mark.parametrize("path", _result_files(), ids=lambda p: p.relative_to(RESULTS).as_posix())
def test_every_result_records_its_commit_and_command(path):
    name = path.relative_to(RESULTS).as_posix()
    record = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(record, dict), f"{name}: a result is a JSON object"
    assert "git_commit" not in record, f"{name}: the key is 'commit'"
    commit, command = record.get("commit"), record.get("command")
    assert isinstance(commit, str) and isinstance(command, str) and command, (
        f"{name}: needs 'commit' and 'command' (\"unknown\" with a 'record_note' for old ones)"
    )
    if commit == UNKNOWN or command == UNKNOWN:
        assert len(record.get("record_note", "")) > 40, f"{name}: say what is known"
    if name in DIRTY_BEFORE_REFUSAL:
        assert commit == DIRTY_BEFORE_REFUSAL[name], f"{name}: a new result names a clean commit"
        return
    assert commit == UNKNOWN or re.fullmatch(r"[0-9a-f]{40}", commit), (
        f"{name}: commit {commit!r} is not a clean commit (run from a committed tree)"
    )
    assert not command.split()[0].startswith("/"), f"{name}: {command!r} is not relative"


# -- the recording --------------------------------------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "benchmarks" / "results").mkdir(parents=True)
    (repo / "code.py").write_text("x = 1\n")
    (repo / "benchmarks" / "results" / "r.json").write_text("{}\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    return repo


def test_a_clean_checkout_records_its_commit(checkout):
    head = _git(checkout, "rev-parse", "HEAD")
    assert source_commit(checkout / "code.py") == head
    (checkout / "untracked.txt").write_text("new\n")  # untracked files do not count
    (checkout / "benchmarks" / "results" / "r.json").write_text('{"a": 1}\n')  # nor outputs
    assert source_commit(checkout / "code.py") == head


def test_a_dirty_checkout_is_refused_unless_asked(checkout):
    head = _git(checkout, "rev-parse", "HEAD")
    (checkout / "code.py").write_text("x = 2\n")
    with pytest.raises(InvalidInputError, match=r"code\.py.*pass `allow_dirty=True`"):
        source_commit(checkout / "code.py")  # the API's words; `simattr bench` shows the flag
    with pytest.raises(InvalidInputError, match=r"code\.py.*pass --allow-dirty"):
        source_commit(checkout / "code.py", flag="--allow-dirty")  # a benchmark script's words
    assert source_commit(checkout / "code.py", allow_dirty=True) == head + "+dirty"


def test_code_outside_a_checkout_records_unknown(tmp_path, checkout):
    (tmp_path / "loose.py").write_text("")
    assert source_commit(tmp_path / "loose.py") == UNKNOWN
    (checkout / "ignored.py").write_text("")  # inside the checkout but not tracked (a venv)
    assert source_commit(checkout / "ignored.py") == UNKNOWN


def test_commands_are_recorded_with_relative_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = relative_command(
        [sys.executable, str(tmp_path / "b" / "x.py"), f"--out={tmp_path}/o.json", "/etc/hosts"],
        program="python",
    )
    assert line == "python b/x.py --out=o.json /etc/hosts"
    argv = ["/venv/bin/simattr", "bench", "--out", str(tmp_path / "r"), "--methods", "a b"]
    assert cli_command("bench", argv) == "simattr bench --out r --methods 'a b'"
    assert "arguments unknown" in cli_command("bench", ["pytest", "-q"])


def test_benchmark_scripts_record_through_common(tmp_path, checkout):
    """``benchmarks/_common.py``: ``--allow-dirty`` is an option of every script, and a result
    carries the command and commit fixed at the start."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import _common
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int)
    args = _common.parse_args(parser, ["--n", "3", "--allow-dirty"])
    assert args.n == 3 and args.allow_dirty
    record = _common.current_record()
    assert record["command"].endswith("--n 3 --allow-dirty")
    assert record["command"].startswith("python ")
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?|unknown", record["commit"])
    scripts = [
        p for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_")
    ]  # every script parses its options through _common
    for script in scripts:
        text = script.read_text(encoding="utf-8")
        if "write_result" in text or "git_commit" in text:
            assert re.search(r"parse_(recorded|args)\((ap|parser)\b", text), (
                f"{script.name} does not parse its options through _common (--allow-dirty)"
            )
