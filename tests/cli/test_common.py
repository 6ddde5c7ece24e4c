"""Shared option definitions (:mod:`simattr.cli._common`): choices built from the registries."""

from __future__ import annotations


def test_choice_enums_equal_the_registries_they_are_built_from():
    from simattr.attribution.retrieval import INDEX_KINDS, RETRIEVALS
    from simattr.attribution.scorers import SCORERS, ExemplarSVMScorer
    from simattr.cli import _common
    from simattr.evaluation.support import MODES
    from simattr.ssl.methods import METHODS as SSL_METHODS
    from simattr.training.executors import EXECUTORS

    pairs = {
        "Method": SCORERS,
        "Solver": ExemplarSVMScorer.solvers,
        "Retrieval": RETRIEVALS,
        "IndexKind": INDEX_KINDS,
        "Mode": MODES,
        "ExecutorKind": EXECUTORS,
        "SSLMethodName": SSL_METHODS,
    }
    for enum_name, registry in pairs.items():
        enum = getattr(_common, enum_name)
        assert [member.value for member in enum] == list(registry), enum_name


def test_as_flags_turns_the_apis_parameter_names_into_this_clis_options():
    """The API names parameters in backticks; the CLI shows each as its option: dashes for
    underscores, FLAGS where the option has another name, ``=False`` as ``--no-``, a qualified
    field only where FLAGS names it, and every other backticked text (a path, a command) as is."""
    from simattr.cli._common import FLAGS, as_flags

    assert as_flags("`train_features` x.npy has 3 rows") == "--train-features x.npy has 3 rows"
    assert as_flags("rank with `k=40`, into `out_dir`") == "rank with --topk 40, into --out"
    assert as_flags("give `class_conditional=False`") == "give --all-classes"
    assert as_flags("`resume=False` or `normalize=True`") == "--no-resume or --normalize"
    assert as_flags("lower `SupportSettings.k`") == "lower --max-m"
    assert as_flags("`SupportSettings.k=9`") == "--max-m 9"
    assert as_flags("`Other.field` and `simattr lds` and `a.npy`") == (
        "`Other.field` and `simattr lds` and `a.npy`"
    )
    # every option FLAGS names exists on some command
    from typer.main import get_command

    from simattr.cli import app

    options = {
        opt
        for command in get_command(app).commands.values()  # type: ignore[attr-defined]
        for param in command.params
        for opt in (*param.opts, *param.secondary_opts)
    }
    assert set(FLAGS.values()) <= options
