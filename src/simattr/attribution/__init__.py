"""Attribution: score training images for target images from their features.

Baselines that need more than features live in their own modules, imported on demand:
:mod:`simattr.attribution.trak` (TRAK through ``traker``, an optional dependency) and
:mod:`simattr.attribution.supervised` (penultimate-layer similarity of a trained classifier).
"""

from simattr.attribution.attributor import Attributor
from simattr.attribution.baselines import random_ranking
from simattr.attribution.ranking import Ranking, export_paper_npy, load_ranking, rank, save_ranking
from simattr.attribution.resumable import rank_resumable
from simattr.attribution.scorers import (
    SCORERS,
    CosineScorer,
    ExemplarSVMScorer,
    L2Scorer,
    Scorer,
    WhitenedExemplarScorer,
)

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
    "random_ranking",
    "rank",
    "rank_resumable",
    "save_ranking",
]
