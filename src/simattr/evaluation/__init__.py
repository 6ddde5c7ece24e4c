"""Counterfactual evaluation: retrain without (or with relabelled) top-ranked images.

``recipes`` (how a model is trained), ``trainer`` (training and prediction), ``jobs`` (one model
on one counterfactual training set), ``executors`` (in-process, process pool, Ray), ``ensemble``
(the full-data models: correct targets and flip classes) and ``support`` (the removal and
mislabel support search).
"""

from simattr.evaluation.recipes import RECIPES, PoolSpec, Recipe, get_recipe, recipe_pool
from simattr.evaluation.support import MODES, SupportSettings, run_support

__all__ = [
    "MODES",
    "RECIPES",
    "PoolSpec",
    "Recipe",
    "SupportSettings",
    "get_recipe",
    "recipe_pool",
    "run_support",
]
