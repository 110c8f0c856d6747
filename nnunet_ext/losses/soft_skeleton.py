"""Differentiable morphological skeleton by iterated min/max pooling.

Shit, S. et al. "clDice - a Novel Topology-Preserving Loss Function for Tubular Structure
Segmentation", CVPR 2021, section 3.2 ("soft-skeleton").

All functions take a tensor of shape ``(B, C, H, W)`` (2D) or ``(B, C, D, H, W)`` (3D) with values in
[0, 1] and work on every channel independently (classes are never pooled together). Outputs have the
input's shape and dtype. On binary inputs every function returns binary values, so the soft skeleton of
a ground-truth mask is a hard morphological skeleton.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _spatial_dims(x: torch.Tensor) -> int:
    if x.ndim not in (4, 5):
        raise ValueError(f"expected a (B, C, H, W) or (B, C, D, H, W) tensor, got shape {tuple(x.shape)}")
    return x.ndim - 2


def soft_erode(x: torch.Tensor) -> torch.Tensor:
    """Soft erosion: minimum over the cross-shaped (4- / 6-) neighbourhood.

    Implemented as the minimum of 1D min-pools along each axis, which equals a min-pool over the
    plus-shaped structuring element.
    """
    dims = _spatial_dims(x)
    pool = F.max_pool2d if dims == 2 else F.max_pool3d
    eroded = None
    for axis in range(dims):
        kernel = [1] * dims
        padding = [0] * dims
        kernel[axis], padding[axis] = 3, 1
        along_axis = -pool(-x, kernel_size=kernel, stride=1, padding=padding)
        eroded = along_axis if eroded is None else torch.minimum(eroded, along_axis)
    return eroded


def soft_dilate(x: torch.Tensor) -> torch.Tensor:
    """Soft dilation: maximum over the full 3×3(×3) neighbourhood."""
    dims = _spatial_dims(x)
    pool = F.max_pool2d if dims == 2 else F.max_pool3d
    return pool(x, kernel_size=3, stride=1, padding=1)


def soft_open(x: torch.Tensor) -> torch.Tensor:
    """Soft morphological opening: dilation of the erosion."""
    return soft_dilate(soft_erode(x))


def soft_skeleton(x: torch.Tensor, iterations: int = 3) -> torch.Tensor:
    """Soft skeleton of ``x`` after ``iterations`` erosion steps.

    Parameters
    ----------
    x : torch.Tensor
        ``(B, C, H, W)`` or ``(B, C, D, H, W)``, values in [0, 1] (probabilities or a binary mask).
    iterations : int
        Number of erosions, i.e. the largest structure half-width (in voxels) that is still thinned to a
        centre line. Must be >= 0; the reference implementation hard-codes 3 (2D) / 10 (3D).

    Returns
    -------
    torch.Tensor
        Same shape and dtype as ``x``.

    Examples
    --------
    >>> line = torch.zeros(1, 1, 5, 7); line[0, 0, 1:4, 1:6] = 1
    >>> soft_skeleton(line, iterations=2)[0, 0, 2].tolist()
    [0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    """
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    skeleton = F.relu(x - soft_open(x))
    for _ in range(iterations):
        x = soft_erode(x)
        delta = F.relu(x - soft_open(x))
        # add what this erosion level contributes and the skeleton does not hold yet
        skeleton = skeleton + F.relu(delta - skeleton * delta)
    return skeleton
