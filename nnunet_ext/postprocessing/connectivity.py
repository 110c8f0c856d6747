"""Connectivity-aware operations on the predicted probabilities (one class, 2D or 3D).

* :func:`hysteresis_threshold` — keep every component of ``p > low`` that contains a voxel of
  ``p > high`` (Canny's hysteresis, scikit-image's ``apply_hysteresis_threshold`` semantics with
  the foreground connectivity of :mod:`.operations`);
* :func:`bridge_gaps` — join components across short gaps along minimum-cost paths through the
  probability map, starting at the end points of their skeletons (:func:`find_bridges` lists
  the bridges of one pass).

A thin structure predicted in pieces where the image contrast fades keeps a faint, non-zero
probability in the gap; two separate vessels side by side are separated by background of
(near) zero probability. The bridge rules use that difference and the direction of the vessel
at its end, and never join a component to itself (no loops are created) — unless ``close_loops``
asks for it: a ring broken where its contrast fades (an enhancing tumour rim, a vessel loop) is
one component with two end points facing each other across a faint gap, and a bridge from one
end to a part of the *same* component that lies at least ``close_loops`` away along the
component closes it.

Every function is pure (inputs are never modified); ``spacing`` is in array-axis order and every
length is physical (units of the spacing).
"""
from __future__ import annotations

import itertools
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from .operations import _bbox, as_mask, check_connectivity, label_components

#: probabilities are clipped to this before ``-log p`` (a zero would be impassable)
_P_MIN = 1e-6
#: skeleton steps walked back from an end point to estimate the local direction
DIRECTION_STEPS = 5


class Bridge(NamedTuple):
    """One accepted bridge (:func:`find_bridges`).

    Attributes
    ----------
    source, target : int
        Labels (in :func:`~.operations.label_components` numbering of the input mask) of the
        component whose skeleton end point starts the path and of the component it reaches.
    end_point : tuple of int
        The skeleton end point the path starts at.
    voxels : ndarray of int, shape (n, ndim)
        Voxels painted (background before), in array-axis order.
    gap_length : float
        Physical length of the path across background: the sum of the steps that enter a
        background voxel (a straight gap of ``n`` voxels along an axis of spacing ``s`` has length
        ``n · s``).
    mean_probability : float
        Mean probability on the path's background voxels.
    angle : float
        Angle (degrees) between the vessel's direction at the end point and the vector from the
        end point to the first voxel of the target.
    """

    source: int
    target: int
    end_point: Tuple[int, ...]
    voxels: np.ndarray
    gap_length: float
    mean_probability: float
    angle: float


# ---------------------------------------------------------------------------- checks
def _check_probability(probability, shape: Tuple[int, ...], name: str = "probability") -> np.ndarray:
    p = np.asarray(probability)
    if p.shape != tuple(shape):
        raise ValueError(f"{name} has shape {p.shape}, expected the mask's shape {tuple(shape)}")
    if not np.issubdtype(p.dtype, np.floating):
        raise ValueError(f"{name} must be a float array of probabilities, got dtype {p.dtype}")
    if p.size and (not np.all(np.isfinite(p)) or p.min() < -1e-3 or p.max() > 1 + 1e-3):
        raise ValueError(f"{name} must hold finite values in [0, 1] "
                         f"(got range [{np.nanmin(p):g}, {np.nanmax(p):g}])")
    return p


def _check_spacing(spacing, ndim: int) -> np.ndarray:
    if spacing is None:
        return np.ones(ndim)
    sp = np.asarray([float(s) for s in spacing])
    if sp.size != ndim:
        raise ValueError(f"spacing {tuple(sp)} must have one entry per array axis ({ndim})")
    if not np.all(np.isfinite(sp) & (sp > 0)):
        raise ValueError(f"spacing entries must be positive and finite, got {tuple(sp)}")
    return sp


def _neighbour_offsets(ndim: int, connectivity: int) -> np.ndarray:
    """Offsets of the foreground neighbourhood (26/18/6 in 3D, 8/4 in 2D), shape (k, ndim)."""
    max_nonzero = {26: 3, 18: 2, 6: 1, 8: 2, 4: 1}[connectivity]
    offs = [o for o in itertools.product((-1, 0, 1), repeat=ndim)
            if 0 < sum(1 for v in o if v) <= max_nonzero]
    return np.asarray(offs, dtype=np.intp)


