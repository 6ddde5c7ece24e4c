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
