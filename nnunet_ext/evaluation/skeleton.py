"""Skeletons and centreline Dice (clDice).

The skeleton is scikit-image's :func:`skimage.morphology.skeletonize` on the voxel grid (Lee's
thinning in 3D, Zhang's in 2D). Thinning is local, so two components that do not touch (26- resp.
8-connectivity) never influence each other: each component is thinned alone inside its own
bounding box padded by one voxel (small components together with their neighbours, still whole
components only), which gives the identical skeleton while skipping the empty space of the
volume. The components of both masks of a pair can be thinned by several forked processes,
while the caller computes other metrics (:func:`start_skeletons`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Optional

import cc3d
import numpy as np
from scipy import ndimage
from skimage.morphology import skeletonize

from ._common import BOTH_EMPTY, OK, as_mask, check_pair, empty_status, harmonic_mean


# Components whose padded bounding box has at most this many voxels are thinned together with
# their neighbours (grouped by a coarse grid of cell size _CELL): a call per tiny component would
# cost more in overhead than the thinning itself.
_SMALL_BOX = 32 ** 3
_CELL = 64


def _thin(mask: np.ndarray) -> np.ndarray:
    """Skeleton of a cropped mask padded here by one voxel of background."""
    padded = np.pad(mask, 1, mode="constant", constant_values=False)
    inner = tuple(slice(1, -1) for _ in range(padded.ndim))
    return skeletonize(padded)[inner].astype(bool, copy=False)


def _job_mask(labels: np.ndarray, box, ks) -> np.ndarray:
    """The components ``ks`` of ``labels`` inside ``box`` (everything else background)."""
    crop = labels[box]
    if len(ks) == 1:
        return crop == ks[0]
    select = np.zeros(int(max(ks)) + 1, dtype=bool)
    select[list(ks)] = True
    return select[np.minimum(crop, select.size - 1)] & (crop <= select.size - 1)


def _run_job(all_labels, job):
    i, box, ks, _ = job
    return _thin(_job_mask(all_labels[i], box, ks))


# label arrays of the masks being thinned, inherited by forked worker processes (set by the
# pool initializer, so only the small job descriptions travel between processes)
_WORKER_LABELS = None


def _init_worker(all_labels):
    global _WORKER_LABELS
    _WORKER_LABELS = all_labels


def _run_job_in_worker(job):
    return _run_job(_WORKER_LABELS, job)


def _thinning_jobs(mask: np.ndarray):
    """Connected-component labels of a mask and its independent thinning jobs
    ``(box, component labels, box volume)``.

    Each job holds whole connected components (26- / 8-connectivity) and nothing else, so its
    skeleton equals the union of the components' own skeletons: thinning decides on a voxel
    from its 3x3(x3) neighbourhood, which never reaches into another component, and a component
    that stopped changing stays unchanged while others are still thinned.
    """
    labels, n = cc3d.connected_components(mask, connectivity=26 if mask.ndim == 3 else 8,
                                          return_N=True)
    if n == 0:
        return labels, []
    jobs, cells = [], {}
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        if np.prod([s.stop - s.start + 2 for s in box]) > _SMALL_BOX:
            jobs.append((box, (k,)))
        else:
            cells.setdefault(tuple(s.start // _CELL for s in box), []).append((box, k))
    for items in cells.values():
        box = tuple(slice(min(b[ax].start for b, _ in items), max(b[ax].stop for b, _ in items))
                    for ax in range(mask.ndim))
        jobs.append((box, tuple(k for _, k in items)))
    return labels, [(box, ks, int(np.prod([s.stop - s.start for s in box]))) for box, ks in jobs]


def _can_fork_workers() -> bool:
    import multiprocessing

    return (not multiprocessing.current_process().daemon
            and "fork" in multiprocessing.get_all_start_methods())


def start_skeletons(masks, workers: int = 1):
    """Start thinning several masks and return a function that waits for and returns their
    skeletons (a list, one per mask, as :func:`skeletonize_masks`).

    With ``workers > 1`` the thinning runs in ``workers`` forked processes while the caller
    goes on with other work (:func:`nnunet_ext.evaluation.case_metrics` computes the surface and
    topology metrics meanwhile); otherwise it runs in this process when the returned function is
    called. The returned function must be called exactly once (it also shuts the processes
    down); ``finish(cancel=True)`` stops the thinning and returns ``None``.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    arrays = [as_mask(m, f"masks[{i}]") for i, m in enumerate(masks)]
    all_labels, jobs = [], []
    for i, m in enumerate(arrays):
        if m.any():
            labels, mask_jobs = _thinning_jobs(m)
            jobs.extend((i, box, ks, size) for box, ks, size in mask_jobs)
        else:
            labels = None
        all_labels.append(labels)
    # largest first, so that parallel workers finish at about the same time
    jobs.sort(key=lambda j: -j[3])

    def assemble(results):
        outs = [np.zeros(m.shape, dtype=bool) for m in arrays]
        for (i, box, _, _), skel in zip(jobs, results):
            outs[i][box] |= skel
        return outs

    if workers == 1 or len(jobs) < 2 or not _can_fork_workers():
        def run_here(cancel: bool = False):
            return None if cancel else assemble([_run_job(all_labels, job) for job in jobs])

        return run_here
    import multiprocessing

    pool = multiprocessing.get_context("fork").Pool(
        min(workers, len(jobs)), initializer=_init_worker, initargs=(all_labels,))
    try:
        pending = pool.map_async(_run_job_in_worker, jobs, chunksize=1)
    except BaseException:
        pool.terminate()
        raise

    def finish(cancel: bool = False):
        if cancel:
            pool.terminate()
            pool.join()
            return None
        try:
            results = pending.get()
        finally:
            pool.terminate()
            pool.join()
        return assemble(results)

    return finish


