"""Boundary loss with signed distance maps precomputed in the data loader.

Kervadec, H., Bouchtiba, J., Desrosiers, C., Granger, E., Dolz, J., Ben Ayed, I. "Boundary loss for
highly unbalanced segmentation", MIDL 2019 (extended in Medical Image Analysis 67, 2021).
"""
from __future__ import annotations

import torch
from torch import nn

from nnunet_ext.losses._common import (accumulation_dtype, check_inputs, check_reduction, detach_ignored,
                                       valid_weight)

__all__ = ["BoundaryLoss"]


class BoundaryLoss(nn.Module):
    """Mean of ``p · φ`` over the valid voxels, per foreground channel.

    For sample b and channel c with prediction P, signed distance map φ of the ground truth (the auxiliary
    target, from :func:`nnunet_ext.targets.ground_truth.signed_distance_target`: negative inside, positive outside, physical units) and
    validity mask M::

        loss[b, c] = Σ_v M·P·φ / max(Σ_v M, 1)

    Minimising it moves predicted foreground towards the inside of the ground truth: for a fixed φ the
    minimum over P in [0, 1] is reached by the ground truth itself (P = 1 exactly where φ < 0), and the
    minimum value is ``Σ_{φ<0} M·φ / Σ M`` (negative; the loss is not bounded below by 0, as in the paper).
    Values are in the unit of the spacing (mm); choose the term weight accordingly (Kervadec et al. start
    at 0.01 and raise it while lowering the region loss). Ignored voxels (φ = 0 there too) contribute
    nothing and receive no gradient; an all-ignored sample gives 0. A class without boundary in the patch
    gets the value chosen by ``nnunet_ext.targets.ground_truth.signed_distance_target(empty=...)``. No distance transform is computed here.
    Products and sums are computed in float32 (or float64), so float16 inputs with distances up to the
    float16 range do not overflow.

    Parameters
    ----------
    reduction : {"mean", "none"}
        ``"none"`` returns ``(B, C)``; ``"mean"`` its mean.

    Shapes
    ------
    forward(probabilities, target, valid, signed_distance):
        probabilities ``(B, C, *S)`` in [0, 1]; target ``(B, C, *S)`` one-hot (unused, kept for the common
        signature); valid ``(B, 1, *S)`` bool or ``None``; signed_distance ``(B, C, *S)``. S has 2 or 3 axes.

    Examples
    --------
    >>> phi = torch.tensor([1.0, -1.0, -2.0, -1.0, 1.0]).view(1, 1, 1, 5)
    >>> p = torch.tensor([0.0, 1.0, 1.0, 1.0, 0.5]).view(1, 1, 1, 5)
    >>> round(BoundaryLoss()(p, (phi < 0).float(), None, phi).item(), 6)  # (-1 - 2 - 1 + 0.5) / 5
    -0.7
    """

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = check_reduction(reduction)

    def forward(self, probabilities: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None,
                signed_distance: torch.Tensor) -> torch.Tensor:
        check_inputs(probabilities, target, valid, signed_distance, "signed_distance")
        axes = tuple(range(2, probabilities.ndim))
        acc = accumulation_dtype(probabilities)
        mask = valid_weight(valid, probabilities).to(acc)
        weight = signed_distance.detach().to(acc) * mask
        p = detach_ignored(probabilities, valid).to(acc)
        loss = (p * weight).sum(axes) / mask.sum(axes).clamp(min=1)  # (B, C)
        return loss.mean() if self.reduction == "mean" else loss
