"""What every command of the CLI shares: the app, the consoles, error handling and input checks.

A command module registers its commands on :data:`app`; every refusal from the API (a
:class:`~simattr.errors.SimattrError`) becomes one red line on stderr and exit code 1 through
:func:`friendly_errors`. The choice enums are built from the API's registries
(:mod:`simattr.cli._choices`, a copy of their names checked by the tests, so that ``--help``
answers without importing them).
"""

from __future__ import annotations

import errno
import functools
import importlib
import json
import sys
import warnings
import zipfile
from collections.abc import Callable, Iterable
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

if TYPE_CHECKING:
    import numpy as np

from simattr._version import __version__
from simattr.cli import _choices
from simattr.errors import InvalidInputError, MissingFileError, SimattrError

app = typer.Typer(
    name="simattr",
    help="Which training images made an image classifier predict this?",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain help and usage errors: typer's rich formatter imports rich's Markdown renderer,
    # 0.2 s of every `--help` on a 2-core machine, for boxes around the same text.
    rich_markup_mode=None,
)
console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(func: F) -> F:
    """Turn our exceptions, and the faults of the world met at the boundary (a disk that is full
    or read-only, a damaged archive or JSON file, a singular matrix), into one readable line
    and exit status 1; a bug of ours still shows its traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BrokenPipeError:
            # the reader of stdout left (`simattr attribute ... | head`); outputs are written
            # before anything is printed, so only the rest of the printout is lost: end quietly,
            # with the status of a writer stopped by SIGPIPE, and no second error at exit
            import os
            import sys

            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError, AttributeError):
                pass  # no real file descriptor (a test runner's buffer)
            raise typer.Exit(code=141) from None
        except SystemExit:
            if console.quiet or err_console.quiet:  # rich met the closed pipe (on_broken_pipe)
                raise typer.Exit(code=141) from None
            raise
        except (SimattrError, *BOUNDARY_ERRORS, *_linalg_error()) as exc:
            err_console.print(
                f"[bold red]error:[/] {describe_error(exc)}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(code=1) from None

    return wrapper  # type: ignore[return-value]


def requires_files(*options: str, **arguments: str) -> Callable[[F], F]:
    """Refuse a missing input file before the command body runs, naming its option.

    A command imports torch, scikit-learn or FAISS only in its body; a mistyped path must not
    cost those seconds to be reported. ``options`` are parameter names of options (named
    ``--param-name`` in the message), ``arguments`` map a positional parameter to the message
    for a missing item (``images="{path}: no such image file"``). A list is checked item by item;
    ``None`` is an option not given.
    """
    labels = {p: "--" + p.replace("_", "-") + ": no such file {path}" for p in options}
    labels |= arguments

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for param, label in labels.items():
                value = kwargs.get(param)
                for path in value if isinstance(value, list | tuple) else [value]:
                    if path is not None and not Path(path).exists():
                        raise MissingFileError(label.format(path=path))
            return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


#: Exceptions of the outside world that a command reports as one line (see describe_error),
#: numpy's LinAlgError aside: numpy is not imported until a command body needs it, and an error
#: of numpy's can only come after (see :func:`_linalg_error`).
BOUNDARY_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    zipfile.BadZipFile,
    json.JSONDecodeError,
    MemoryError,
)


def _linalg_error() -> tuple[type[BaseException], ...]:
    """numpy's LinAlgError if numpy was imported (it cannot have raised otherwise)."""
    numpy = sys.modules.get("numpy")
    return (numpy.linalg.LinAlgError,) if numpy is not None else ()


def _lazy(module: str, name: str) -> Callable[..., Any]:
    """``module.name``, imported at its first call: the CLI's modules import nothing heavier than
    typer when ``--help`` is all that runs (numpy alone is a third of the start-up)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f":func:`{module}.{name}`, imported on first call."
    return call


check_writable = _lazy("simattr._io", "check_writable")
check_not_input = _lazy("simattr._io", "check_not_input")
read_npy = _lazy("simattr._io", "read_npy")
check_device = _lazy("simattr.validation", "check_device")
check_positive_int = _lazy("simattr.validation", "check_positive_int")
check_indices = _lazy("simattr.validation", "check_indices")


#: API parameters whose option is not ``--`` plus the name with dashes (``name=value`` forms too).
#: A mapping holds for every command (``k`` is a ranking's top-k wherever a function takes it);
#: a field that means another option is written qualified (``SupportSettings.k``, the largest m
#: a support search tests) and turned into a flag only when named here.
FLAGS: dict[str, str] = {
    "export_paper": "--export-paper-npy",
    "class_conditional=False": "--all-classes",
    "k": "--topk",
    "out_dir": "--out",
    "SupportSettings.k": "--max-m",
}


def as_flags(message: str) -> str:
    """The API's message with its parameter names (written `` `name` `` or `` `name=value` ``)
    turned into this CLI's options: the API speaks Python, the command line speaks flags."""
    import re

    def flag(match: re.Match[str]) -> str:
        name, value = match.group(1), match.group(2)
        whole = name if value is None else f"{name}={value}"
        if whole in FLAGS:
            return FLAGS[whole]
        if "." in name and name not in FLAGS:
            return match.group(0)  # a qualified name no option stands for: left as written
        option = FLAGS.get(name, "--" + name.replace("_", "-"))
        if value in (None, "True"):
            return option
        if value == "False":
            return "--no-" + option[2:]
        return f"{option} {value}"

    return re.sub(r"`((?:[A-Z][A-Za-z]*\.)?[a-z][a-z0-9_]*)(?:=([^`\s]+))?`", flag, message)


