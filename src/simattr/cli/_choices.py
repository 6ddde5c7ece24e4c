"""The names the command line offers as choices, held here without importing the API.

The registries they mirror (scorers, solvers, retrievals, executors, ...) live in modules that
import torch, scikit-learn or FAISS, which take seconds to load. ``simattr --help`` and argument
errors must answer before any of that, so the names are spelled here once more and
``tests/cli/test_startup.py`` fails when they drift from the registries.
"""

from __future__ import annotations

#: :data:`simattr.attribution.scorers.SCORERS`
METHODS = ("esvm", "l2", "l2-raw", "cosine", "lda", "class-prior", "learned")
#: :attr:`simattr.attribution.scorers.ExemplarSVMScorer.solvers`
SOLVERS = ("batched", "newton", "reference")
#: :data:`simattr.attribution.retrieval.RETRIEVALS`
RETRIEVALS = ("auto", "exact", "faiss")
#: :data:`simattr.attribution.retrieval.INDEX_KINDS`
INDEX_KINDS = ("flat", "ivf")
#: :data:`simattr.evaluation.support.MODES`
MODES = ("remove", "mislabel")
#: :data:`simattr.training.executors.EXECUTORS`
EXECUTORS = ("local", "process", "ray")
#: :data:`simattr.ssl.methods.METHODS`
SSL_METHODS = ("moco", "simclr", "byol")
#: :data:`simattr.audit.core.LABEL_DETECTORS`
LABEL_DETECTORS = ("simattr", "knn", "cleanlab")
