"""Skeletons and centreline Dice (clDice).

The skeleton is scikit-image's :func:`skimage.morphology.skeletonize` on the voxel grid (Lee's
thinning in 3D, Zhang's in 2D), MetricsReloaded's definition. Thinning is local, so two
components that do not touch (26- resp. 8-connectivity) never influence each other: the
components are thinned in independent jobs, each holding whole components inside their common
bounding box, which gives the identical skeleton while skipping most of the empty space of the
volume and stopping the thinning of thin components before that of thick ones; a split is only
taken when its estimated cost is below that of one call over the mask's crop (:func:`_plan`).
Components of one or two voxels are their own skeleton and are not
thinned at all. The jobs of both masks of a pair can be shared with forked processes while the
caller computes other metrics (:func:`start_skeletons`).

``skeleton="robust"`` replaces, per component, a skeleton that scikit-image's Lee thinning
deletes completely (even-thickness boxes and tubes, scikit-image #3757) by the component's
deepest voxels, as the training targets do (:mod:`nnunet_ext.targets.ground_truth`).
"""
from __future__ import annotations

import multiprocessing
import queue
import traceback
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage
from skimage.morphology import skeletonize

from ._common import (
    BOTH_EMPTY, OK, as_mask, check_pair, empty_status, harmonic_mean,
    inside_values, nonzero_coordinates,
)
from ._prepared import PreparedMask, prepare_mask

#: skeleton definitions: scikit-image's thinning as it is (MetricsReloaded), or with the deepest
#: voxels of every component whose skeleton vanished
SKELETON_METHODS = ("skimage", "robust")

# Components whose padded bounding box has at most this many voxels are first grouped with
# their neighbours by a coarse grid of cell size _CELL: a call per tiny component would cost more
# in overhead than the thinning itself.
_SMALL_BOX = 32 ** 3
_CELL = 64
# Jobs are then merged greedily while a merge saves more than a call costs. Costs are voxel
# visits: scikit-image scans the whole box in each of the 6 sub-iterations of every thinning
# round (~1 ns per voxel and sub-iteration), a call costs ~15 us (_CALL_COST in the units of
# box volume x rounds); beyond _MAX_MERGE jobs the merging is skipped (its cost grows with the
# square of the number of jobs).
_CALL_COST = 1_000
_MAX_MERGE = 2000
# When the largest component's padded box covers at least this fraction of the padded crop,
# the crop is thinned in one call without planning a split.
_WHOLE_CROP_FRACTION = 0.9
# Crops of at least this many voxels preview the split decision on every _PREVIEW_STRIDE-th voxel
# along each axis (1/64 of the labels in 3D) before the full box pass.
_PREVIEW_MIN_VOXELS = 1 << 21
_PREVIEW_STRIDE = 4

# skeleton status of a pair (CLDiceResult.skeleton_status)
SKELETON_OK = "ok"
PRED_SKELETON_EMPTY = "pred_skeleton_empty"
REF_SKELETON_EMPTY = "ref_skeleton_empty"
BOTH_SKELETONS_EMPTY = "both_skeletons_empty"
SKELETON_STATUSES = (SKELETON_OK, PRED_SKELETON_EMPTY, REF_SKELETON_EMPTY, BOTH_SKELETONS_EMPTY)


def check_skeleton_method(method: str) -> str:
    if method not in SKELETON_METHODS:
        raise ValueError(f"skeleton must be one of {SKELETON_METHODS}, got {method!r}")
    return method


def _thin(mask: np.ndarray, method: str) -> np.ndarray:
    """Skeleton of a cropped mask whose outer layer is background (or the array's edge)."""
    if method == "robust":
        from nnunet_ext.targets.ground_truth import _skeleton

        return _skeleton(mask)
    return skeletonize(mask).astype(bool, copy=False)


@dataclass(frozen=True)
class _Job:
    """Thinning job: components ``ks`` of mask ``mask_index`` inside ``box`` (slices into the
    mask's padded crop, one voxel of background around the components); ``scan`` is the box
    volume, the cost estimate."""

    mask_index: int
    box: Tuple[slice, ...]
    ks: Tuple[int, ...]
    scan: int


