"""The shared mechanism of our trainers: nnU-Net's own loss plus weighted extra terms, and auxiliary
targets computed in nnU-Net's augmentation workers."""
from __future__ import annotations

from typing import List, Tuple, Union

import numpy as np
import torch
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_ext.losses import CompoundLoss, DeepSupervisedLoss, LossTerm, NonFiniteLossError
from nnunet_ext.targets import (AppendAuxiliaryTargets, AuxiliaryTarget, DownsampleSegAndAppendAuxiliaryForDS,
                                TargetLayout)
from nnunet_ext.trainers.skeleton_iterations import resolve_skeleton_iterations
from nnunet_ext.trainers.terms import TermConfig, TermContext, build_terms, uses_data_iterations, weights_at

#: the base losses a trainer can keep from nnU-Net
BASE_LOSSES = ("dice_ce", "dice")


class CompositeLossTrainer(nnUNetTrainer):
    """Base of the loss trainers: declare the extra terms in :meth:`term_configs` (catalogue names of
    :mod:`nnunet_ext.trainers.terms`, weights constant or scheduled per epoch) and choose ``base_loss``.
    (Lower level: override :meth:`loss_terms` and :meth:`auxiliary_targets` directly.) Not meant to be
    trained itself: without terms it is nnUNetTrainer.

    * ``base_loss = "dice_ce"``: nnU-Net's own Dice+CE / Dice+BCE; ``"dice"``: the same loss object with
      its CE/BCE weight set to 0, i.e. nnU-Net's soft Dice alone (for focal or weighted-CE trainers).
    * Scheduled weights are set at the start of every epoch from the epoch number alone, so a run
      continued with ``--c`` gets exactly the weights of an uninterrupted one; changes are logged.

    * Loss per output: nnU-Net's own loss (Dice+CE / Dice+BCE, ignore label, batch Dice, DDP) + Σ wₖ·termₖ;
      deep supervision with nnU-Net's own weights, every weighted output gets every term.
    * Auxiliary targets are computed per patch after spatial augmentation (and region conversion), packed
      behind the segmentation channels, and downsampled for every deep-supervision output (see
      :mod:`nnunet_ext.targets`). nnU-Net's validation batches carry none, so terms that need them are
      left out of the validation loss; nnU-Net's pseudo-Dice is unaffected.
    """

    def perform_actual_validation(self, save_probabilities: bool = False):
        """nnU-Net's final validation, then ``summary_topology.json`` (Dice, clDice, Betti errors, VOI
        per case and class, with bootstrap statistics) beside nnU-Net's ``summary.json``."""
        super().perform_actual_validation(save_probabilities)
        if self.local_rank != 0:
            return
        from os.path import join

        from nnunet_ext.evaluation.folder import write_topology_summary

        validation_folder = join(self.output_folder, "validation")
        try:
            write_topology_summary(validation_folder, join(self.preprocessed_dataset_folder_base, "gt_segmentations"),
                                   join(self.output_folder_base, "dataset.json"), n_resamples=1000)
        except Exception as error:  # the stock results are complete; say what is missing instead of dying
            self.print_to_log_file(f"summary_topology.json was not written: {type(error).__name__}: {error}")
        else:
            self.print_to_log_file(f"topology metrics written to {join(validation_folder, 'summary_topology.json')}")

    base_loss: str = "dice_ce"

    def term_configs(self) -> List[TermConfig]:
        """The extra loss terms by catalogue name, weight (number or schedule) and options."""
        return []

    #: soft-skeleton iterations of the terms whose ``iterations`` option is "auto" (clDice, cbDice): "auto"
    #: chooses them per deep-supervision level from the training labels (see
    #: :mod:`nnunet_ext.trainers.skeleton_iterations`); an int, or one int per level, sets them
    skeleton_iterations = "auto"
    #: consecutive training steps with a non-finite loss that are skipped before the run stops
    max_consecutive_non_finite_steps: int = 10

    def term_context(self) -> TermContext:
        lm = self.label_manager
        n_foreground = len(lm.foreground_regions) if lm.has_regions else len(lm.foreground_labels)
        iterations = None
        if uses_data_iterations(self.term_configs()):
            if getattr(self, "_resolved_skeleton_iterations", None) is None:
                self._resolved_skeleton_iterations = resolve_skeleton_iterations(self, self.skeleton_iterations)
            iterations = self._resolved_skeleton_iterations
        return TermContext("sigmoid" if lm.has_regions else "softmax", bool(self.configuration_manager.batch_dice),
                           n_foreground, iterations)

    def loss_terms(self) -> List[LossTerm]:
        return build_terms(self.term_configs(), self.term_context())[0]

    def auxiliary_targets(self) -> Tuple[AuxiliaryTarget, ...]:
        return build_terms(self.term_configs(), self.term_context())[1]

    def compound_loss(self) -> CompoundLoss:
        """The per-output loss inside ``self.loss`` (holds the current term weights and last values)."""
        return self.loss.loss

    def loss_weights_at(self, epoch: int) -> dict:
        """The loss weights of ``epoch`` by term label (a subclass may add ``"base"``, nnU-Net's own loss)."""
        return weights_at(self.term_configs(), epoch)

    def on_epoch_start(self):
        weights = self.loss_weights_at(self.current_epoch)
        if weights:
            loss = self.compound_loss()
            if any(loss.weights[name] != w for name, w in weights.items()) or self.current_epoch == 0:
                self.print_to_log_file("loss term weights: " + ", ".join(f"{n} {w:.4g}" for n, w in weights.items()))
            loss.set_weights(weights)
        super().on_epoch_start()

    def target_layout(self) -> TargetLayout:
        lm = self.label_manager
        if lm.has_regions:
            n_foreground = len(lm.foreground_regions)
            n_segmentation = n_foreground + (1 if lm.has_ignore_label else 0)
        else:
            n_foreground, n_segmentation = len(lm.foreground_labels), 1
        return TargetLayout(n_segmentation, n_foreground, tuple(self.auxiliary_targets()))

    def _build_loss(self):
        # nnU-Net's own loss and deep-supervision weights, unwrapped so that our terms share the weights
        stock = super()._build_loss()
        if isinstance(stock, DeepSupervisionWrapper):
            base, weights = stock.loss, stock.weight_factors
        else:
            base, weights = stock, None
        if self.base_loss not in BASE_LOSSES:
            raise ValueError(f"{type(self).__name__}.base_loss must be one of {BASE_LOSSES}, got {self.base_loss!r}")
        if self.base_loss == "dice":
            base.weight_ce = 0  # nnU-Net's DC_and_CE_loss skips CE at weight 0; DC_and_BCE_loss weights it by 0
        layout = self.target_layout()
        per_output = CompoundLoss(
            base,
            self.loss_terms(),
            mode="sigmoid" if self.label_manager.has_regions else "softmax",
            ignore_label=self.label_manager.ignore_label,
            target_layout=layout if layout.auxiliary else None,
        )
        return DeepSupervisedLoss(per_output, weights, raise_on_non_finite=False)

    def train_step(self, batch: dict) -> dict:
        """nnU-Net 2.8's training step, except that a step whose loss is not finite is skipped (no backward, no
        optimizer step — what nnU-Net's GradScaler does under mixed precision for non-finite gradients, here
        in every precision): counted, logged with the output and term that went non-finite, and returned as
        NaN, which :meth:`on_train_epoch_end` leaves out of the epoch's mean. After
        ``max_consecutive_non_finite_steps`` such steps in a row training stops with
        :class:`~nnunet_ext.losses.NonFiniteLossError`. Under DDP every process skips when any does."""
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = [t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list) \
            else target.to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            output = self.network(data)
            loss = self.loss(output, target)
        if self._skip_non_finite(loss):
            return {"loss": np.array(np.nan)}
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.optimizer.step()
        return {"loss": loss.detach().cpu().numpy()}

    def _skip_non_finite(self, loss: torch.Tensor) -> bool:
        finite = torch.isfinite(loss.detach()).all().to(torch.int32)
        if self.is_ddp:
            torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
        if bool(finite):
            self._consecutive_non_finite = 0
            return False
        self._consecutive_non_finite = getattr(self, "_consecutive_non_finite", 0) + 1
        self._non_finite_in_epoch = getattr(self, "_non_finite_in_epoch", 0) + 1
        what = getattr(self.loss, "last_non_finite", None) or "the loss was not finite on another process"
        self.print_to_log_file(f"skipped a training step (epoch {self.current_epoch}): {what}")
        if self._consecutive_non_finite >= self.max_consecutive_non_finite_steps:
            raise NonFiniteLossError(f"{self._consecutive_non_finite} consecutive training steps had a non-finite "
                                     f"loss; the last: {what}")
        return True

    def on_train_epoch_end(self, train_outputs):
        skipped = getattr(self, "_non_finite_in_epoch", 0)
        if skipped:
            self.print_to_log_file(f"{skipped} of {len(train_outputs)} training steps of this epoch were skipped "
                                   f"(non-finite loss)")
            self._non_finite_in_epoch = 0
            kept = [o for o in train_outputs if np.isfinite(o["loss"]).all()]
            train_outputs = kept or train_outputs
        super().on_train_epoch_end(train_outputs)

    def get_training_transforms(self, patch_size: Union[np.ndarray, Tuple[int]], rotation_for_DA,
                                deep_supervision_scales: Union[List, Tuple, None], mirror_axes: Tuple[int, ...],
                                do_dummy_2d_data_aug: bool, **kwargs):
        # super(), not nnUNetTrainer: combined with a stock variant (class X(TopoTrainer, nnUNetTrainerNoDA)),
        # the variant's augmentation is the one that runs
        layout = self.target_layout()
        if not layout.auxiliary:
            return super().get_training_transforms(patch_size, rotation_for_DA, deep_supervision_scales,
                                                   mirror_axes, do_dummy_2d_data_aug, **kwargs)
        # the pipeline up to (excluding) its deep-supervision downsampling, then ours
        pipeline = super().get_training_transforms(patch_size, rotation_for_DA, None, mirror_axes,
                                                   do_dummy_2d_data_aug, **kwargs)
        lm = self.label_manager
        spacing = self.configuration_manager.spacing
        if deep_supervision_scales is None:
            pipeline.transforms.append(AppendAuxiliaryTargets(layout, lm.has_regions, lm.ignore_label, spacing))
        else:  # every level's auxiliary targets from that level's own segmentation
            pipeline.transforms.append(DownsampleSegAndAppendAuxiliaryForDS(deep_supervision_scales, layout,
                                                                            lm.has_regions, lm.ignore_label, spacing))
        return pipeline
