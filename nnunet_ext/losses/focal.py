"""Focal loss on probabilities, for softmax labels and sigmoid regions, ignore-aware.

Lin, T.-Y., Goyal, P., Girshick, R., He, K., Dollár, P. "Focal Loss for Dense Object Detection",
ICCV 2017 (TPAMI 2020).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from nnunet_ext.losses._common import (accumulation_dtype, as_weight_vector, broadcast_channels, check_inputs,
                                       check_mode, check_reduction, detach_ignored, outcome_probability,
                                       valid_weight)

__all__ = ["FocalLoss"]


class FocalLoss(nn.Module):
    """``-α_t (1 - p_t)^γ log p_t`` averaged over the valid voxels.

    The term sees the foreground view of the output (the contract of every loss term here), so:

    * ``mode="softmax"`` (labels): one categorical focal term per voxel over the ``C + 1`` classes; the
      background probability is rebuilt as ``p_0 = 1 - Σ_c p_c`` (exact for nnU-Net's softmax) and the
      background target as ``1 - Σ_c t_c``. ``p_t`` is the probability of the true class and
      ``α_t = α[true class]``. Loss map ``(B, 1, *S)``.
    * ``mode="sigmoid"`` (regions): an independent binary focal term per region c:
      ``p_t = p`` and ``α_t = α_c`` where ``t = 1``; ``p_t = 1 - p`` and ``α_t = 1 - α_c`` where ``t = 0``.
      Loss map ``(B, C, *S)``.

    ``p_t`` is clamped to ``[eps, 1 - eps]`` before the logarithm and the power, so the value and its
    gradient are finite for saturated predictions and any ``γ >= 0`` (the gradient is 0 beyond the clamp).
    The term works on probabilities, as every term here does; saturated wrong voxels (``p_t < eps``) get no
    gradient from it, so use it next to nnU-Net's logit-based CE/BCE, not as the only region loss.
    With ``γ = 0`` and ``alpha=None`` it is the (unweighted) cross-entropy.

    ``reduction="mean"``: ``Σ M·ℓ / (n · Σ M)`` with M the validity mask and n the channels of the loss
    map (1 for softmax, C for sigmoid), i.e. the mean over valid voxels (and regions); 0 when every voxel is
    ignored. Ignored voxels contribute nothing and receive no gradient. Computed in float32 (or float64)
    whatever the input dtype.

    Parameters
    ----------
    mode : {"softmax", "sigmoid"}
        How nnU-Net trains: softmax over labels or sigmoid per region.
    gamma : float
        Focusing parameter ``γ >= 0`` (Lin et al. use 2).
    alpha : float or sequence of float or None
        Class balancing. softmax: a sequence of ``C + 1`` weights (background first) multiplying the term of
        the true class, or a float α giving ``1 - α`` to the background and α to every foreground class (as
        MONAI does); sigmoid: a float or ``C`` values α_c, weighting positives by α_c and negatives by
        ``1 - α_c`` (Lin et al.; α_c in [0, 1]). ``None``: no weighting.
    eps : float
        Clamp of ``p_t`` (0 < eps < 0.5).
    reduction : {"mean", "none"}
        ``"mean"``: scalar (see above); ``"none"``: the loss map (zero on ignored voxels).

    Shapes
    ------
    forward(probabilities, target, valid=None):
        probabilities ``(B, C, *S)`` in [0, 1] (foreground classes or regions); target ``(B, C, *S)``
        one-hot float; valid ``(B, 1, *S)`` bool or ``None``. S has 2 or 3 axes.

    Examples
    --------
    >>> p = torch.tensor([0.8, 0.1]).view(1, 2, 1, 1); t = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    >>> loss = FocalLoss("softmax", gamma=2.0)(p, t)
    >>> round(loss.item(), 5) == round(-(0.2 ** 2) * torch.log(torch.tensor(0.8)).item(), 5)
    True
    """

    def __init__(self, mode: str = "softmax", gamma: float = 2.0, alpha: float | Sequence[float] | None = None,
                 eps: float = 1e-6, reduction: str = "mean"):
        super().__init__()
        self.mode = check_mode(mode)
        if not gamma >= 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if not 0 < eps < 0.5:
            raise ValueError(f"eps must lie in (0, 0.5), got {eps}")
        if alpha is not None:
            values = [float(alpha)] if isinstance(alpha, (int, float)) else [float(a) for a in alpha]
            if not values or any(not (a >= 0) or a == float("inf") for a in values):
                raise ValueError(f"alpha must be finite and non-negative, got {alpha!r}")
            if (self.mode == "sigmoid" or isinstance(alpha, (int, float))) and any(a > 1 for a in values):
                raise ValueError(f"alpha must lie in [0, 1] for sigmoid regions or as a single value, got {alpha!r}")
        self.gamma = float(gamma)
        if alpha is None or isinstance(alpha, (int, float)):
            self.alpha = None if alpha is None else float(alpha)
        else:
            self.alpha = tuple(float(a) for a in alpha)
        self.eps = float(eps)
        self.reduction = check_reduction(reduction)

    def _alpha_factor(self, full_target: torch.Tensor, like: torch.Tensor) -> torch.Tensor | None:
        if self.alpha is None:
            return None
        n = full_target.shape[1]
        if self.mode == "softmax":
            if isinstance(self.alpha, float):
                alpha = torch.full((n,), self.alpha, dtype=like.dtype, device=like.device)
                alpha[0] = 1 - self.alpha
            else:
                alpha = as_weight_vector(self.alpha, n, "alpha (background first)", like)
            return (full_target * broadcast_channels(alpha, full_target.ndim)).sum(1, keepdim=True)
        alpha = as_weight_vector(self.alpha if not isinstance(self.alpha, float) else [self.alpha] * n, n,
                                 "alpha (one per region)", like)
        alpha = broadcast_channels(alpha, full_target.ndim)
        return full_target * alpha + (1 - full_target) * (1 - alpha)

    def forward(self, probabilities: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        check_inputs(probabilities, target, valid)
        acc = accumulation_dtype(probabilities)
        p = detach_ignored(probabilities, valid).to(acc)
        t = target.to(acc)
        p_true, full_target = outcome_probability(p, t, self.mode)
        p_true = p_true.clamp(self.eps, 1 - self.eps)
        loss = -((1 - p_true) ** self.gamma) * torch.log(p_true)
        alpha = self._alpha_factor(full_target, p)
        if alpha is not None:
            loss = loss * alpha
        mask = valid_weight(valid, loss)
        loss = loss * mask
        if self.reduction == "none":
            return loss
        return loss.sum() / (mask.sum() * loss.shape[1]).clamp(min=1)
