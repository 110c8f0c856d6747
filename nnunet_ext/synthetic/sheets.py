"""Thin, gently curved sheets with holes, stacked close together (Vesuvius-like papyrus layers), in 3D.

The failure modes of sheet segmentation (the Vesuvius Challenge surface detection task): a layer a few
voxels thick whose topology matters — each sheet is one component (Betti-0) with a known number of holes
(Betti-1) — lying about one voxel away from the next layer (a network merges the two), and whose image
contrast fades over short patches while the reference stays continuous (a network breaks the sheet or opens
a false hole there). Holes are real: absent in the image and in the reference.

Geometry. Every sheet is the band ``|z − h(y, x) − k·(thickness + gap)| < thickness / 2`` (physical units,
measured along z) of one smooth random height field ``h``, so sheets are parallel, ``gap`` apart along z, and
span the whole ``(Y, X)`` extent. Sheet ``k`` has ``n_holes`` round holes (discs in ``(y, x)``) of its own,
at least two voxels from each other and from the border, so each hole cuts one sheet through and a sheet
with ``n`` holes has Betti-0 = 1, Betti-1 = ``n`` and Betti-2 = 0 (Euler characteristic 1 − ``n``).

The structure is described as a :class:`~nnunet_ext.synthetic.tubes.TubeTree` (``distance_to_centre`` =
z-distance to the nearest mid-surface over the half thickness), so the image and the fading reuse
:func:`~nnunet_ext.synthetic.fading.render_faded`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunet_ext.synthetic.fading import FadeSettings, render_faded
from nnunet_ext.synthetic.tubes import TubeTree


@dataclass(frozen=True)
class SheetCase:
    image: np.ndarray       # (Z, Y, X) uint16
    label: np.ndarray       # (Z, Y, X) uint8, 0/1: the sheets (holes are 0)
    contrast: np.ndarray    # (Z, Y, X) float32, the multiplier applied to the sheet signal
    centres: np.ndarray     # (n, 3) centres of the faded patches (physical units)
    holes: tuple            # per sheet: ((y, x, radius), ...) of its holes (physical units)


def height_field(shape_yx, spacing_yx, amplitude: float, seed=None, n_waves: int = 3,
                 min_wavelength: float = 32.0) -> np.ndarray:
    """``(Y, X)`` float64 smooth random surface with mean 0 and values within ±``amplitude`` (physical
    units): a sum of ``n_waves`` plane waves of wavelengths ≥ ``min_wavelength``."""
    rng = np.random.default_rng(seed)
    y, x = np.meshgrid(*[(np.arange(n) + 0.5) * s for n, s in zip(shape_yx, spacing_yx)], indexing="ij")
    h = np.zeros(shape_yx)
    for _ in range(n_waves):
        angle = rng.uniform(0, np.pi)
        wavelength = rng.uniform(min_wavelength, 2 * min_wavelength)
        h += np.cos(2 * np.pi * (np.cos(angle) * y + np.sin(angle) * x) / wavelength + rng.uniform(0, 2 * np.pi))
    return amplitude * h / n_waves


def place_holes(rng: np.random.Generator, extent_yx, n_holes: int, radius_range, clearance: float) -> list:
    """Up to ``n_holes`` discs ``(y, x, radius)`` inside ``extent_yx``, each ``clearance`` from the border and
    ``clearance`` apart (edge to edge). Raises ``ValueError`` if they do not fit after many tries."""
    holes: list = []
    for _ in range(200 * max(n_holes, 1)):
        if len(holes) == n_holes:
            return holes
        r = rng.uniform(*radius_range)
        low, high = r + clearance, np.asarray(extent_yx) - r - clearance
        if np.any(high <= low):
            continue
        centre = rng.uniform(low, high)
        if all(np.hypot(*(centre - (y, x))) >= r + ro + clearance for y, x, ro in holes):
            holes.append((float(centre[0]), float(centre[1]), float(r)))
    if len(holes) < n_holes:
        raise ValueError(f"{n_holes} holes of radius {radius_range} do not fit into {tuple(extent_yx)}")
    return holes


def sheet_case(shape, spacing=None, seed: int = 0, n_sheets: int = 2, n_holes: int = 2,
               hole_radius_range=(2.5, 5.0), thickness: float = 2.0, gap: float = 2.0, amplitude: float = 3.0,
               fade: FadeSettings | None = FadeSettings(n_fades=2, length=6.0, floor=0.1),
               noise: float = 0.3) -> SheetCase:
    """One volume of ``n_sheets`` parallel curved sheets with ``n_holes`` holes each.

    Parameters
    ----------
    shape, spacing : (Z, Y, X)
        Volume shape and voxel spacing (default 1). The stack is centred along z; it must fit
        (``amplitude`` above and below it included).
    seed : int
        Seed of the surface, the holes, the fades and the noise.
    n_sheets, n_holes : int
        Number of sheets, holes per sheet.
    hole_radius_range : (min, max)
        Hole radius (physical units).
    thickness, gap : float
        Sheet thickness and the free space between neighbouring sheets, along z (physical units).
    amplitude : float
        Largest z displacement of the surface (physical units).
    fade : FadeSettings or None
        Patches where the sheet contrast fades (reference unchanged); ``None`` for full contrast.
    noise : float
        Standard deviation of the Gaussian noise (the sheet signal is 1 on its mid-surface).

    Examples
    --------
    >>> case = sheet_case((24, 48, 48), seed=0, n_sheets=1, n_holes=3, fade=None)
    >>> case.label.shape, len(case.holes[0])
    ((24, 48, 48), 3)
    """
    if len(shape) != 3:
        raise ValueError(f"sheets are 3D: shape must be (Z, Y, X), got {shape}")
    spacing = tuple(float(s) for s in (spacing or (1.0, 1.0, 1.0)))
    if len(spacing) != 3:
        raise ValueError(f"spacing {spacing} does not match shape {shape}")
    if n_sheets < 1 or n_holes < 0 or thickness <= 0 or gap <= 0 or amplitude < 0:
        raise ValueError("need n_sheets >= 1, n_holes >= 0, thickness > 0, gap > 0, amplitude >= 0")
    rng = np.random.default_rng(seed)
    extent = np.asarray(shape) * np.asarray(spacing)
    pitch = thickness + gap
    stack = (n_sheets - 1) * pitch + thickness + 2 * amplitude
    if stack > extent[0] - 2 * spacing[0]:
        raise ValueError(f"{n_sheets} sheets (thickness {thickness}, gap {gap}, amplitude {amplitude}) need "
                         f"{stack:.1f} along z, the volume has {extent[0]:.1f}")
    h = height_field(shape[1:], spacing[1:], amplitude, seed=rng.integers(2 ** 31))
    first = extent[0] / 2 - (n_sheets - 1) * pitch / 2
    z = ((np.arange(shape[0]) + 0.5) * spacing[0])[:, None, None]
    y, x = np.meshgrid(*[(np.arange(n) + 0.5) * s for n, s in zip(shape[1:], spacing[1:])], indexing="ij")
    clearance = 2.0 * max(spacing[1:])
    distance = np.full(shape, np.inf, dtype=np.float32)
    holes = []
    for k in range(n_sheets):
        sheet_holes = place_holes(rng, extent[1:], n_holes, hole_radius_range, clearance)
        holes.append(tuple(sheet_holes))
        d = np.abs(z - (first + k * pitch + h)[None]) / (thickness / 2)
        in_hole = np.zeros(shape[1:], dtype=bool)
        for cy, cx, r in sheet_holes:
            in_hole |= np.hypot(y - cy, x - cx) < r
        d[:, in_hole] = np.inf
        distance = np.minimum(distance, d.astype(np.float32))
    tree = TubeTree(distance, np.where(np.isfinite(distance), thickness / 2, 0).astype(np.float32))
    rendered = render_faded(tree, spacing, seed, fade, noise)
    return SheetCase(rendered.image, rendered.label, rendered.contrast, rendered.centres, tuple(holes))


def write_sheets_dataset(raw_root, dataset_id: int, name: str, shape, spacing=None, n_train: int = 12,
                         n_test: int = 4, seed: int = 0, overwrite: bool = False, **case_options) -> Path:
    """Write ``Dataset{id:03d}_{name}`` of :func:`sheet_case` volumes (case ``i``: seed ``seed + 1000 i``)
    into ``raw_root`` in nnU-Net raw format (imagesTs/labelsTs: held-out test cases); label 1 = sheet."""
    from nnunet_ext.synthetic.staging import write_raw_dataset

    spacing = tuple(spacing or (1.0, 1.0, 1.0))

    def make_case(i):
        case = sheet_case(shape, spacing, seed=seed + 1000 * i, **case_options)
        return case.image, case.label

    return write_raw_dataset(raw_root, dataset_id, name, make_case, n_train, n_test, spacing, {
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "sheet": 1},
        "description": "Synthetic stacked thin sheets with holes and fading contrast (nnunet-ext benchmark)"},
        overwrite=overwrite)


__all__ = ["SheetCase", "height_field", "place_holes", "sheet_case", "write_sheets_dataset"]
