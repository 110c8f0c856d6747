"""Soft clDice loss.

Shit, S., Paetzold, J. C., Sekuboyina, A., et al. "clDice - a Novel Topology-Preserving Loss Function for
Tubular Structure Segmentation", CVPR 2021.
"""
from __future__ import annotations

import torch
from torch import nn

from nnunet_ext.losses._common import accumulation_dtype, check_iterations, detach_ignored, iterations_at
from nnunet_ext.losses.distributed import all_gather_sum
from nnunet_ext.losses.soft_skeleton import soft_skeleton


class SoftClDiceLoss(nn.Module):
    """``1 - clDice`` with soft skeletons, per foreground channel.

    For channel c, with prediction P, binary target T, validity mask M (1 where not ignored) and soft
    skeletons S_P = softskel(P), S_T = softskel(T)::

        Tprec = (Σ S_P·T·M + s) / (Σ S_P·M + s)      topology precision
        Tsens = (Σ S_T·P·M + s) / (Σ S_T·M + s)      topology sensitivity
        clDice = 2·Tprec·Tsens / (Tprec + Tsens)

    The sums run over the spatial axes (and the batch when ``batch_dice``; under DDP the batch sums
    are added across processes). Ignored voxels contribute to no sum, and the prediction is detached
    there, so the term sends no gradient into ignored voxels even though the pooling window of the
    skeleton reaches into them. With the smoothing ``s`` an empty target and an empty prediction give
    clDice = 1, an empty target with predicted foreground gives Tprec < 1: the loss is finite on every
    patch, including patches that are entirely ignored.

    Structures thicker than the iteration count: the soft skeleton of a structure whose half-width
    (in erosion steps, i.e. its city-block depth) exceeds ``iterations`` is empty — ``k`` erosions and
    openings only reach ``k`` voxels deep — so such a structure adds nothing to Tsens: missing it entirely
    costs nothing, and predicting it costs nothing either (Tprec only counts the predicted skeleton, which
    is equally empty for a confident thick prediction). The term is blind to it and Dice+CE alone trains
    it. Choose ``iterations`` at least as large as the half-widths that matter; the trainers derive it per
    dataset and deep-supervision level from the training labels (:mod:`nnunet_ext.trainers.skeleton_iterations`).

    Parameters
    ----------
    iterations : int or sequence of int
        Soft-skeleton erosion steps (largest half-width, in voxels, that is thinned to a centre line); a
        sequence gives one value per deep-supervision level (highest resolution first; levels beyond it use
        its last value), selected by ``forward(..., level=i)``.
    smooth : float
        Additive smoothing ``s`` (> 0) of both ratios.
    batch_dice : bool
        Pool the sums over the batch (nnU-Net's ``batch_dice``) instead of one value per sample.
    reduction : {"mean", "none"}
        ``"mean"`` returns a scalar; ``"none"`` returns ``(C,)`` (batch_dice) or ``(B, C)``.

    Shapes
    ------
    forward(probabilities, target, valid=None, level=0):
        probabilities ``(B, C, *S)`` in [0, 1]; target ``(B, C, *S)`` in {0, 1} (float); valid ``(B, 1, *S)``
        bool or ``None``; level: the deep-supervision output (0 = full resolution). S has 2 or 3 axes.
    """

    def __init__(self, iterations: int | tuple[int, ...] = 3, smooth: float = 1.0, batch_dice: bool = False,
                 reduction: str = "mean"):
        super().__init__()
        iterations = check_iterations(iterations)
        if smooth <= 0:
            raise ValueError(f"smooth must be > 0 (it keeps empty patches finite), got {smooth}")
        if reduction not in ("mean", "none"):
            raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
        self.iterations = iterations
        self.smooth = smooth
        self.batch_dice = batch_dice
        self.reduction = reduction

    def forward(self, probabilities: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None,
                level: int = 0) -> torch.Tensor:
        if probabilities.shape != target.shape:
            raise ValueError(f"probabilities {tuple(probabilities.shape)} and target {tuple(target.shape)} differ")
        axes = tuple(range(2, probabilities.ndim))
        iterations = iterations_at(self.iterations, level)
        with torch.no_grad():
            target = target.to(probabilities.dtype)
            weight = None if valid is None else valid.to(probabilities.dtype)
            if weight is not None:
                target = target * weight
            skeleton_target = soft_skeleton(target, iterations)
            if weight is not None:
                skeleton_target = skeleton_target * weight
        probabilities = detach_ignored(probabilities, valid)
        skeleton_pred = soft_skeleton(probabilities, iterations)
        if weight is not None:
            skeleton_pred = skeleton_pred * weight

        acc = accumulation_dtype(probabilities)  # fp16/bf16 sums in fp32
        stats = torch.stack(
            [
                (skeleton_pred * target).sum(axes, dtype=acc),
                skeleton_pred.sum(axes, dtype=acc),
                (skeleton_target * probabilities).sum(axes, dtype=acc),
                skeleton_target.sum(axes, dtype=acc),
            ]
        )  # (4, B, C)
        if self.batch_dice:
            stats = all_gather_sum(stats.sum(1))  # (4, C)
        s = self.smooth
        precision = (stats[0] + s) / (stats[1] + s)
        sensitivity = (stats[2] + s) / (stats[3] + s)
        cldice = 2 * precision * sensitivity / (precision + sensitivity)
        loss = 1 - cldice
        return loss.mean() if self.reduction == "mean" else loss
