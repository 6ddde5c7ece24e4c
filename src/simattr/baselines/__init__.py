"""Baselines and controls: rankings any attribution method must be read against.

``controls`` holds the know-nothing rankings (random same-class images); ``supervised``
(penultimate-layer similarity of a recipe-trained classifier) and ``trak`` (TRAK through
``traker``, an optional dependency) need trained classifiers and are imported on demand.
All of them produce the same :class:`~simattr.ranking.Ranking` artifact as the attribution.
"""

from simattr.baselines.controls import random_ranking

__all__ = ["random_ranking"]
