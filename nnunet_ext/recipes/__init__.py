"""Recipes: a training configuration (loss terms and their weight schedules, class weights, optimizer and
learning-rate schedule, training length, checkpoint metrics, early stopping, SWA) as a JSON file instead
of a Python class.

A recipe ``<name>`` is trained as ``nnUNetv2_train … -tr Recipe_<name>`` (see
:mod:`nnunet_ext.trainers.recipe_trainer`). Built-in recipes ship in ``builtin/``; user recipes are found
in the folders of the environment variable ``nnunet_ext_recipes``. Documentation: ``docs/recipes.md``.

Modules: :mod:`~nnunet_ext.recipes.schema` (keys, defaults, checks without a dataset),
:mod:`~nnunet_ext.recipes.loader` (finding files by name, ``extends``), :mod:`~nnunet_ext.recipes.build`
(checks against a dataset, term configs), :mod:`~nnunet_ext.recipes.class_weights` (auto weights),
:mod:`~nnunet_ext.recipes.saved` (the resolved recipe in the fold folder).
"""
from nnunet_ext.recipes.build import DatasetInfo, check_for_dataset, class_weight_names, dataset_info, term_configs
from nnunet_ext.recipes.class_weights import auto_class_weights, describe_class_weights, label_fractions
from nnunet_ext.recipes.loader import (BUILTIN_FOLDER, RECIPES_VARIABLE, RecipeSource, find_recipe, list_recipes,
                                       load_recipe, load_recipe_file)
from nnunet_ext.recipes.schema import RECIPE_NAME, RecipeError, recipe_notes, resolve

__all__ = ["RecipeError", "resolve", "recipe_notes", "RECIPE_NAME", "load_recipe", "load_recipe_file", "find_recipe", "list_recipes",
           "RecipeSource", "RECIPES_VARIABLE", "BUILTIN_FOLDER", "DatasetInfo", "dataset_info", "check_for_dataset",
           "term_configs", "class_weight_names", "auto_class_weights", "label_fractions", "describe_class_weights"]