def describe_error(exc: BaseException) -> str:
    """One line about ``exc`` that says what went wrong, with what, and what to do."""
    if isinstance(exc, SimattrError):
        return as_flags(str(exc))
    if isinstance(exc, OSError):
        where = " ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        reason = exc.strerror or str(exc) or type(exc).__name__
        hint = {
            errno.ENOSPC: "free some space or write elsewhere",
            errno.EACCES: "choose a path you can read and write",
            errno.EPERM: "choose a path you can read and write",
            errno.EROFS: "write to another folder",
            errno.ENOENT: "check the path",
            errno.ENOTDIR: "check the path",
            errno.EISDIR: "give a file path, not a folder",
        }.get(exc.errno or -1, "check the file and the disk")
        return f"{reason}: {where or 'a file'}; {hint}" if where else f"{reason}; {hint}"
    if isinstance(exc, zipfile.BadZipFile):
        return f"a .npz archive is damaged ({exc}); regenerate it"
    if isinstance(exc, json.JSONDecodeError):
        return f"a JSON file is damaged ({exc}); regenerate it"
    if isinstance(exc, _linalg_error()):
        return (
            f"the linear algebra failed ({exc}): the features are degenerate (too few images or "
            "identical rows); use more images or another method"
        )
    if isinstance(exc, MemoryError):
        return "out of memory; use a smaller --batch-size, --block-size or fewer targets"
    return f"{type(exc).__name__}: {exc}"


def show_warnings() -> None:
    """Print our warnings (e.g. the stand-in backbone) as yellow notes instead of tracebacks."""

    def show(message, category, filename, lineno, file=None, line=None):
        err_console.print(f"[yellow]note:[/] {message}", highlight=False, soft_wrap=True)

    warnings.showwarning = show


def choice_enum(name: str, choices: Iterable[str]) -> type[Enum]:
    """A string enum of ``choices`` for typer, built from an API registry so the two stay equal."""
    return Enum(name, {choice: choice for choice in choices}, type=str)  # type: ignore[return-value]


Split = choice_enum("Split", ("train", "test"))
Method = choice_enum("Method", _choices.METHODS)
Solver = choice_enum("Solver", _choices.SOLVERS)
Retrieval = choice_enum("Retrieval", _choices.RETRIEVALS)
IndexKind = choice_enum("IndexKind", _choices.INDEX_KINDS)
Mode = choice_enum("Mode", _choices.MODES)
ExecutorKind = choice_enum("ExecutorKind", _choices.EXECUTORS)
SSLMethodName = choice_enum("SSLMethodName", _choices.SSL_METHODS)
Detector = choice_enum("Detector", _choices.LABEL_DETECTORS)

# -- The option vocabulary ----------------------------------------------------------------------
# Every option that two or more commands take is declared here, once: one name, one type, one
# help text, one meaning. Its default is written in each signature (typer wants it there) and
# tests/cli/test_options.py holds them equal; an option whose default is None may instead be
# required by a command that cannot run without it. What an option does in one command alone
# (what --out holds, what happens without --targets) is said in that command's description.

