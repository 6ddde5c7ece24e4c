"""Helpers shared by the benchmark scripts: machine description, commit, command, result files.

Every result records the ``commit`` of the checkout that made it and the ``command`` that made
it (relative paths, ``python`` for the interpreter), so it can be reproduced from its own
record. A checkout with uncommitted changes to tracked files is refused before any work unless
the script is given ``--allow-dirty`` (then the commit reads ``<hash>+dirty``, for trying
things; committed results name a clean commit). Scripts call :func:`parse_args` instead of
``parser.parse_args`` to get the option and the check.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
#: ``commit`` and ``command`` of this process, fixed by :func:`begin` before the work starts.
_RECORD: dict[str, str] = {}


def git_commit(allow_dirty: bool = False) -> str:
    """The commit of this checkout; a dirty tree is refused (SystemExit naming --allow-dirty)
    unless ``allow_dirty``; "unknown" outside a git checkout."""
    from simattr.bench.record import source_commit
    from simattr.errors import SimattrError

    try:
        return source_commit(Path(__file__), allow_dirty=allow_dirty, flag="--allow-dirty")
    except SimattrError as exc:
        raise SystemExit(f"error: {exc}") from None


def command_line(argv: Sequence[str] | None = None) -> str:
    """This run as ``python benchmarks/NAME.py ARGS``, paths inside the working folder relative."""
    from simattr.bench.record import relative_command

    return relative_command(["python", *(sys.argv if argv is None else argv)])


def begin(allow_dirty: bool = False, argv: Sequence[str] | None = None) -> dict[str, str]:
    """Fix the commit (refusing a dirty tree unless ``allow_dirty``) and the command, before
    the work: a run that would be refused is refused at its start, not after hours."""
    _RECORD.update(commit=git_commit(allow_dirty), command=command_line(argv))
    return dict(_RECORD)


def current_record() -> dict[str, str]:
    """The ``commit`` and ``command`` fixed by :func:`begin` (fixing them now if it was not
    called)."""
    return dict(_RECORD or begin())


def parse_args(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None = None
) -> argparse.Namespace:
    """``parser.parse_args(argv)`` with ``--allow-dirty`` added, then :func:`begin`."""
    parser.add_argument(
        "--allow-dirty",
        action="store_true",
        help="run from a checkout with uncommitted changes (the result records <commit>+dirty)",
    )
    args = parser.parse_args(argv)
    begin(args.allow_dirty, None if argv is None else [sys.argv[0], *argv])
    return args


def machine() -> dict[str, Any]:
    import numpy
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def write_result(
    name: str,
    payload: dict[str, Any],
    out: str | os.PathLike[str] | None = None,
    **machine_fields: Any,
) -> Path:
    """Write ``payload`` to ``out`` (default ``results/NAME.json``; a ``name`` ending in
    ``.json`` is the path itself) after the run's ``command``, ``commit`` and ``machine``
    (with ``machine_fields`` added, e.g. the threads a run was given), atomically."""
    if out is None and str(name).endswith(".json"):
        out = name
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = current_record()  # a script that did not call begin: checked now
    full: dict[str, Any] = {"command": record["command"], "commit": record["commit"]}
    full["machine"] = {**machine(), **machine_fields}
    full.update(payload)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(full, indent=2) + "\n")
    os.replace(tmp, path)
    return path
