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
"""
from __future__ import annotations

import copy
import math
import shutil
from os.path import join
from pathlib import Path
from typing import Any

import numpy as np
import torch
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_ext.lr_schedules import EpochLRScheduler, lr_schedule_from_spec
from nnunet_ext.recipes import (RECIPE_NAME, RecipeError, auto_class_weights, check_for_dataset, class_weight_names,
                                dataset_info, describe_class_weights, find_recipe, label_fractions, load_recipe,
                                load_recipe_file, resolve, term_configs)
from nnunet_ext.recipes.saved import (SAVED_NAME, check_unchanged, keep_replaced, read_saved, write_saved)
from nnunet_ext.schedules import schedule_from_spec
from nnunet_ext.trainers.checkpoints import (BestTracker, EarlyStopping, MetricExpression, class_variables,
                                             metric_variables, patch_metric_values)
from nnunet_ext.trainers.composite import CompositeLossTrainer
from nnunet_ext.trainers.swa import WeightAverage, has_running_statistics, recompute_batch_norm
from nnunet_ext.trainers.term_logging import TermHistory, format_terms, plot_term_history

__all__ = ["RECIPE_PREFIX", "RecipeTrainer", "recipe_trainer_class", "parse_recipe_trainer_name"]

RECIPE_PREFIX = "Recipe_"
#: key of our state inside nnU-Net's checkpoint dict (nnU-Net ignores keys it does not know)
CHECKPOINT_KEY = "nnunet_ext_recipe"
_classes: dict[str, type] = {}


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


def _fold_folder(plans: dict, configuration: str, fold, trainer_name: str) -> Path | None:
    from nnunetv2.paths import nnUNet_results

    if not nnUNet_results.is_set():
        return None
    return Path(nnUNet_results.get()) / plans["dataset_name"] / f"{trainer_name}__{plans['plans_name']}__{configuration}" \
        / f"fold_{fold}"


class RecipeTrainer(CompositeLossTrainer):
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
        folder = _fold_folder(plans, configuration, fold, type(self).__name__)
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
        if stopping is not None:
            self.trackers[stopping["metric"]].min_delta = stopping["min_delta"]
        self.early_stopping = None if stopping is None else EarlyStopping(stopping["patience"])
        self.swa = None if recipe["swa"] is None else WeightAverage(recipe["swa"]["start_epoch"], recipe["swa"]["every"])
        self.term_history = TermHistory()
        self._patch_metrics_wanted = sorted({v.split("_")[0] for e in self.metric_expressions.values()
                                             for v in e.variables if v.split("_")[0] in ("cldice", "masd")})
        self._patch_values: dict[str, list[list[float]]] | None = None
        self._term_sums: dict[str, Any] = {}
        self._term_count = 0
        self._epoch_weights: dict[str, float] = {}
        for note in self._recipe_notes:
            self.print_to_log_file(note)

    # ---------------------------------------------------------------- recipe resolution
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
        weights = {"base": 1.0, **self._epoch_weights}
        lr = self.optimizer.param_groups[0]["lr"]
        self.term_history.record(self.current_epoch, lr, weights, means)
        self.print_to_log_file("loss terms (unweighted mean × weight): " + format_terms(means, weights))

    # ---------------------------------------------------------------- validation-patch metrics
    def _is_evaluation_epoch(self, epoch: int) -> bool:
        return (epoch + 1) % self.recipe["checkpoints"]["every"] == 0 or epoch == self.num_epochs - 1

    def on_validation_epoch_start(self):
        wanted = self._patch_metrics_wanted and self._is_evaluation_epoch(self.current_epoch)
        self._patch_values = {m: [[] for _ in self.dataset_info.class_names] for m in self._patch_metrics_wanted} \
            if wanted else None
        super().on_validation_epoch_start()

    def validation_step(self, batch: dict) -> dict:
        if self._patch_values is None:
            return super().validation_step(batch)
        # nnU-Net's validation step computes the network output and hands it to self.loss; borrow it there
        # instead of running the network twice (the target is copied: nnU-Net edits it in place afterwards)
        captured, loss = {}, self.loss

        def capturing_loss(output, target):
            captured["output"] = (output[0] if isinstance(output, (list, tuple)) else output).detach()
            captured["target"] = (target[0] if isinstance(target, (list, tuple)) else target).detach().clone()
            return loss(output, target)

        self.loss = capturing_loss
        try:
            result = super().validation_step(batch)
        finally:
            self.loss = loss
        self._add_patch_metrics(captured["output"], captured["target"])
        return result

    def _add_patch_metrics(self, output: torch.Tensor, target: torch.Tensor) -> None:
        lm, n = self.label_manager, self.dataset_info.n_foreground
        if lm.has_regions:
            prediction = (torch.sigmoid(output.float()) > 0.5).cpu().numpy()
            target = target.cpu().numpy()
            valid = (target[:, -1:] == 0) if lm.has_ignore_label else None
            reference = target[:, :n] > 0
        else:
            labels = output.argmax(1).cpu().numpy()
            target = target[:, 0].cpu().numpy()
            foreground = list(lm.foreground_labels)
            prediction = np.stack([labels == c for c in foreground], 1)
            reference = np.stack([target == c for c in foreground], 1)
            valid = (target != lm.ignore_label)[:, None] if lm.has_ignore_label else None
        spacing = tuple(self.configuration_manager.spacing)[-(prediction.ndim - 2):]
        values = patch_metric_values(prediction, reference, valid, spacing, self._patch_metrics_wanted)
        for metric, per_class in values.items():
            for c, entries in enumerate(per_class):
                self._patch_values[metric][c].extend(entries)

    # ---------------------------------------------------------------- end of epoch: metrics, LR, SWA, checkpoints
    def epoch_variables(self) -> dict[str, float]:
        """The values metric expressions see for the epoch that just ended."""
        log, names = self.logger, self.dataset_info.class_names
        values = {"val_loss": float(log.get_value("val_losses", step=-1)),
                  "train_loss": float(log.get_value("train_losses", step=-1)),
                  "ema_dice": float(log.get_value("ema_fg_dice", step=-1))}
        values.update(class_variables("dice", log.get_value("dice_per_class_or_region", step=-1), names))
        if self._patch_values is not None:
            patches = self._patch_values
            if self.is_ddp:
                import torch.distributed as dist

                gathered = [None] * dist.get_world_size()
                dist.all_gather_object(gathered, patches)
                patches = {m: [sum((g[m][c] for g in gathered), []) for c in range(len(names))] for m in patches}
            for metric, per_class in patches.items():
                values.update(class_variables(metric, [np.mean(v) if v else math.nan for v in per_class], names))
        return values

    def on_epoch_end(self):
        epoch = self.current_epoch
        values = self.epoch_variables()
        if self.lr_scheduler.observe(self._plateau_value(values), epoch):
            self.print_to_log_file(f"reduce-on-plateau: learning rate × {self.lr_scheduler.schedule.factor:g} from "
                                   f"the next epoch on")
        improved = []
        if self._is_evaluation_epoch(epoch) and self.metric_expressions:
            results = {name: expression(values) for name, expression in self.metric_expressions.items()}
            improved = [name for name in results if self.trackers[name].update(results[name], epoch)]
            self.print_to_log_file("checkpoint metrics: " + ", ".join(
                f"{n} {v:.4g}{' (new best)' if n in improved else ''}" for n, v in results.items()))
            stopping = self.recipe["early_stopping"]
            if stopping is not None and self.early_stopping.check(self.trackers[stopping["metric"]], epoch):
                self.print_to_log_file(f"early stopping: {stopping['metric']} has not improved for "
                                       f"{stopping['patience']} epochs (best {self.trackers[stopping['metric']].best:.4g}"
                                       f" at epoch {self.trackers[stopping['metric']].best_epoch})")
        if self.swa is not None and self.swa.update(self._bare_network(), epoch):
            self.print_to_log_file(f"SWA: weights of epoch {epoch} averaged in ({self.swa.n_averaged} so far)")
        super().on_epoch_end()  # nnU-Net's logging, checkpoint_latest/best, progress.png; epoch += 1
        self._save_best_metric_checkpoints(improved)
        if self.local_rank == 0:
            self.term_history.write_json(join(self.output_folder, "loss_terms.json"))
            try:
                plot_term_history(self.term_history, join(self.output_folder, "progress_terms.png"))
            except Exception as error:  # a plot must never end a training
                self.print_to_log_file(f"progress_terms.png not written: {type(error).__name__}: {error}")

    def _plateau_value(self, values: dict) -> float:
        schedule = self.lr_scheduler.schedule
        metric = getattr(schedule, "metric", None)
        return MetricExpression.parse(metric)(values) if metric else math.nan

    def _save_best_metric_checkpoints(self, improved: list[str]) -> None:
        if not improved or self.local_rank != 0 or self.disable_checkpointing:
            return
        # nnU-Net has already advanced the epoch counter; save as of the epoch that produced the value
        self.current_epoch -= 1
        try:
            first = join(self.output_folder, f"checkpoint_best_{improved[0]}.pth")
            self.save_checkpoint(first)
            for name in improved[1:]:
                shutil.copyfile(first, join(self.output_folder, f"checkpoint_best_{name}.pth"))
        finally:
            self.current_epoch += 1
        for name in improved:
            self.print_to_log_file(f"new best {name} {self.trackers[name].best:.4g}: checkpoint_best_{name}.pth")

    def on_train_end(self):
        if self.swa is not None and self.swa.n_averaged > 0 and self.local_rank == 0 and not self.disable_checkpointing:
            self._save_swa_checkpoint()
        super().on_train_end()

    def _save_swa_checkpoint(self) -> None:
        network = self._bare_network()
        average = {k: v.clone() for k, v in self.swa.average.items()}
        if has_running_statistics(network):
            n_batches = self.recipe["swa"]["bn_update_batches"]
            copy_of_network = copy.deepcopy(network)
            copy_of_network.load_state_dict(average)
            used = recompute_batch_norm(copy_of_network, (next(self.dataloader_train)["data"].to(self.device)
                                                          for _ in range(n_batches)))
            average = copy_of_network.state_dict()
            self.print_to_log_file(f"SWA: batch-norm running statistics recomputed on {used} training batches")
        else:
            self.print_to_log_file("SWA: the network normalises with instance norm (statistics from every image at "
                                   "every forward pass, no running statistics), so the averaged weights are used as "
                                   "they are")
        self.current_epoch -= 1  # as nnU-Net does for checkpoint_final (on_train_end runs after the last increment)
        try:
            checkpoint = self._checkpoint_dict()
        finally:
            self.current_epoch += 1
        checkpoint["network_weights"] = {k: v.cpu() for k, v in average.items()}
        torch.save(checkpoint, join(self.output_folder, "checkpoint_swa.pth"))
        self.print_to_log_file(f"SWA: average of {self.swa.n_averaged} epochs saved as checkpoint_swa.pth")

    # ---------------------------------------------------------------- checkpoints
    def _bare_network(self) -> torch.nn.Module:
        from torch._dynamo import OptimizedModule

        network = self.network.module if self.is_ddp else self.network
        return network._orig_mod if isinstance(network, OptimizedModule) else network

    def _recipe_state(self) -> dict:
        return {
            "recipe": self.recipe,
            "class_weights": self.class_weights,
            "lr_scheduler": self.lr_scheduler.state_dict() if self.lr_scheduler is not None else None,
            "trackers": {name: tracker.state_dict() for name, tracker in self.trackers.items()},
            "early_stopping": self.early_stopping.state_dict() if self.early_stopping is not None else None,
            "swa": self.swa.state_dict() if self.swa is not None else None,
            "term_history": self.term_history.state_dict(),
        }

    def _checkpoint_dict(self) -> dict:
        # the keys of nnUNetTrainer.save_checkpoint (2.8), plus our state under one extra key
        return {
            "network_weights": self._bare_network().state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "grad_scaler_state": self.grad_scaler.state_dict() if self.grad_scaler is not None else None,
            "logging": self.logger.get_checkpoint(),
            "_best_ema": self._best_ema,
            "current_epoch": self.current_epoch + 1,
            "init_args": self.my_init_kwargs,
            "trainer_name": self.__class__.__name__,
            "inference_allowed_mirroring_axes": self.inference_allowed_mirroring_axes,
            CHECKPOINT_KEY: self._recipe_state(),
        }

    def save_checkpoint(self, filename: str) -> None:
        if self.local_rank != 0:
            return
        if self.disable_checkpointing:
            self.print_to_log_file("No checkpoint written, checkpointing is disabled")
            return
        torch.save(self._checkpoint_dict(), filename)

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        super().load_checkpoint(filename_or_checkpoint)
        checkpoint = filename_or_checkpoint
        if isinstance(checkpoint, str):
            checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=False)
        self.restore_recipe_state(checkpoint.get(CHECKPOINT_KEY))

    def restore_recipe_state(self, state: dict | None) -> None:
        """Put back what :meth:`save_checkpoint` stored under ``CHECKPOINT_KEY`` (after nnU-Net restored
        ``current_epoch``)."""
        if state is None:
            self.print_to_log_file("checkpoint without recipe state (not written by a recipe trainer): the LR "
                                   "plateau state, metric trackers, SWA average and term history start afresh")
            return
        if state.get("lr_scheduler") is not None:
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        for name, tracker_state in state.get("trackers", {}).items():
            if name in self.trackers:
                self.trackers[name].load_state_dict(tracker_state)
        if self.early_stopping is not None and state.get("early_stopping") is not None:
            self.early_stopping.load_state_dict(state["early_stopping"])
        if self.swa is not None and state.get("swa") is not None:
            self.swa.load_state_dict(state["swa"], self.device)
        self.term_history.load_state_dict(state["term_history"])
        self.term_history.truncate(self.current_epoch)

