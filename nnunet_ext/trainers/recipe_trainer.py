"""Recipe trainers: ``nnUNetv2_train DATASET CONFIG FOLD -tr Recipe_<name>`` trains the recipe ``<name>``.

``Recipe_<name>`` is created the first time it is looked up (:func:`recipe_trainer_class`) and cached, so
nnU-Net's trainer lookup, pickling and ``nnUNetv2_predict`` find the same class object every time. The
recipe itself is read when the trainer is constructed: from its file (built-in, or in a folder of
``nnunet_ext_recipes``), else from the ``recipe.json`` saved in the fold folder (so a trained model is
continued, validated and predicted even where the recipe file is not on the path).

What a recipe sets (see ``docs/recipes.md``): the base loss and the extra terms with epoch schedules
(through :class:`~nnunet_ext.trainers.composite.CompositeLossTrainer`), class weights, optimizer and LR
schedule, epochs and iterations, ``save_every``; checkpoints ``checkpoint_best_<metric>.pth`` for any metric
expression, early stopping, SWA (``checkpoint_swa.pth``), per-term logging (``loss_terms.json``,
``progress_terms.png``).

The trainer is split by concern: this module (the class, optimizer, LR schedule, training loop, term
logging), :mod:`~nnunet_ext.trainers.recipe_setup` (recipe, class weights, terms, ``recipe.json``),
:mod:`~nnunet_ext.trainers.recipe_selection` (selection variables, checkpoint metrics, plateau, early
stopping, SWA updates) and :mod:`~nnunet_ext.trainers.recipe_state` (checkpoint contents, ``--c``,
``checkpoint_swa.pth``).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_ext.lr_schedules import EpochLRScheduler, lr_schedule_from_spec
from nnunet_ext.metric_expressions import MetricExpression, metric_variables
from nnunet_ext.recipes import RECIPE_NAME, dataset_info
from nnunet_ext.schedules import schedule_from_spec
from nnunet_ext.trainers.checkpoints import BestTracker, EarlyStopping
from nnunet_ext.trainers.composite import CompositeLossTrainer
from nnunet_ext.trainers.recipe_selection import RecipeSelectionMixin
from nnunet_ext.trainers.recipe_setup import RecipeSetupMixin, fold_folder
from nnunet_ext.trainers.recipe_state import CHECKPOINT_KEY, SWA_CARRIERS, RecipeStateMixin
from nnunet_ext.trainers.swa import WeightAverage
from nnunet_ext.trainers.term_logging import TermHistory, format_terms

__all__ = ["RECIPE_PREFIX", "RecipeTrainer", "recipe_trainer_class", "parse_recipe_trainer_name", "CHECKPOINT_KEY",
           "SWA_CARRIERS"]

RECIPE_PREFIX = "Recipe_"
_classes: dict[str, type] = {}
_fold_folder = fold_folder  # the name earlier versions used


def parse_recipe_trainer_name(name: str) -> str | None:
    """``"Recipe_cbdice_cldice"`` → ``"cbdice_cldice"``; ``None`` if ``name`` is not a recipe trainer name."""
    if name.startswith(RECIPE_PREFIX) and RECIPE_NAME.match(name[len(RECIPE_PREFIX):]):
        return name[len(RECIPE_PREFIX):]
    return None


def recipe_trainer_class(recipe: str, module: str = "nnunet_ext.trainers") -> type:
    """The (cached) trainer class ``Recipe_<recipe>``. The recipe is read when the trainer is constructed,
    so the class exists for any well-formed name."""
    if not RECIPE_NAME.match(recipe):
        raise AttributeError(f"{recipe!r} is not a recipe name (letters and digits, groups joined by single '_')")
    if recipe not in _classes:
        name = RECIPE_PREFIX + recipe
        _classes[recipe] = type(name, (RecipeTrainer,), {
            "recipe_name": recipe, "__module__": module, "__qualname__": name,
            "__doc__": f"nnU-Net trained with the recipe {recipe!r} (see nnunet_ext.recipes)."})
    return _classes[recipe]


class RecipeTrainer(RecipeSelectionMixin, RecipeStateMixin, RecipeSetupMixin, CompositeLossTrainer):
    """nnU-Net trained as a recipe says; see the module docstring. Use ``Recipe_<name>``, not this class."""

    recipe_name: str | None = None

    # nnU-Net records the constructor arguments by name: keep nnUNetTrainer.__init__'s exact signature
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        if self.recipe_name is None:
            raise TypeError("RecipeTrainer is trained through a recipe trainer name: -tr Recipe_<recipe name>")
        # everything that can be wrong with the recipe is found before nnU-Net creates any folder
        batch_dice = PlansManager(plans).get_configuration(configuration).batch_dice
        self.dataset_info = dataset_info(dataset_json, bool(batch_dice))
        folder = fold_folder(plans, configuration, fold, type(self).__name__)
        self.recipe, self.recipe_source, self._saved, self._recipe_notes = self._resolve_recipe(folder)
        super().__init__(plans, configuration, fold, dataset_json, device)
        recipe = self.recipe
        self.num_epochs = recipe["epochs"]
        self.num_iterations_per_epoch = recipe["iterations_per_epoch"]
        self.num_val_iterations_per_epoch = recipe["val_iterations_per_epoch"]
        self.save_every = recipe["save_every"]
        self.initial_lr = recipe["optimizer"]["lr"]
        self.weight_decay = recipe["optimizer"]["weight_decay"]
        self.base_loss = recipe["base_loss"]
        self.base_weight_schedule = schedule_from_spec(recipe["base_weight"], "base_weight")
        self.class_weights: list[float] | None = None
        self.class_fractions: list[float] | None = None
        per_epoch, patch = metric_variables(self.dataset_info.class_names)
        metrics = recipe["checkpoints"]["metrics"]
        self.metric_expressions = {n: MetricExpression.parse(m["expression"], f"checkpoints.metrics.{n}",
                                                             per_epoch | patch) for n, m in metrics.items()}
        self.trackers = {n: BestTracker(m["mode"]) for n, m in metrics.items()}
        stopping = recipe["early_stopping"]
        self.early_stopping = None if stopping is None else EarlyStopping(
            stopping["patience"], metrics[stopping["metric"]]["mode"], stopping["min_delta"])
        self.swa = None if recipe["swa"] is None else WeightAverage(recipe["swa"]["start_epoch"], recipe["swa"]["every"])
        self.term_history = TermHistory()
        self._patch_metrics_wanted = sorted({m for e in self.metric_expressions.values() for m in e.patch_metrics()})
        self._patch_values: dict[str, list[list[float]]] | None = None
        self._term_sums: dict[str, Any] = {}
        self._term_count = 0
        self._train_term_means: dict[str, float] = {}
        self._val_sums: dict[str, float] = {}
        self._val_counts: dict[str, int] = {}
        self._epoch_weights: dict[str, float] = {}
        for note in self._recipe_notes:
            self.print_to_log_file(note)

    # ---------------------------------------------------------------- optimizer and learning rate
    def configure_optimizers(self):
        spec = self.recipe["optimizer"]
        parameters = self.network.parameters()
        if spec["type"] == "sgd":
            optimizer = torch.optim.SGD(parameters, spec["lr"], weight_decay=spec["weight_decay"],
                                        momentum=spec["momentum"], nesterov=spec["nesterov"])
        else:
            cls = torch.optim.Adam if spec["type"] == "adam" else torch.optim.AdamW
            optimizer = cls(parameters, spec["lr"], betas=tuple(spec["betas"]), eps=spec["eps"],
                            weight_decay=spec["weight_decay"])
        swa = self.recipe["swa"]
        scheduler = EpochLRScheduler(optimizer, lr_schedule_from_spec(self.recipe["lr_schedule"]), spec["lr"],
                                     self.num_epochs,
                                     override_from=swa["start_epoch"] if swa and swa["lr"] is not None else None,
                                     override_lr=swa["lr"] if swa else None)
        return optimizer, scheduler

    # ---------------------------------------------------------------- training loop
    def run_training(self):
        # nnU-Net's loop, with a way out for early stopping (also when continuing a run that had stopped)
        self.on_train_start()
        for _ in range(self.current_epoch, self.num_epochs):
            if self.early_stopping is not None and self.early_stopping.stopped_epoch is not None:
                break
            self.on_epoch_start()
            self.on_train_epoch_start()
            train_outputs = [self.train_step(next(self.dataloader_train)) for _ in range(self.num_iterations_per_epoch)]
            self.on_train_epoch_end(train_outputs)
            with torch.no_grad():
                self.on_validation_epoch_start()
                val_outputs = [self.validation_step(next(self.dataloader_val))
                               for _ in range(self.num_val_iterations_per_epoch)]
                self.on_validation_epoch_end(val_outputs)
            self.on_epoch_end()
        self.on_train_end()

    def on_epoch_start(self):
        self._epoch_weights = self.loss_weights_at(self.current_epoch) or {"base": 1.0}
        self._term_sums, self._term_count = {}, 0
        super().on_epoch_start()

    def train_step(self, batch: dict) -> dict:
        result = super().train_step(batch)
        if not np.isfinite(result["loss"]).all():
            return result  # a skipped step (see CompositeLossTrainer.train_step) adds nothing to the term means
        for name, value in getattr(self.loss, "last_values", {}).items():
            self._term_sums[name] = self._term_sums.get(name, 0) + value.detach().float()
        self._term_count += 1
        return result

    def on_train_epoch_end(self, train_outputs):
        super().on_train_epoch_end(train_outputs)
        n = max(self._term_count, 1)
        means = {name: float(total) / n for name, total in self._term_sums.items()}
        if self.is_ddp:
            import torch.distributed as dist

            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, means)
            means = {k: float(np.mean([g[k] for g in gathered if k in g])) for k in means}
        self._train_term_means = means
        weights = {"base": 1.0, **self._epoch_weights}
        lr = self.optimizer.param_groups[0]["lr"]
        self.term_history.record(self.current_epoch, lr, weights, means)
        self.print_to_log_file("loss terms (unweighted mean × weight): " + format_terms(means, weights))