# ---------------------------------------------------------------------------- hysteresis
def hysteresis_threshold(probability, low: float, high: float,
                         connectivity: Optional[int] = None) -> np.ndarray:
    """Hysteresis thresholding: the components of ``p > low`` that contain a voxel of ``p > high``.

    A faint stretch (``low < p ≤ high``) is kept where it is attached to a confident one; an
    isolated faint blob is dropped. Both comparisons are strict, as in scikit-image's
    ``apply_hysteresis_threshold`` (Canny, IEEE TPAMI 8(6), 1986) and nnU-Net's ``p > 0.5``.
    Distances play no role, so there is no spacing.

    Parameters
    ----------
    probability : ndarray of float, shape (Z, Y, X) or (Y, X)
        Probability of one class / region, in [0, 1].
    low, high : float
        ``0 ≤ low < high ≤ 1``.
    connectivity : int, optional
        Foreground connectivity of the components (default: full, 26 / 8).

    Returns
    -------
    ndarray of bool, same shape.

    Examples
    --------
    >>> p = np.array([[0.9, 0.4, 0.0, 0.4, 0.4]])
    >>> hysteresis_threshold(p, 0.3, 0.5).astype(int)
    array([[1, 1, 0, 0, 0]])
    """
    if not (0.0 <= float(low) < float(high) <= 1.0):
        raise ValueError(f"hysteresis needs 0 ≤ low < high ≤ 1, got low={low}, high={high}")
    p = np.asarray(probability)
    if p.ndim not in (2, 3):
        raise ValueError(f"probability must be a 2D or 3D array, got shape {p.shape}")
    p = _check_probability(p, p.shape)
    weak = p > float(low)
    labels, sizes = label_components(weak, connectivity)
    if sizes.size == 0:
        return weak
    seeded = np.zeros(sizes.size + 1, dtype=bool)
    seeded[np.unique(labels[p > float(high)])] = True
    seeded[0] = False
    return seeded[labels]


# ---------------------------------------------------------------------------- end points
def skeleton_end_points(mask) -> Tuple[np.ndarray, np.ndarray]:
    """The skeleton of a mask and its end points (skeleton voxels with exactly one skeleton
    neighbour in the full neighbourhood).

    The skeleton is scikit-image's ``skeletonize`` (Lee et al. 1994 in 3D, Zhang & Suen 1984 in
    2D), topological, so not spacing dependent.

    Parameters
    ----------
    mask : ndarray, shape (Z, Y, X) or (Y, X)

    Returns
    -------
    skeleton : ndarray of bool, same shape
    end_points : ndarray of int, shape (n, ndim), in C order of the voxels
    """
    from skimage.morphology import skeletonize

    m = as_mask(mask)
    skel = np.zeros(m.shape, dtype=bool)
    box = _bbox(m)
    if box is None:
        return skel, np.zeros((0, m.ndim), dtype=np.intp)
    crop = np.pad(m[box], 1)
    sk = skeletonize(crop).astype(bool)[(slice(1, -1),) * m.ndim]
    skel[box] = sk
    count = ndimage.convolve(sk.astype(np.uint8), np.ones((3,) * m.ndim, np.uint8), mode="constant")
    ends = np.argwhere(sk & (count == 2)) + np.array([s.start for s in box])
    return skel, ends


def _end_direction(skel: np.ndarray, end: np.ndarray, spacing: np.ndarray,
                   steps: int) -> Tuple[Optional[np.ndarray], np.ndarray]:
    """Unit direction (physical) pointing out of the skeleton at ``end`` and the skeleton voxels
    within ``steps`` geodesic steps of it (shape (k, ndim))."""
    lo = np.maximum(end - steps, 0)
    hi = np.minimum(end + steps + 1, skel.shape)
    crop = skel[tuple(slice(a, b) for a, b in zip(lo, hi))]
    seed = np.zeros_like(crop)
    seed[tuple(end - lo)] = True
    ball = ndimage.binary_dilation(seed, structure=np.ones((3,) * skel.ndim, bool),
                                   iterations=steps, mask=crop)
    pts = np.argwhere(ball) + lo
    others = pts[np.any(pts != end, axis=1)]
    if others.size == 0:
        return None, pts
    d = (end - others.mean(axis=0)) * spacing
    n = np.linalg.norm(d)
    return (d / n if n > 0 else None), pts


