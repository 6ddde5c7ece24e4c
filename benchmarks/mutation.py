"""Benchmark: the mutation score of the core (how many small planted bugs the tests catch).

mutmut 3 (``[tool.mutmut]`` in ``pyproject.toml``) copies ``src`` to ``mutants/``, plants one
small change per mutant (an operator, a constant, a comparison, an argument dropped...) in the
core modules and runs, for each mutant, only the tests that reached the mutated function in a
first traced run of the suite. A mutant is *killed* when one of those tests fails, *survives*
when they all pass, *times out* when they run far past their clean time (counted as caught, the
usual convention: a planted bug that hangs is noticed) and has *no tests* when no test reaches it.

mutmut is not a project dependency: install it next to the dev environment, e.g. a venv that
sees the project's packages (``pip install mutmut``). Run it from a separate git worktree, so
that edits to the main checkout do not reach the copy under test. Usage::

    # trace the tests, scope each module to its tests (MODULE_TESTS), run every mutant without
    # a verdict (phase by phase, see PHASES), summarise; the same command resumes a stopped run
    python benchmarks/mutation.py --workdir ../wt-mut --run --mutmut ../mut-venv/bin/mutmut
    # what fits a session on 2 cores: a stratified sample of 25 mutants per module (the score is
    # then an estimate with a 95 % interval); after writing tests, run the sample's survivors again
    python benchmarks/mutation.py --workdir ../wt-mut --run --sample 25 --mutmut MUTMUT
    python benchmarks/mutation.py --workdir ../wt-mut --run --sample 25 --rerun-survivors -m MUTMUT
    # only summarise the verdicts mutmut stored under <workdir>/mutants
    python benchmarks/mutation.py --workdir ../wt-mut --wall-seconds 4000

Writes ``benchmarks/results/mutation.json``; ``--survivors FILE`` also writes the diff of every
surviving mutant (the material for ``benchmarks/results/mutation_survivors.md``).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shlex
import subprocess
import sys
import time
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for _common, when run as a script

#: mutmut 3's exit-code convention (``mutmut.stats.status_by_exit_code``), folded into ours.
STATUS = {
    1: "killed",
    3: "killed",  # pytest internal error under the mutant
    0: "survived",
    5: "no_tests",
    33: "no_tests",
    34: "skipped",
    36: "timed_out",
    -24: "timed_out",  # SIGXCPU
    24: "timed_out",
    152: "timed_out",
    255: "timed_out",
    -11: "segfault",
    -9: "segfault",
    37: "killed",  # caught by the type checker (we configure none)
    None: "not_checked",
}


#: The tests each core module's mutants are run against: the files named for the module and the
#: cross-cutting files that check it against independent references. mutmut alone would run a
#: mutant against every selected test that reached the mutated function, so a mutant deep in the
#: solver would also pay for the end-to-end training tests that merely pass through it; scoping
#: each module to its own tests is what lets a full run fit in a session on a 2-core machine.
#: Paths are relative to tests/; tests written against survivors sit in their module's file.
MODULE_TESTS: dict[str, tuple[str, ...]] = {
    "simattr._io": (
        "test_io.py",
        "faults/test_mechanisms.py",
        "evaluation/test_support.py",
        "attribution/test_resumable.py",
    ),
    "simattr.validation": (
        "test_validation.py",
        "faults/test_mechanisms.py",
        "attribution/test_esvm.py",
        "attribution/test_attributor.py",
        "contracts/test_contracts.py",
    ),
    "simattr.data.dataset": ("data/test_dataset.py", "attribution/test_esvm.py"),
    "simattr.attribution.scorers": (
        "attribution/test_scorers.py",
        "attribution/test_esvm.py",
        "attribution/test_attributor.py",
        "contracts/test_contracts.py",
        "contracts/test_references.py",
        "attribution/test_retrieval.py",
    ),
    "simattr.attribution.esvm": (
        "attribution/test_esvm.py",
        "contracts/test_references.py",
        "attribution/test_esvm_batched.py",
    ),
    "simattr.attribution.esvm_batched": (
        "attribution/test_esvm_batched.py",
        "contracts/test_references.py",
        "contracts/test_contracts.py",
    ),
    "simattr.attribution.attributor": (
        "attribution/test_attributor.py",
        "attribution/test_esvm.py",
        "contracts/test_contracts.py",
        "contracts/test_references.py",
        "attribution/test_retrieval.py",
    ),
    "simattr.attribution.retrieval": ("attribution/test_retrieval.py",),
    "simattr.attribution.explain": ("attribution/test_explain.py",),
    "simattr.attribution.workflow": (
        "attribution/test_workflow.py",
        "attribution/test_explain.py",
        "attribution/test_resumable.py",
    ),
    "simattr.attribution.resumable": ("attribution/test_resumable.py",),
    "simattr.evaluation.margins": ("evaluation/test_margins.py",),
    "simattr.evaluation.lds": ("evaluation/test_lds.py",),
    "simattr.evaluation.support": (
        "evaluation/test_support.py",
        "e2e/test_support_e2e.py",
        "contracts/test_contracts.py",
    ),
    "simattr.evaluation.ensemble": ("e2e/test_support_e2e.py", "evaluation/test_support.py"),
}

#: The order of a full run: modules whose tests are unit tests first, then the modules whose
#: tests build real fixtures (a folder embedded by a backbone, models trained for the support
#: search and the ensemble: 10-20 s of fixtures per mutant).
PHASES: tuple[tuple[str, ...], ...] = (
    (
        "simattr._io.*",
        "simattr.validation.*",
        "simattr.data.*",
        "simattr.attribution.attributor.*",
        "simattr.attribution.scorers.*",
        "simattr.attribution.esvm.*",
        "simattr.attribution.esvm_batched.*",
        "simattr.attribution.retrieval.*",
        "simattr.attribution.workflow.*",
        "simattr.attribution.resumable.*",
        "simattr.evaluation.margins.*",
        "simattr.evaluation.lds.*",
    ),
    (
        "simattr.attribution.explain.*",
        "simattr.evaluation.support.*",
        "simattr.evaluation.ensemble.*",
    ),
)


#: Where --rerun-survivors keeps the verdicts from before the re-run.
BEFORE_RERUN = "verdicts-before-rerun.json"
MISSED = ("survived", "no_tests")
CAUGHT = ("killed", "timed_out", "segfault")


def unjudged(workdir: Path, patterns: tuple[str, ...] | list[str]) -> list[str]:
    """The mutants matching ``patterns`` that have no verdict yet. mutmut re-runs every mutant
    it is given by name, so a resumed phase names only these."""
    return sorted(
        name
        for name, status in read_verdicts(workdir).items()
        if status == "not_checked" and any(fnmatch.fnmatchcase(name, p) for p in patterns)
    )


def module_name(mutant: str) -> str:
    """``simattr._io.x_read_json__mutmut_3`` -> ``simattr._io``."""
    return ".".join(p for p in mutant.split(".") if not p.startswith("x"))


def draw_sample(names: list[str], per_module: int, seed: int) -> list[str]:
    """A stratified uniform sample: ``per_module`` mutants of each module (all of a smaller
    one), drawn with ``seed`` from the sorted names, so the same arguments draw the same sample
    on any machine."""
    rng = np.random.default_rng(seed)
    by_module: dict[str, list[str]] = {}
    for name in sorted(names):
        by_module.setdefault(module_name(name), []).append(name)
    chosen: list[str] = []
    for module in sorted(by_module):
        pool = by_module[module]
        take = min(per_module, len(pool))
        chosen.extend(pool[i] for i in sorted(rng.choice(len(pool), size=take, replace=False)))
    return chosen


def stratified_score(verdicts: dict[str, str], sample: list[str]) -> dict[str, Any]:
    """The core's mutation score estimated from a stratified sample, with a 95 % interval.

    Each module's share of caught mutants among its judged sampled mutants is weighted by the
    module's number of mutants (stratified estimator, finite-population corrected normal
    interval). Sampled mutants without a verdict are left out of their module's share.
    """
    sizes = Counter(module_name(n) for n in verdicts)
    total = sum(sizes.values())
    estimate = variance = 0.0
    per_module: dict[str, dict[str, Any]] = {}
    for module, size in sorted(sizes.items()):
        judged = [verdicts[n] for n in sample if module_name(n) == module]
        judged = [s for s in judged if s in CAUGHT or s in MISSED]
        if not judged:
            per_module[module] = {"mutants": size, "sampled": 0}
            continue
        share = sum(s in CAUGHT for s in judged) / len(judged)
        weight = size / total
        estimate += weight * share
        fpc = (size - len(judged)) / max(size - 1, 1)
        variance += weight**2 * share * (1 - share) / len(judged) * fpc
        per_module[module] = {
            "mutants": size,
            "sampled": len(judged),
            "caught": sum(s in CAUGHT for s in judged),
            "score": round(share, 4),
        }
    half = 1.96 * variance**0.5
    covered = sum(v["mutants"] for v in per_module.values() if v["sampled"])
    return {
        "score": round(estimate * total / covered, 4) if covered else None,
        "ci95": [round((estimate - half) * total / covered, 4),
                 round((estimate + half) * total / covered, 4)] if covered else None,
        "sampled_judged": sum(v["sampled"] for v in per_module.values()),
        "modules_sampled": sum(1 for v in per_module.values() if v["sampled"]),
        "per_module": per_module,
    }  # fmt: skip


def scope_of(function: str) -> tuple[str, ...]:
    """The test files for a mangled function name (``simattr._io.x_read_json`` -> ``_io``'s)."""
    module = ".".join(p for p in function.split(".") if not p.startswith("x"))
    for name in sorted(MODULE_TESTS, key=len, reverse=True):
        if module == name or module.startswith(name + "."):
            return MODULE_TESTS[name]
    raise KeyError(f"no test scope for {function}: add its module to MODULE_TESTS")


def scope_stats(workdir: Path) -> tuple[int, int]:
    """Keep, for every mutated function, only the tests of its module's scope.

    Rewrites ``mutants/mutmut-stats.json`` in place (mutmut reads it back on its next run and
    only traces tests it has never seen). The associations taken out are kept in
    ``mutants/mutmut-stats.unscoped.json``, so that scoping again after ``MODULE_TESTS``
    changes starts from everything mutmut traced. Returns (associations before, after).
    """
    path = workdir / "mutants" / "mutmut-stats.json"
    dropped_path = path.with_name("mutmut-stats.unscoped.json")
    stats = json.loads(path.read_text())
    dropped = json.loads(dropped_path.read_text()) if dropped_path.exists() else {}
    known = set(stats["duration_by_test"])
    before = after = 0
    scoped: dict[str, list[str]] = {}
    out: dict[str, list[str]] = {}
    for function in set(stats["tests_by_mangled_function_name"]) | set(dropped):
        tests = set(stats["tests_by_mangled_function_name"].get(function, ()))
        tests |= {t for t in dropped.get(function, ()) if t in known}  # still collected
        files = scope_of(function)
        keep = sorted(t for t in tests if t.split("::")[0].removeprefix("tests/") in files)
        before, after = before + len(tests), after + len(keep)
        scoped[function] = keep
        out[function] = sorted(tests - set(keep))
    stats["tests_by_mangled_function_name"] = scoped
    for target, payload in ((dropped_path, out), (path, stats)):
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=4))
        os.replace(tmp, target)
    return before, after


