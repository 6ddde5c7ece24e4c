"""kill -9 at seeded random moments, then resume: is the result the uninterrupted one?

Four resumable commands, each in a small configuration that takes seconds to a minute here:

* ``attribute``: the ESVM over raw digits pixels, every test image, 8 targets per saved block;
* ``support``: the removal-support search on CIFAR-10 with the ``tiny`` recipe (two targets of a
  raw-pixel cosine ranking, M = 2, B = 2, k = 24; the full-data ensemble is trained once, first);
* ``lds``: six subset models of the ``tiny`` recipe on CIFAR-10, eight targets;
* ``train-ssl``: MoCo on digits, a 1/4-width ResNet-18, three epochs, a checkpoint each epoch.

For every command the uninterrupted run is made first and timed, from the moment it takes its
output lock (its work begins; the interpreter's start-up before it varies from run to run) to
its end. A trial then starts the same command in a fresh folder, sends SIGKILL at a moment of its
work drawn from the trial's seed (uniform over 0-95 % of the uninterrupted run's work), runs the
command again to completion and compares what it produced with the uninterrupted run. A trial
passes when the outputs are equal (arrays and records exactly; see ``compare`` of each
scenario), no temporary or lock file is left beside them, and nothing finished before the kill
was computed again where the command keeps a journal (``support``).

    python benchmarks/kill_resume.py [--trials 10] [--commands attribute,support,lds,train-ssl]

writes ``benchmarks/results/kill_resume.json``. The test suite runs one trial per command through
the same code (``tests/faults/test_kill_resume.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: Names that must not survive a finished run beside its outputs: temporary files of atomic
#: writes (``.name.XXXX.tmp.npy``), locks, unmerged ranking blocks.
LEFTOVER = re.compile(r"\.tmp(\.|$)|\.lock$|\.parts$")


@dataclass(frozen=True)
class Scenario:
    """One resumable command: how to run it into a folder and how to compare two results.

    ``args(folder)`` is the command line (after ``python -m simattr``) whose outputs go under
    ``folder``; ``output`` is the output it locks (relative to ``folder``): its lock file
    appearing marks the start of the work; ``compare(reference, trial)`` returns the
    differences found (empty when equal); ``redone(folder)`` counts work done twice (``None``
    where the command keeps no journal).
    """

    name: str
    output: str
    args: Callable[[Path], list[str]]
    compare: Callable[[Path, Path], list[str]]
    redone: Callable[[Path], int | None] = lambda folder: None


def _simattr(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "simattr", *map(str, args)]


def _arrays_differ(name: str, a: np.ndarray, b: np.ndarray) -> list[str]:
    if a.shape != b.shape or a.dtype != b.dtype:
        return [f"{name}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"]
    if not np.array_equal(a, b, equal_nan=a.dtype.kind == "f"):
        diff = np.abs(a.astype(np.float64) - b.astype(np.float64)).max()
        return [f"{name}: values differ (max |difference| {diff:.3g})"]
    return []


def _leftovers(folder: Path) -> list[str]:
    return [
        f"left behind: {p.relative_to(folder)}"
        for p in folder.rglob("*")
        if LEFTOVER.search(p.name)
    ]


# -- the four commands -----------------------------------------------------------------------


def attribute_scenario(inputs: Path) -> Scenario:
    """ESVM ranking of every digits test image over raw pixels, in blocks of 8 targets."""

    def args(folder: Path) -> list[str]:
        return [
            "attribute", "--data", "digits",
            "--train-features", inputs / "digits-train.npy",
            "--test-features", inputs / "digits-test.npy",
            "--topk", "20", "--block-size", "8", "--out", folder / "ranking.npz",
        ]  # fmt: skip

    def compare(ref: Path, trial: Path) -> list[str]:
        a, b = np.load(ref / "ranking.npz"), np.load(trial / "ranking.npz")
        found = [] if set(a.files) == set(b.files) else [f"arrays {a.files} vs {b.files}"]
        for key in sorted(set(a.files) & set(b.files)):
            found += _arrays_differ(key, a[key], b[key])
        return found

    return Scenario("attribute", "ranking.npz", args, compare)


def support_scenario(inputs: Path, data: str) -> Scenario:
    """Removal support of two CIFAR-10 targets on the tiny recipe (the ensemble given)."""

    def args(folder: Path) -> list[str]:
        return [
            "support", "--data", data, "--ranking", f"pixels={inputs / 'pixels.npz'}",
            "--out", folder / "results.jsonl", "--recipe", "tiny", "--models", "2",
            "--budget", "2", "--max-m", "24", "--ensemble", "2",
            "--ensemble-dir", inputs / "ensemble", "--threads", "1",
        ]  # fmt: skip

    def essence(folder: Path) -> list[Any]:
        from simattr._io import read_jsonl

        return sorted(
            (
                r["target"],
                r["ranking"],
                r["status"],
                r["support"],
                [(s["m"], s["models"], s["misclassified_by"]) for s in r["steps"]],
            )
            for r in read_jsonl(folder / "results.jsonl")
        )

    def compare(ref: Path, trial: Path) -> list[str]:
        a, b = essence(ref), essence(trial)
        return [] if a == b else [f"records differ: {a} vs {b}"]

    def redone(folder: Path) -> int:
        from simattr._io import read_jsonl
        from simattr.evaluation.support import journal_path

        records = read_jsonl(folder / "results.jsonl")
        journal = read_jsonl(journal_path(folder / "results.jsonl"))
        return len(journal) - sum(r["models_trained"] for r in records)

    return Scenario("support", "results.jsonl", args, compare, redone)


def lds_scenario(data: str) -> Scenario:
    """Six half-pool subset models of the tiny recipe, margins of eight targets."""

    def args(folder: Path) -> list[str]:
        return [
            "lds", "--data", data, "--recipe", "tiny", "--subsets", "6",
            "--targets", "0,1,2,3,4,5,6,7", "--threads", "1", "--out", folder / "lds",
        ]  # fmt: skip

    def compare(ref: Path, trial: Path) -> list[str]:
        names = sorted(p.name for p in (ref / "lds" / "margins").glob("*.npy"))
        got = sorted(p.name for p in (trial / "lds" / "margins").glob("*.npy"))
        found = [] if names == got else [f"margin files {names} vs {got}"]
        for name in sorted(set(names) & set(got)):
            found += _arrays_differ(
                name,
                np.load(ref / "lds" / "margins" / name),
                np.load(trial / "lds" / "margins" / name),
            )
        for name in ("pool.npy", "masks.npy", "targets.npy"):
            found += _arrays_differ(
                name, np.load(ref / "lds" / name), np.load(trial / "lds" / name)
            )
        return found

    return Scenario("lds", "lds", args, compare)


def train_ssl_scenario(epochs: int = 3) -> Scenario:
    """MoCo on digits: three epochs, a checkpoint after each (``--resume`` from the start).
    Two epochs are too short a run: a kill drawn late often comes after the trial has ended."""

    def args(folder: Path) -> list[str]:
        return [
            "train-ssl", "--data", "digits", "--arch", "resnet18-w16", "--epochs", str(epochs),
            "--batch-size", "64", "--queue-size", "128", "--checkpoint-every", "1",
            "--knn-every", "100", "--resume", "--out", folder / "run",
        ]  # fmt: skip

    def compare(ref: Path, trial: Path) -> list[str]:
        from safetensors.numpy import load_file

        a = load_file(ref / "run" / "backbone.safetensors")
        b = load_file(trial / "run" / "backbone.safetensors")
        found = [] if a.keys() == b.keys() else ["tensor names differ"]
        for key in sorted(a.keys() & b.keys()):
            found += _arrays_differ(key, a[key], b[key])
        return found

    return Scenario("train-ssl", "run", args, compare)


# -- inputs and trials -----------------------------------------------------------------------


def prepare_inputs(folder: Path, data: str, commands: list[str]) -> None:
    """Digits pixel features (attribute), and a ranking plus a trained ensemble (support)."""
    from simattr.data import load_dataset
    from simattr.features import save_features

    folder.mkdir(parents=True, exist_ok=True)
    if "attribute" in commands and not (folder / "digits-test.npy").exists():
        for split in ("train", "test"):
            ds = load_dataset("digits", split)
            x = ds.pixels.reshape(len(ds), -1).astype(np.float32) / 255
            save_features(folder / f"digits-{split}.npy", x, dataset=ds)
    if "support" in commands and not (folder / "pixels.npz").exists():
        from simattr.attribution import Attributor, Ranking, save_ranking
        from simattr.evaluation import recipe_pool
        from simattr.evaluation.ensemble import train_ensemble

        train, test = load_dataset(data, "train"), load_dataset(data, "test")
        ens = train_ensemble(data, "tiny", n_models=2, cache_dir=folder / "ensemble", threads=1)
        chosen = np.flatnonzero(ens.correct)[:2]
        pool = recipe_pool("tiny", train)

        def pixels(images: np.ndarray) -> np.ndarray:
            x = images.reshape(len(images), -1).astype(np.float32)
            return x - x.mean(axis=1, keepdims=True)

        att = Attributor("cosine").fit(pixels(train.get_images(pool)), train.labels[pool])
        idx, scores = att.topk(pixels(test.get_images(chosen)), test.labels[chosen], 24)
        ranking = Ranking(targets=chosen, indices=pool[idx], scores=scores)
        save_ranking(folder / "pixels.npz", ranking)


def scenarios(inputs: Path, data: str, ssl_epochs: int = 3) -> dict[str, Scenario]:
    return {
        "attribute": attribute_scenario(inputs),
        "support": support_scenario(inputs, data),
        "lds": lds_scenario(data),
        "train-ssl": train_ssl_scenario(ssl_epochs),
    }


def _lock_of(scenario: Scenario, folder: Path) -> Path:
    return folder / f"{scenario.output}.lock"


def _start(scenario: Scenario, folder: Path) -> tuple[subprocess.Popen, float, float]:
    """Start the command; wait until it takes its output lock (its work begins) or ends.
    Returns the process, the start time and the seconds until the lock appeared."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = _lock_of(scenario, folder)
    start = time.perf_counter()
    proc = subprocess.Popen(
        _simattr(scenario.args(folder)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    while proc.poll() is None and not lock.exists():
        time.sleep(0.01)
    return proc, start, time.perf_counter() - start


def run_to_end(scenario: Scenario, folder: Path, timeout: float = 900) -> tuple[float, float]:
    """Run the command to completion in ``folder``: (wall seconds, seconds before its work)."""
    proc, start, before_work = _start(scenario, folder)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"{scenario.name} failed (exit {proc.returncode}): {err.decode()}")
    return time.perf_counter() - start, before_work


def kill_trial(
    scenario: Scenario, reference: Path, work_seconds: float, folder: Path, seed: int
) -> dict[str, Any]:
    """Start, SIGKILL at a seeded moment of its work, run again to the end, compare.

    The moment is drawn uniformly over 0-95 % of ``work_seconds`` (the uninterrupted run's time
    from taking its output lock to its end), counted from when this run takes its lock, so that
    the interpreter's start-up, which varies, does not move it. A run that ends before its kill
    (a quieter machine) is started again with half the delay, at most twice.
    """
    rng = np.random.default_rng([seed, sum(map(ord, scenario.name))])
    delay = float(rng.uniform(0.0, 0.95) * work_seconds)
    attempts = 0
    while True:
        attempts += 1
        shutil.rmtree(folder, ignore_errors=True)
        proc, _, _ = _start(scenario, folder)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed = True
            break
        killed = False
        if attempts == 3:
            break  # finished three times: resume from a finished run, still a valid trial
        delay /= 2
    files_at_kill = sum(1 for p in folder.rglob("*") if p.is_file())
    resume_seconds, _ = run_to_end(scenario, folder)
    problems = scenario.compare(reference, folder) + _leftovers(folder)
    redone = scenario.redone(folder)
    if redone:
        problems.append(f"{redone} unit(s) of finished work computed again")
    return {
        "seed": seed,
        "kill_after_work_s": round(delay, 2),
        "killed": killed,
        "attempts": attempts,
        "files_at_kill": files_at_kill,
        "resume_s": round(resume_seconds, 2),
        "redone": redone,
        "equal": not problems,
        "problems": problems,
    }


def run_command(
    scenario: Scenario,
    work: Path,
    seeds: list[int],
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The uninterrupted reference, then one kill trial per seed."""
    reference = work / scenario.name / "reference"
    shutil.rmtree(reference, ignore_errors=True)
    seconds, before_work = run_to_end(scenario, reference)
    work_seconds = seconds - before_work
    log(f"{scenario.name}: uninterrupted run {seconds:.1f} s ({work_seconds:.1f} s of work)")
    trials = []
    for seed in seeds:
        folder = work / scenario.name / f"trial-{seed}"
        trial = kill_trial(scenario, reference, work_seconds, folder, seed)
        trials.append(trial)
        verdict = "equal" if trial["equal"] else "DIFFERENT: " + "; ".join(trial["problems"])
        how = "killed" if trial["killed"] else "finished before the kill"
        log(f"{scenario.name} seed {seed}: {how} {trial['kill_after_work_s']} s into its work "
            f"-> {verdict}")  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "command": "simattr " + " ".join(map(str, scenario.args(Path("OUT")))),
        "uninterrupted_s": round(seconds, 2),
        "work_s": round(work_seconds, 2),
        "trials": trials,
        "killed": sum(t["killed"] for t in trials),
        "equal": sum(t["equal"] for t in trials),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="cifar10")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--commands", default="attribute,support,lds,train-ssl")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: temp)")
    parser.add_argument("--out", type=Path, default=None)
    from _common import parse_args as parse_recorded  # --allow-dirty; commit, command

    args = parse_recorded(parser)

    import tempfile

    from _common import write_result

    commands = args.commands.split(",")
    work = args.work or Path(tempfile.mkdtemp(prefix="kill-resume-"))
    inputs = work / "inputs"
    prepare_inputs(inputs, args.data, commands)
    table = scenarios(inputs, args.data)
    start = time.perf_counter()
    results = {}
    for name in commands:
        results[name] = run_command(table[name], work, list(range(args.trials)))
    payload = {
        "trials_per_command": args.trials,
        "delay": "uniform 0-95 % of the uninterrupted run's work (from taking its output lock "
        "to its end), counted from when the run takes its lock; seeded by (trial, command)",
        "results": results,
        "all_equal": all(r["equal"] == len(r["trials"]) for r in results.values()),
        "wall_s": round(time.perf_counter() - start, 1),
    }
    path = write_result("kill_resume", payload, args.out)
    print(json.dumps({k: (v["killed"], v["equal"]) for k, v in results.items()}))
    print(f"results in {path}")
    if not payload["all_equal"]:
        sys.exit(1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
