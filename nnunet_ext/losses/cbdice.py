"""Centreline-boundary Dice (cbDice): a ground-truth-side variant with loader-computed radii, and Shi et al.'s
published formulation with the prediction's radii computed on the tensor's device.

Shi, P., Hu, J., Yang, Y., Gao, Z., Liu, W., Ma, T. "Centerline Boundary Dice Loss for Vascular
Segmentation", MICCAI 2024 (arXiv:2407.01517).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nnunet_ext.losses._common import (accumulation_dtype, check_inputs, check_iterations, check_reduction,
                                       detach_ignored, iterations_at, valid_weight)
from nnunet_ext.losses.distributed import all_gather_sum
from nnunet_ext.losses.soft_skeleton import soft_dilate, soft_erode, soft_skeleton

__all__ = ["CenterlineBoundaryDiceLoss", "FORMULATIONS", "capped_distance_transform"]

#: formulation -> (default iterations, default smooth)
FORMULATIONS = {"loader": (3, 1.0), "shi2024": (10, 1e-3)}


def capped_distance_transform(background: torch.Tensor, cap: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Euclidean distance (in voxels) from every voxel to the nearest ``background`` voxel, capped at ``cap``.

    Separable lower envelope (one pass per spatial axis, ``g(i) = min_|δ|≤cap f(i+δ) + δ²`` on squared
    distances) with offsets bounded by ``cap``: exact wherever the true distance is ``<= cap`` (the nearest
    background voxel then lies in the box ``|δ_a| <= cap`` that the passes search), and ``cap`` wherever it
    is larger. Voxels outside the array are not background (as in ``scipy.ndimage.distance_transform_edt``).
    Runs on the tensor's device with ``2·cap·d`` element-wise minima; no gradient.

    Parameters
    ----------
    background : torch.Tensor
        Bool, ``(B, C, *S)`` with 2 or 3 spatial axes.
    cap : int
        Largest distance (voxels) computed exactly, >= 0.
    dtype : torch.dtype
        Floating dtype of the result.

    Returns
    -------
    torch.Tensor
        ``background``'s shape, ``dtype``; 0 on background voxels, ``cap`` where no background voxel is
        within ``cap`` (also when there is none).

    Examples
    --------
    >>> row = torch.tensor([[[[1, 0, 0, 0, 0, 0, 1]]]]).bool()
    >>> capped_distance_transform(row, cap=2)[0, 0, 0].tolist()
    [0.0, 1.0, 2.0, 2.0, 2.0, 1.0, 0.0]
    """
    if cap < 0:
        raise ValueError(f"cap must be >= 0, got {cap}")
    squared = torch.where(background, 0.0, float("inf")).to(dtype)
    for axis in range(2, background.ndim):
        n = squared.shape[axis]
        reach = min(cap, n - 1)
        if reach == 0:
            continue
        widths = [0] * (2 * (background.ndim - 2))
        position = background.ndim - 1 - axis  # F.pad lists the last axis first
        widths[2 * position] = widths[2 * position + 1] = reach
        padded = F.pad(squared, widths, value=float("inf"))
        best = squared
        for offset in range(1, reach + 1):
            step = float(offset * offset)
            best = torch.minimum(best, padded.narrow(axis, reach - offset, n) + step)
            best = torch.minimum(best, padded.narrow(axis, reach + offset, n) + step)
        squared = best
    return squared.clamp(max=float(cap * cap)).sqrt()


def _skeleton_of_mask(mask: torch.Tensor, valid: torch.Tensor | None, iterations: int) -> torch.Tensor:
    """:func:`soft_skeleton` of a binary mask, with ignored voxels treated like the outside of the patch
    (neutral for erosion and dilation alike); identical to ``soft_skeleton`` without an ignore mask."""
    if valid is None:
        return soft_skeleton(mask, iterations)

    def erode(x):
        return soft_erode(torch.where(valid, x, 1.0))

    def opened(x):
        return soft_dilate(torch.where(valid, erode(x), 0.0))

    skeleton = F.relu(mask - opened(mask))
    x = mask
    for _ in range(iterations):
        x = erode(x)
        delta = F.relu(x - opened(x))
        skeleton = skeleton + F.relu(delta - skeleton * delta)
    return skeleton * valid


