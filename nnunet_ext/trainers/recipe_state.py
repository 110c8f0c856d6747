"""Recipe trainers, part 3: what a checkpoint carries beyond nnU-Net's keys (the LR plateau state, metric
trackers, early stopping, SWA, term history; under one extra key that nnU-Net ignores), and the SWA
checkpoint. Mixed into :class:`~nnunet_ext.trainers.recipe_trainer.RecipeTrainer`.

The SWA running average is stored once per storage (:class:`~nnunet_ext.trainers.swa.WeightAverage`) and
only in the checkpoints that continue a training (``checkpoint_latest.pth``, ``checkpoint_final.pth``);
``checkpoint_best*.pth`` carry the count of averaged epochs but not the average.
"""
from __future__ import annotations

import copy
import os
from os.path import join

import torch

from nnunet_ext.trainers.swa import has_running_statistics, recompute_batch_norm

__all__ = ["RecipeStateMixin", "CHECKPOINT_KEY", "SWA_CARRIERS"]

#: key of our state inside nnU-Net's checkpoint dict (nnU-Net ignores keys it does not know)
CHECKPOINT_KEY = "nnunet_ext_recipe"
#: the checkpoints that carry the SWA average (those nnU-Net's --c continues from)
SWA_CARRIERS = ("checkpoint_latest.pth", "checkpoint_final.pth")


class RecipeStateMixin:
    """Checkpoint contents, restore on ``--c``, ``checkpoint_swa.pth``."""

    def _bare_network(self) -> torch.nn.Module:
        from torch._dynamo import OptimizedModule

        network = self.network.module if self.is_ddp else self.network
        return network._orig_mod if isinstance(network, OptimizedModule) else network

    def _recipe_state(self, with_swa_average: bool = True) -> dict:
        return {
            "recipe": self.recipe,
            "class_weights": self.class_weights,
            "lr_scheduler": self.lr_scheduler.state_dict() if self.lr_scheduler is not None else None,
            "trackers": {name: tracker.state_dict() for name, tracker in self.trackers.items()},
            "early_stopping": self.early_stopping.state_dict() if self.early_stopping is not None else None,
            "swa": self.swa.state_dict(with_swa_average) if self.swa is not None else None,
            "term_history": self.term_history.state_dict(),
        }

    def _checkpoint_dict(self, with_swa_average: bool = True) -> dict:
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
            CHECKPOINT_KEY: self._recipe_state(with_swa_average),
        }

    def save_checkpoint(self, filename: str) -> None:
        if self.local_rank != 0:
            return
        if self.disable_checkpointing:
            self.print_to_log_file("No checkpoint written, checkpointing is disabled")
            return
        torch.save(self._checkpoint_dict(os.path.basename(filename) in SWA_CARRIERS), filename)

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
            swa = state["swa"]
            if swa.get("average") is None and swa.get("n_averaged", 0) > 0:
                self.print_to_log_file(f"SWA: this checkpoint does not carry the running average (only "
                                       f"{' and '.join(SWA_CARRIERS)} do); the {swa['n_averaged']} epochs averaged so "
                                       f"far are dropped and averaging starts again")
                swa = {**swa, "n_averaged": 0}
            self.swa.load_state_dict(swa)
        self.term_history.load_state_dict(state["term_history"])
        self.term_history.truncate(self.current_epoch)

    # ---------------------------------------------------------------- SWA at the end of training
    def on_train_end(self):
        if self.swa is not None and self.local_rank == 0:
            if self.swa.n_averaged > 0 and not self.disable_checkpointing:
                self._save_swa_checkpoint()
            elif self.swa.n_averaged == 0:
                stopped = self.early_stopping.stopped_epoch if self.early_stopping is not None else None
                why = (f"early stopping ended the training at epoch {stopped}" if stopped is not None
                       else f"the training ended at epoch {self.current_epoch - 1}")
                self.print_to_log_file(f"SWA: no checkpoint_swa.pth: {why}, before SWA's start epoch "
                                       f"{self.swa.start_epoch}, so no weights were averaged")
        super().on_train_end()

    def _save_swa_checkpoint(self) -> None:
        network = self._bare_network()
        average = self.swa.full_state()
        if has_running_statistics(network):
            n_batches = self.recipe["swa"]["bn_update_batches"]
            copy_of_network = copy.deepcopy(network)
            copy_of_network.load_state_dict(average)
            used = recompute_batch_norm(copy_of_network, (next(self.dataloader_train)["data"].to(self.device)
                                                          for _ in range(n_batches)))
            average = {k: v.cpu() for k, v in copy_of_network.state_dict().items()}
            self.print_to_log_file(f"SWA: batch-norm running statistics recomputed on {used} training batches")
        else:
            self.print_to_log_file("SWA: the network normalises with instance norm (statistics from every image at "
                                   "every forward pass, no running statistics), so the averaged weights are used as "
                                   "they are")
        self.current_epoch -= 1  # as nnU-Net does for checkpoint_final (on_train_end runs after the last increment)
        try:
            checkpoint = self._checkpoint_dict(with_swa_average=False)
        finally:
            self.current_epoch += 1
        checkpoint["network_weights"] = average
        torch.save(checkpoint, join(self.output_folder, "checkpoint_swa.pth"))
        self.print_to_log_file(f"SWA: average of {self.swa.n_averaged} epochs saved as checkpoint_swa.pth")