def _status(code: int | None) -> str:
    return STATUS.get(code, "suspicious")


def read_verdicts(workdir: Path) -> dict[str, str]:
    """Mutant name -> our status, from the ``.meta`` files mutmut keeps beside each mutated file."""
    verdicts: dict[str, str] = {}
    for meta in sorted((workdir / "mutants").rglob("*.py.meta")):
        data = json.loads(meta.read_text())
        for name, code in data["exit_code_by_key"].items():
            verdicts[name] = _status(code)
    return verdicts


def module_of(name: str) -> str:
    """``simattr._io.x__umask__mutmut_1`` -> ``simattr._io`` (methods: ``xǁClassǁmethod__...``)."""
    parts = name.split(".")
    return ".".join(parts[:-1])


def summarise(verdicts: dict[str, str]) -> dict[str, Any]:
    counts = Counter(verdicts.values())
    caught = counts["killed"] + counts["timed_out"] + counts["segfault"]
    judged = caught + counts["survived"] + counts["no_tests"] + counts["suspicious"]
    per_module: dict[str, Counter[str]] = {}
    for name, status in verdicts.items():
        per_module.setdefault(module_of(name), Counter())[status] += 1
    return {
        "mutants": len(verdicts),
        "killed": counts["killed"],
        "survived": counts["survived"],
        "timed_out": counts["timed_out"],
        "no_tests": counts["no_tests"],
        "segfault": counts["segfault"],
        "suspicious": counts["suspicious"],
        "not_checked": counts["not_checked"],
        "skipped": counts["skipped"],
        # caught / judged: killed, timed out and crashed mutants count as caught; survivors and
        # mutants that no test reaches count against; unchecked ones are left out.
        "score": round(caught / judged, 4) if judged else None,
        "per_module": {mod: dict(sorted(c.items())) for mod, c in sorted(per_module.items())},
    }


