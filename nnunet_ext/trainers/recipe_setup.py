"""Recipe trainers, part 1: the recipe of a run (file or saved copy, unchanged across folds and ``--c``),
its class weights, its loss terms and the saved ``recipe.json``. Mixed into
:class:`~nnunet_ext.trainers.recipe_trainer.RecipeTrainer`."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from nnunet_ext.recipes import (RecipeError, auto_class_weights, check_for_dataset, class_weight_names,
                                describe_class_weights, find_recipe, label_fractions, load_recipe, load_recipe_file,
                                recipe_notes, resolve, term_configs)
from nnunet_ext.recipes.saved import SAVED_NAME, check_unchanged, keep_replaced, read_saved, write_saved

__all__ = ["RecipeSetupMixin", "fold_folder"]


def fold_folder(plans: dict, configuration: str, fold, trainer_name: str) -> Path | None:
    """The fold folder nnU-Net will use (``None`` where ``nnUNet_results`` is not set)."""
    from nnunetv2.paths import nnUNet_results

    if not nnUNet_results.is_set():
        return None
    return Path(nnUNet_results.get()) / plans["dataset_name"] / f"{trainer_name}__{plans['plans_name']}__{configuration}" \
        / f"fold_{fold}"


class RecipeSetupMixin:
    """Which recipe a run trains, with which class weights and terms."""

    def _resolve_recipe(self, folder: Path | None):
        name, info = self.recipe_name, self.dataset_info
        source = find_recipe(name)
        saved = read_saved(folder) if folder is not None else None
        saved_path = str(folder / SAVED_NAME) if folder is not None else SAVED_NAME
        notes = []
        if source is not None:
            recipe = load_recipe_file(source.path, name)
            origin = str(source.path)
        elif saved is not None:
            recipe = resolve(saved["recipe"], name, saved_path)
            origin = saved_path
            notes.append(f"recipe {name!r}: no recipe file found, using the recipe saved in {saved_path}")
        else:
            load_recipe(name)  # raises the error that says where it searched
            raise AssertionError("unreachable")
        check_for_dataset(recipe, info, origin)
        trainer = type(self).__name__
        if saved is not None:
            changed = check_unchanged(saved, recipe, saved_path, trainer)
            if changed:
                notes.append(f"recipe {name!r} CHANGED under an existing run (accepted through the environment): "
                             + "; ".join(changed))
                saved = dict(saved, replaced=True)
        if folder is not None:  # other folds of the same results folder must use the same recipe
            for other in sorted(folder.parent.glob(f"fold_*/{SAVED_NAME}")):
                if other.parent != folder:
                    other_saved = read_saved(other.parent)
                    if check_unchanged(other_saved, recipe, str(other), trainer):
                        notes.append(f"recipe {name!r} differs from {other} (accepted through the environment)")
        notes.insert(0, f"recipe {name!r} from {origin}")
        notes.extend(f"recipe note: {note}" for note in recipe_notes(recipe))
        return recipe, origin, saved, notes

    # ---------------------------------------------------------------- loss
    def term_configs(self):
        return term_configs(self.recipe, self.dataset_info, self.class_weights)

    def loss_weights_at(self, epoch: int) -> dict:
        weights = super().loss_weights_at(epoch)
        base = self.base_weight_schedule(epoch)
        if base != 1.0 or self.base_weight_schedule.last_change_epoch > 0:
            weights = {"base": base, **weights}
        return weights

    def reference_weights(self) -> dict:
        """The fixed weights of ``val_loss_ref``: every weight (``base`` included) at the last epoch."""
        return {"base": 1.0, **self.loss_weights_at(self.num_epochs - 1)}

    # ---------------------------------------------------------------- class weights
    def _training_label_fractions(self) -> list[float]:
        from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

        if self.preprocessed_dataset_folder is None or not Path(self.preprocessed_dataset_folder).is_dir():
            raise RecipeError(self.recipe_source, "class_weights", "computing class weights needs the preprocessed "
                              "dataset (nnUNet_preprocessed); it was not found")
        keys, _ = self.do_split()
        dataset = infer_dataset_class(self.preprocessed_dataset_folder)(self.preprocessed_dataset_folder, keys)
        info = self.dataset_info
        classes = ([0] + list(info.classes)) if info.mode == "softmax" else list(info.classes)
        segmentations = (np.asarray(dataset.load_case(k)[1][:]) for k in keys)
        return label_fractions(segmentations, classes, info.mode == "sigmoid", info.ignore_label)

    def _determine_class_weights(self) -> None:
        spec = self.recipe["class_weights"]
        if spec is None:
            return
        derived = (self._saved or {}).get("derived", {}) if not (self._saved or {}).get("replaced") else {}
        if derived.get("class_weights") is not None:
            self.class_weights, self.class_fractions = derived["class_weights"], derived.get("class_fractions")
            origin = "as saved when this run started"
        elif spec["type"] == "manual":
            self.class_weights = list(spec["values"])
            try:
                self.class_fractions = self._training_label_fractions()
            except (RecipeError, OSError, KeyError, RuntimeError):
                self.class_fractions = None  # only needed for the plain-words check
            origin = "manual"
        else:
            self.class_fractions = self._training_label_fractions()
            self.class_weights = auto_class_weights(self.class_fractions, spec["power"], spec["max"])
            origin = f"auto: min({spec['max']:g}, (f_max / f_c)^{spec['power']:g}) from the training labels of fold " \
                     f"{self.fold}"
        for line in describe_class_weights(self.class_weights, class_weight_names(self.dataset_info),
                                           self.class_fractions, origin, self.dataset_info.mode == "sigmoid"):
            self.print_to_log_file(line)

    def initialize(self):
        if not self.was_initialized:
            self._determine_class_weights()
        super().initialize()

    def on_train_start(self):
        if not self.was_initialized:
            self.initialize()
        if self.local_rank == 0:
            if (self._saved or {}).get("replaced"):
                kept = keep_replaced(self.output_folder)
                self.print_to_log_file(f"the previous recipe of this run is kept as {kept}")
            write_saved(self.output_folder, self.recipe, {"class_weights": self.class_weights,
                                                          "class_fractions": self.class_fractions},
                        self.recipe_source)
        super().on_train_start()