def _radius_weights(mask: torch.Tensor, skeleton: torch.Tensor, background: torch.Tensor, cap: int):
    """Shi et al.'s ``get_weights`` for one binary mask per (sample, channel), all in voxel units.

    Returns ``(depth, radius, inverse)``: the inside distance clipped at and divided by the largest skeleton
    radius ``R_max`` (on the mask), the normalised skeleton radius ``R/R_max`` (on the skeleton) and the
    linear inverse radius ``(R_max − R + R_min)/R_max`` (on the skeleton; raised to the power d − 1 by the
    caller), with ``R_max = max(max_S R, 1)`` and ``R_min = max(min over the whole patch of R·S, 1)``.
    """
    axes = tuple(range(2, mask.ndim))
    distance = capped_distance_transform(background, cap, mask.dtype) * mask
    skeleton_radius = distance * skeleton
    r_max = skeleton_radius.amax(axes, keepdim=True).clamp(min=1)
    r_min = skeleton_radius.amin(axes, keepdim=True).clamp(min=1)
    depth = torch.minimum(distance, r_max) / r_max
    radius = skeleton_radius / r_max
    inverse = (r_max - skeleton_radius + r_min) / r_max * skeleton
    return depth, radius, inverse


class CenterlineBoundaryDiceLoss(nn.Module):
    """``1 - cbDice`` per foreground channel, in one of two formulations.

    ``formulation="loader"`` (default) — every distance is the ground truth's, precomputed per patch on the
    CPU by :func:`nnunet_ext.targets.ground_truth.centerline_radius_target`: its centreline depth ``ρ`` (1 on
    the centreline, falling to ~0 at the boundary, 0 outside; physical distances, relative to the local
    radius) and inverse-radius skeleton weights ``ω = (R_max/R)^(d-1)`` on its skeleton. With prediction P,
    its soft skeleton ``S_P = softskel(P)`` (as in clDice) and validity mask M::

        Tprec = (Σ S_P·ρ·M + s) / (Σ S_P·M + s)     diameter-aware topology precision
        Tsens = (Σ ω·P·M + s) / (Σ ω·M + s)         radius-weighted topology sensitivity
        cbDice = 2·Tprec·Tsens / (Tprec + Tsens),   loss = 1 - cbDice

    A predicted centreline voxel counts by how central it lies relative to the local vessel radius, and
    ground-truth centreline voxels are weighted by inverse normalised radius, so thin vessels are not drowned
    by thick ones. No distance transform inside the loss.

    ``formulation="shi2024"`` — the authors' published loss (``SoftcbDiceLoss`` with morphological
    skeletonisation), per channel. For each of the ground truth L and the prediction (thresholded,
    ``P > 0.5``): its skeleton ``S`` (the clDice soft skeleton of the binary mask, ``iterations`` erosions),
    inside distance ``D`` (Euclidean, voxels), ``R_max = max(max_S D, 1)``, ``R_min = 1`` (in practice) and::

        D̂ = min(D, R_max)/R_max on the mask     R̂ = D/R_max on S     I = ((R_max − D + R_min)/R_max)^(d−1) on S

    then, with ``q_vp = D̂_P·P``, ``q_spvp = R̂_P·P``, ``q_sp = I_P·S_P·P`` (the prediction's) and ``q_vl =
    D̂_L``, ``q_slvl = R̂_L``, ``q_sl = I_L`` (the ground truth's), ``c(A, B) = B if B ≠ 0 else A``::

        Tprec = (Σ q_sp·q_vl·M + s) / (Σ q_sp·c(q_spvp, q_slvl)·M + s)
        Tsens = (Σ q_sl·q_vp·M + s) / (Σ q_sl·c(q_slvl, q_spvp)·M + s)
        loss = 1 - 2·Tprec·Tsens / (Tprec + Tsens)        (the authors return -cbDice: same gradient)

    The gradient flows through the explicit factors P only (masks, skeletons and distances are constants,
    as in the authors' code). Both sides' distances come from :func:`capped_distance_transform` on the
    tensor's device — exact, because every skeleton voxel lies within ``iterations + 1`` voxels of the
    background and every distance beyond ``R_max`` is clipped to it. The ground truth's quantities are
    derived from ``target`` (the auxiliary target's ρ and ω cannot give them: they are normalised by the
    local radius, not the patch's ``R_max``, and measured on a different skeleton); ``radius_target`` is
    accepted for the common signature and not read. What differs from the authors: classes are separate
    channels (they merge all foreground classes into one by a max over logits), the ignore mask is
    respected (they have none: an ignore label would count as vessel), and each (sample, channel) is its
    own ratio unless ``batch_dice`` (they pool the whole batch).

    Both formulations: ignored voxels contribute to no sum and the prediction is detached there (in
    ``"shi2024"`` the ground truth's ignored voxels are treated like the outside of the patch). Classes are
    never merged; regions work like classes. Empty ground truth and prediction give 0, all-ignored patches
    give 0, predicted centrelines on an empty ground truth are penalised. Sums are accumulated in float32.

    Parameters
    ----------
    iterations : int or tuple of int, optional
        Soft-skeleton erosion steps (:func:`soft_skeleton`): one count, or one per deep-supervision level
        (highest resolution first; deeper levels reuse the last), chosen by ``forward``'s ``level``.
        Default 3 (``"loader"``) / 10 (``"shi2024"``, the authors' trainers, 2D and 3D).
    smooth : float, optional
        Additive smoothing ``s`` (> 0) of both ratios. Default 1.0 (``"loader"``) / 1e-3 (``"shi2024"``, the
        authors' trainers; their class default is 1).
    batch_dice : bool
        Pool the sums over the batch (and across DDP processes); ``"shi2024"`` with ``batch_dice=True`` is
        the authors' pooling.
    reduction : {"mean", "none"}
        ``"mean"``: scalar, the mean of ``"none"``; ``"none"``: ``(C,)`` (batch_dice) or ``(B, C)``.
    formulation : {"loader", "shi2024"}
        See above.

    Shapes
    ------
    forward(probabilities, target, valid, radius_target, level=0):
        probabilities ``(B, C, *S)`` in [0, 1]; target ``(B, C, *S)`` one-hot (read by ``"shi2024"`` only);
        valid ``(B, 1, *S)`` bool or ``None``; radius_target ``(B, 2C, *S)``: channels ``:C`` depth ρ,
        channels ``C:`` skeleton weights ω (read by ``"loader"`` only); level: deep-supervision level (0 =
        full resolution) selecting the iteration count. S has 2 or 3 axes.

    Examples
    --------
    >>> from nnunet_ext.targets.ground_truth import centerline_radius_target
    >>> bar = torch.zeros(1, 1, 7, 12); bar[..., 1:6, 1:11] = 1
    >>> aux = torch.from_numpy(centerline_radius_target(bar[0].bool().numpy()))[None]
    >>> loss = CenterlineBoundaryDiceLoss()
    >>> bool(loss(bar, bar, None, aux) < 0.05), bool(loss(bar * 0.3, bar, None, aux) > 0.3)
    (True, True)
    >>> shi = CenterlineBoundaryDiceLoss(formulation="shi2024")
    >>> round(shi(bar, bar, None, aux).item(), 6), bool(shi(bar * 0.3, bar, None, aux) > 0.9)
    (0.0, True)
    """

    def __init__(self, iterations: int | tuple[int, ...] | None = None, smooth: float | None = None,
                 batch_dice: bool = False, reduction: str = "mean", formulation: str = "loader"):
        super().__init__()
        if formulation not in FORMULATIONS:
            raise ValueError(f"formulation must be one of {sorted(FORMULATIONS)}, got {formulation!r}")
        default_iterations, default_smooth = FORMULATIONS[formulation]
        iterations = default_iterations if iterations is None else iterations
        smooth = default_smooth if smooth is None else smooth
        if not smooth > 0:
            raise ValueError(f"smooth must be > 0 (it keeps empty patches finite), got {smooth}")
        self.iterations = check_iterations(iterations)
        self.smooth = float(smooth)
        self.batch_dice = batch_dice
        self.reduction = check_reduction(reduction)
        self.formulation = formulation

    def forward(self, probabilities: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None,
                radius_target: torch.Tensor, level: int = 0) -> torch.Tensor:
        n = probabilities.shape[1]
        check_inputs(probabilities, target, valid, radius_target, "radius_target", auxiliary_channels=2 * n)
        iterations = iterations_at(self.iterations, level)
        if self.formulation == "shi2024":
            stats = self._shi2024_sums(probabilities, target, valid, iterations)
        else:
            stats = self._loader_sums(probabilities, valid, radius_target, iterations)
        if self.batch_dice:
            stats = all_gather_sum(stats.sum(1))
        s = self.smooth
        precision = (stats[0] + s) / (stats[1] + s)
        sensitivity = (stats[2] + s) / (stats[3] + s)
        loss = 1 - 2 * precision * sensitivity / (precision + sensitivity)
        return loss.mean() if self.reduction == "mean" else loss

    @staticmethod
    def _loader_sums(probabilities, valid, radius_target, iterations):
        n = probabilities.shape[1]
        axes = tuple(range(2, probabilities.ndim))
        acc = accumulation_dtype(probabilities)
        with torch.no_grad():
            mask = valid_weight(valid, probabilities)
            depth = radius_target[:, :n].to(probabilities.dtype) * mask
            weight = radius_target[:, n:].to(acc) * mask.to(acc)  # up to (R_max/R)²: kept out of float16
        probabilities = detach_ignored(probabilities, valid)
        skeleton = soft_skeleton(probabilities, iterations) * mask
        return torch.stack([(skeleton * depth).sum(axes, dtype=acc), skeleton.sum(axes, dtype=acc),
                            (weight * probabilities.to(acc)).sum(axes), weight.sum(axes)])  # (4, B, C)

    @staticmethod
    def _shi2024_sums(probabilities, target, valid, iterations):
        axes = tuple(range(2, probabilities.ndim))
        acc = accumulation_dtype(probabilities)
        power = probabilities.ndim - 3  # d − 1
        cap = iterations + 1  # skeleton voxels lie within iterations + 1 voxels of the background
        with torch.no_grad():
            mask = valid_weight(valid, probabilities).to(acc)
            truth = (target > 0.5) if valid is None else (target > 0.5) & valid
            truth_f = truth.to(acc)
            truth_skeleton = _skeleton_of_mask(truth_f, valid, iterations)
            truth_background = ~truth if valid is None else valid & ~truth
            q_vl, q_slvl, q_sl = _radius_weights(truth_f, truth_skeleton, truth_background, cap)
            q_sl = q_sl ** power
            hard = (probabilities > 0.5) if valid is None else (probabilities > 0.5) & valid
            hard_f = hard.to(acc)
            predicted_skeleton = _skeleton_of_mask(hard_f, valid, iterations)
            predicted_background = ~hard if valid is None else valid & ~hard
            depth_p, radius_p, inverse_p = _radius_weights(hard_f, predicted_skeleton, predicted_background, cap)
            inverse_p = inverse_p ** power
        p = detach_ignored(probabilities, valid).to(acc)
        q_vp, q_spvp, q_sp = depth_p * p, radius_p * p, inverse_p * p
        precision_weight = torch.where(q_slvl != 0, q_slvl, q_spvp)
        sensitivity_weight = torch.where(q_spvp != 0, q_spvp, q_slvl)
        return torch.stack([(q_sp * q_vl * mask).sum(axes), (q_sp * precision_weight * mask).sum(axes),
                            (q_sl * q_vp * mask).sum(axes), (q_sl * sensitivity_weight * mask).sum(axes)])
