"""Skeleton Recall loss.

Kirchhoff, Y., Rokuss, M. R., Roy, S., Kovacs, B., Ulrich, C., Wald, T., Zenk, M., Vollmuth, P.,
Kleesiek, J., Isensee, F., Maier-Hein, K. "Skeleton Recall Loss for Connectivity Conserving and Resource
Efficient Segmentation of Thin Tubular Structures", ECCV 2024.
"""
from __future__ import annotations

import torch
from torch import nn

from nnunet_ext.losses._common import (accumulation_dtype, check_inputs, check_reduction, detach_ignored,
                                       valid_weight)
from nnunet_ext.losses.distributed import all_gather_sum

__all__ = ["SkeletonRecallLoss"]


class SkeletonRecallLoss(nn.Module):
    """``1 - soft recall`` of the prediction on the ground-truth skeleton tube, per foreground channel.

    For channel c with prediction P, tube T (the auxiliary target, from :func:`nnunet_ext.targets.ground_truth.skeleton_tube_target`)
    and validity mask M (1 where not ignored)::

        recall = (Σ P·T·M + s) / (Σ T·M + s)
        loss   = 1 - recall

    The sums run over the spatial axes (and the batch when ``batch_dice``; under DDP the batch sums are
    added across processes). The tube is computed per class/region on the CPU in the data loader
    (never the union of the classes), so the term works for softmax labels and sigmoid regions alike.
    Ignored voxels contribute to no sum and the prediction is detached there. A channel whose tube is
    empty (class absent, or entirely ignored) gives recall ``s / s = 1``, i.e. loss 0, with zero gradient:
    the loss is finite on every patch. Values lie in [0, 1) and the loss is 0 (up to ``s``) exactly when
    the prediction is 1 on the whole tube. ``T`` may be soft (values in [0, 1]). nnU-Net-ext computes the
    tube of every deep-supervision output from that output's own downsampled segmentation, so every output
    gets the term and no tube voxel lies on that output's background.

    Parameters
    ----------
    smooth : float
        Additive smoothing ``s`` (> 0) of the ratio.
    batch_dice : bool
        Pool the sums over the batch (nnU-Net's ``batch_dice``) instead of one value per sample.
    reduction : {"mean", "none"}
        ``"mean"`` returns a scalar (the mean of the ``"none"`` values); ``"none"`` returns ``(C,)``
        (batch_dice) or ``(B, C)``.

    Shapes
    ------
    forward(probabilities, target, valid, tube):
        probabilities ``(B, C, *S)`` in [0, 1]; target ``(B, C, *S)`` one-hot (unused, kept for the common
        signature); valid ``(B, 1, *S)`` bool or ``None``; tube ``(B, C, *S)`` in [0, 1]. S has 2 or 3 axes.
        Sums are accumulated in float32 (or float64) whatever the input dtype.

    Examples
    --------
    >>> p = torch.full((1, 1, 4, 4), 0.5); tube = torch.zeros(1, 1, 4, 4); tube[..., 1, :] = 1
    >>> round(SkeletonRecallLoss(smooth=1e-6)(p, tube, None, tube).item(), 4)
    0.5
    """

    def __init__(self, smooth: float = 1.0, batch_dice: bool = False, reduction: str = "mean"):
        super().__init__()
        if not smooth > 0:
            raise ValueError(f"smooth must be > 0 (it keeps empty tubes finite), got {smooth}")
        self.smooth = float(smooth)
        self.batch_dice = batch_dice
        self.reduction = check_reduction(reduction)

    def forward(self, probabilities: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None,
                tube: torch.Tensor) -> torch.Tensor:
        check_inputs(probabilities, target, valid, tube, "tube")
        axes = tuple(range(2, probabilities.ndim))
        acc = accumulation_dtype(probabilities)
        with torch.no_grad():
            weight = tube.to(probabilities.dtype) * valid_weight(valid, probabilities)
        probabilities = detach_ignored(probabilities, valid)
        stats = torch.stack([(probabilities * weight).sum(axes, dtype=acc), weight.sum(axes, dtype=acc)])  # (2, B, C)
        if self.batch_dice:
            stats = all_gather_sum(stats.sum(1))  # (2, C)
        loss = 1 - (stats[0] + self.smooth) / (stats[1] + self.smooth)
        return loss.mean() if self.reduction == "mean" else loss
