"""What a result needs to be reproduced from its own record: the commit and the command.

A committed result is only as good as the code that made it. :func:`source_commit` names the
commit of the checkout simattr runs from, and refuses a tree with uncommitted changes to tracked
files (a ``+dirty`` commit names code nobody can check out) unless the caller asks for it.
Changes under ``benchmarks/results/`` do not count: they are the outputs, and a resumed run
writes into them. :func:`relative_command` writes the command line with the paths inside the
working folder made relative, so the record reads the same on every machine.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path

from simattr.errors import InvalidInputError

#: The commit of a result whose code is not a git checkout (an installed wheel), or whose
#: commit was not recorded when it was made.
UNKNOWN = "unknown"
#: Paths whose changes do not make a tree dirty: what the benchmarks write.
OUTPUTS = ("benchmarks/results",)


def _git(repo: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, check=False, timeout=60
        )
    except (OSError, subprocess.SubprocessError):
        return None
    # rstrip only: a porcelain status line starts with a space (" M path")
    return done.stdout.rstrip() if done.returncode == 0 else None


def source_commit(
    source: str | os.PathLike[str] | None = None,
    *,
    allow_dirty: bool = False,
    flag: str = "`allow_dirty=True`",
) -> str:
    """The commit of the git checkout that holds ``source`` (default: this package's code).

    Returns the full commit hash; ``"<hash>+dirty"`` when tracked files outside
    :data:`OUTPUTS` have uncommitted changes and ``allow_dirty`` is true; :data:`UNKNOWN` when
    ``source`` is not a file tracked by a git checkout (an installed package: its version is in
    the record's provenance instead). A dirty tree without ``allow_dirty`` is refused with one
    line naming ``flag``, before any work is done.
    """
    path = Path(source) if source is not None else Path(__file__).resolve().parents[1]
    folder = path if path.is_dir() else path.parent
    top = _git(folder, "rev-parse", "--show-toplevel")
    top = top.strip() if top is not None else None
    if top is None:
        return UNKNOWN
    # the code must be part of the checkout (a venv inside a checkout is not)
    if _git(folder, "ls-files", "--error-unmatch", str(path)) is None:
        return UNKNOWN
    commit = (_git(folder, "rev-parse", "HEAD") or "").strip()
    if not commit:
        return UNKNOWN
    excludes = [f":(exclude,top){p}" for p in OUTPUTS]
    changed = _git(Path(top), "status", "--porcelain", "--untracked-files=no", "--", ".", *excludes)
    if changed is None or not changed.strip():
        return commit
    if not allow_dirty:
        first = changed.splitlines()[0][3:]
        raise InvalidInputError(
            f"the checkout {top} has uncommitted changes ({first} and "
            f"{len(changed.splitlines()) - 1} more), so the result could not be reproduced "
            f"from its commit; commit them first, or pass {flag} to record '{commit}+dirty'"
        )
    return commit + "+dirty"


def relative_command(argv: Sequence[str], program: str | None = None) -> str:
    """``argv`` as one shell-quoted line, paths inside the working folder made relative.

    ``program`` replaces ``argv[0]`` (e.g. ``"simattr"`` for the console script, ``"python"``
    for an interpreter path), so no absolute path of this machine is recorded.
    """
    cwd = Path.cwd().resolve()
    words = [program] if program is not None else []
    for i, word in enumerate(argv):
        if i == 0 and program is not None:
            continue
        words.append(_relative(word, cwd))
    return shlex.join(words)


def cli_command(subcommand: str, argv: Sequence[str] | None = None) -> str:
    """The ``simattr SUBCOMMAND ...`` line of this process (:func:`relative_command`), found in
    ``argv`` (default ``sys.argv``) whichever way simattr was started (console script,
    ``python -m simattr``); without the subcommand in ``argv`` (called from Python), the
    arguments are said to be unknown rather than guessed."""
    import sys

    words = list(sys.argv if argv is None else argv)
    if subcommand not in words[1:]:
        return f"simattr {subcommand} (arguments unknown: not started from a command line)"
    rest = words[words.index(subcommand, 1) + 1 :]
    return relative_command(["simattr", subcommand, *rest], program="simattr")


def relative_path(path: str | os.PathLike[str]) -> str:
    """``path`` relative to the working folder when it lies inside it, else as given."""
    return _relative(os.fspath(path), Path.cwd().resolve())


def _relative(word: str, cwd: Path) -> str:
    flag, sep, value = word.partition("=") if word.startswith("--") else ("", "", word)
    if not value.startswith(os.sep):
        return word
    try:
        rel = Path(value).resolve().relative_to(cwd)
    except (ValueError, OSError):
        return word
    return f"{flag}{sep}{rel.as_posix() or '.'}"


__all__ = [
    "OUTPUTS",
    "UNKNOWN",
    "cli_command",
    "relative_command",
    "relative_path",
    "source_commit",
]