# ---------------------------------------------------------------------------- one path
def _window(labels, end, half):
    """The window of ``half`` voxels per axis around ``end``: (slices, lower corner, labels in
    it, the end point's label, the end point in window coordinates)."""
    lo = np.maximum(end - half, 0)
    hi = np.minimum(end + half + 1, labels.shape)
    win = tuple(slice(a, b) for a, b in zip(lo, hi))
    return win, lo, labels[win], labels[tuple(end)], end - lo


def _targets_in_cone(targets, e, spacing, direction, cos_max, reach) -> np.ndarray:
    """The ``targets`` voxels (window coordinates, (n, ndim)) within ``reach`` (physical) of
    ``e`` and inside the cone of half-angle arccos(``cos_max``) around ``direction``."""
    cand = np.argwhere(targets)
    if cand.size == 0:
        return cand
    vec = (cand - e) * spacing
    dist = np.linalg.norm(vec, axis=1)
    return cand[(vec @ direction / dist >= cos_max) & (dist <= reach)]


def _cheapest_path(labels, mask, probability, barrier, spacing, offsets, end, direction, radius,
                   max_length, min_probability, cos_max):
    """The cheapest path from ``end`` to another component within the search window, or None
    if it breaks a rule. Returns (gap voxels (k, ndim), target label, gap length, mean p, angle)."""
    reach = radius + max_length + float(spacing.max())
    win, lo, lab, own, e = _window(labels, end, np.ceil(reach / spacing).astype(int) + 1)
    ends = _targets_in_cone((lab != 0) & (lab != own), e, spacing, direction, cos_max, reach)
    if ends.size == 0:
        return None
    costs = -np.log(np.clip(probability[win].astype(np.float64), _P_MIN, 1.0))
    if barrier is not None:
        costs[barrier[win]] = -1.0  # impassable for MCP
    # stop at the first voxel of another component (the path may touch one before its end)
    res = _checked_path(costs, offsets, spacing, e, ends, (lab != 0) & (lab != own), mask[win],
                        probability[win], direction, cos_max, max_length, min_probability)
    if res is None:
        return None
    gap_voxels, last, gap_length, mean_p, angle = res
    return gap_voxels + lo, int(lab[tuple(last)]), gap_length, mean_p, angle


def _checked_path(costs, offsets, spacing, e, ends, is_target, mask, probability, direction,
                  cos_max, max_length, min_probability):
    """The cheapest path (``MCP_Geometric`` over ``costs``, negative = impassable) from ``e`` to
    one of ``ends``, cut at its first ``is_target`` voxel, or None if it breaks a rule: the
    target outside the cone, no background crossed, the background part longer than
    ``max_length`` or fainter than ``min_probability`` on average. All arrays are of one window.
    Returns (background voxels (k, ndim), target voxel, gap length, mean p, angle)."""
    from skimage.graph import MCP_Geometric

    mcp = MCP_Geometric(costs, offsets=offsets, sampling=tuple(spacing))
    cum, _ = mcp.find_costs([tuple(e)], [tuple(t) for t in ends], find_all_ends=False)
    reached = cum[tuple(ends.T)]
    if not np.isfinite(reached).any():
        return None
    path = np.asarray(mcp.traceback(tuple(ends[int(np.argmin(reached))])), dtype=np.intp)
    first = int(np.flatnonzero(is_target[tuple(path.T)])[0])
    path = path[: first + 1]
    vec = (path[-1] - e) * spacing
    cos_t = float(vec @ direction / np.linalg.norm(vec))
    if cos_t < cos_max:
        return None
    gap = ~mask[tuple(path.T)]
    if not gap.any():
        return None
    steps = np.linalg.norm(np.diff(path, axis=0) * spacing, axis=1)
    gap_length = float(steps[gap[1:]].sum())
    mean_p = float(probability[tuple(path[gap].T)].astype(np.float64).mean())
    if gap_length > max_length + 1e-9 or mean_p < min_probability:
        return None
    angle = float(np.degrees(np.arccos(np.clip(cos_t, -1.0, 1.0))))
    return path[gap], path[-1], gap_length, mean_p, angle


