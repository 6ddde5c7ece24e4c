"""Attribution: score training images for target images from their features.

Baselines that need more than features live in their own modules, imported on demand:
:mod:`simattr.baselines.trak` (TRAK through ``traker``, an optional dependency) and
:mod:`simattr.baselines.supervised` (penultimate-layer similarity of a trained classifier).
"""

from simattr.attribution.attributor import Attributor, SmallPoolWarning, rank
from simattr.attribution.check import check_scorer
from simattr.attribution.explain import Explanation, explain
from simattr.attribution.resumable import rank_resumable
from simattr.attribution.scorers import (
    SCORERS,
    ClassPriorScorer,
    CosineScorer,
    ExemplarSVMScorer,
    L2Scorer,
    RawL2Scorer,
    Scorer,
    WhitenedExemplarScorer,
)
from simattr.attribution.workflow import AttributionRun, attribute
from simattr.ranking import Ranking, export_paper_npy, load_ranking, save_ranking

__all__ = [
    "SCORERS",
    "AttributionRun",
    "Attributor",
    "ClassPriorScorer",
    "CosineScorer",
    "ExemplarSVMScorer",
    "Explanation",
    "L2Scorer",
    "Ranking",
    "RawL2Scorer",
    "Scorer",
    "SmallPoolWarning",
    "WhitenedExemplarScorer",
    "attribute",
    "check_scorer",
    "explain",
    "export_paper_npy",
    "load_ranking",
    "rank",
    "rank_resumable",
    "save_ranking",
]
