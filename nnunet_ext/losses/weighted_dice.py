"""Class-weighted soft Dice loss, ignore-aware, with nnU-Net's batch pooling.

Milletari, F., Navab, N., Ahmadi, S.-A. "V-Net: Fully Convolutional Neural Networks for Volumetric Medical
Image Segmentation", 3DV 2016 (soft Dice); per-class weights as in Sudre, C. H. et al. "Generalised Dice
Overlap as a Deep Learning Loss Function for Highly Unbalanced Segmentations", DLMIA 2017 (here fixed,
user-given weights rather than inverse squared volumes).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from nnunet_ext.losses._common import (accumulation_dtype, as_weight_vector, check_inputs, check_reduction,
                                       check_weights, detach_ignored, valid_weight)
from nnunet_ext.losses.distributed import all_gather_sum

__all__ = ["WeightedSoftDiceLoss"]


class WeightedSoftDiceLoss(nn.Module):
    """``Σ_c ŵ_c (1 - Dice_c) / C`` over the foreground channels, ``ŵ_c = C · w_c / Σ_k w_k``.

    For channel c with prediction P, target T and validity mask M::

        Dice_c = (2 Σ P·T·M + s) / (Σ P·M + Σ T·M + s)

    The sums run over the spatial axes (and the batch when ``batch_dice``; under DDP the batch sums are
    added across processes). The weights are normalised to mean 1, so uniform weights give nnU-Net's soft
    Dice (foreground channels only, as nnU-Net's ``do_bg=False``). Works unchanged for softmax classes and
    sigmoid regions. Ignored voxels contribute to no sum and receive no gradient. A channel with empty
    target and empty prediction has Dice ``s / s = 1`` (loss 0); every value is finite, including
    all-ignored patches. Sums are accumulated in float32 (or float64) whatever the input dtype.

    Parameters
    ----------
    class_weights : sequence of float or None
        One non-negative weight per foreground channel (not all zero); ``None`` for uniform weights.
    smooth : float
        Additive smoothing ``s`` (> 0) of numerator and denominator (nnU-Net uses 1e-5).
    batch_dice : bool
        Pool the sums over the batch instead of one Dice per sample.
    reduction : {"mean", "none"}
        ``"none"`` returns ``ŵ_c (1 - Dice_c)`` with shape ``(C,)`` (batch_dice) or ``(B, C)``; ``"mean"``
        returns its mean.

    Shapes
    ------
    forward(probabilities, target, valid=None):
        probabilities ``(B, C, *S)`` in [0, 1]; target ``(B, C, *S)`` one-hot float; valid ``(B, 1, *S)``
        bool or ``None``. S has 2 or 3 axes.

    Examples
    --------
    >>> t = torch.zeros(1, 2, 4, 4); t[:, 0, :2] = 1; t[:, 1, 2:] = 1
    >>> p = t.clone(); p[:, 1] = 0  # class 0 perfect, class 1 missed
    >>> round(WeightedSoftDiceLoss([1, 3], smooth=1e-8)(p, t).item(), 4)  # (0.5·0 + 1.5·1) / 2
    0.75
    """

    def __init__(self, class_weights: Sequence[float] | None = None, smooth: float = 1e-5,
                 batch_dice: bool = False, reduction: str = "mean"):
        super().__init__()
        self.class_weights = check_weights(class_weights, "class_weights")
        if not smooth > 0:
            raise ValueError(f"smooth must be > 0 (it keeps empty channels finite), got {smooth}")
        self.smooth = float(smooth)
        self.batch_dice = batch_dice
        self.reduction = check_reduction(reduction)

    def forward(self, probabilities: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        check_inputs(probabilities, target, valid)
        axes = tuple(range(2, probabilities.ndim))
        acc = accumulation_dtype(probabilities)
        with torch.no_grad():
            mask = valid_weight(valid, probabilities)
            target = target.to(probabilities.dtype) * mask
        probabilities = detach_ignored(probabilities, valid) * mask
        stats = torch.stack([(probabilities * target).sum(axes, dtype=acc), probabilities.sum(axes, dtype=acc),
                             target.sum(axes, dtype=acc)])  # (3, B, C)
        if self.batch_dice:
            stats = all_gather_sum(stats.sum(1))  # (3, C)
        dice = (2 * stats[0] + self.smooth) / (stats[1] + stats[2] + self.smooth)
        loss = 1 - dice
        if self.class_weights is not None:
            w = as_weight_vector(self.class_weights, loss.shape[-1], "class_weights", loss)
            loss = loss * (w * w.numel() / w.sum())
        return loss.mean() if self.reduction == "mean" else loss
