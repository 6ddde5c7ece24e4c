"""Which test images a margins run evaluates: given, every ranked one, or a balanced draw.

``simattr margins`` and scripts share this choice; the support search makes its own inside
:func:`~simattr.evaluation.support.run_support` (see ``choose_targets`` there).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from simattr.errors import InvalidInputError
from simattr.ranking import Ranking


def margin_targets(
    data: str,
    recipe: str,
    rankings: Mapping[str, Ranking],
    *,
    targets: Sequence[int] | np.ndarray | None = None,
    n_targets: int | None = None,
    ensemble_models: int = 10,
    ensemble_dir: str | os.PathLike[str],
    seed: int = 0,
    device: str = "cpu",
    threads: int | None = None,
) -> np.ndarray:
    """The targets of a margins run.

    ``targets`` as given; else every target all ``rankings`` rank; with ``n_targets``, that many
    of them drawn (seeded by ``seed``) as evenly over classes as possible among those the
    full-data ensemble of ``recipe`` (``ensemble_models`` models, cached in ``ensemble_dir``)
    classifies correctly: a margin is read off a prediction that was right to begin with, and
    full classes keep multiplexed groups full.
    """
    from simattr.evaluation.ensemble import train_ensemble
    from simattr.evaluation.margins import choose_balanced_targets
    from simattr.evaluation.support import common_targets
    from simattr.training.jobs import load_split

    if targets is not None and n_targets is not None:
        raise InvalidInputError("give either `targets` or `n_targets`, not both")
    if targets is not None:
        return np.asarray(targets, dtype=np.int64)
    chosen = common_targets(rankings)
    if n_targets is None:
        return chosen
    ensemble = train_ensemble(
        data,
        recipe,
        n_models=ensemble_models,
        cache_dir=Path(ensemble_dir),
        device=device,
        threads=threads,
    )
    eligible = chosen[ensemble.correct[chosen]]
    labels = load_split(data, "test").labels
    return choose_balanced_targets(eligible, labels, n_targets, seed=seed)


__all__ = ["margin_targets"]
