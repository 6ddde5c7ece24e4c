"""What every command of the CLI shares: the app, the consoles, error handling and input checks.

A command module registers its commands on :data:`app`; every refusal from the API (a
:class:`~simattr.errors.SimattrError`) becomes one red line on stderr and exit code 1 through
:func:`friendly_errors`. The choice enums are built from the API's registries
(:func:`choice_enum`), so a method, solver or executor registered there is offered here.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import numpy as np
import typer
from rich.console import Console

from simattr._version import __version__
from simattr.attribution.retrieval import INDEX_KINDS, RETRIEVALS
from simattr.attribution.scorers import SCORERS, ExemplarSVMScorer
from simattr.errors import InvalidInputError, MissingFileError, SimattrError
from simattr.evaluation.support import MODES
from simattr.ssl.methods import METHODS as SSL_METHODS
from simattr.training.executors import EXECUTORS

app = typer.Typer(
    name="simattr",
    help="Which training images made an image classifier predict this?",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(func: F) -> F:
    """Turn our exceptions into one readable line and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SimattrError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=1) from None

    return wrapper  # type: ignore[return-value]


def show_warnings() -> None:
    """Print our warnings (e.g. the stand-in backbone) as yellow notes instead of tracebacks."""

    def show(message, category, filename, lineno, file=None, line=None):
        err_console.print(f"[yellow]note:[/] {message}", highlight=False, soft_wrap=True)

    warnings.showwarning = show


def choice_enum(name: str, choices: Iterable[str]) -> type[Enum]:
    """A string enum of ``choices`` for typer, built from an API registry so the two stay equal."""
    return Enum(name, {choice: choice for choice in choices}, type=str)  # type: ignore[return-value]


Split = choice_enum("Split", ("train", "test"))
Method = choice_enum("Method", SCORERS)
Solver = choice_enum("Solver", ExemplarSVMScorer.solvers)
Retrieval = choice_enum("Retrieval", RETRIEVALS)
IndexKind = choice_enum("IndexKind", INDEX_KINDS)
Mode = choice_enum("Mode", MODES)
ExecutorKind = choice_enum("ExecutorKind", EXECUTORS)
SSLMethodName = choice_enum("SSLMethodName", SSL_METHODS)


def _version(value: bool) -> None:
    if value:
        console.print(f"simattr {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    show_warnings()


def load_split(data: str, split: str, image_size: int | None = None):
    from simattr.data import load_dataset, resolve_root

    return load_dataset(resolve_root(data), split, image_size=image_size)


def parse_targets(targets: str | None, targets_file: Path | None, n_test: int) -> np.ndarray:
    from simattr.validation import check_indices

    if targets is not None and targets_file is not None:
        raise InvalidInputError("give either --targets or --targets-file, not both")
    if targets_file is not None:
        if not targets_file.exists():
            raise MissingFileError(f"--targets-file: no such file {targets_file}")
        try:
            values = np.load(targets_file, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InvalidInputError(
                f"--targets-file {targets_file}: not a .npy array ({exc})"
            ) from None
        return check_indices(np.ravel(values), n_test, f"--targets-file {targets_file}")
    if targets is None:
        return np.arange(n_test, dtype=np.int64)
    try:
        values = [int(v) for v in targets.split(",") if v.strip()]
    except ValueError:
        raise InvalidInputError(
            f"--targets must be comma-separated integers, e.g. 3,17,42; got {targets!r}"
        ) from None
    return check_indices(np.array(values, dtype=np.int64), n_test, "--targets")


def load_labels(path: Path, option: str) -> np.ndarray:
    if not path.exists():
        raise MissingFileError(f"{option}: no such file {path}")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InvalidInputError(f"{option} {path}: not a .npy array ({exc})") from None


def candidate_rows(
    pool: str | None, train_indices: Path | None, data: str | None, n_train: int
) -> np.ndarray | None:
    """Training rows that may be ranked: a recipe's pool, a given list, or all (``None``)."""
    from simattr.validation import check_indices

    if pool is not None and train_indices is not None:
        raise InvalidInputError("give either --pool or --train-indices, not both")
    if pool is not None:
        from simattr.evaluation import recipe_pool

        if data is None:
            raise InvalidInputError("--pool needs --data (the pool is drawn from its labels)")
        train = load_split(data, "train")
        if len(train) != n_train:
            raise InvalidInputError(
                f"--train-features has {n_train} rows but {data} has {len(train)} training images"
            )
        return recipe_pool(pool, train)
    if train_indices is None:
        return None
    rows = check_indices(np.ravel(load_labels(train_indices, "--train-indices")), n_train,
                         f"--train-indices {train_indices}")  # fmt: skip
    if len(np.unique(rows)) != len(rows):
        raise InvalidInputError(f"--train-indices {train_indices} lists a training row twice")
    return np.sort(rows)