def _cheapest_loop(labels, mask, probability, barrier, spacing, offsets, end, direction, radius,
                   max_length, min_probability, cos_max, loop_length):
    """The cheapest path from ``end`` across background back to its own component, to a voxel
    more than ``loop_length`` (full-neighbourhood steps of the finest spacing) away from ``end``
    along the component, or None if it breaks a rule (:func:`_cheapest_path`'s rules). The
    component's voxels nearer than that are impassable except those within the local radius
    (+ one voxel) of the end point, so the path leaves the component there and cannot run
    along it. Returns (gap voxels (k, ndim), own label, gap length, mean p, angle)."""
    reach = radius + max_length + float(spacing.max())
    steps = int(np.ceil(loop_length / float(spacing.min())))
    win, lo, lab, own, e = _window(labels, end,
                                   np.maximum(np.ceil(reach / spacing).astype(int) + 1, steps + 1))
    mine = lab == own
    seed = np.zeros_like(mine)
    seed[tuple(e)] = True
    # every voxel within ``steps`` steps along the component lies inside the window
    near = ndimage.binary_dilation(seed, structure=np.ones((3,) * lab.ndim, bool),
                                   iterations=steps, mask=mine)
    ends = _targets_in_cone(mine & ~near, e, spacing, direction, cos_max, reach)
    if ends.size == 0:
        return None
    costs = -np.log(np.clip(probability[win].astype(np.float64), _P_MIN, 1.0))
    # the path may leave the component through its voxels around the end point (the end point
    # is a skeleton voxel inside the structure), not run along it
    grid = np.indices(lab.shape).reshape(lab.ndim, -1).T.reshape(*lab.shape, lab.ndim)
    around_end = np.linalg.norm((grid - e) * spacing, axis=-1) <= radius + float(spacing.max())
    blocked = near & ~around_end
    blocked |= (lab != 0) & ~mine   # a loop touches no other component
    if barrier is not None:
        blocked |= barrier[win]
    costs[blocked] = -1.0
    res = _checked_path(costs, offsets, spacing, e, ends, mine & ~near, mask[win], probability[win],
                        direction, cos_max, max_length, min_probability)
    if res is None:
        return None
    gap_voxels, _, gap_length, mean_p, angle = res
    return gap_voxels + lo, int(own), gap_length, mean_p, angle


def _ball_offsets(radius: float, spacing: np.ndarray) -> np.ndarray:
    """Offsets of the voxels strictly closer than ``radius`` (physical) to the centre."""
    half = np.floor(radius / spacing).astype(int)
    grids = np.meshgrid(*[np.arange(-h, h + 1) for h in half], indexing="ij")
    offs = np.stack([g.ravel() for g in grids], axis=1)
    d2 = ((offs * spacing) ** 2).sum(axis=1)
    # a distance-transform value is the distance to a background voxel: that voxel must stay
    # out even where sqrt(d2) ** 2 rounds above d2
    return offs[d2 < radius ** 2 * (1 - 1e-9)]


