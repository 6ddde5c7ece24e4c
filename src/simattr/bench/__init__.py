"""One benchmark table: every attribution method judged on the same targets, the same way.

``simattr bench --profile cpu|gpu`` runs, for one recipe and one set of targets:

1. the full-data ensemble (which targets are correct, their flip classes);
2. one ranking per method (:data:`METHODS`), timed: the exemplar SVM on self-supervised features
   (same class and all classes, and on a randomly initialised backbone, the control that shows
   what the self-supervised training adds), l2 distance, random same-class images,
   supervised-feature similarity and TRAK;
3. removal support for every method, then LDS (subset models trained once, every method scored),
   then mislabel support;
4. a Markdown table, support curves and a JSON summary in the output folder, with the commit and
   command that made them.

Every stage writes as it goes and resumes (the stages are the resumable support search and LDS
of :mod:`simattr.evaluation`), so the CPU profile, which takes hours on a 2-core machine, can be
run in pieces: each call continues where the last stopped and rewrites the table with what is
done. ``methods`` and ``stages`` restrict a call to part of the work.

The package: :mod:`~simattr.bench.profiles` (the sizes of a run), :mod:`~simattr.bench.methods`
(what each method computes, and the context they share), :mod:`~simattr.bench.run` (the
driver), :mod:`~simattr.bench.record` (commit and command); the report is written by
:mod:`simattr.report.bench`.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

#: Public name -> the module that defines it; imported on first use, so that
#: ``simattr.bench.record`` (used by the benchmark scripts and the CLI) costs no torch import.
_WHERE = {
    "METHODS": "simattr.bench.methods",
    "BenchContext": "simattr.bench.methods",
    "LDS_RANKINGS": "simattr.bench.profiles",
    "PROFILE_BACKBONE": "simattr.bench.profiles",
    "PROFILES": "simattr.bench.profiles",
    "REFERENCE_METHOD": "simattr.bench.profiles",
    "STAGES": "simattr.bench.profiles",
    "Profile": "simattr.bench.profiles",
    "choose_bench_targets": "simattr.bench.run",
    "choose_lds_targets": "simattr.bench.run",
    "run_bench": "simattr.bench.run",
    "write_bench_report": "simattr.report.bench",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'simattr.bench' has no attribute {name!r}")
    value = getattr(import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


__all__ = [
    "LDS_RANKINGS",
    "METHODS",
    "PROFILES",
    "PROFILE_BACKBONE",
    "REFERENCE_METHOD",
    "STAGES",
    "BenchContext",
    "Profile",
    "choose_bench_targets",
    "choose_lds_targets",
    "run_bench",
    "write_bench_report",
]
