"""Focal loss computed from the logits, for softmax labels and sigmoid regions, ignore-aware.

Lin, T.-Y., Goyal, P., Girshick, R., He, K., Dollár, P. "Focal Loss for Dense Object Detection",
ICCV 2017 (TPAMI 2020).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from nnunet_ext.losses._common import (as_weight_vector, broadcast_channels, check_mode, check_reduction,
                                       outcome_log_probability, valid_weight)

__all__ = ["FocalLoss"]


class FocalLoss(nn.Module):
    """``-α_t (1 - p_t)^γ log p_t`` averaged over the valid voxels, from the network's logits.

    The term takes the raw logits (``takes_logits = True``: :class:`~nnunet_ext.losses.CompoundLoss` hands it
    the logits instead of the probabilities) and the foreground one-hot target:

    * ``mode="softmax"`` (labels): one categorical focal term per voxel over the ``C + 1`` classes;
      ``log p_t = log_softmax(x)[true class]``, the background target is ``1 - Σ_c t_c`` and
      ``α_t = α[true class]``. Loss map ``(B, 1, *S)``.
    * ``mode="sigmoid"`` (regions): an independent binary focal term per region c: ``log p_t = log σ(x)``
      and ``α_t = α_c`` where ``t = 1``; ``log p_t = log σ(-x)`` and ``α_t = 1 - α_c`` where ``t = 0``.
      Loss map ``(B, C, *S)``.

    ``log p_t`` comes from ``log_softmax`` / ``logsigmoid`` in float32 (float64 for float64 logits) whatever
    the input dtype, and ``1 - p_t`` from ``-expm1(log p_t)``: no clamp, so a confidently wrong voxel
    (logit margin 20 in float16) keeps its full gradient, ``∂ℓ/∂x_true → -α_t`` (the cross-entropy
    gradient), and a confidently right one gets an exactly vanishing gradient. With ``γ = 0`` and
    ``alpha=None`` it is the (unweighted) cross-entropy.

    ``reduction="mean"``: ``Σ M·ℓ / (n · Σ M)`` with M the validity mask and n the channels of the loss
    map (1 for softmax, C for sigmoid), i.e. the mean over valid voxels (and regions); 0 when every voxel is
    ignored. Ignored voxels contribute nothing and receive no gradient.

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
    reduction : {"mean", "none"}
        ``"mean"``: scalar (see above); ``"none"``: the loss map (zero on ignored voxels).

    Shapes
    ------
    forward(logits, target, valid=None):
        logits ``(B, C + 1, *S)`` (softmax, background first) or ``(B, C, *S)`` (sigmoid), any float dtype;
        target ``(B, C, *S)`` foreground one-hot float; valid ``(B, 1, *S)`` bool or ``None``. S has 2 or 3
        axes.

    Examples
    --------
    >>> logits = torch.tensor([0.0, 2.0, -1.0]).view(1, 3, 1, 1); t = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    >>> p = torch.softmax(logits, 1)[0, 1, 0, 0]
    >>> loss = FocalLoss("softmax", gamma=2.0)(logits, t)
    >>> round(loss.item(), 5) == round((-(1 - p) ** 2 * torch.log(p)).item(), 5)
    True
    """

    takes_logits = True

    def __init__(self, mode: str = "softmax", gamma: float = 2.0, alpha: float | Sequence[float] | None = None,
                 reduction: str = "mean"):
        super().__init__()
        self.mode = check_mode(mode)
        if not gamma >= 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
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

    def forward(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        log_p_true, full_target = outcome_log_probability(logits, target, valid, self.mode)
        loss = -log_p_true
        if self.gamma != 0:
            # 1 - p_t without cancellation; the floor keeps γ < 1 finite where p_t rounds to exactly 1
            one_minus = (-torch.expm1(log_p_true)).clamp(min=torch.finfo(log_p_true.dtype).tiny)
            loss = loss * one_minus ** self.gamma
        alpha = self._alpha_factor(full_target, log_p_true)
        if alpha is not None:
            loss = loss * alpha
        mask = valid_weight(valid, loss)
        loss = loss * mask
        if self.reduction == "none":
            return loss
        return loss.sum() / (mask.sum() * loss.shape[1]).clamp(min=1)
