"""Variance regularisation: uniform predicted probability inside each ground-truth region.

The penalty is the piecewise-constant region term of Chan, T. F., Vese, L. A. "Active Contours Without
Edges", IEEE Transactions on Image Processing 10(2), 2001 — ``Σ_{inside} (u - c)²`` with c the mean of u
inside — applied to the predicted probability map inside the *ground-truth* region of each class and
normalised by the region size (a variance). Within a ground-truth region the probability should be
constant, which discourages holes and speckle inside objects.
"""
from __future__ import annotations

import torch
from torch import nn

from nnunet_ext.losses._common import accumulation_dtype, check_inputs, check_reduction, detach_ignored

__all__ = ["RegionVarianceLoss"]


class RegionVarianceLoss(nn.Module):
    """Variance of the predicted probability of class c inside the ground-truth region of class c.

    For sample b and foreground channel c, let ``R = {v : T_v = 1 and M_v = 1}`` (valid ground-truth
    voxels of the class). If ``|R| > 0``::

        μ          = Σ_{v∈R} P_v / |R|
        Var[b, c]  = Σ_{v∈R} (P_v - μ)² / |R|          (population variance)

    and ``loss = mean of Var[b, c] over the (b, c) with |R| > 0``; 0 (with zero gradient) when no region
    is non-empty. Values lie in [0, 1/4]; any prediction constant on R (in particular the ground truth)
    gives 0. Works unchanged for softmax classes and sigmoid regions. Ignored voxels are not part of any
    region and receive no gradient. Computed in float32 (or float64) whatever the input dtype, with the
    two-pass formula (no cancellation).

    Parameters
    ----------
    reduction : {"mean", "none"}
        ``"none"`` returns ``Var`` with shape ``(B, C)``, 0 where the region is empty; ``"mean"`` averages
        over the non-empty regions only (not the mean of the ``"none"`` values when some are empty).

    Shapes
    ------
    forward(probabilities, target, valid=None):
        probabilities ``(B, C, *S)`` in [0, 1]; target ``(B, C, *S)`` one-hot float; valid ``(B, 1, *S)``
        bool or ``None``. S has 2 or 3 axes.

    Examples
    --------
    >>> t = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0]).view(1, 1, 1, 5)
    >>> p = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.3]).view(1, 1, 1, 5)  # region values 1, 0, 1, 0
    >>> RegionVarianceLoss()(p, t).item()
    0.25
    """

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = check_reduction(reduction)

    def forward(self, probabilities: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        check_inputs(probabilities, target, valid)
        axes = tuple(range(2, probabilities.ndim))
        acc = accumulation_dtype(probabilities)
        with torch.no_grad():
            region = target.to(acc) > 0.5
            if valid is not None:
                region = region & valid
            region = region.to(acc)
            size = region.sum(axes)  # (B, C)
        p = detach_ignored(probabilities, valid).to(acc)
        denominator = size.clamp(min=1)
        mean = (p * region).sum(axes) / denominator
        deviation = (p - mean.view(*mean.shape, *([1] * len(axes)))) * region
        variance = (deviation ** 2).sum(axes) / denominator  # (B, C); 0 where the region is empty
        if self.reduction == "none":
            return variance
        present = size > 0
        return variance.sum() / present.sum().clamp(min=1).to(acc)