# ---------------------------------------------------------------------------- one pass
def find_bridges(
    mask,
    probability,
    spacing: Optional[Sequence[float]] = None,
    max_length: float = 5.0,
    min_probability: float = 0.1,
    max_angle: float = 60.0,
    dilate: bool = False,
    connectivity: Optional[int] = None,
    barrier=None,
    close_loops: float = 0.0,
) -> List[Bridge]:
    """The bridges :func:`bridge_gaps` makes in one pass over the end points of ``mask``.

    For every end point of the skeleton (a skeleton voxel with one skeleton neighbour) of every
    component, the cheapest path through the probability map to another component is searched
    in a window around it. Cost of a step between neighbouring voxels ``a`` and ``b``:
    ``(c_a + c_b) / 2 · |a − b|`` (physical step length, scikit-image's ``MCP_Geometric``) with
    ``c = −log p`` (``p`` clipped to 1e-6), so the path follows the most probable route. The
    path ends at the first voxel of another component; it becomes a bridge when

    * its background part is at most ``max_length`` long (:class:`Bridge`);
    * the mean probability on its background voxels is at least ``min_probability``;
    * the vector from the end point to that first voxel makes at most ``max_angle`` degrees
      with the vessel's direction at the end point (from the end point away from the mean of
      the skeleton voxels within :data:`DIRECTION_STEPS` steps) — only targets in that cone
      are searched;
    * it avoids ``barrier`` voxels.

    Bridges are then accepted from the most probable (highest mean probability, then shortest,
    then end point in C order) as long as they join two components not yet joined in this pass
    (Kruskal: no loops, at most one bridge per pair) and their painted voxels touch no third
    component or earlier bridge of another component. End points whose skeleton has no other
    voxel (isolated points) start no bridge; their components can still be reached.

    With ``close_loops > 0`` an end point that finds no other component may instead bridge
    back to its own component, to a voxel more than ``close_loops`` away from it along the
    component (full-neighbourhood steps of the finest spacing; the nearer part of the
    component is impassable, so the path crosses background), under the same length,
    probability and angle rules: a broken ring is closed. Such a bridge (``source ==
    target``) is accepted when its painted voxels touch no other component and no voxel
    painted earlier in the pass (so a gap seen from both of its ends is closed once).

    Parameters
    ----------
    mask : ndarray, shape (Z, Y, X) or (Y, X)
        Foreground of one class.
    probability : ndarray of float, same shape
        Its probability (nnU-Net's ``--save_probabilities`` ``.npz``), in [0, 1].
    spacing : sequence of float, optional
        Voxel size in array-axis order (default 1 per axis).
    max_length : float
        Longest gap bridged, physical units (> 0).
    min_probability : float
        Floor of the mean probability on the gap, in [0, 1].
    max_angle : float
        Largest angle (degrees, in (0, 180]) between the end point's direction and the bridge.
    dilate : bool
        Paint the path dilated to the local radius (the largest distance to the background,
        physical, of the skeleton voxels near the end point; a ball strictly inside it); falls
        back to the bare path where the dilation would touch a third component.
    connectivity : int, optional
        Foreground connectivity (default full); paths step only between such neighbours.
    barrier : ndarray of bool, same shape, optional
        Voxels no path may cross or paint (e.g. other classes of a label map).
    close_loops : float
        0 (default): never join a component to itself. Otherwise the shortest distance along a
        component (physical) at which an end point may be joined back to it.

    Returns
    -------
    list of Bridge, in the order accepted.
    """
    m = as_mask(mask)
    ndim = m.ndim
    p = _check_probability(probability, m.shape)
    sp = _check_spacing(spacing, ndim)
    conn = check_connectivity(ndim, connectivity)
    if not (np.isfinite(max_length) and max_length > 0):
        raise ValueError(f"max_length must be a positive number, got {max_length}")
    if not 0.0 <= float(min_probability) <= 1.0:
        raise ValueError(f"min_probability must be in [0, 1], got {min_probability}")
    if not 0.0 < float(max_angle) <= 180.0:
        raise ValueError(f"max_angle must be in (0, 180] degrees, got {max_angle}")
    if not (np.isfinite(close_loops) and close_loops >= 0):
        raise ValueError(f"close_loops must be 0 or a positive length, got {close_loops}")
    bar = None
    if barrier is not None:
        bar = as_mask(barrier, "barrier")
        if bar.shape != m.shape:
            raise ValueError(f"barrier has shape {bar.shape}, expected {m.shape}")
        bar = bar & ~m
    labels, sizes = label_components(m, conn)
    if sizes.size < 2 and not (close_loops > 0 and sizes.size == 1):
        return []
    skel, ends = skeleton_end_points(m)
    if ends.size == 0:
        return []
    edt = ndimage.distance_transform_edt(m, sampling=sp)
    offsets = _neighbour_offsets(ndim, conn)
    cos_max = float(np.cos(np.radians(float(max_angle))))
    found = []
    for end in ends:
        direction, near = _end_direction(skel, end, sp, DIRECTION_STEPS)
        if direction is None:
            continue
        radius = float(edt[tuple(near.T)].max())
        res = None
        if sizes.size > 1:
            res = _cheapest_path(labels, m, p, bar, sp, offsets, end, direction, radius,
                                 float(max_length), float(min_probability), cos_max)
        if res is None and close_loops > 0:
            res = _cheapest_loop(labels, m, p, bar, sp, offsets, end, direction, radius,
                                 float(max_length), float(min_probability), cos_max, float(close_loops))
        if res is not None:
            found.append((res, end, radius))
    # Kruskal over the candidate bridges, most probable first
    found.sort(key=lambda f: (-f[0][3], f[0][2], tuple(f[1])))
    parent = {}

    def root(a):
        while parent.get(a, a) != a:
            a = parent[a]
        return a

    work = labels.copy()  # painted voxels carry their source's label
    painted = np.zeros(m.shape, dtype=bool)
    accepted: List[Bridge] = []
    shape = np.array(m.shape)
    touch = np.concatenate([np.zeros((1, ndim), np.intp), offsets])
    for (voxels, target, length, mean_p, angle), end, radius in found:
        source = int(labels[tuple(end)])
        ra, rb = root(source), root(target)
        loop = source == target
        if ra == rb and not loop:
            continue
        tries = []
        if dilate and radius > 0:
            ball = _ball_offsets(radius, sp)
            wide = np.unique((voxels[:, None, :] + ball[None]).reshape(-1, ndim), axis=0)
            wide = wide[np.all((wide >= 0) & (wide < shape), axis=1)]
            keep = ~m[tuple(wide.T)]
            if bar is not None:
                keep &= ~bar[tuple(wide.T)]
            tries.append(wide[keep])
        tries.append(voxels)
        for paint in tries:
            around = (paint[:, None, :] + touch[None]).reshape(-1, ndim)
            around = around[np.all((around >= 0) & (around < shape), axis=1)]
            met = {root(int(v)) for v in np.unique(work[tuple(around.T)]) if v != 0}
            if loop and painted[tuple(around.T)].any():
                continue
            if met <= {ra, rb}:
                parent[rb] = ra
                work[tuple(paint.T)] = source
                painted[tuple(paint.T)] = True
                accepted.append(Bridge(source, target, tuple(int(v) for v in end), paint,
                                       length, mean_p, angle))
                break
    return accepted