def _job_mask(prep: PreparedMask, box, ks) -> np.ndarray:
    """The components ``ks`` of a prepared mask inside ``box`` (everything else background)."""
    crop = prep.labels[box]
    if len(ks) == prep.n_components:
        return prep.crop[box]
    if len(ks) == 1:
        return crop == ks[0]
    select = np.zeros(int(max(ks)) + 1, dtype=bool)
    select[list(ks)] = True
    return select[np.minimum(crop, select.size - 1)] & (crop <= select.size - 1)


def _run_job(preps: Sequence[PreparedMask], job: _Job, method: str) -> np.ndarray:
    """Array coordinates (n, ndim) of the skeleton voxels of one job."""
    prep = preps[job.mask_index]
    box = job.box
    if method == "robust":
        # the depth of the robust skeleton is scipy's distance to the nearest background voxel
        # *inside the array* (the whole-volume definition): leave out the part of the padding
        # layer that lies outside the array. Lee's thinning treats the outside as background
        # either way.
        box = tuple(slice(max(s.start, -o), min(s.stop, n - o))
                    for s, o, n in zip(box, prep.origin, prep.shape))
    else:
        # scikit-image pads its input with one layer of background itself: hand it the box
        # without our layer, or every thinning pass would scan two layers (for a mask spanning
        # the array, more than the whole-array call)
        box = tuple(slice(s.start + 1, s.stop - 1) for s in box)
    return nonzero_coordinates(_thin(_job_mask(prep, box, job.ks), method),
                               [s.start + o for s, o in zip(box, prep.origin)])