def skeletonize_masks(masks, workers: int = 1):
    """Skeletons of several masks (see :func:`skeletonize_mask`), the thinning of all their
    components shared among ``workers`` processes.

    Parameters
    ----------
    masks : sequence of ndarray of bool (2D or 3D)
    workers : int
        Processes for the thinning (1: in this process). Inside a daemonic process (e.g. a
        worker of a multiprocessing pool), or where ``fork`` is unavailable, the thinning runs
        in this process.

    Returns
    -------
    list of ndarray of bool, one skeleton per mask.
    """
    return start_skeletons(masks, workers)()


def skeletonize_mask(mask: np.ndarray, workers: int = 1) -> np.ndarray:
    """Topological skeleton of a 2D or 3D mask (Lee in 3D, Zhang in 2D).

    Equal to scikit-image's ``skeletonize`` of the whole array, but computed per connected
    component inside its bounding box padded by one voxel (small neighbouring components
    together), so the empty space of the volume is never scanned; ``workers`` processes share
    the components.

    Examples
    --------
    >>> m = np.zeros((7, 9), bool); m[2:5, 1:8] = True
    >>> int(skeletonize_mask(m).sum())
    6
    """
    return skeletonize_masks([mask], workers=workers)[0]


@dataclass(frozen=True)
class CLDiceResult:
    """clDice of one mask pair.

    Attributes
    ----------
    value : harmonic mean of ``tprec`` and ``tsens`` (0 when both are 0)
    tprec : fraction of the prediction's skeleton inside the reference mask
    tsens : fraction of the reference's skeleton inside the predicted mask
    status : ``ok``, ``both_empty``, ``pred_empty`` or ``ref_empty``
    """

    value: float
    tprec: float
    tsens: float
    status: str

    def as_dict(self) -> Dict[str, object]:
        return asdict(self)


def _fraction_inside(skel: np.ndarray, mask: np.ndarray, fallback: np.ndarray) -> float:
    # a non-empty mask whose skeleton vanished (Zhang thinning can erase a 2x2 block) is
    # represented by its own voxels
    if not skel.any():
        skel = fallback
    return float(np.count_nonzero(skel & mask)) / float(np.count_nonzero(skel))


def cldice(
    pred,
    ref,
    pred_skeleton: Optional[np.ndarray] = None,
    ref_skeleton: Optional[np.ndarray] = None,
    workers: int = 1,
) -> CLDiceResult:
    """Centreline Dice (Shit et al., CVPR 2021) with its two components and an empty flag.

    ``tprec = |S(P) ∩ R| / |S(P)|``, ``tsens = |S(R) ∩ P| / |S(R)|``,
    ``clDice = 2 tprec tsens / (tprec + tsens)``.

    Parameters
    ----------
    pred, ref : ndarray of bool, same shape (2D or 3D)
    pred_skeleton, ref_skeleton : ndarray of bool, optional
        Precomputed skeletons (:func:`skeletonize_mask`), to reuse them across metrics.
    workers : int
        Processes sharing the thinning of both masks (:func:`skeletonize_masks`).

    Returns
    -------
    CLDiceResult
        Both empty → value 1 (status ``both_empty``); one empty → 0 (``pred_empty`` /
        ``ref_empty``); non-overlapping non-empty masks → 0. Never NaN.

    Examples
    --------
    >>> m = np.zeros((7, 9), bool); m[3, 1:8] = True
    >>> cldice(m, m).value
    1.0
    """
    p, r = check_pair(pred, ref)
    status = empty_status(p, r)
    if status == BOTH_EMPTY:
        return CLDiceResult(1.0, 1.0, 1.0, status)
    if status != OK:
        return CLDiceResult(0.0, 0.0, 0.0, status)
    todo = [m for m, s in ((p, pred_skeleton), (r, ref_skeleton)) if s is None]
    computed = iter(skeletonize_masks(todo, workers=workers))
    sp = next(computed) if pred_skeleton is None else as_mask(pred_skeleton, "pred_skeleton")
    sr = next(computed) if ref_skeleton is None else as_mask(ref_skeleton, "ref_skeleton")
    for name, sk in (("pred_skeleton", sp), ("ref_skeleton", sr)):
        if sk.shape != p.shape:
            raise ValueError(f"{name} has shape {sk.shape}, the masks have shape {p.shape}")
    tprec = _fraction_inside(sp, r, p)
    tsens = _fraction_inside(sr, p, r)
    return CLDiceResult(harmonic_mean(tprec, tsens), tprec, tsens, status)


def cldice_score(pred: np.ndarray, ref: np.ndarray) -> float:
    """clDice as a float: both masks empty → 1.0, exactly one empty → 0.0, never NaN.

    Examples
    --------
    >>> a = np.zeros((5, 9), bool); a[2, 1:8] = True
    >>> b = np.zeros((5, 9), bool); b[2, 1:4] = True
    >>> round(cldice_score(a, b), 4)   # tprec = 3/7, tsens = 1
    0.6
    """
    return cldice(pred, ref).value
