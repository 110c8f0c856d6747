"""Class-weighted cross-entropy on probabilities, for softmax labels and sigmoid regions, ignore-aware.

The weighting follows the usual class-balanced cross-entropy (e.g. Long, Shelhamer, Darrell, "Fully
Convolutional Networks for Semantic Segmentation", CVPR 2015; PyTorch's ``CrossEntropyLoss(weight=...)``).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from nnunet_ext.losses._common import (accumulation_dtype, as_weight_vector, broadcast_channels, check_inputs,
                                       check_mode, check_reduction, check_weights, detach_ignored,
                                       outcome_probability, valid_weight)

__all__ = ["WeightedCrossEntropyLoss"]


class WeightedCrossEntropyLoss(nn.Module):
    """Cross-entropy with one weight per class (softmax) or per region (sigmoid).

    * ``mode="softmax"``: with the background probability rebuilt as ``p_0 = 1 - Σ_c p_c`` and y the true
      class of voxel v, ``ℓ_v = -w_y log p_y``; ``"mean"`` is ``Σ_v M_v ℓ_v / Σ_v M_v w_{y_v}`` — exactly
      PyTorch's ``cross_entropy(weight=w, ignore_index=...)`` normalisation. ``class_weights`` holds
      ``C + 1`` values, background first.
    * ``mode="sigmoid"``: binary cross-entropy per region, ``ℓ_{v,c} = -w_c [t log p + (1 - t) log(1 - p)]``;
      ``"mean"`` is ``Σ M ℓ / (C · Σ M)``, i.e. PyTorch's ``binary_cross_entropy(weight=w)`` over the valid
      voxels. ``class_weights`` holds ``C`` values.

    M is the validity mask: ignored voxels contribute nothing (numerator and denominator) and receive no
    gradient; an all-ignored batch gives 0. Probabilities are clamped to ``[eps, 1 - eps]`` before the
    logarithm, so the value and gradient stay finite for saturated predictions (the gradient is 0 beyond
    the clamp; nnU-Net's own CE works on logits and has no such limit). Computed in float32 (or float64)
    whatever the input dtype.

    Parameters
    ----------
    mode : {"softmax", "sigmoid"}
        How nnU-Net trains: softmax over labels or sigmoid per region.
    class_weights : sequence of float or None
        Non-negative, not all zero; ``None`` weighs every class 1.
    eps : float
        Probability clamp (0 < eps < 0.5).
    reduction : {"mean", "none"}
        ``"mean"``: scalar as above; ``"none"``: the weighted loss map ``M·ℓ``, ``(B, 1, *S)`` (softmax) or
        ``(B, C, *S)`` (sigmoid).

    Shapes
    ------
    forward(probabilities, target, valid=None):
        probabilities ``(B, C, *S)`` in [0, 1] (foreground classes or regions); target ``(B, C, *S)``
        one-hot float; valid ``(B, 1, *S)`` bool or ``None``. S has 2 or 3 axes.

    Examples
    --------
    >>> p = torch.tensor([0.25, 0.5]).view(1, 2, 1, 1); t = torch.tensor([0.0, 1.0]).view(1, 2, 1, 1)
    >>> round(WeightedCrossEntropyLoss("softmax", class_weights=[1, 1, 3])(p, t).item(), 4)  # -log 0.5
    0.6931
    """

    def __init__(self, mode: str = "softmax", class_weights: Sequence[float] | None = None, eps: float = 1e-6,
                 reduction: str = "mean"):
        super().__init__()
        self.mode = check_mode(mode)
        self.class_weights = check_weights(class_weights, "class_weights")
        if not 0 < eps < 0.5:
            raise ValueError(f"eps must lie in (0, 0.5), got {eps}")
        self.eps = float(eps)
        self.reduction = check_reduction(reduction)

    def forward(self, probabilities: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        check_inputs(probabilities, target, valid)
        acc = accumulation_dtype(probabilities)
        p = detach_ignored(probabilities, valid).to(acc)
        p_true, full_target = outcome_probability(p, target.to(acc), self.mode)
        loss = -torch.log(p_true.clamp(self.eps, 1 - self.eps))
        mask = valid_weight(valid, loss)
        if self.class_weights is None:
            weight = mask.expand_as(loss)
        else:
            w = broadcast_channels(as_weight_vector(self.class_weights, full_target.shape[1], "class_weights", p), p.ndim)
            weight = mask * ((full_target * w).sum(1, keepdim=True) if self.mode == "softmax" else w)
        loss = loss * weight
        if self.reduction == "none":
            return loss
        if self.mode == "softmax":
            return loss.sum() / weight.sum().clamp(min=torch.finfo(acc).tiny)
        return loss.sum() / (mask.sum() * loss.shape[1]).clamp(min=1)
