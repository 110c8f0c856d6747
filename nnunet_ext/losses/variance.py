"""Region regularisation: homogeneous *and* confident predicted probability inside each ground-truth region.

The penalty is the piecewise-constant region term of Chan, T. F., Vese, L. A. "Active Contours Without
Edges", IEEE Transactions on Image Processing 10(2), 2001 — ``Σ_{inside} (u - c₁)²`` — applied to the
predicted probability map inside the *ground-truth* region of each class and normalised by the region
size. Chan & Vese fit ``c₁`` as the mean of u inside; here the region is given and its ideal value is
known, so ``c₁`` is fixed at 1 (the value of the ground truth there). The result is the second moment of
the probability about 1 inside the region, which splits into a homogeneity and a confidence part::

    E_R[(1 - p)²] = Var_R(p) + (1 - μ_R)²

With the fitted mean instead (the population variance alone) the term is minimised by predicting 0
everywhere inside the object and, on a partly detected object, pushes voxels above the mean — the correct
ones — down (``∂Var/∂p_v = 2 (p_v - μ)/|R| > 0``). Among ``Var_R + λ (1 - μ_R)²`` the gradient with respect
to a voxel at ``p_v`` is ``2 [(p_v - μ_R) - λ (1 - μ_R)] / |R|``, non-positive for every ``p_v ≤ 1`` exactly
when ``λ ≥ 1``: λ = 1, the second moment about 1, is the smallest confidence weight that never lowers a
voxel inside the reference.
"""
from __future__ import annotations

import torch
from torch import nn

from nnunet_ext.losses._common import accumulation_dtype, check_inputs, check_reduction, detach_ignored

__all__ = ["RegionVarianceLoss"]


class RegionVarianceLoss(nn.Module):
    """Second moment about 1 of the predicted probability of class c inside the ground-truth region of c.

    For sample b and foreground channel c, let ``R = {v : T_v = 1 and M_v = 1}`` (valid ground-truth
    voxels of the class). If ``|R| > 0``::

        L[b, c] = Σ_{v∈R} (1 - P_v)² / |R|
                = Var_R(P) + (1 - μ_R)²        μ_R = Σ_{v∈R} P_v / |R|,  Var_R population variance

    that is, Chan & Vese's (2001) region term with the inside constant fixed at 1: it rewards interiors
    that are homogeneous (``Var_R``, speckle and holes) *and* confident (``(1 - μ_R)²``). Of two interiors
    with the same mean, the speckled one scores worse. ``∂L/∂P_v = -2 (1 - P_v)/|R| ≤ 0`` for every v in
    R — gradient descent never lowers the probability of a voxel inside the reference, and raises every
    one below 1 — and 0 outside R: the term says nothing about false positives (left to the Dice/focal
    terms it is combined with). ``loss = mean of L[b, c] over the (b, c) with |R| > 0``; 0 (with zero
    gradient) when no region is non-empty. Values lie in [0, 1]: 0 exactly when P = 1 on every non-empty
    R (whatever P is outside), 1 exactly when P = 0 on every non-empty R. Works unchanged for softmax
    classes and sigmoid (possibly overlapping) regions. Ignored voxels are not part of any region and
    receive no gradient. Computed in float32 (or float64) whatever the input dtype.

    Parameters
    ----------
    reduction : {"mean", "none"}
        ``"none"`` returns ``L`` with shape ``(B, C)``, 0 where the region is empty; ``"mean"`` averages
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
    >>> RegionVarianceLoss()(p, t).item()  # variance 0.25 + (1 - mean 0.5)²
    0.5
    >>> RegionVarianceLoss()(torch.full_like(p, 0.5), t).item()  # uniform, unsure: confidence part only
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
        # the direct sum of squares about 1 (no mean subtracted, so no cancellation)
        moment = ((1 - p) ** 2 * region).sum(axes) / size.clamp(min=1)  # (B, C); 0 where the region is empty
        if self.reduction == "none":
            return moment
        present = size > 0
        return moment.sum() / present.sum().clamp(min=1).to(acc)
