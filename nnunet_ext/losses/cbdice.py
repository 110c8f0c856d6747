"""Centreline-boundary Dice (cbDice), ground-truth-side variant with loader-computed radii.

Shi, P., Hu, J., Yang, Y., Gao, Z., Liu, W., Ma, T. "Centerline Boundary Dice Loss for Vascular
Segmentation", MICCAI 2024 (arXiv:2407.01517).
"""
from __future__ import annotations

import torch
from torch import nn

from nnunet_ext.losses._common import (accumulation_dtype, check_inputs, check_reduction, detach_ignored,
                                       valid_weight)
from nnunet_ext.losses.distributed import all_gather_sum
from nnunet_ext.losses.soft_skeleton import soft_skeleton

__all__ = ["CenterlineBoundaryDiceLoss"]


class CenterlineBoundaryDiceLoss(nn.Module):
    """``1 - cbDice`` per foreground channel, with the ground truth's radii precomputed in the data loader.

    With prediction P, its soft skeleton ``S_P = softskel(P)`` (as in clDice), validity mask M and the
    auxiliary target of :func:`nnunet_ext.targets.ground_truth.centerline_radius_target` — the ground truth's centreline depth ``ρ``
    (1 on its centreline, falling to ~0 at its boundary, 0 outside) and inverse-radius skeleton weights
    ``ω`` (``(R_max/R)^(d-1)`` on its skeleton)::

        Tprec = (Σ S_P·ρ·M + s) / (Σ S_P·M + s)     diameter-aware topology precision
        Tsens = (Σ ω·P·M + s) / (Σ ω·M + s)         radius-weighted topology sensitivity
        cbDice = 2·Tprec·Tsens / (Tprec + Tsens),   loss = 1 - cbDice

    What differs from Shi et al.: their weights come from distance transforms of the ground truth *and of
    the thresholded prediction*, recomputed inside the loss at every step (the cost and GPU-memory growth
    the design rules out). Here every distance is the ground truth's, computed once per patch on the CPU:
    a predicted centreline voxel counts by how central it lies *relative to the local vessel radius* (a
    one-voxel offset costs more in a thin vessel than in a thick one — the "diameter awareness"), and
    ground-truth centreline voxels are weighted by inverse normalised radius (Shi et al.'s ``1/R̂`` in 2D,
    ``1/R̂²`` in 3D) so that thin vessels are not drowned by thick ones. Classes are never merged, the
    ignore label is respected, and regions work like classes.

    Ignored voxels contribute to no sum and the prediction is detached there. A channel with an empty
    ground truth has Tsens = 1 and Tprec = s / (Σ S_P + s) (predicted centrelines are penalised); empty
    ground truth and prediction give 0; all-ignored patches give 0. Sums are accumulated in float32.

    Parameters
    ----------
    iterations : int
        Soft-skeleton erosion steps for the prediction (see :func:`soft_skeleton`).
    smooth : float
        Additive smoothing ``s`` (> 0) of both ratios.
    batch_dice : bool
        Pool the sums over the batch (and across DDP processes).
    reduction : {"mean", "none"}
        ``"mean"``: scalar, the mean of ``"none"``; ``"none"``: ``(C,)`` (batch_dice) or ``(B, C)``.

    Shapes
    ------
    forward(probabilities, target, valid, radius_target):
        probabilities ``(B, C, *S)`` in [0, 1]; target ``(B, C, *S)`` one-hot (unused, kept for the common
        signature); valid ``(B, 1, *S)`` bool or ``None``; radius_target ``(B, 2C, *S)``: channels ``:C``
        depth ρ, channels ``C:`` skeleton weights ω. S has 2 or 3 axes.

    Examples
    --------
    >>> from nnunet_ext.targets.ground_truth import centerline_radius_target
    >>> bar = torch.zeros(1, 1, 7, 12); bar[..., 1:6, 1:11] = 1
    >>> aux = torch.from_numpy(centerline_radius_target(bar[0].bool().numpy()))[None]
    >>> loss = CenterlineBoundaryDiceLoss()
    >>> bool(loss(bar, bar, None, aux) < 0.05), bool(loss(bar * 0.3, bar, None, aux) > 0.3)
    (True, True)
    """

    def __init__(self, iterations: int = 3, smooth: float = 1.0, batch_dice: bool = False, reduction: str = "mean"):
        super().__init__()
        if iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {iterations}")
        if not smooth > 0:
            raise ValueError(f"smooth must be > 0 (it keeps empty patches finite), got {smooth}")
        self.iterations = iterations
        self.smooth = float(smooth)
        self.batch_dice = batch_dice
        self.reduction = check_reduction(reduction)

    def forward(self, probabilities: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None,
                radius_target: torch.Tensor) -> torch.Tensor:
        n = probabilities.shape[1]
        check_inputs(probabilities, target, valid, radius_target, "radius_target", auxiliary_channels=2 * n)
        axes = tuple(range(2, probabilities.ndim))
        acc = accumulation_dtype(probabilities)
        with torch.no_grad():
            mask = valid_weight(valid, probabilities)
            depth = radius_target[:, :n].to(probabilities.dtype) * mask
            weight = radius_target[:, n:].to(acc) * mask.to(acc)  # up to (R_max/R)²: kept out of float16
        probabilities = detach_ignored(probabilities, valid)
        skeleton = soft_skeleton(probabilities, self.iterations) * mask
        stats = torch.stack([(skeleton * depth).sum(axes, dtype=acc), skeleton.sum(axes, dtype=acc),
                             (weight * probabilities.to(acc)).sum(axes), weight.sum(axes)])  # (4, B, C)
        if self.batch_dice:
            stats = all_gather_sum(stats.sum(1))
        s = self.smooth
        precision = (stats[0] + s) / (stats[1] + s)
        sensitivity = (stats[2] + s) / (stats[3] + s)
        loss = 1 - 2 * precision * sensitivity / (precision + sensitivity)
        return loss.mean() if self.reduction == "mean" else loss
