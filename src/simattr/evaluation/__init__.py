"""Counterfactual evaluation: retrain without (or with relabelled) top-ranked images.

``recipes`` (how a model is trained), ``trainer`` (training and prediction), ``jobs`` (one model
on one counterfactual training set), ``executors`` (in-process, process pool, Ray), ``ensemble``
(the full-data models: correct targets and flip classes), ``support`` (the removal and mislabel
support search), ``lds`` (the linear datamodeling score) and ``classifier_io`` (trained
classifiers as safetensors files, for TRAK and the supervised-feature baseline).
"""

from simattr.evaluation.ensemble import Ensemble, train_ensemble
from simattr.evaluation.executors import make_executor
from simattr.evaluation.jobs import JobResult, TrainJob, run_job
from simattr.evaluation.lds import LdsData, LdsResult, lds_score, load_lds, run_lds
from simattr.evaluation.recipes import RECIPES, PoolSpec, Recipe, get_recipe, recipe_pool
from simattr.evaluation.support import MODES, SupportSettings, run_support
from simattr.evaluation.trainer import predict_logits, predict_proba, train_classifier

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