def mutmut_config(workdir: Path) -> dict[str, Any]:
    with open(workdir / "pyproject.toml", "rb") as f:
        return tomllib.load(f).get("tool", {}).get("mutmut", {})


def survivor_diffs(workdir: Path, names: list[str]) -> str:
    """The changed lines of every named mutant, grouped by function (mutmut's own diff, read in
    this process: one ``mutmut show`` per mutant costs a second each)."""
    from mutmut.configuration import config  # only where mutmut is installed
    from mutmut.mutation.diff_apply import find_mutant, get_diff_for_mutant

    here = Path.cwd()
    os.chdir(workdir)  # mutmut reads its config and mutants/ relative to the project
    try:
        config()
        paths: dict[str, Path] = {}
        chunks, last = [], None

        def order(name: str) -> tuple[str, int]:
            function, _, number = name.rpartition("__mutmut_")
            return function, int(number)

        for name in sorted(names, key=order):
            function = name.rsplit("__mutmut_", 1)[0]
            if function != last:
                chunks.append(f"\n### `{function}`\n")
                last = function
            module = name.rsplit(".", 1)[0]
            if module not in paths:
                paths[module] = find_mutant(name).path
            diff = get_diff_for_mutant(name, path=paths[module])
            changed = [
                line
                for line in diff.splitlines()
                if line[:1] in "+-" and not line.startswith(("+++", "---"))
            ]
            chunks.append(f"- {name.rsplit('__mutmut_', 1)[1]}: `" + " => ".join(changed) + "`")
        return "\n".join(chunks) + "\n"
    finally:
        os.chdir(here)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path(__file__).resolve().parents[1])
    ap.add_argument("-m", "--mutmut", default="mutmut", help="the mutmut executable")
    ap.add_argument("--run", action="store_true", help="run mutmut first (else only summarise)")
    ap.add_argument("--max-children", type=int, default=os.cpu_count() or 1)
    ap.add_argument("names", nargs="*", help="mutant names or globs for --run (default: all)")
    ap.add_argument(
        "--prime",
        default="simattr._io.x_lock_path__mutmut_1",
        help="a cheap mutant run first, so that mutmut traces the tests before they are scoped",
    )
    ap.add_argument("--wall-seconds", type=float, help="wall time of an earlier run to record")
    ap.add_argument("--survivors", type=Path, help="write every survivor's diff to this file")
    ap.add_argument("--out", type=Path, help="default: benchmarks/results/mutation.json")
    ap.add_argument(
        "--rerun-survivors",
        action="store_true",
        help="with --run: instead of the phases, run the survivors and the mutants no test reached "
        "again, against the tests as they are now (after new tests were written); the verdicts "
        f"before are kept in mutants/{BEFORE_RERUN} and the result records both",
    )
    ap.add_argument(
        "--sample",
        type=int,
        metavar="N",
        help="judge a stratified random sample of N mutants per module instead of every mutant "
        "(a full run of the core takes longer than a session on 2 cores); the score is then an "
        "estimate with a 95%% interval",
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of the sample")
    ap.add_argument("--note", help="free text recorded in the result")
    from _common import parse_args as parse_recorded  # --allow-dirty; commit, command

    args = parse_recorded(ap, argv)
    workdir = args.workdir.resolve()

    wall = args.wall_seconds
    if args.run:
        run = [args.mutmut, "run", "--max-children", str(args.max_children)]
        # the project is importable only from mutmut's copy (a venv that sees the dev packages
        # but has no editable install of the project)
        # (it must exist when mutmut starts: Python caches a missing sys.path entry as empty)
        env = {**os.environ, "PYTHONPATH": str(workdir / "mutants" / "src")}
        (workdir / "mutants" / "src").mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        # 1. one mutant, so that mutmut generates the mutants and traces the tests (stats) ...
        subprocess.run([*run, args.prime], cwd=workdir, env=env, check=False)
        # 2. ... then each function keeps only its module's tests ...
        before, after = scope_stats(workdir)
        print(f"scoped test associations: {before} -> {after}", flush=True)
        # 3. ... and the mutants without a verdict run, the cheap modules first (running this
        # command again resumes: mutmut re-runs any mutant it is named, so only those are named).
        if args.rerun_survivors:
            snapshot = workdir / "mutants" / BEFORE_RERUN
            if not snapshot.exists():
                snapshot.write_text(json.dumps(read_verdicts(workdir), indent=1))
            earlier = json.loads(snapshot.read_text())
            now = read_verdicts(workdir)
            todo = sorted(n for n, s in earlier.items() if s in MISSED and now.get(n) in MISSED)
            if args.sample:  # only the sample's survivors: the estimate is made of them
                chosen = set(draw_sample(list(now), args.sample, args.seed))
                todo = [n for n in todo if n in chosen]
            print(f"re-running {len(todo)} survivors against the current tests", flush=True)
            if todo:
                subprocess.run([*run, *todo], cwd=workdir, env=env, check=False)
        if args.sample and not args.rerun_survivors:
            verdicts = read_verdicts(workdir)  # one read of mutmut's files, not one per name
            sample = draw_sample(list(verdicts), args.sample, args.seed)
            todo = [n for n in sample if verdicts[n] == "not_checked"]
            print(f"sample: {len(todo)} mutants without a verdict", flush=True)
            if todo:
                subprocess.run([*run, *todo], cwd=workdir, env=env, check=False)
        phases = [args.names] if args.names else PHASES
        for names in [] if args.rerun_survivors or args.sample else phases:
            todo = unjudged(workdir, names)
            print(f"phase {' '.join(names)}: {len(todo)} mutants to judge", flush=True)
            if todo:
                subprocess.run([*run, *todo], cwd=workdir, env=env, check=False)
        wall = time.perf_counter() - t0

    verdicts = read_verdicts(workdir)
    if not verdicts:
        print(f"no mutmut results under {workdir / 'mutants'}", file=sys.stderr)
        return 1
    summary = summarise(verdicts)
    survivors = sorted(n for n, s in verdicts.items() if s == "survived")
    if args.survivors:
        args.survivors.write_text(survivor_diffs(workdir, survivors))

    from _common import write_result

    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=workdir, capture_output=True, text=True, check=False
    ).stdout.strip()
    after: dict[str, Any] = {}
    snapshot = workdir / "mutants" / BEFORE_RERUN
    if snapshot.exists():  # survivors were run again after new tests were written
        earlier = json.loads(snapshot.read_text())
        before = summarise(earlier)
        after = {
            "before_new_tests": {k: v for k, v in before.items() if k != "per_module"},
            "killed_by_new_tests": sorted(
                n for n, s in earlier.items() if s in MISSED and verdicts.get(n) in CAUGHT
            ),
        }
    payload = {
        "tool": "mutmut",
        "version": metadata.version("mutmut") if _has_mutmut() else None,
        "mutated_commit": commit,
        "mutmut_command": shlex.join(
            ["mutmut", "run", "--max-children", str(args.max_children), *args.names]
        ),
        "config": mutmut_config(workdir),
        "modules": mutmut_config(workdir).get("only_mutate", []),
        **summary,
        "wall_seconds": round(wall, 1) if wall is not None else None,
        "survivors": survivors,
        **after,
        "note": args.note,
    }
    if args.sample:
        sample = draw_sample(list(verdicts), args.sample, args.seed)
        payload["sample"] = {"per_module": args.sample, "seed": args.seed, "mutants": sample}
        payload["estimate"] = stratified_score(verdicts, sample)
        if snapshot.exists():
            earlier = json.loads(snapshot.read_text())
            payload["estimate_before_new_tests"] = stratified_score(earlier, sample)
    path = write_result("mutation", payload, args.out)
    skip = ("per_module", "survivors", "killed_by_new_tests", "config", "sample")
    print(json.dumps({k: v for k, v in payload.items() if k not in skip}))
    print(f"wrote {path}")
    return 0


def _has_mutmut() -> bool:
    try:
        metadata.version("mutmut")
    except metadata.PackageNotFoundError:
        return False
    return True


if __name__ == "__main__":
    raise SystemExit(main())
