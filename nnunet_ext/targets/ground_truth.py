"""Auxiliary targets of the loss terms, computed from one ground-truth patch on the CPU (NumPy/SciPy).

These run in nnU-Net's data-augmentation workers, never inside a loss. Each function has the signature
of :attr:`nnunet_ext.targets.AuxiliaryTarget.compute`, ``f(labels_onehot, valid, spacing, **options)``,
so a ``functools.partial`` of it (picklable) can be registered as an auxiliary target as it is:

================================ =================================== ==============
function                         used by                             channels/class
================================ =================================== ==============
:func:`skeleton_tube_target`   :class:`SkeletonRecallLoss`     1
:func:`signed_distance_target` :class:`BoundaryLoss`,          1
                               :class:`HausdorffDTLoss`
:func:`centerline_radius_target` :class:`CenterlineBoundaryDiceLoss` 2
================================ =================================== ==============

Every deep-supervision output gets its targets computed from its own downsampled segmentation (see
:mod:`nnunet_ext.targets.transforms`).

Conventions shared by all functions
-----------------------------------
* ``labels_onehot``: ``(C, *S)`` bool, one channel per foreground class (softmax mode) or region (sigmoid
  mode); S has 2 or 3 axes. Every channel is processed on its own (classes are never merged).
* ``valid``: ``(*S)`` or ``(1, *S)`` bool, False on voxels carrying the ignore label; ``None`` when the
  dataset has none. Ignored voxels are never foreground and always hold 0 in the output.
* ``spacing``: voxel spacing in array-axis order (``len(spacing) == labels_onehot.ndim - 1``); ``None``
  means isotropic 1. Distances are physical (in the unit of ``spacing``, mm for nnU-Net).
* Output: ``(C, *S)`` float32.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage
from skimage.morphology import skeletonize

__all__ = ["skeleton_tube_target", "signed_distance_target", "centerline_radius_target"]


def _prepare(labels_onehot: np.ndarray, valid: np.ndarray | None, spacing: Sequence[float] | None):
    labels = np.asarray(labels_onehot).astype(bool, copy=False)
    if labels.ndim not in (3, 4):
        raise ValueError(f"labels_onehot must be (C, H, W) or (C, D, H, W), got shape {labels.shape}")
    spatial = labels.shape[1:]
    if valid is not None:
        valid = np.asarray(valid).astype(bool, copy=False)
        if valid.shape == (1,) + spatial:
            valid = valid[0]
        if valid.shape != spatial:
            raise ValueError(f"valid must have shape {spatial} or {(1,) + spatial}, got {valid.shape}")
        labels = labels & valid
    if spacing is None:
        spacing = (1.0,) * len(spatial)
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != len(spatial) or any(not (s > 0) for s in spacing):
        raise ValueError(f"spacing must hold {len(spatial)} positive values (array-axis order), got {spacing}")
    return labels, valid, spacing


def _bounding_box(mask: np.ndarray, margin: Sequence[int]) -> tuple[slice, ...]:
    """Smallest box holding ``mask``, grown by ``margin`` voxels per axis (clipped to the array)."""
    box = []
    for axis, m in enumerate(margin):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        box.append(slice(max(int(idx[0]) - m, 0), min(int(idx[-1]) + 1 + m, mask.shape[axis])))
    return tuple(box)


def _skeleton(mask: np.ndarray) -> np.ndarray:
    """scikit-image's skeleton, plus the deepest voxels of every component whose skeleton vanished.

    Lee's 3D thinning in scikit-image deletes some objects completely — solid boxes and tubes of even
    thickness, e.g. a 4×4-voxel vessel (scikit-image issues #3757 and #6513, open). Such a vessel would get
    no tube and no recall signal at all. For every connected component (full connectivity) without a
    skeleton voxel, the voxels where its inside distance is maximal are used instead (for an even-thickness
    tube: the central voxel columns along its length).
    """
    skeleton = skeletonize(mask).astype(bool)
    components, n = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, bool))
    if n == 0:
        return skeleton
    # skeleton voxels per component, counted over the (few) skeleton voxels only
    kept = np.bincount(components[skeleton], minlength=n + 1)
    vanished = np.flatnonzero(kept[1:] == 0) + 1
    if vanished.size:
        depth = ndimage.distance_transform_edt(mask)
        deepest = np.asarray(ndimage.maximum(depth, components, vanished))
        lookup = np.zeros(n + 1)
        lookup[vanished] = deepest
        skeleton |= (components > 0) & (lookup[components] > 0) & (depth == lookup[components])
    return skeleton


def _inside_distance(foreground: np.ndarray, background: np.ndarray, box: tuple[slice, ...],
                     spacing: tuple[float, ...]) -> np.ndarray:
    """``dist(v, background)`` on ``box`` (the foreground's bounding box grown by one voxel), exact on
    the foreground voxels: equal to scipy's EDT of ``~background`` over the whole array there.

    The distance transform runs on the box alone whenever that provably changes nothing:

    * the one-voxel shell of the box outside the foreground's bounding box is all background: the
      nearest background voxel q of a foreground voxel v, if outside the box, can be clamped onto the box
      coordinate-wise; the clamped voxel lies in that shell (so it is background) and is no farther from
      v, so the box holds a nearest background voxel;
    * otherwise (ignored voxels in the shell), every foreground voxel whose distance on the box is at most
      its distance to the nearest voxel outside the box is exact, as any voxel outside is at least that far.

    Failing both, the whole array is transformed (only with ignored voxels right around the structure).
    Background must be non-empty.
    """
    crop = background[box]
    inner = np.zeros(crop.shape, dtype=bool)
    tight = _bounding_box(foreground[box], (0,) * foreground.ndim)
    inner[tight] = True
    shell = ~inner
    if not shell.any() or crop[shell].all():
        return ndimage.distance_transform_edt(~crop, sampling=spacing)
    if crop.any():
        distance = ndimage.distance_transform_edt(~crop, sampling=spacing)
        reach = np.full(crop.shape, np.inf)
        for axis, (sl, s) in enumerate(zip(box, spacing)):
            k = np.arange(crop.shape[axis], dtype=np.float64)
            to_outside = np.full(crop.shape[axis], np.inf)
            if sl.start > 0:
                to_outside = np.minimum(to_outside, (k + 1) * s)
            if sl.stop < foreground.shape[axis]:
                to_outside = np.minimum(to_outside, (crop.shape[axis] - k) * s)
            view = [1] * crop.ndim
            view[axis] = -1
            reach = np.minimum(reach, to_outside.reshape(view))
        inside = foreground[box]
        if (distance[inside] <= reach[inside]).all():
            return distance
    return ndimage.distance_transform_edt(~background, sampling=spacing)[box]


def _ball_offsets(radius: float, relative: tuple[float, ...]) -> np.ndarray:
    """Integer offsets ``o`` (shape (K, ndim)) with ``sqrt(Σ (o_i · relative_i)²) <= radius``, the
    distance evaluated with the same float operations as ``scipy.ndimage.distance_transform_edt``."""
    reach = [int(np.floor(radius / r)) for r in relative]
    grid = np.indices([2 * m + 1 for m in reach]).reshape(len(reach), -1) - np.array(reach)[:, None]
    scaled = grid.astype(np.float64) * np.array(relative)[:, None]
    return grid[:, np.sqrt(np.add.reduce(scaled * scaled, axis=0)) <= radius].T


def _dilate(skeleton: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Union of the skeleton shifted by every offset, clipped to the array (a sparse binary dilation)."""
    points = np.argwhere(skeleton)
    out = np.zeros(skeleton.shape, dtype=bool)
    for start in range(0, len(offsets), 64):  # bounded memory for large balls
        moved = (points[:, None, :] + offsets[None, start:start + 64, :]).reshape(-1, skeleton.ndim)
        inside = ((moved >= 0) & (moved < skeleton.shape)).all(axis=1)
        out[tuple(moved[inside].T)] = True
    return out


_TUBE_SHAPES = ("ball", "authors")


def skeleton_tube_target(labels_onehot: np.ndarray, valid: np.ndarray | None = None,
                         spacing: Sequence[float] | None = None, *, tube_radius: float = 2.0,
                         shape: str = "ball") -> np.ndarray:
    """Ground-truth skeleton of each channel, dilated into a tube that stays inside that channel's mask.

    ``shape="ball"`` (default): for every channel c, ``skeleton = skimage.morphology.skeletonize(mask_c)``
    (Lee's 3D thinning for 3D patches, Zhang's 2D thinning for 2D patches, on the voxel grid) with
    ``mask_c = labels_c & valid`` (a connected component whose Lee skeleton vanishes — a scikit-image bug
    for even-thickness objects — contributes its deepest voxels instead, so every object gets a tube);
    ``tube_c = {v : dist(v, skeleton) <= tube_radius · min(spacing)} ∩ mask_c``, the distance being the
    physical Euclidean distance between voxel centres. With isotropic spacing this is a Euclidean ball of
    ``tube_radius`` voxels; with anisotropic spacing the ball is round in physical space (it reaches fewer
    voxels along coarse axes). The tube never leaves the class's own mask, so the recall computed on it
    never asks for foreground outside the ground truth, and it never covers an ignored voxel.

    ``shape="authors"``: the tubed skeleton of Kirchhoff et al.'s published transform, reproduced voxel for
    voxel: one plain ``skeletonize`` of the union of all channels *and the ignored voxels* (their
    ``segmentation > 0``, where the ignore label is a positive label), dilated ``tube_radius`` times
    (an integer; their code: 2) with the face-connected cross (``skimage.morphology.dilation``'s default),
    i.e. a city-block ball on the voxel grid whatever the spacing; then ``tube_c = tube ∩ mask_c`` (their
    multiplication by the label map followed by one-hot encoding and the ignore mask). No repair of
    vanished skeletons.

    Parameters
    ----------
    labels_onehot : ndarray of bool, shape (C, *S)
        One channel per foreground class/region; S has 2 or 3 axes.
    valid : ndarray of bool, shape (*S) or (1, *S), optional
        False on ignored voxels.
    spacing : sequence of float, optional
        Voxel spacing in array-axis order (default isotropic 1). Not used by ``shape="authors"``.
    tube_radius : float
        ``"ball"``: tube radius in units of the finest voxel spacing (Skeleton Recall uses 2 voxels).
        ``"authors"``: number of cross dilations (integer). 0 keeps the bare skeleton.
    shape : {"ball", "authors"}
        Tube recipe (see above).

    Returns
    -------
    ndarray of float32, shape (C, *S)
        1 on the tube, 0 elsewhere; an empty channel gives an all-zero channel.

    Examples
    --------
    >>> bar = np.zeros((1, 7, 11), bool); bar[0, 2:5, 1:10] = True  # a 3-pixel-wide bar
    >>> skeleton_tube_target(bar, tube_radius=0)[0, 3].astype(int).tolist()  # its centre line
    [0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0]
    >>> bool((skeleton_tube_target(bar, tube_radius=1) <= bar).all())  # the tube stays inside the mask
    True
    """
    labels, valid, spacing = _prepare(labels_onehot, valid, spacing)
    if not tube_radius >= 0:
        raise ValueError(f"tube_radius must be >= 0, got {tube_radius}")
    if shape not in _TUBE_SHAPES:
        raise ValueError(f"shape must be one of {_TUBE_SHAPES}, got {shape!r}")
    if shape == "authors":
        return _authors_tube(labels, valid, tube_radius)
    relative = tuple(s / min(spacing) for s in spacing)  # distances in units of the finest spacing
    offsets = _ball_offsets(tube_radius, relative)
    out = np.zeros(labels.shape, dtype=np.float32)
    for c, mask in enumerate(labels):
        if not mask.any():
            continue
        # the skeleton of a cropped mask is the skeleton of the full mask (one voxel of background margin),
        # and the tube is cut to the mask, so nothing outside the box is needed
        box = _bounding_box(mask, (1,) * mask.ndim)
        crop = mask[box]
        skeleton = _skeleton(crop)
        if len(offsets) <= 1:
            tube = skeleton
        elif np.count_nonzero(skeleton) * len(offsets) < crop.size:  # a thin skeleton: scatter the ball
            tube = _dilate(skeleton, offsets)
        else:
            tube = ndimage.distance_transform_edt(~skeleton, sampling=relative) <= tube_radius
        out[(c,) + box] = tube & crop
    return out


def _authors_tube(labels: np.ndarray, valid: np.ndarray | None, dilations: float) -> np.ndarray:
    if dilations != int(dilations):
        raise ValueError(f'shape="authors" dilates a whole number of times; tube_radius={dilations}')
    dilations = int(dilations)
    union = labels.any(axis=0) if valid is None else labels.any(axis=0) | ~valid
    out = np.zeros(labels.shape, dtype=np.float32)
    if not union.any():
        return out
    box = _bounding_box(union, (dilations + 1,) * union.ndim)
    tube = skeletonize(union[box]).astype(bool)
    if dilations:
        tube = ndimage.binary_dilation(tube, ndimage.generate_binary_structure(union.ndim, 1), dilations)
    out[(slice(None),) + box] = tube & labels[(slice(None),) + box]
    return out


def signed_distance_target(labels_onehot: np.ndarray, valid: np.ndarray | None = None,
                           spacing: Sequence[float] | None = None, *, empty: str = "zero") -> np.ndarray:
    """Signed Euclidean distance map of each channel, negative inside, positive outside.

    For channel c with foreground ``F = labels_c & valid`` and background ``G = ~labels_c & valid``::

        φ(v) = +dist(v, F)   for v in G    (outside: distance to the nearest foreground voxel, > 0)
        φ(v) = -dist(v, G)   for v in F    (inside: minus the distance to the nearest background voxel)
        φ(v) = 0             for ignored v

    ``dist`` is the physical Euclidean distance between voxel centres (``scipy.ndimage.
    distance_transform_edt`` with ``sampling=spacing``), measured to *valid* voxels only: an ignored
    voxel is neither foreground nor background. The zero level set lies between the voxel centres, so
    boundary voxels get ±(spacing along their neighbour axis), never 0, and ``|φ|`` is the unsigned
    distance map to the boundary used by the Hausdorff DT loss.

    A channel without valid foreground or without valid background has no boundary; ``empty`` decides:
    ``"zero"`` (default, as Kervadec et al.'s code): φ = 0 on the whole channel, so the boundary and HD
    terms give no signal there (the region loss still does); ``"diagonal"``: φ = +L on an absent class and
    -L on a class filling every valid voxel, with L the physical diagonal of the patch (larger than any
    distance inside it), so predicted foreground of an absent class is penalised as lying farther than
    anything the patch can hold.

    Parameters
    ----------
    labels_onehot : ndarray of bool, shape (C, *S)
        One channel per foreground class/region; S has 2 or 3 axes.
    valid : ndarray of bool, shape (*S) or (1, *S), optional
        False on ignored voxels.
    spacing : sequence of float, optional
        Voxel spacing in array-axis order (default isotropic 1).
    empty : {"zero", "diagonal"}
        Value of channels without a boundary (see above).

    Returns
    -------
    ndarray of float32, shape (C, *S)

    Examples
    --------
    >>> row = np.zeros((1, 1, 7), bool); row[0, 0, 2:5] = True
    >>> signed_distance_target(row, spacing=(1.0, 0.5))[0, 0].tolist()
    [1.0, 0.5, -0.5, -1.0, -0.5, 0.5, 1.0]
    """
    labels, valid, spacing = _prepare(labels_onehot, valid, spacing)
    if empty not in ("zero", "diagonal"):
        raise ValueError(f"empty must be 'zero' or 'diagonal', got {empty!r}")
    valid_mask = np.ones(labels.shape[1:], dtype=bool) if valid is None else valid
    diagonal = float(np.sqrt(sum((n * s) ** 2 for n, s in zip(labels.shape[1:], spacing))))
    out = np.zeros(labels.shape, dtype=np.float32)
    for c, foreground in enumerate(labels):
        background = valid_mask & ~foreground
        if not foreground.any() or not background.any():
            if empty == "diagonal":
                out[c] = np.where(background, diagonal, 0) - np.where(foreground, diagonal, 0)
            continue
        # the outside distance is wanted on every valid voxel: whole patch; the inside one on the box only
        outside = ndimage.distance_transform_edt(~foreground, sampling=spacing)
        out[c] = np.where(background, outside, 0)
        box = _bounding_box(foreground, (1,) * foreground.ndim)
        out[(c,) + box] -= np.where(foreground[box], _inside_distance(foreground, background, box, spacing), 0)
    return out


def centerline_radius_target(labels_onehot: np.ndarray, valid: np.ndarray | None = None,
                             spacing: Sequence[float] | None = None) -> np.ndarray:
    """Centreline depth and inverse-radius skeleton weights of each channel (for the cbDice variant).

    For channel c with valid foreground F, valid background G, inside distance ``D(v) = dist(v, G)``
    (physical, ``sampling=spacing``; D = 1 on F when the patch holds no valid background), skeleton S of F
    (as in :func:`skeleton_tube_target`) and, for every voxel v of F, ``R(v) = D(s(v))`` the radius at its
    nearest skeleton voxel ``s(v)`` (physical nearest-neighbour)::

        depth(v)  = min(D(v) / R(v), 1)  on F, 0 elsewhere      1 on the centreline, → 0 at the boundary
        weight(v) = (R_max / D(v))^(d-1) on S, 0 elsewhere      d spatial axes; R_max = max of D on S

    ``depth`` says how central a voxel lies *relative to the local vessel radius*; ``weight`` is the inverse
    normalised radius of Shi et al. (``1/R̂`` in 2D, ``1/R̂²`` in 3D), so the centreline of a thin vessel
    counts as much as the volume-proportional share of a thick one.

    Parameters
    ----------
    labels_onehot : ndarray of bool, shape (C, *S)
    valid : ndarray of bool, shape (*S) or (1, *S), optional
    spacing : sequence of float, optional

    Returns
    -------
    ndarray of float32, shape (2C, *S)
        ``[depth_1 … depth_C, weight_1 … weight_C]`` (all depths first, then all weights); zeros for an
        empty channel and on ignored voxels.

    Examples
    --------
    >>> bar = np.zeros((1, 7, 12), bool); bar[0, 1:6, 1:11] = True  # 5 pixels wide
    >>> out = centerline_radius_target(bar)
    >>> out[0, 1:6, 5].tolist()  # depth across the bar: 1/3, 2/3, 1, 2/3, 1/3
    [0.3333333432674408, 0.6666666865348816, 1.0, 0.6666666865348816, 0.3333333432674408]
    >>> float(out[1][out[1] > 0].min())  # skeleton weight where the bar is widest (3 = R_max)
    1.0
    """
    labels, valid, spacing = _prepare(labels_onehot, valid, spacing)
    n, dims = labels.shape[0], labels.ndim - 1
    valid_mask = np.ones(labels.shape[1:], dtype=bool) if valid is None else valid
    out = np.zeros((2 * n,) + labels.shape[1:], dtype=np.float32)
    for c, foreground in enumerate(labels):
        if not foreground.any():
            continue
        background = valid_mask & ~foreground
        # everything below is local to the structure: its bounding box grown by one voxel (see
        # _inside_distance; the skeleton of the box is the skeleton of the patch, and every skeleton voxel,
        # hence every nearest one, lies in the box)
        box = _bounding_box(foreground, (1,) * dims)
        mask = foreground[box]
        if background.any():
            inside = np.where(mask, _inside_distance(foreground, background, box, spacing), 0.0)
        else:
            inside = mask.astype(np.float64)
        skeleton = _skeleton(mask)
        nearest = ndimage.distance_transform_edt(~skeleton, sampling=spacing, return_distances=False,
                                                 return_indices=True)
        radius = inside[tuple(nearest)]
        out[(c,) + box] = np.where(mask, np.minimum(inside / np.maximum(radius, 1e-12), 1.0), 0.0)
        r_max = inside[skeleton].max()
        out[(n + c,) + box][skeleton] = (r_max / inside[skeleton]) ** (dims - 1)
    return out
