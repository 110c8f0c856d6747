"""Hard thin-structure cases: contrast that fades along short stretches, noise and touching tubes.

The failure modes users meet on vessels and fibres: a tube whose image contrast drops to (almost)
nothing over a few voxels while the reference annotation stays continuous (the annotator saw it in
neighbouring slices or knew the anatomy), strong noise, and two tubes running side by side with a gap
of about one voxel. A segmentation network trained on Dice+CE tends to break the tube at the faded
stretch (Betti-0 up, clDice down) and to merge the touching pair (Betti-0 down, a false loop).

2D (``(Y, X)``) and 3D (``(Z, Y, X)``) alike; 2D datasets are written as one-slice volumes, nnU-Net's
convention for 2D data in NIfTI, and trained with the ``2d`` configuration.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunet_ext.synthetic.tubes import TubeTree, _segments, rasterise_segments, vessel_image


@dataclass(frozen=True)
class FadeSettings:
    """Where and how strongly the contrast fades.

    n_fades: stretches per case; length: length of each stretch (physical units; the contrast is at
    ``floor`` over the central ``length`` and rises back to 1 over ``length / 2`` on either side);
    floor: contrast left in a stretch (0 = invisible, 1 = no fading); min_separation: between stretch
    centres, in units of ``length``.
    """

    n_fades: int = 3
    length: float = 6.0
    floor: float = 0.1
    min_separation: float = 3.0


def fade_centres(tree: TubeTree, n_fades: int, min_distance: float, spacing=None, seed=None,
                 centre_fraction: float = 0.35) -> np.ndarray:
    """``(n, ndim)`` physical coordinates of up to ``n_fades`` points on the centre lines of ``tree``,
    at least ``min_distance`` apart (fewer if the tree is too small to hold them).

    Candidates are the voxels within ``centre_fraction`` radii of a centre line, so every centre lies
    inside the reference."""
    rng = np.random.default_rng(seed)
    spacing = np.ones(tree.distance_to_centre.ndim) if spacing is None else np.asarray(spacing, float)
    candidates = np.argwhere(tree.distance_to_centre < centre_fraction)
    if len(candidates) == 0:
        candidates = np.argwhere(tree.mask())
    chosen: list[np.ndarray] = []
    for index in rng.permutation(len(candidates)):
        point = (candidates[index] + 0.5) * spacing
        if all(np.linalg.norm(point - c) >= min_distance for c in chosen):
            chosen.append(point)
            if len(chosen) == n_fades:
                break
    return np.asarray(chosen, dtype=np.float64).reshape(-1, tree.distance_to_centre.ndim)


def fading_contrast(shape, centres: np.ndarray, length: float, floor: float, spacing=None) -> np.ndarray:
    """Contrast multiplier (float32, ``shape``): ``floor`` within ``length / 2`` of each centre, rising
    smoothly (half a cosine) back to 1 over a further ``length / 2``, 1 elsewhere.

    Multiply the tube *signal* with it (``vessel_image(..., contrast=...)``); the reference is untouched.

    Examples
    --------
    >>> c = fading_contrast((1, 40), np.array([[0.5, 20.0]]), length=6, floor=0.0)
    >>> float(c[0, 20]), float(c[0, 0])
    (0.0, 1.0)
    """
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"floor must be in [0, 1], got {floor}")
    if length <= 0:
        raise ValueError(f"length must be positive, got {length}")
    spacing = np.ones(len(shape)) if spacing is None else np.asarray(spacing, float)
    grid = np.stack(np.meshgrid(*[(np.arange(n) + 0.5) * s for n, s in zip(shape, spacing)], indexing="ij"), -1)
    contrast = np.ones(shape, dtype=np.float32)
    half = length / 2.0
    for centre in np.asarray(centres, float).reshape(-1, len(shape)):
        distance = np.linalg.norm(grid - centre, axis=-1)
        ramp = np.clip((distance - half) / half, 0.0, 1.0)  # 0 inside the stretch, 1 beyond the ramp
        depth = 0.5 - 0.5 * np.cos(np.pi * ramp)  # smooth 0 → 1
        contrast = np.minimum(contrast, (floor + (1.0 - floor) * depth).astype(np.float32))
    return contrast


def _touching_partners(rng, segments, n_touching: int, gap: float, radius: float, ndim: int):
    """For ``n_touching`` random segments, a parallel tube over their middle 60 %, ``gap`` (physical
    units) beside the surface: two separate structures that nearly touch."""
    partners = []
    if n_touching <= 0 or not segments:
        return partners
    picks = rng.choice(len(segments), size=min(n_touching, len(segments)), replace=False)
    for index in picks:
        start, end, r0, r1 = segments[index]
        axis = end - start
        norm = np.linalg.norm(axis)
        if norm < 1e-6:
            continue
        axis = axis / norm
        normal = rng.normal(size=ndim)
        normal -= (normal @ axis) * axis
        normal /= max(np.linalg.norm(normal), 1e-12)
        offset = (max(r0, r1) + radius + gap) * normal
        a = start + 0.2 * (end - start) + offset
        b = start + 0.8 * (end - start) + offset
        partners.append((a, b, radius, radius))
    return partners


@dataclass(frozen=True)
class HardCase:
    image: np.ndarray       # uint16
    label: np.ndarray       # uint8, 0/1, continuous across the faded stretches
    contrast: np.ndarray    # float32, the multiplier applied to the tube signal
    centres: np.ndarray     # (n, ndim) centres of the faded stretches (physical units)


def hard_tube_case(shape, spacing=None, seed: int = 0, n_roots: int = 3, depth: int = 2,
                   radius_range=(0.8, 2.0), fade: FadeSettings | None = FadeSettings(), noise: float = 0.3,
                   n_touching: int = 1, touching_gap: float = 1.0) -> HardCase:
    """One case of branching tubes with faded stretches, noise and touching tubes (2D or 3D).

    Parameters
    ----------
    shape, spacing : tuple
        ``(Y, X)`` or ``(Z, Y, X)`` and the spacing in the same order (default 1).
    seed : int
        Seed of the geometry, the fades and the noise.
    n_roots, depth, radius_range :
        As in :func:`~nnunet_ext.synthetic.tubes.branching_tubes`.
    fade : FadeSettings or None
        ``None`` for full contrast everywhere.
    noise : float
        Standard deviation of the Gaussian noise (the tube signal is 1 at the centre line).
    n_touching, touching_gap :
        Number of tubes given a parallel partner ``touching_gap`` beside their surface.
    """
    spacing = tuple(float(s) for s in (spacing or (1.0,) * len(shape)))
    if len(spacing) != len(shape):
        raise ValueError(f"spacing {spacing} does not match shape {shape}")
    rng = np.random.default_rng(seed)
    extent = np.asarray(shape) * np.asarray(spacing)
    segments = _segments(rng, extent, n_roots, depth, radius_range)
    segments = segments + _touching_partners(rng, segments, n_touching, touching_gap, radius_range[0], len(shape))
    tree = rasterise_segments(segments, shape, spacing)
    return render_faded(tree, spacing, seed, fade, noise)


def render_faded(tree: TubeTree, spacing, seed: int, fade: FadeSettings | None, noise: float) -> HardCase:
    """Image, reference and contrast of a rasterised structure whose contrast fades along ``fade.n_fades``
    stretches centred on its centre lines / mid-surfaces (``tree.distance_to_centre < 0.35``); the
    reference is ``tree.mask()``, untouched by the fading. Seeds: fades ``seed + 1``, noise ``seed + 2``.
    Shared by every generator whose structure is described by a :class:`TubeTree` (tubes, sheets)."""
    shape = tree.distance_to_centre.shape
    if fade is not None and fade.n_fades > 0:
        centres = fade_centres(tree, fade.n_fades, fade.min_separation * fade.length, spacing, seed=seed + 1)
        contrast = fading_contrast(shape, centres, fade.length, fade.floor, spacing)
    else:
        centres = np.zeros((0, len(shape)))
        contrast = np.ones(shape, dtype=np.float32)
    image = vessel_image(tree, seed=seed + 2, noise=noise, contrast=contrast)
    return HardCase(image, tree.mask().astype(np.uint8), contrast, centres)


def write_hard_tubes_dataset(raw_root, dataset_id: int, name: str, shape, spacing=None, n_train: int = 24,
                             n_test: int = 12, seed: int = 0, overwrite: bool = False, **case_options) -> Path:
    """Write ``Dataset{id:03d}_{name}`` of :func:`hard_tube_case` cases into ``raw_root`` (nnU-Net raw
    format; imagesTs/labelsTs hold the held-out test cases; case ``i`` uses seed ``seed + 1000 i``). 2D
    shapes are written as one-slice volumes (z spacing 999, nnU-Net's convention). Returns the dataset
    folder (written to a temporary folder and moved into place, :func:`~nnunet_ext.synthetic.staging.write_raw_dataset`)."""
    from nnunet_ext.synthetic.staging import write_raw_dataset

    spacing = tuple(spacing or (1.0,) * len(shape))

    def make_case(i):
        case = hard_tube_case(shape, spacing, seed=seed + 1000 * i, **case_options)
        return case.image, case.label

    return write_raw_dataset(raw_root, dataset_id, name, make_case, n_train, n_test, spacing, {
        "channel_names": {"0": "microscopy"}, "labels": {"background": 0, "tube": 1},
        "description": "Synthetic thin branching tubes with fading contrast, noise and touching tubes "
                       "(nnunet-ext benchmark)"}, overwrite=overwrite)


__all__ = ["FadeSettings", "HardCase", "fade_centres", "fading_contrast", "hard_tube_case", "render_faded",
           "write_hard_tubes_dataset"]