# ---------------------------------------------------------------------------- the operation
def bridge_gaps(
    mask,
    probability,
    spacing: Optional[Sequence[float]] = None,
    max_length: float = 5.0,
    min_probability: float = 0.1,
    max_angle: float = 60.0,
    dilate: bool = False,
    connectivity: Optional[int] = None,
    barrier=None,
    close_loops: float = 0.0,
) -> np.ndarray:
    """Bridge short gaps between components along minimum-cost paths through the probabilities.

    Passes of :func:`find_bridges` (see there for the rules) are repeated on the bridged mask
    until one adds nothing, so the result is a fixed point: applying the operation again changes
    nothing (idempotent). Every pass that adds voxels joins at least two components or closes a
    loop (which leaves its end point an end point no more), so there are fewer passes than
    components plus end points. Without probabilities there is nothing to tell a fading
    vessel from two vessels that end near each other, so ``probability`` is required.

    Parameters
    ----------
    mask, probability, spacing, max_length, min_probability, max_angle, dilate, connectivity, barrier, close_loops
        As in :func:`find_bridges`.

    Returns
    -------
    ndarray of bool, same shape: ``mask`` with the bridges painted (only background voxels are
    added; nothing is removed).

    Examples
    --------
    >>> m = np.zeros((5, 20), bool); m[2, 1:8] = m[2, 11:19] = True
    >>> p = np.where(m, 0.9, 0.01); p[2, 8:11] = 0.3       # a faint gap of 3 pixels
    >>> int(bridge_gaps(m, p, max_length=4.0)[2, 8:11].sum())
    3
    """
    if probability is None:
        raise ValueError("bridge_gaps needs the probability map (nnU-Net's --save_probabilities "
                         ".npz): without it a fading vessel cannot be told from two separate ones")
    out = as_mask(mask).copy()
    n = label_components(out, connectivity)[1].size
    if close_loops > 0:
        n += len(skeleton_end_points(out)[1])
    for _ in range(max(n, 1)):
        bridges = find_bridges(out, probability, spacing, max_length, min_probability, max_angle,
                               dilate, connectivity, barrier, close_loops)
        if not bridges:
            break
        for b in bridges:
            out[tuple(b.voxels.T)] = True
    return out
