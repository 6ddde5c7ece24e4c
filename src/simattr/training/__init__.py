"""Training classifiers: the recipes, the seeded trainer, classifier files, jobs and executors.

The layer below attribution baselines and evaluation: ``recipes`` (how a model is trained, and
the pool it is trained on), ``trainer`` (training and prediction), ``classifier_io`` (trained
classifiers as safetensors files, for TRAK and the supervised-feature baseline), ``jobs`` (one
model on one counterfactual training set) and ``executors`` (in-process, process pool, Ray).
Nothing here knows about rankings or attribution methods.
"""

from simattr.training.executors import EXECUTORS, make_executor
from simattr.training.jobs import JobResult, TrainJob, run_job
from simattr.training.recipes import RECIPES, PoolSpec, Recipe, get_recipe, recipe_pool
from simattr.training.trainer import predict_logits, predict_proba, train_classifier

__all__ = [
    "EXECUTORS",
    "RECIPES",
    "JobResult",
    "PoolSpec",
    "Recipe",
    "TrainJob",
    "get_recipe",
    "make_executor",
    "predict_logits",
    "predict_proba",
    "recipe_pool",
    "run_job",
    "train_classifier",
]