DataOption = Annotated[str, typer.Option(help="Dataset: a folder path, 'digits' or 'cifar10'.")]
#: ``--data`` where a command can run without it (its description says what it adds).
OptionalDataOption = Annotated[
    str | None, typer.Option(help="Dataset: a folder path, 'digits' or 'cifar10'.")
]
_OUT_HELP = "Where the outputs go: the file or folder named in the command's description."
OutOption = Annotated[Path, typer.Option(help=_OUT_HELP)]
OptionalOutOption = Annotated[Path | None, typer.Option(help=_OUT_HELP)]
_TRAIN_FEATURES_HELP = "Features .npy of the training split (`simattr features --split train`)."
TrainFeaturesOption = Annotated[Path, typer.Option(help=_TRAIN_FEATURES_HELP)]
_TEST_FEATURES_HELP = "Features .npy of the test split (`simattr features --split test`)."
TestFeaturesOption = Annotated[Path, typer.Option(help=_TEST_FEATURES_HELP)]
OptionalTestFeaturesOption = Annotated[Path | None, typer.Option(help=_TEST_FEATURES_HELP)]
SplitOption = Annotated[Split, typer.Option(help="The split of the dataset the features are of.")]
BackboneOption = Annotated[
    str | None,
    typer.Option(
        help="'default' (shipped CIFAR-10 MoCo backbone), 'shipped:NAME', "
        "'random[:ARCH][:SEED]' (ARCH: resnet18, resnet18-w32, resnet18-w16, "
        "resnet18-imagenet, resnet50-imagenet), or a weights file (ours, torchvision, MoCo "
        "v1/v2/v3, DINO, lightly, solo-learn; never unpickled; architecture inferred); "
        "append @SIZE for another input size of an ImageNet-stem backbone. Not given: the "
        "backbone the training features were made with where there are some, else 'default'."
    ),
]
BatchSizeOption = Annotated[int, typer.Option(help="Images per batch.")]
ImageSizeOption = Annotated[
    int | None, typer.Option(help="Resize the images of folder datasets to this size.")
]
DeviceOption = Annotated[str, typer.Option(help="Torch device: cpu or cuda.")]
SeedOption = Annotated[
    int, typer.Option(help="Seed of the command's random choices (targets, subsets, models).")
]
ThreadsOption = Annotated[
    int | None,
    typer.Option(help="Torch threads per process or model (default: all cores; fix it to repeat)."),
]
ResumeOption = Annotated[
    bool,
    typer.Option(
        "--resume/--no-resume",
        help="Continue the interrupted run found at --out (its settings must match).",
    ),
]
# ranking
MethodOption = Annotated[Method, typer.Option(help="Scoring method.")]
COption = Annotated[float, typer.Option("--C", help="ESVM regularisation.")]
NormalizeOption = Annotated[
    bool,
    typer.Option(
        "--normalize/--no-normalize",
        help="L2-normalise features before scoring (the paper code's scripts do not).",
    ),
]
TopkOption = Annotated[int, typer.Option(help="Training images kept per target image.")]
_PREDICTIONS_HELP = (
    "Explain a model's predicted classes, not the true labels: a .csv of file,class rows (files "
    "as the data name them) or a .npy of one class per test image. The ranking never looks at "
    "the model; the class only chooses the pool ranked."
)
PredictionsOption = Annotated[Path | None, typer.Option(help=_PREDICTIONS_HELP)]
LearnedModelOption = Annotated[
    Path | None,
    typer.Option(
        help="The model of --method learned: a file written by LearnedAttribution.save "
        "(signed scores in logits; a model that fuses TRAK scores cannot be applied from "
        "features alone).",
    ),
]


def method_for(method: str, learned_model: Path | None) -> Any:
    """The ``method`` argument of :class:`~simattr.attribution.Attributor` for a command's
    ``--method`` and ``--learned-model``: a name, or the learned scorer reading its file."""
    if method != "learned":
        if learned_model is not None:
            raise InvalidInputError("--learned-model is read by --method learned only")
        return method
    if learned_model is None:
        raise InvalidInputError("--method learned needs --learned-model FILE")
    from simattr.attribution.scorers import LearnedScorer

    return LearnedScorer(model_path=str(learned_model))


RequiredPredictionsOption = Annotated[Path, typer.Option(help=_PREDICTIONS_HELP)]
CsvOption = Annotated[
    Path | None,
    typer.Option(
        "--csv",
        help="Also write the ranking as a table, one row per ranked training image (target, "
        "its file and label, rank, training row, file and label, score); Parquet if it ends "
        "in .parquet.",
    ),
]
HtmlOption = Annotated[
    Path | None,
    typer.Option(
        "--html",
        help="Also write DIR/index.html: each target and its top images (thumbnails, files, "
        "labels, scores), one self-contained page.",
    ),
]
# targets
TargetsOption = Annotated[str | None, typer.Option(help="Comma-separated test rows, e.g. 3,17,42.")]
NTargetsOption = Annotated[
    int | None, typer.Option(help="Draw this many test images as targets, seeded by --seed.")
]
# retraining
RankingOption = Annotated[
    list[str],
    typer.Option(help="Ranking .npz, as PATH or NAME=PATH; repeat to compare rankings."),
]
_REFERENCE_HELP = "Pair every ranking with this one (its NAME), target by target."
ReferenceOption = Annotated[str | None, typer.Option(help=_REFERENCE_HELP)]
RequiredReferenceOption = Annotated[str, typer.Option(help=_REFERENCE_HELP)]
RecipeOption = Annotated[str, typer.Option(help="Training recipe (see `simattr recipes`).")]
EnsembleOption = Annotated[
    int,
    typer.Option(help="Models of the full-data ensemble (it tells which targets are right)."),
]
EnsembleDirOption = Annotated[
    Path | None, typer.Option(help="Cache of the ensemble (default: next to --out).")
]
ExecutorOption = Annotated[ExecutorKind, typer.Option(help="Where models train.")]
WorkersOption = Annotated[int | None, typer.Option(help="Models trained at once.")]
AddressOption = Annotated[
    str | None, typer.Option(help="Ray cluster address (default: a local Ray).")
]


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
    import numpy as np

    if targets is not None and targets_file is not None:
        raise InvalidInputError("give either --targets or --targets-file, not both")
    if targets_file is not None:
        values = read_npy(targets_file, "--targets-file")
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
