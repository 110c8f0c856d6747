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


def _pad_spatial(x: torch.Tensor, axes, value: float) -> torch.Tensor:
    """Pad ``x`` by one voxel on both sides of each of ``axes`` with ``value``."""
    widths = [0] * (2 * (x.ndim - 2))
    for axis in axes:
        position = x.ndim - 1 - axis  # F.pad lists the last axis first
        widths[2 * position] = widths[2 * position + 1] = 1
    return F.pad(x, widths, value=value)


# Erosion and dilation are built from shifted views and element-wise min/max instead of pooling:
# identical values, but an order of magnitude faster than max_pool on the CPU and no slower on the GPU.

def soft_erode(x: torch.Tensor) -> torch.Tensor:
    """Soft erosion: minimum over the cross-shaped (4- / 6-) neighbourhood; outside the array is neutral."""
    dims = _spatial_dims(x)
    axes = range(2, 2 + dims)
    padded = _pad_spatial(x, axes, float("inf"))
    inner = [slice(None), slice(None)] + [slice(1, -1)] * dims
    eroded = x
    for axis in axes:
        for start in (0, 2):
            neighbour = list(inner)
            neighbour[axis] = slice(start, start + x.shape[axis])
            eroded = torch.minimum(eroded, padded[tuple(neighbour)])
    return eroded


def soft_dilate(x: torch.Tensor) -> torch.Tensor:
    """Soft dilation: maximum over the full 3×3(×3) neighbourhood (separable: one axis at a time)."""
    dims = _spatial_dims(x)
    for axis in range(2, 2 + dims):
        padded = _pad_spatial(x, [axis], float("-inf"))
        n = x.shape[axis]
        x = torch.maximum(torch.maximum(padded.narrow(axis, 0, n), padded.narrow(axis, 1, n)), padded.narrow(axis, 2, n))
    return x


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
