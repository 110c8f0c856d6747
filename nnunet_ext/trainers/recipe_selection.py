"""Recipe trainers, part 2: model selection. Every epoch the selection variables
(:mod:`nnunet_ext.metric_expressions`) are collected: nnU-Net's logged losses and pseudo-Dice, the
per-term validation values (for ``val_base_loss`` and ``val_loss_ref``), and on evaluation epochs clDice
and MASD of the validation patches. They drive reduce-on-plateau, the ``checkpoint_best_<metric>.pth``
trackers, early stopping and the SWA average. Mixed into
:class:`~nnunet_ext.trainers.recipe_trainer.RecipeTrainer`."""
from __future__ import annotations

import math
import shutil
from os.path import join

import numpy as np
import torch

from nnunet_ext.metric_expressions import MetricExpression, class_variables, patch_metric_values
from nnunet_ext.term_catalogue import needs_auxiliary_target
from nnunet_ext.trainers.term_logging import plot_term_history

__all__ = ["RecipeSelectionMixin"]


def _gather_means(trainer, sums: dict, counts: dict) -> dict:
    """Per-name means over this process's values, averaged over processes under DDP."""
    means = {name: float(total) / counts[name] for name, total in sums.items() if counts.get(name)}
    if trainer.is_ddp:
        import torch.distributed as dist

        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, means)
        names = {k for g in gathered for k in g}
        means = {k: float(np.mean([g[k] for g in gathered if k in g])) for k in names}
    return means


class RecipeSelectionMixin:
    """Selection variables, checkpoint metrics, reduce-on-plateau, early stopping, SWA updates."""

    # ---------------------------------------------------------------- validation
    def _is_evaluation_epoch(self, epoch: int) -> bool:
        return (epoch + 1) % self.recipe["checkpoints"]["every"] == 0 or epoch == self.num_epochs - 1

    def on_validation_epoch_start(self):
        wanted = self._patch_metrics_wanted and self._is_evaluation_epoch(self.current_epoch)
        self._patch_values = {m: [[] for _ in self.dataset_info.class_names] for m in self._patch_metrics_wanted} \
            if wanted else None
        self._val_sums, self._val_counts = {}, {}
        super().on_validation_epoch_start()

    def validation_step(self, batch: dict) -> dict:
        # nnU-Net's validation step computes the network output and hands it to self.loss; borrow it there
        # instead of running the network twice (the target is copied: nnU-Net edits it in place afterwards).
        # Terms that are at weight 0 now but count in val_loss_ref are computed as well; nnU-Net's val_loss
        # stays the loss at the epoch's weights.
        captured, loss = {}, self.loss
        compound = self.compound_loss()
        current = dict(compound.weights)
        reference = self._validation_reference_weights
        union = {k: (w if w != 0 else reference.get(k, 0.0)) for k, w in current.items()}
        patches = self._patch_values is not None

        def capturing_loss(output, target):
            if patches:
                captured["output"] = (output[0] if isinstance(output, (list, tuple)) else output).detach()
                captured["target"] = (target[0] if isinstance(target, (list, tuple)) else target).detach().clone()
            if union == current:
                total = loss(output, target)
            else:
                compound.set_weights(union)
                try:
                    loss(output, target)
                finally:
                    compound.set_weights(current)
                values = loss.last_values
                total = sum(current[k] * v for k, v in values.items() if current.get(k, 0) != 0)
            captured["values"] = {k: float(v) for k, v in getattr(loss, "last_values", {}).items()}
            return total

        self.loss = capturing_loss
        try:
            result = super().validation_step(batch)
        finally:
            self.loss = loss
        for name, value in captured.get("values", {}).items():
            if math.isfinite(value):
                self._val_sums[name] = self._val_sums.get(name, 0.0) + value
                self._val_counts[name] = self._val_counts.get(name, 0) + 1
        if patches:
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

    @property
    def _validation_reference_weights(self) -> dict:
        """Reference weights of the terms validation can compute (no auxiliary target)."""
        if getattr(self, "_reference_cache", None) is None:
            auxiliary = {label for label, t in self.recipe["terms"].items() if needs_auxiliary_target(t["loss"])}
            self._reference_cache = {k: w for k, w in self.reference_weights().items() if k not in auxiliary}
        return self._reference_cache

    # ---------------------------------------------------------------- the epoch's variables
    def epoch_variables(self) -> dict[str, float]:
        """The values metric expressions see for the epoch that just ended."""
        log, names = self.logger, self.dataset_info.class_names
        values = {"val_loss": float(log.get_value("val_losses", step=-1)),
                  "train_loss": float(log.get_value("train_losses", step=-1)),
                  "ema_dice": float(log.get_value("ema_fg_dice", step=-1))}
        values.update(class_variables("dice", log.get_value("dice_per_class_or_region", step=-1), names))
        train_means = getattr(self, "_train_term_means", None) or {}
        values["train_base_loss"] = float(train_means.get("base", math.nan))
        val_means = _gather_means(self, getattr(self, "_val_sums", {}), getattr(self, "_val_counts", {}))
        values["val_base_loss"] = float(val_means.get("base", math.nan))
        reference = self._validation_reference_weights
        values["val_loss_ref"] = float(sum(w * val_means.get(k, math.nan) for k, w in reference.items() if w != 0))
        if self._patch_values is not None:
            patches = self._patch_values
            if self.is_ddp:
                import torch.distributed as dist

                gathered = [None] * dist.get_world_size()
                dist.all_gather_object(gathered, patches)
                patches = {m: [sum((g[m][c] for g in gathered), []) for c in range(len(names))] for m in patches}
            for metric, per_class in patches.items():
                values.update(class_variables(metric, [np.mean(v) if v else math.nan for v in per_class], names))
                values.update(class_variables(f"median_{metric}", [np.median(v) if v else math.nan
                                                                   for v in per_class], names))
        return values

    # ---------------------------------------------------------------- end of epoch
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
            if stopping is not None and self.early_stopping.stopped_epoch is None \
                    and self.early_stopping.update(results[stopping["metric"]], epoch):
                self.print_to_log_file(
                    f"early stopping: {stopping['metric']} has not improved by more than {stopping['min_delta']:g} "
                    f"for {stopping['patience']} epochs (since epoch {self.early_stopping.reference_epoch}; best "
                    f"{self.trackers[stopping['metric']].best:.4g} at epoch "
                    f"{self.trackers[stopping['metric']].best_epoch})")
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
