"""nnUNetTrainer subclasses that the stock nnU-Net commands find by name.

Point nnU-Net at them with ``export nnUNet_extTrainer=$(nnunet-ext trainer-path)``; the classes that
nnU-Net's lookup returns are the very objects importable from here.

Trainers (every one in every nnU-Net mode: labels, regions, ignore label, deep supervision):
    TopoTrainer               Dice+CE / Dice+BCE + 0.5 · soft clDice
    SkelRecallTrainer         Dice+CE / Dice+BCE + 1 · Skeleton Recall on CPU-computed skeleton tubes
    CbDiceTrainer             Dice+CE / Dice+BCE + 1 · cbDice
    CbDiceClDiceTrainer       Dice+CE / Dice+BCE + 1 · cbDice + 0.5 · clDice
    BoundaryTrainer           Dice+CE / Dice+BCE + boundary loss ramped 0 → 0.5 over 30–60 % of the epochs
    HausdorffTrainer          Dice+CE / Dice+BCE + HD-DT loss ramped 0 → 0.1 over 10–30 % of the epochs
    FocalDiceTrainer          soft Dice + 1 · focal (γ 2)
    FocalDiceVarianceTrainer  soft Dice + 1 · focal + 0.1 · region variance

Every trainer here, and the stock ``nnUNetTrainer``, also exists in training-length variants
``<Trainer>_<E>epochs`` and ``<Trainer>_<E>epochs_<I>iters`` (see :mod:`nnunet_ext.trainers.budget`).

Recipes (JSON files, see :mod:`nnunet_ext.recipes`) are trainers too: ``Recipe_<recipe name>`` (see
:mod:`nnunet_ext.trainers.recipe_trainer`).
"""
from __future__ import annotations

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_ext.trainers.budget import budget_variant, parse_budget_name
from nnunet_ext.trainers.loss_trainers import (BoundaryTrainer, CbDiceClDiceTrainer, CbDiceTrainer,
                                               FocalDiceTrainer, FocalDiceVarianceTrainer, HausdorffTrainer)
from nnunet_ext.trainers.skeleton_recall_trainer import SkelRecallTrainer
from nnunet_ext.trainers.topo_trainer import TopoTrainer

#: trainers this package ships, by name (budget variants are derived from these and the stock one)
SHIPPED_TRAINERS: dict[str, type] = {
    "TopoTrainer": TopoTrainer,
    "SkelRecallTrainer": SkelRecallTrainer,
    "CbDiceTrainer": CbDiceTrainer,
    "CbDiceClDiceTrainer": CbDiceClDiceTrainer,
    "BoundaryTrainer": BoundaryTrainer,
    "HausdorffTrainer": HausdorffTrainer,
    "FocalDiceTrainer": FocalDiceTrainer,
    "FocalDiceVarianceTrainer": FocalDiceVarianceTrainer,
}

#: bases that budget variants may be derived from
_BUDGET_BASES: dict[str, type] = {**SHIPPED_TRAINERS, "nnUNetTrainer": nnUNetTrainer}

__all__ = ["TopoTrainer", "SkelRecallTrainer", "CbDiceTrainer", "CbDiceClDiceTrainer", "BoundaryTrainer",
           "HausdorffTrainer", "FocalDiceTrainer", "FocalDiceVarianceTrainer", "SHIPPED_TRAINERS", "trainer_by_name"]


def trainer_by_name(name: str) -> type:
    """The trainer class called ``name``: a shipped trainer, a budget variant of one (or of the stock
    ``nnUNetTrainer``), or a recipe trainer ``Recipe_<recipe>``. Raises ``AttributeError`` for anything
    else."""
    if name in SHIPPED_TRAINERS:
        return SHIPPED_TRAINERS[name]
    if name.startswith("Recipe_"):
        # checked before budget names: a recipe name may end like one ("Recipe_short_5epochs")
        from nnunet_ext.trainers.recipe_trainer import parse_recipe_trainer_name, recipe_trainer_class

        recipe = parse_recipe_trainer_name(name)
        if recipe is not None:
            return recipe_trainer_class(recipe, module=__name__)
    parsed = parse_budget_name(name)
    if parsed is not None and parsed[0] in _BUDGET_BASES:
        base, epochs, iterations = parsed
        return budget_variant(_BUDGET_BASES[base], epochs, iterations, module=__name__)
    raise AttributeError(f"module {__name__!r} has no trainer {name!r}")


def __getattr__(name: str) -> type:
    # PEP 562: budget variants appear as attributes the first time they are asked for
    return trainer_by_name(name)
