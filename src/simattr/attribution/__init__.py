"""Attribution: score training images for target images from their features.

Baselines that need more than features live in their own modules, imported on demand:
:mod:`simattr.baselines.trak` (TRAK through ``traker``, an optional dependency) and
:mod:`simattr.baselines.supervised` (penultimate-layer similarity of a trained classifier).
"""

from simattr.attribution.attributor import Attributor, rank
from simattr.attribution.resumable import rank_resumable
from simattr.attribution.scorers import (
    SCORERS,
    CosineScorer,
    ExemplarSVMScorer,
    L2Scorer,
    Scorer,
    WhitenedExemplarScorer,
)
from simattr.ranking import Ranking, export_paper_npy, load_ranking, save_ranking

__all__ = [
    "SCORERS",
    "Attributor",
    "CosineScorer",
    "ExemplarSVMScorer",
    "L2Scorer",
    "Ranking",
    "Scorer",
    "WhitenedExemplarScorer",
    "export_paper_npy",
    "load_ranking",
    "rank",
    "rank_resumable",
    "save_ranking",
]
