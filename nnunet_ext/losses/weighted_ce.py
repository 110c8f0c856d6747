"""Class-weighted cross-entropy from the logits, for softmax labels and sigmoid regions, ignore-aware.

The weighting follows the usual class-balanced cross-entropy (e.g. Long, Shelhamer, Darrell, "Fully
Convolutional Networks for Semantic Segmentation", CVPR 2015; PyTorch's ``CrossEntropyLoss(weight=...)``).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from nnunet_ext.losses._common import (as_weight_vector, broadcast_channels, check_mode, check_reduction,
                                       check_weights, outcome_log_probability, valid_weight)

__all__ = ["WeightedCrossEntropyLoss"]


class WeightedCrossEntropyLoss(nn.Module):
    """Cross-entropy with one weight per class (softmax) or per region (sigmoid), from the logits.

    The term takes the raw logits (``takes_logits = True``: :class:`~nnunet_ext.losses.CompoundLoss` hands it
    the logits instead of the probabilities):

    * ``mode="softmax"``: with y the true class of voxel v (background when no foreground channel is set),
      ``ℓ_v = -w_y log_softmax(x_v)_y``; ``"mean"`` is ``Σ_v M_v ℓ_v / Σ_v M_v w_{y_v}`` — exactly PyTorch's
      ``cross_entropy(weight=w, ignore_index=...)``. ``class_weights`` holds ``C + 1`` values, background first.
    * ``mode="sigmoid"``: binary cross-entropy per region, ``ℓ_{v,c} = -w_c [t log σ(x) + (1 - t) log σ(-x)]``;
      ``"mean"`` is ``Σ M ℓ / (C · Σ M)``, i.e. PyTorch's ``binary_cross_entropy_with_logits(weight=w)`` over
      the valid voxels. ``class_weights`` holds ``C`` values.

    M is the validity mask: ignored voxels contribute nothing (numerator and denominator) and receive no
    gradient; an all-ignored batch gives 0. The log-probabilities come from ``log_softmax`` / ``logsigmoid``
    in float32 (float64 for float64 logits) whatever the input dtype, with no clamp: a confidently wrong
    voxel keeps the full cross-entropy gradient (as nnU-Net's own CE).

    Parameters
    ----------
    mode : {"softmax", "sigmoid"}
        How nnU-Net trains: softmax over labels or sigmoid per region.
    class_weights : sequence of float or None
        Non-negative, not all zero; ``None`` weighs every class 1.
    reduction : {"mean", "none"}
        ``"mean"``: scalar as above; ``"none"``: the weighted loss map ``M·ℓ``, ``(B, 1, *S)`` (softmax) or
        ``(B, C, *S)`` (sigmoid).

    Shapes
    ------
    forward(logits, target, valid=None):
        logits ``(B, C + 1, *S)`` (softmax, background first) or ``(B, C, *S)`` (sigmoid); target
        ``(B, C, *S)`` foreground one-hot float; valid ``(B, 1, *S)`` bool or ``None``. S has 2 or 3 axes.

    Examples
    --------
    >>> logits = torch.log(torch.tensor([0.25, 0.25, 0.5])).view(1, 3, 1, 1)
    >>> t = torch.tensor([0.0, 1.0]).view(1, 2, 1, 1)
    >>> round(WeightedCrossEntropyLoss("softmax", class_weights=[1, 1, 3])(logits, t).item(), 4)  # -log 0.5
    0.6931
    """

    takes_logits = True

    def __init__(self, mode: str = "softmax", class_weights: Sequence[float] | None = None,
                 reduction: str = "mean"):
        super().__init__()
        self.mode = check_mode(mode)
        self.class_weights = check_weights(class_weights, "class_weights")
        self.reduction = check_reduction(reduction)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        log_p_true, full_target = outcome_log_probability(logits, target, valid, self.mode)
        loss = -log_p_true
        mask = valid_weight(valid, loss)
        if self.class_weights is None:
            weight = mask.expand_as(loss)
        else:
            w = broadcast_channels(as_weight_vector(self.class_weights, full_target.shape[1], "class_weights", loss), loss.ndim)
            weight = mask * ((full_target * w).sum(1, keepdim=True) if self.mode == "softmax" else w)
        loss = loss * weight
        if self.reduction == "none":
            return loss
        if self.mode == "softmax":
            return loss.sum() / weight.sum().clamp(min=torch.finfo(loss.dtype).tiny)
        return loss.sum() / (mask.sum() * loss.shape[1]).clamp(min=1)
