"""Random trees of tubes with varying radius, drawn in physical space (MiniVess-like vessels)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit


@dataclass(frozen=True)
class TubeTree:
    """A rasterised tree of tubes.

    distance_to_centre: ``(Z, Y, X)`` float32, physical distance of each voxel centre to the nearest
        centre line, divided by the local tube radius (< 1 inside a tube). ``inf`` far from every tube.
    radius: ``(Z, Y, X)`` float32, radius of the tube that is nearest (0 where ``inf``).
    """

    distance_to_centre: np.ndarray
    radius: np.ndarray

    def mask(self, scale: float = 1.0) -> np.ndarray:
        """Voxels within ``scale`` radii of a centre line."""
        return self.distance_to_centre < scale


def _random_unit(rng: np.random.Generator, ndim: int = 3) -> np.ndarray:
    v = rng.normal(size=ndim)
    return v / np.linalg.norm(v)


def _segments(rng, extent, n_roots, depth, radius_range):
    """Centre-line segments ``(start, end, r_start, r_end)`` of ``n_roots`` random binary trees."""
    segments = []
    stack = []
    ndim = len(extent)
    for _ in range(n_roots):
        start = rng.uniform(0.15, 0.85, size=ndim) * extent
        stack.append((start, _random_unit(rng, ndim), rng.uniform(*radius_range), depth))
    while stack:
        start, direction, radius, level = stack.pop()
        length = rng.uniform(0.2, 0.4) * extent.max()
        # bend towards the volume centre a little so that branches stay inside
        centre_pull = (extent / 2 - start) / extent.max()
        direction = direction + 0.6 * centre_pull
        direction /= np.linalg.norm(direction)
        # keep every branch inside the volume: clip the end point to the interior
        end = np.clip(start + direction * length, 0.05 * extent, 0.95 * extent)
        end_radius = max(radius_range[0], radius * rng.uniform(0.65, 0.95))
        segments.append((start, end, radius, end_radius))
        if level > 0:
            for sign in (-1, 1):
                turn = direction + sign * 0.9 * _random_unit(rng, ndim)
                stack.append((end, turn / np.linalg.norm(turn), end_radius, level - 1))
    return segments


def branching_tubes(
    shape: tuple[int, ...],
    spacing: tuple[float, ...] | None = None,
    n_roots: int = 2,
    depth: int = 2,
    radius_range: tuple[float, float] = (0.8, 2.5),
    seed: int | None = None,
) -> TubeTree:
    """Rasterise random branching tubes into a volume.

    Parameters
    ----------
    shape : (Z, Y, X) or (Y, X)
        Volume (or image) shape in voxels; a 2-tuple draws the trees in the plane.
    spacing : (sz, sy, sx) or (sy, sx), optional
        Voxel spacing in array-axis order (default 1); tubes are round in physical space.
    n_roots, depth : int
        Number of trees and branching levels (each level splits every branch in two).
    radius_range : (min, max)
        Tube radius in physical units; radii shrink along each branch down to ``min``.
    seed : int or None
        Random seed.

    Returns
    -------
    TubeTree

    Examples
    --------
    >>> tree = branching_tubes((16, 32, 32), seed=0)
    >>> tree.mask().dtype, tree.mask().shape
    (dtype('bool'), (16, 32, 32))
    """
    rng = np.random.default_rng(seed)
    spacing = (1.0,) * len(shape) if spacing is None else spacing
    if len(spacing) != len(shape):
        raise ValueError(f"spacing {spacing} does not match shape {shape}")
    extent = np.asarray(shape) * np.asarray(spacing, dtype=np.float64)
    return rasterise_segments(_segments(rng, extent, n_roots, depth, radius_range), shape, spacing)


def rasterise_segments(segments, shape, spacing) -> TubeTree:
    """Rasterise centre-line segments ``(start, end, r_start, r_end)`` (physical coordinates in
    array-axis order, radius linear along each segment) into a :class:`TubeTree` of ``shape``."""
    spacing_arr = np.asarray(spacing, dtype=np.float64)
    grid = np.stack(np.meshgrid(*[(np.arange(n) + 0.5) * s for n, s in zip(shape, spacing_arr)], indexing="ij"), -1)
    best = np.full(shape, np.inf, dtype=np.float32)
    best_radius = np.zeros(shape, dtype=np.float32)
    for start, end, r0, r1 in segments:
        axis = end - start
        t = np.clip(((grid - start) @ axis) / max(axis @ axis, 1e-12), 0.0, 1.0)
        nearest = start + t[..., None] * axis
        radius = r0 + t * (r1 - r0)
        relative = (np.linalg.norm(grid - nearest, axis=-1) / radius).astype(np.float32)
        closer = relative < best
        best[closer] = relative[closer]
        best_radius[closer] = radius[closer]
    return TubeTree(best, best_radius)


def vessel_image(tree: TubeTree, seed: int | None = None, noise: float = 0.25,
                 contrast: np.ndarray | None = None) -> np.ndarray:
    """A two-photon-like intensity volume (uint16) for ``tree``: bright tubes with soft edges, a slow
    background gradient and Gaussian noise.

    ``contrast`` (optional, same shape, values in [0, 1]) multiplies the tube signal, e.g. the output of
    :func:`nnunet_ext.synthetic.fading.fading_contrast` to let the contrast fade along short stretches
    while the reference (``tree.mask()``) stays continuous. ``None`` (default) is full contrast."""
    rng = np.random.default_rng(seed)
    signal = expit(-6.0 * (tree.distance_to_centre - 1.0))
    if contrast is not None:
        if contrast.shape != signal.shape:
            raise ValueError(f"contrast has shape {contrast.shape}, the tree {signal.shape}")
        signal = signal * contrast
    z = np.linspace(0, 1, signal.shape[0]).reshape((-1,) + (1,) * (signal.ndim - 1))
    background = 0.15 + 0.1 * z
    image = signal + background + rng.normal(0, noise, size=signal.shape)
    return np.clip(image * 600 + 100, 0, 65535).astype(np.uint16)
