"""Counterfactual evaluation: retrain without (or with relabelled) top-ranked images.

``ensemble`` (the full-data models: correct targets and flip classes), ``support`` (the removal
and mislabel support search) and ``lds`` (the linear datamodeling score). Models are trained
through :mod:`simattr.training`; the training names are re-exported here for convenience.
"""

from simattr.evaluation.ensemble import Ensemble, train_ensemble
from simattr.evaluation.lds import LdsData, LdsResult, lds_score, load_lds, run_lds
from simattr.evaluation.support import MODES, SupportSettings, run_support
from simattr.training import (
    RECIPES,
    JobResult,
    PoolSpec,
    Recipe,
    TrainJob,
    get_recipe,
    make_executor,
    predict_logits,
    predict_proba,
    recipe_pool,
    run_job,
    train_classifier,
)

__all__ = [
    "MODES",
    "RECIPES",
    "Ensemble",
    "JobResult",
    "LdsData",
    "LdsResult",
    "PoolSpec",
    "Recipe",
    "SupportSettings",
    "TrainJob",
    "get_recipe",
    "lds_score",
    "load_lds",
    "make_executor",
    "predict_logits",
    "predict_proba",
    "recipe_pool",
    "run_job",
    "run_lds",
    "run_support",
    "train_classifier",
    "train_ensemble",
]