def _volume(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return np.prod(hi - lo + 2, axis=-1)


def _merge(boxes: List[Tuple[slice, ...]], groups: List[List[int]], rounds: Sequence[int]):
    """Greedily merge jobs (boxes with their component lists and thinning rounds) while the
    merged job costs less than the two apart plus one call's overhead (largest saving first).
    A job's cost is its padded box volume times its rounds: a thin component merged into the
    box of a thick one would be scanned for as many rounds as the thick one needs."""
    lo = np.array([[s.start for s in b] for b in boxes], dtype=np.int64)
    hi = np.array([[s.stop for s in b] for b in boxes], dtype=np.int64)
    r = np.asarray(rounds, dtype=np.int64)
    vol = _volume(lo, hi)
    groups = [list(g) for g in groups]
    saving = (vol[:, None] * r[:, None] + vol[None, :] * r[None, :] + _CALL_COST
              - _volume(np.minimum(lo[:, None], lo[None]), np.maximum(hi[:, None], hi[None]))
              * np.maximum(r[:, None], r[None, :]))
    saving = saving.astype(np.float64)
    np.fill_diagonal(saving, -np.inf)
    alive = np.ones(len(boxes), dtype=bool)
    while True:
        i, j = np.unravel_index(int(np.argmax(saving)), saving.shape)
        if not saving[i, j] > 0:
            break
        lo[i], hi[i] = np.minimum(lo[i], lo[j]), np.maximum(hi[i], hi[j])
        vol[i] = _volume(lo[i], hi[i])
        r[i] = max(r[i], r[j])
        groups[i] += groups[j]
        alive[j] = False
        saving[j, :] = saving[:, j] = -np.inf
        row = (vol[i] * r[i] + vol * r + _CALL_COST
               - _volume(np.minimum(lo[i], lo), np.maximum(hi[i], hi)) * np.maximum(r[i], r))
        row = np.where(alive, row, -np.inf)
        row[i] = -np.inf
        saving[i, :] = saving[:, i] = row
    return [(tuple(slice(int(l), int(h)) for l, h in zip(lo[i], hi[i])), tuple(groups[i]))
            for i in np.flatnonzero(alive)]


def _component_boxes(labels: np.ndarray, stride: int = 1):
    """Labels ``ks`` (n,) and bounding boxes ``lo``, ``hi`` (n, ndim) of the components of a
    label array, from one :func:`scipy.ndimage.find_objects` pass. With ``stride > 1`` the pass
    reads every ``stride``-th voxel along each axis (``stride ** ndim`` times fewer): the boxes
    are then supersets of the components' boxes seen on that grid, and components without a
    voxel on it are missing — a preview, not a plan."""
    grid = labels if stride == 1 else labels[(slice(None, None, stride),) * labels.ndim]
    objects = ndimage.find_objects(grid)
    ks = np.array([k for k, b in enumerate(objects, start=1) if b is not None], dtype=np.int64)
    bounds = np.array([x for b in objects if b is not None for s in b for x in (s.start, s.stop)],
                      dtype=np.int64).reshape(len(ks), labels.ndim, 2)
    lo, hi = bounds[..., 0], bounds[..., 1]
    if stride > 1:
        lo = np.maximum(lo * stride - (stride - 1), 0)
        hi = np.minimum(hi * stride, np.asarray(labels.shape, dtype=np.int64))
    return ks, lo, hi


def _jobs_from_boxes(prep: PreparedMask, mask_index: int, ks, lo, hi) -> Tuple[List[_Job], float]:
    """Thinning jobs of the components ``ks`` with boxes ``lo``, ``hi`` (large components alone,
    small ones grouped by grid cell, then merged while that saves work) and their estimated
    cost; ``([], inf)`` when the largest component's box spans the crop."""
    whole_scan = int(np.prod(prep.crop.shape))
    if np.prod(hi - lo + 2, axis=1).max() >= _WHOLE_CROP_FRACTION * whole_scan:
        # the largest component's box spans the crop: per-component boxes would overlap it
        return [], float("inf")
    depth = (hi - lo).min(axis=1) // 2 + 1
    big = np.prod(hi - lo + 2, axis=1) > _SMALL_BOX
    singles = [(tuple(slice(int(l), int(h)) for l, h in zip(lo[i], hi[i])), [int(ks[i])])
               for i in np.flatnonzero(big)]
    small = np.flatnonzero(~big)
    if small.size:
        # small components grouped by the grid cell of their box's first corner
        cells, inverse = np.unique(lo[small] // _CELL, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        order = np.argsort(inverse, kind="stable")
        starts = np.searchsorted(inverse[order], np.arange(len(cells)))
        glo = np.minimum.reduceat(lo[small][order], starts, axis=0)
        ghi = np.maximum.reduceat(hi[small][order], starts, axis=0)
        members = np.split(ks[small][order], starts[1:])
        singles += [(tuple(slice(int(l), int(h)) for l, h in zip(glo[c], ghi[c])), m.tolist())
                    for c, m in enumerate(members)]
    rounds = np.zeros(int(prep.n_components) + 1, dtype=np.int64)
    rounds[ks] = depth
    if 1 < len(singles) <= _MAX_MERGE:
        singles = _merge([b for b, _ in singles], [g for _, g in singles],
                         [int(rounds[g].max()) for _, g in singles])
    # grow every box by the one voxel of background the thinning needs around the components
    # (inside the crop, which has that layer around all components)
    boxes = [tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n))
                   for s, n in zip(box, prep.crop.shape)) for box, _ in singles]
    jobs = [_Job(mask_index, box, tuple(sorted(int(k) for k in g)),
                 int(np.prod([s.stop - s.start for s in box])))
            for box, (_, g) in zip(boxes, singles)]
    cost = sum(_job_cost(j, int(rounds[list(j.ks)].max()), prep.n_components) for j in jobs)
    return jobs, cost


