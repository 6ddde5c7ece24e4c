"""Dataset audit: near-duplicates, train/test leakage and likely label errors, from features.

:func:`audit` runs it on arrays and returns an :class:`AuditResult`; :mod:`simattr.audit.tables`
writes its CSV tables and :mod:`simattr.audit.page` its HTML page; :func:`run_audit` does all of
it for a dataset on disk, and ``simattr audit`` is the command line over it.
"""

from __future__ import annotations

from simattr.audit.core import (
    LABEL_DETECTORS,
    AuditResult,
    DuplicatePairs,
    LabelIssues,
    audit,
    cleanlab_scores,
    knn_probabilities,
    logistic_probabilities,
    neighbours,
)
from simattr.audit.tables import (
    DUPLICATE_COLUMNS,
    LABEL_COLUMNS,
    POSSIBLE_COLUMNS,
    write_duplicates_csv,
    write_label_issues_csv,
    write_possible_csv,
)
from simattr.audit.workflow import AuditRun, run_audit

__all__ = [
    "DUPLICATE_COLUMNS",
    "LABEL_COLUMNS",
    "LABEL_DETECTORS",
    "POSSIBLE_COLUMNS",
    "AuditResult",
    "AuditRun",
    "DuplicatePairs",
    "LabelIssues",
    "audit",
    "cleanlab_scores",
    "knn_probabilities",
    "logistic_probabilities",
    "neighbours",
    "run_audit",
    "write_duplicates_csv",
    "write_label_issues_csv",
    "write_possible_csv",
]
