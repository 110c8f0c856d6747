"""Nested regions (BraTS-like tumours), 2D or 3D: a necrotic centre inside an enhancing rim inside edema.

Labels follow the BraTS convention: 1 = necrotic core, 2 = edema, 3 = enhancing rim; the evaluated
regions are nested, whole tumour {1, 2, 3} ⊇ tumour core {1, 3} ⊇ enhancing tumour {3}. Geometrically the
necrosis is enclosed by the rim (it touches nothing but the rim) and the core by the edema (it never
touches background), so the enhancing rim is a ring (2D: Betti-0 = 1, Betti-1 = 1) or a closed shell (3D).
The failure modes: a prediction whose regions are not nested, and a rim broken where its contrast fades
(the reference ring stays closed), which turns one loop into none.

Shapes are star-shaped: boundary ``k`` lies at radius ``f_k · R · m(u)`` in direction ``u``, with the same
smooth positive modulation ``m`` for every boundary and ``f_necrosis < f_rim < 1`` (the whole tumour), so
the nesting holds with a margin of ``(f_{k+1} − f_k) · R · min m``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunet_ext.synthetic.fading import FadeSettings, fade_centres, fading_contrast
from nnunet_ext.synthetic.tubes import TubeTree

NECROSIS, EDEMA, ENHANCING = 1, 2, 3
#: nnU-Net region definitions (dataset.json ``labels``) and the order to turn regions back into labels
REGIONS = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [1, 3], "enhancing tumor": [3]}
REGIONS_CLASS_ORDER = [2, 1, 3]
#: mean intensity of each label before noise (background 0.2)
INTENSITY = {0: 0.2, NECROSIS: 0.05, EDEMA: 0.45, ENHANCING: 1.0}


@dataclass(frozen=True)
class NestedCase:
    image: np.ndarray       # uint16, (Y, X) or (Z, Y, X)
    label: np.ndarray       # uint8, 0 / NECROSIS / EDEMA / ENHANCING
    contrast: np.ndarray    # float32, the multiplier applied to the rim's signal
    centres: np.ndarray     # (n, ndim) centres of the faded rim stretches (physical units)


def star_modulation(directions: np.ndarray, seed=None, n_lobes: int = 3, depth: float = 0.2) -> np.ndarray:
    """``m(u)`` for unit vectors ``directions`` (``(..., ndim)``): ``1 + depth · mean_j cos(a_j · (u·v_j) + φ_j)``
    with ``n_lobes`` random directions ``v_j``; values in ``[1 − depth, 1 + depth]``, smooth in ``u``."""
    rng = np.random.default_rng(seed)
    ndim = directions.shape[-1]
    total = np.zeros(directions.shape[:-1])
    for _ in range(n_lobes):
        v = rng.normal(size=ndim)
        v /= np.linalg.norm(v)
        total += np.cos(rng.uniform(2.0, 4.0) * (directions @ v) + rng.uniform(0, 2 * np.pi))
    return 1.0 + depth * total / n_lobes


def nested_case(shape, spacing=None, seed: int = 0, radius_fraction=(0.25, 0.4), core_fraction: float = 0.6,
                necrosis_fraction: float = 0.35, depth: float = 0.2,
                fade: FadeSettings | None = FadeSettings(n_fades=1, length=5.0, floor=0.1),
                noise: float = 0.25) -> NestedCase:
    """One tumour: edema ⊃ enhancing rim ⊃ necrosis, 2D (``(Y, X)``) or 3D (``(Z, Y, X)``).

    Parameters
    ----------
    shape, spacing : tuple
        Image shape and spacing in array-axis order (default spacing 1).
    seed : int
        Seed of the shape, the position, the fades and the noise.
    radius_fraction : (min, max)
        Mean radius ``R`` of the whole tumour as a fraction of the smallest physical extent.
    core_fraction, necrosis_fraction : float
        Outer radius of the rim and of the necrosis, as fractions of the whole tumour's radius
        (``0 < necrosis_fraction < core_fraction < 1``).
    depth : float
        Depth of the boundary modulation (``0`` = spheres / discs; ``< 1``).
    fade : FadeSettings or None
        Stretches of the rim whose contrast fades towards the edema's intensity (reference unchanged).
    noise : float
        Standard deviation of the Gaussian noise (the rim's intensity above background is 0.8).

    Examples
    --------
    >>> case = nested_case((64, 64), seed=0, fade=None)
    >>> sorted(np.unique(case.label).tolist())
    [0, 1, 2, 3]
    """
    if len(shape) not in (2, 3):
        raise ValueError(f"shape must be (Y, X) or (Z, Y, X), got {shape}")
    spacing = tuple(float(s) for s in (spacing or (1.0,) * len(shape)))
    if len(spacing) != len(shape):
        raise ValueError(f"spacing {spacing} does not match shape {shape}")
    if not 0 < necrosis_fraction < core_fraction < 1:
        raise ValueError(f"need 0 < necrosis_fraction < core_fraction < 1, got {necrosis_fraction}, {core_fraction}")
    if not 0 <= depth < 1:
        raise ValueError(f"depth must be in [0, 1), got {depth}")
    rng = np.random.default_rng(seed)
    extent = np.asarray(shape) * np.asarray(spacing)
    radius = rng.uniform(*radius_fraction) * extent.min()
    reach = radius * (1 + depth)
    if np.any(extent < 2 * reach):
        raise ValueError(f"a tumour of radius up to {reach:.1f} does not fit into {tuple(extent)}")
    centre = rng.uniform(reach, extent - reach)
    grid = np.stack(np.meshgrid(*[(np.arange(n) + 0.5) * s for n, s in zip(shape, spacing)], indexing="ij"), -1)
    offset = grid - centre
    r = np.linalg.norm(offset, axis=-1)
    directions = offset / np.maximum(r, 1e-9)[..., None]
    relative = r / (radius * star_modulation(directions, seed=rng.integers(2 ** 31), depth=depth))
    label = np.zeros(shape, dtype=np.uint8)
    label[relative < 1.0] = EDEMA
    label[relative < core_fraction] = ENHANCING
    label[relative < necrosis_fraction] = NECROSIS
    signal = np.vectorize(INTENSITY.get, otypes=[np.float64])(label)
    if fade is not None and fade.n_fades > 0:
        # the rim's mid-line as a "centre line": |relative − mid| over the half width, in rim widths
        mid, half = (core_fraction + necrosis_fraction) / 2, (core_fraction - necrosis_fraction) / 2
        rim = TubeTree((np.abs(relative - mid) / half).astype(np.float32), np.zeros(shape, np.float32))
        centres = fade_centres(rim, fade.n_fades, fade.min_separation * fade.length, spacing, seed=seed + 1)
        contrast = fading_contrast(shape, centres, fade.length, fade.floor, spacing)
    else:
        centres = np.zeros((0, len(shape)))
        contrast = np.ones(shape, dtype=np.float32)
    rim_excess = INTENSITY[ENHANCING] - INTENSITY[EDEMA]
    signal = np.where(label == ENHANCING, INTENSITY[EDEMA] + rim_excess * contrast, signal)
    image = signal + np.random.default_rng(seed + 2).normal(0, noise, size=shape)
    image = np.clip(image * 600 + 100, 0, 65535).astype(np.uint16)
    return NestedCase(image, label, contrast, centres)


def write_nested_dataset(raw_root, dataset_id: int, name: str, shape, spacing=None, n_train: int = 24,
                         n_test: int = 12, seed: int = 0, overwrite: bool = False, **case_options) -> Path:
    """Write ``Dataset{id:03d}_{name}`` of :func:`nested_case` cases (case ``i``: seed ``seed + 1000 i``) into
    ``raw_root`` in nnU-Net raw format with region labels (:data:`REGIONS`, :data:`REGIONS_CLASS_ORDER`), so
    nnU-Net trains region-based (sigmoid) as for BraTS."""
    from nnunet_ext.synthetic.staging import write_raw_dataset

    spacing = tuple(spacing or (1.0,) * len(shape))

    def make_case(i):
        case = nested_case(shape, spacing, seed=seed + 1000 * i, **case_options)
        return case.image, case.label

    return write_raw_dataset(raw_root, dataset_id, name, make_case, n_train, n_test, spacing, {
        "channel_names": {"0": "T1Gd"}, "labels": dict(REGIONS), "regions_class_order": list(REGIONS_CLASS_ORDER),
        "description": "Synthetic nested tumour regions with a fading enhancing rim (nnunet-ext benchmark)"},
        overwrite=overwrite)


__all__ = ["EDEMA", "ENHANCING", "INTENSITY", "NECROSIS", "NestedCase", "REGIONS", "REGIONS_CLASS_ORDER",
           "nested_case", "star_modulation", "write_nested_dataset"]
