"""kill -9 at a seeded moment, then resume: the result equals an uninterrupted run's.

One trial per resumable command (``attribute``, ``support``, ``lds``, ``train-ssl``) through the
harness of ``benchmarks/kill_resume.py``, which runs ten per command and commits its results.
Each trial kills the real command (a subprocess) at a moment of its work drawn from its seed,
runs it again, and compares outputs exactly; no temporary or lock file may remain, and the support
search may not train again a model it had journaled.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

#: Each trial runs its command twice or three times as a subprocess (4.5 minutes in all here).
pytestmark = pytest.mark.slow

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _harness():
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("kill_resume", BENCHMARKS / "kill_resume.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["kill_resume"] = module  # dataclasses look their module up while defining
    spec.loader.exec_module(module)
    return module


kr = _harness()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, data_root):
    work = tmp_path_factory.mktemp("kill-resume")
    data = str(data_root / "cifar10")
    kr.prepare_inputs(work / "inputs", data, ["attribute", "support"])
    return work, kr.scenarios(work / "inputs", data)


@pytest.mark.parametrize("command, seed", [("attribute", 1), ("support", 2), ("lds", 3),
                                           ("train-ssl", 4)])  # fmt: skip
def test_kill_9_then_resume_equals_an_uninterrupted_run(setup, command, seed):
    work, scenarios = setup
    result = kr.run_command(scenarios[command], work, [seed], log=lambda line: None)
    (trial,) = result["trials"]
    assert trial["killed"]  # the moment is drawn inside the run's work: it was cut short
    assert trial["equal"], trial["problems"]
    assert result["equal"] == 1


def test_the_harness_sees_a_difference(setup, tmp_path):
    """The comparisons are not vacuous: one changed weight, ranking score or margin is reported,
    and so is a temporary file left behind."""
    from safetensors.numpy import load_file, save_file

    work, scenarios = setup
    for command, relative in [("train-ssl", "run/backbone.safetensors"),
                              ("attribute", "ranking.npz"), ("lds", "lds/margins")]:  # fmt: skip
        ref = work / command / "reference"
        if not ref.exists():
            kr.run_to_end(scenarios[command], ref)
        copy = tmp_path / command
        shutil.copytree(ref, copy)
        target = copy / relative
        if command == "train-ssl":
            tensors = load_file(target)
            name = sorted(tensors)[0]
            tensors[name].flat[0] += 1e-3
            save_file(tensors, target)
        elif command == "attribute":
            arrays = dict(np.load(target))
            arrays["scores"].flat[0] += 1e-3
            np.savez(target, **arrays)
        else:
            margins = sorted(target.glob("*.npy"))[0]
            values = np.load(margins)
            values[0] += 1e-3
            np.save(margins, values)
        problems = scenarios[command].compare(ref, copy)
        assert len(problems) == 1 and "values differ" in problems[0], (command, problems)
    (tmp_path / "lds" / "x.tmp.npy").write_text("")
    assert kr._leftovers(tmp_path / "lds") == ["left behind: x.tmp.npy"]