def _plan(prep: PreparedMask, mask_index: int) -> Tuple[List[_Job], np.ndarray]:
    """Thinning jobs of one prepared mask, and the array coordinates of the voxels of its
    components of one or two voxels, which are their own skeleton: Lee's thinning keeps end
    points (one neighbour) and isolated voxels (their removal changes the Euler number), Zhang's
    deletes only pixels with two or more neighbours.

    Each job holds whole connected components (26- / 8-connectivity) and nothing else, so its
    skeleton equals the union of the components' own skeletons: thinning decides on a voxel
    from its 3x3(x3) neighbourhood, which never reaches into another component, and a component
    that stopped changing stays unchanged while others are still thinned.

    The split is only taken when its estimated cost (:func:`_job_cost`) is below that of one
    call over the whole crop. On a large crop the decision is first previewed on every
    ``_PREVIEW_STRIDE``-th voxel (superset boxes: a split that does not pay there is not
    tried), so that a mask that will be thinned in one call pays only that cheap pass; the plan
    itself reads the component labels once (:func:`scipy.ndimage.find_objects`), everything
    else works on the (n_components, ndim) box arrays.
    """
    whole = _whole_crop_job(prep, mask_index)
    none = np.zeros((0, prep.ndim), np.int64)
    if prep.n_components == 1:
        return [whole], none
    if whole.scan >= _PREVIEW_MIN_VOXELS:
        pks, plo, phi = _component_boxes(prep.labels, _PREVIEW_STRIDE)
        if len(pks):
            jobs, cost = _jobs_from_boxes(prep, mask_index, pks, plo, phi)
            rounds = int(((phi - plo).min(axis=1) // 2 + 1).max())
            if not jobs or cost >= _job_cost(whole, rounds, prep.n_components):
                return [whole], none
    ks, lo, hi = _component_boxes(prep.labels)
    # components of at most 2x2(x2) voxels: those of one or two voxels are their own skeleton
    tiny = np.flatnonzero((hi - lo).max(axis=1) <= 2)
    keep = np.ones(len(ks), dtype=bool)
    fixed = none
    if tiny.size:
        offsets = np.indices((2,) * prep.ndim).reshape(prep.ndim, -1).T
        at = lo[tiny, None, :] + offsets[None]                        # (n, 2^ndim, ndim)
        inside = np.all(at < hi[tiny, None, :], axis=2)
        at = np.where(inside[..., None], at, lo[tiny, None, :])
        own = inside & (prep.labels[tuple(np.moveaxis(at, 2, 0))] == ks[tiny, None])
        small = own.sum(axis=1) <= 2
        fixed = at[small][own[small]]
        keep[tiny[small]] = False
    ks, lo, hi = ks[keep], lo[keep], hi[keep]
    if not len(ks):
        return [], fixed + np.asarray(prep.origin, dtype=np.int64)
    jobs, split = _jobs_from_boxes(prep, mask_index, ks, lo, hi)
    rounds = int(((hi - lo).min(axis=1) // 2 + 1).max())
    if not jobs or (len(jobs) > 1 and split >= _job_cost(whole, rounds, prep.n_components)):
        # the jobs together would cost about as much as the crop in one call, or more
        return [whole], none
    return jobs, fixed + np.asarray(prep.origin, dtype=np.int64)


def _job_cost(job: "_Job", rounds: int, n_components: int) -> float:
    """Estimated cost of a thinning job in voxel visits: scikit-image's Lee thinning scans the
    whole box in each of its 6 directional passes per round (about 1 ns per voxel and pass),
    until a round changes nothing; a component needs at most about half its smallest box
    extent of rounds (``rounds``: that bound for the job's thickest component, plus the final
    round). Selecting the job's components from the labels costs about 3 visits per voxel for
    several components, 1 for one, none when the job holds them all."""
    select = 0 if len(job.ks) == n_components else (1 if len(job.ks) == 1 else 3)
    return float(job.scan) * (6 * rounds + select) + _CALL_COST


def _whole_crop_job(prep: PreparedMask, mask_index: int) -> _Job:
    """One job thinning the whole padded crop: what scikit-image does with the whole array
    (identical: the crop has a background layer around everything), for a mask whose largest
    component (a vessel tree) spans the crop, where per-component boxes would overlap it and
    scan more than the crop. All components are in it, the tiny ones too (they come back
    unchanged). Never slower than the whole-array call; it cannot be split among processes."""
    return _Job(mask_index, tuple(slice(0, n) for n in prep.crop.shape),
                tuple(range(1, prep.n_components + 1)), int(np.prod(prep.crop.shape)))


def _can_fork_workers() -> bool:
    return (not multiprocessing.current_process().daemon
            and "fork" in multiprocessing.get_all_start_methods())


def _claim(counter) -> int:
    with counter.get_lock():
        i = counter.value
        counter.value = i + 1
    return i


def _worker(preps, jobs, method, counter, results) -> None:
    """Forked process: claim jobs until none are left, send ``(job index, coordinates)``, then
    ``None``; an exception is sent as ``("error", traceback)``."""
    try:
        while True:
            i = _claim(counter)
            if i >= len(jobs):
                break
            results.put((i, _run_job(preps, jobs[i], method)))
    except BaseException:  # report, the parent raises
        results.put(("error", traceback.format_exc()))
    finally:
        results.put(None)


def start_skeleton_coordinates(preps: Sequence[PreparedMask], workers: int = 1,
                               method: str = "skimage"):
    """Start thinning prepared masks (labels computed); return ``finish()``, which returns the
    array coordinates of every mask's skeleton voxels (a list of (n_i, ndim) int arrays, in an
    order that depends on the job split; the sets do not).

    With ``workers > 1``, ``workers - 1`` forked processes start on the jobs (largest first) at
    once, and the caller joins in when it calls ``finish()``: jobs are claimed one at a time
    from a shared counter, so the work spreads over all processes however long the caller was
    busy. Otherwise (or inside a daemonic process, or without ``fork``) all jobs run in
    ``finish()``. ``finish(cancel=True)`` stops the processes and returns ``None``; ``finish``
    must be called exactly once.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    check_skeleton_method(method)
    jobs, fixed = [], []
    for i, prep in enumerate(preps):
        if prep.n_voxels == 0:
            fixed.append(np.zeros((0, prep.ndim), np.int64))
            continue
        mask_jobs, coords = _plan(prep, i)
        jobs.extend(mask_jobs)
        fixed.append(coords)
    # largest first, so that parallel workers finish at about the same time
    jobs.sort(key=lambda j: -j.scan)
    if method == "robust":  # import before forking (it loads torch through nnunet_ext.targets)
        import nnunet_ext.targets.ground_truth  # noqa: F401

    def assemble(results: Dict[int, np.ndarray]):
        parts = [[c] for c in fixed]
        for i, job in enumerate(jobs):
            parts[job.mask_index].append(results[i])
        return [np.concatenate(p).astype(np.int64, copy=False) for p in parts]

    if workers == 1 or len(jobs) < 2 or not _can_fork_workers():
        def run_here(cancel: bool = False):
            if cancel:
                return None
            return assemble({i: _run_job(preps, job, method) for i, job in enumerate(jobs)})

        return run_here

    ctx = multiprocessing.get_context("fork")
    counter = ctx.Value("q", 0)
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(preps, jobs, method, counter, results), daemon=True)
             for _ in range(min(workers - 1, len(jobs) - 1))]
    try:
        for p in procs:
            p.start()
    except BaseException:
        _stop(procs)
        raise

    def finish(cancel: bool = False):
        if cancel:
            _stop(procs)
            return None
        try:
            done: Dict[int, np.ndarray] = {}
            while True:
                i = _claim(counter)
                if i >= len(jobs):
                    break
                done[i] = _run_job(preps, jobs[i], method)
            running = len(procs)
            while running:
                try:
                    msg = results.get(timeout=1.0)
                except queue.Empty:
                    if any(p.exitcode not in (None, 0) for p in procs):
                        raise RuntimeError("a skeleton worker process died") from None
                    continue
                if msg is None:
                    running -= 1
                elif msg[0] == "error":
                    raise RuntimeError(f"skeleton worker failed:\n{msg[1]}")
                else:
                    done[msg[0]] = msg[1]
            for p in procs:
                p.join()
        finally:
            _stop(procs)
        return assemble(done)

    return finish


def _stop(procs) -> None:
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        if p.pid is not None:
            p.join()


def _to_arrays(coords: Sequence[np.ndarray], shapes) -> List[np.ndarray]:
    outs = []
    for c, shape in zip(coords, shapes):
        out = np.zeros(shape, dtype=bool)
        out[tuple(c.T)] = True
        outs.append(out)
    return outs


def start_skeletons(masks, workers: int = 1, skeleton: str = "skimage"):
    """Start thinning several masks and return a function that waits for and returns their
    skeletons (a list, one per mask, as :func:`skeletonize_masks`).

    With ``workers > 1`` the thinning starts in ``workers - 1`` forked processes while the
    caller goes on with other work, and the caller joins in when it calls the returned
    function; otherwise it runs when the returned function is called. The returned function
    must be called exactly once; ``finish(cancel=True)`` stops the thinning and returns
    ``None``.
    """
    arrays = [as_mask(m, f"masks[{i}]") for i, m in enumerate(masks)]
    check_skeleton_method(skeleton)
    coords = start_skeleton_coordinates([prepare_mask(m) for m in arrays], workers, skeleton)

    def finish(cancel: bool = False):
        c = coords(cancel=cancel)
        return None if c is None else _to_arrays(c, [m.shape for m in arrays])

    return finish


def skeletonize_masks(masks, workers: int = 1, skeleton: str = "skimage"):
    """Skeletons of several masks (see :func:`skeletonize_mask`), the thinning of all their
    components shared among ``workers`` processes.

    Parameters
    ----------
    masks : sequence of ndarray of bool (2D or 3D)
    workers : int
        Processes for the thinning (1: in this process). Inside a daemonic process (e.g. a
        worker of a multiprocessing pool), or where ``fork`` is unavailable, the thinning runs
        in this process.
    skeleton : {"skimage", "robust"}
        scikit-image's skeleton, or with the deepest voxels of every component whose skeleton
        vanished.

    Returns
    -------
    list of ndarray of bool, one skeleton per mask.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    return start_skeletons(masks, workers, skeleton)()


def skeletonize_mask(mask: np.ndarray, workers: int = 1, skeleton: str = "skimage") -> np.ndarray:
    """Topological skeleton of a 2D or 3D mask (Lee in 3D, Zhang in 2D).

    Equal to scikit-image's ``skeletonize`` of the whole array, but computed per connected
    component inside its bounding box (small neighbouring components together), so that empty
    space and thin components are not scanned for as long as the thickest component needs; the
    split is only taken where it is estimated to cost less than one call over the mask's
    bounding box, which is used otherwise. ``workers`` processes share the jobs. ``skeleton="robust"``: as the training targets, a component whose skeleton
    vanished is represented by its deepest voxels.

    Examples
    --------
    >>> m = np.zeros((7, 9), bool); m[2:5, 1:8] = True
    >>> int(skeletonize_mask(m).sum())
    6
    """
    return skeletonize_masks([mask], workers=workers, skeleton=skeleton)[0]


@dataclass(frozen=True)
class CLDiceResult:
    """clDice of one mask pair.

    Attributes
    ----------
    value : harmonic mean of ``tprec`` and ``tsens`` (0 when both are 0)
    tprec : fraction of the prediction's skeleton inside the reference mask
    tsens : fraction of the reference's skeleton inside the predicted mask
    status : ``ok``, ``both_empty``, ``pred_empty`` or ``ref_empty``
    skeleton_status : ``ok``, ``pred_skeleton_empty``, ``ref_skeleton_empty`` or
        ``both_skeletons_empty``: a non-empty mask whose whole skeleton vanished (its own voxels
        then stand in for the skeleton)
    """

    value: float
    tprec: float
    tsens: float
    status: str
    skeleton_status: str = SKELETON_OK

    def as_dict(self) -> Dict[str, object]:
        return asdict(self)


def _skeleton_status(pred_vanished: bool, ref_vanished: bool) -> str:
    if pred_vanished and ref_vanished:
        return BOTH_SKELETONS_EMPTY
    if pred_vanished:
        return PRED_SKELETON_EMPTY
    return REF_SKELETON_EMPTY if ref_vanished else SKELETON_OK


def _fraction_inside(skel: np.ndarray, other: PreparedMask, own: PreparedMask) -> float:
    """Fraction of the skeleton voxels (array coordinates) inside ``other``; a non-empty mask
    whose skeleton vanished is represented by its own voxels."""
    if len(skel) == 0:
        skel = nonzero_coordinates(own.crop, own.origin)
    inside = inside_values(other.crop, other.origin, skel, fill=False)
    return float(np.count_nonzero(inside)) / float(len(skel))


def cldice_from_skeletons(pp: PreparedMask, pr: PreparedMask, sk_pred: np.ndarray,
                          sk_ref: np.ndarray) -> CLDiceResult:
    """clDice of two prepared, non-empty masks from the array coordinates (n, ndim) of their
    skeleton voxels."""
    tprec = _fraction_inside(sk_pred, pr, pp)
    tsens = _fraction_inside(sk_ref, pp, pr)
    return CLDiceResult(harmonic_mean(tprec, tsens), tprec, tsens, OK,
                        _skeleton_status(len(sk_pred) == 0, len(sk_ref) == 0))


def cldice(
    pred,
    ref,
    pred_skeleton: Optional[np.ndarray] = None,
    ref_skeleton: Optional[np.ndarray] = None,
    workers: int = 1,
    skeleton: str = "skimage",
) -> CLDiceResult:
    """Centreline Dice (Shit et al., CVPR 2021) with its two components and empty flags.

    ``tprec = |S(P) ∩ R| / |S(P)|``, ``tsens = |S(R) ∩ P| / |S(R)|``,
    ``clDice = 2 tprec tsens / (tprec + tsens)``.

    Parameters
    ----------
    pred, ref : ndarray of bool, same shape (2D or 3D)
    pred_skeleton, ref_skeleton : ndarray of bool, optional
        Precomputed skeletons (:func:`skeletonize_mask`), to reuse them across metrics.
    workers : int
        Processes sharing the thinning of both masks (:func:`skeletonize_masks`).
    skeleton : {"skimage", "robust"}
        Skeleton definition: scikit-image's (MetricsReloaded's, default), or with the deepest
        voxels of every component whose skeleton vanished (as the training targets).

    Returns
    -------
    CLDiceResult
        Both empty → value 1 (status ``both_empty``); one empty → 0 (``pred_empty`` /
        ``ref_empty``); non-overlapping non-empty masks → 0. A non-empty mask whose skeleton
        vanished completely is represented by its own voxels (``skeleton_status`` says so;
        MetricsReloaded returns NaN there). Never NaN.

    Examples
    --------
    >>> m = np.zeros((7, 9), bool); m[3, 1:8] = True
    >>> cldice(m, m).value
    1.0
    """
    p, r = check_pair(pred, ref)
    check_skeleton_method(skeleton)
    status = empty_status(p, r)
    if status == BOTH_EMPTY:
        return CLDiceResult(1.0, 1.0, 1.0, status)
    if status != OK:
        return CLDiceResult(0.0, 0.0, 0.0, status)
    for name, sk in (("pred_skeleton", pred_skeleton), ("ref_skeleton", ref_skeleton)):
        if sk is not None and np.shape(sk) != p.shape:
            raise ValueError(f"{name} has shape {np.shape(sk)}, the masks have shape {p.shape}")
    todo = [m for m, s in ((p, pred_skeleton), (r, ref_skeleton)) if s is None]
    preps = [prepare_mask(m) for m in todo]
    computed = iter(start_skeleton_coordinates(preps, workers, skeleton)())
    coords = [next(computed) if s is None else np.argwhere(as_mask(s, name))
              for s, name in ((pred_skeleton, "pred_skeleton"), (ref_skeleton, "ref_skeleton"))]
    return cldice_from_skeletons(prepare_mask(p, labels=False), prepare_mask(r, labels=False),
                                 *coords)


def cldice_score(pred: np.ndarray, ref: np.ndarray, skeleton: str = "skimage") -> float:
    """clDice as a float: both masks empty → 1.0, exactly one empty → 0.0, never NaN.

    Examples
    --------
    >>> a = np.zeros((5, 9), bool); a[2, 1:8] = True
    >>> b = np.zeros((5, 9), bool); b[2, 1:4] = True
    >>> round(cldice_score(a, b), 4)   # tprec = 3/7, tsens = 1
    0.6
    """
    return cldice(pred, ref, skeleton=skeleton).value
