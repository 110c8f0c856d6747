"""Official challenge scores, computed as the leaderboards compute them.

* :func:`vesuvius_leaderboard_score` — Vesuvius Challenge Surface Detection (Kaggle 2025): the
  host's ``topometrics`` leaderboard score with the parameters the host ran.
* :func:`brats_lesion_wise` — BraTS 2023 (``BraTS-2023-Metrics``) and 2024 GLI, SSA, MEN
  (``BraTS-2024-Metrics``) lesion-wise Dice / HD95 (2024: and NSD, with the relabelling of
  touching lesions of different tissues) with the legacy whole-volume scores.
* :func:`monusac_pq` — MoNuSAC 2020 Panoptic Quality per class and sub-image.

The definitions, with what was checked against which source, are in ``docs/metrics.md``
("Challenge scores"). Surface Dice and HD95 are DeepMind's surfel-area weighted ones, taken from
the ``surface-distance`` package (Apache-2.0) that the hosts call: its neighbour-code area table
*is* the definition (it is not the marching-cubes area), so nothing else gives the leaderboard's
numbers. Betti matching comes from the compiled Betti-Matching-3D module (MIT) that the
``topolosses`` wheels bundle. Both are optional extras (``pip install "nnunet-ext[challenge]"``,
``"nnunet-ext[topology]"``); without them these functions say what to install.
"""
from __future__ import annotations

import glob
import importlib
import importlib.util
import itertools
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

#: challenge names of ``nnunet-ext evaluate --challenge``
CHALLENGES = ("vesuvius", "brats2023", "brats2024", "monusac")

#: per-case score columns of each challenge -> True if higher is better
CHALLENGE_METRICS: Dict[str, bool] = {
    # Vesuvius
    "leaderboard_score": True, "topo_score": True, "surface_dice": True, "voi_score": True,
    # BraTS
    "lesion_dice": True, "lesion_hd95": False, "legacy_dice": True, "legacy_hd95": False,
    "num_tp": True, "num_fp": False, "num_fn": False,
    "lesion_nsd05": True, "lesion_nsd10": True, "legacy_nsd05": True, "legacy_nsd10": True,
    # MoNuSAC
    "pq": True,
}
# (the per-dimension TopoF1 is NaN for a dimension without features: returned, not a column)
_VESUVIUS_COLUMNS = ("leaderboard_score", "topo_score", "surface_dice", "voi_score")
_BRATS_COLUMNS = ("lesion_dice", "lesion_hd95", "legacy_dice", "legacy_hd95", "num_tp", "num_fp",
                  "num_fn")


def challenge_columns(challenge: str) -> Tuple[str, ...]:
    """The per-case score columns of a challenge."""
    check_challenge(challenge)
    if challenge == "vesuvius":
        return _VESUVIUS_COLUMNS
    if challenge == "monusac":
        return ("pq",)
    if challenge == "brats2024":
        return _BRATS_COLUMNS + ("lesion_nsd05", "lesion_nsd10", "legacy_nsd05", "legacy_nsd10")
    return _BRATS_COLUMNS


def check_challenge(challenge: str) -> str:
    if challenge not in CHALLENGES:
        raise ValueError(f"unknown challenge {challenge!r}; known: {', '.join(CHALLENGES)}")
    return challenge


# --- optional compiled / reference packages ------------------------------------------------------

def _surface_distance():
    try:
        return importlib.import_module("surface_distance")
    except ImportError:
        raise ImportError("challenge surface scores need DeepMind's surface-distance package: "
                          "pip install 'nnunet-ext[challenge]' (or: pip install surface-distance)"
                          ) from None


def load_betti_matching():
    """The compiled Betti-Matching-3D module (``compute_matching``): a ``betti_matching`` module
    on the path, or the copy inside the ``topolosses`` wheel, loaded without importing
    topolosses itself (which would import torch, OpenCV and gudhi)."""
    try:
        return importlib.import_module("betti_matching")
    except ImportError:
        pass
    spec = importlib.util.find_spec("topolosses")
    if spec is not None and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            found = glob.glob(os.path.join(root, "losses", "betti_matching", "src", "betti_matching*.so"))
            if found:
                mspec = importlib.util.spec_from_file_location("betti_matching", found[0])
                module = importlib.util.module_from_spec(mspec)
                mspec.loader.exec_module(module)
                return module
    raise ImportError("the Vesuvius TopoScore needs the compiled Betti matching (Betti-Matching-3D): "
                      "pip install 'nnunet-ext[topology]' (the topolosses wheel bundles it; "
                      "'pip install --no-deps topolosses' skips its torch/OpenCV dependencies)")


def deepmind_surface_dice(pred: np.ndarray, ref: np.ndarray, spacing, tolerance: float) -> float:
    """DeepMind's surface Dice at ``tolerance`` (surfel areas); both empty → 1, one empty → 0."""
    if not pred.any() and not ref.any():
        return 1.0
    if not pred.any() or not ref.any():
        return 0.0
    sd = _surface_distance()
    dists = sd.compute_surface_distances(ref.astype(bool), pred.astype(bool), tuple(spacing))
    return float(sd.compute_surface_dice_at_tolerance(dists, tolerance))


def deepmind_hd95(pred: np.ndarray, ref: np.ndarray, spacing) -> float:
    """DeepMind's robust Hausdorff distance at 95 % (surfel-area weighted); ``inf`` when exactly
    one mask is empty, as the BraTS scripts get it."""
    sd = _surface_distance()
    dists = sd.compute_surface_distances(ref.astype(bool), pred.astype(bool), tuple(spacing))
    return float(sd.compute_robust_hausdorff(dists, 95))


# --- Vesuvius ------------------------------------------------------------------------------------

#: parameters the host ran (compute_leaderboard_score's own default differs in voi_alpha: 1.0;
#: the package's README says tolerance 1.0, its code's default is 2.0)
VESUVIUS_PARAMETERS = {"tolerance": 2.0, "voi_alpha": 0.3, "voi_connectivity": 26,
                       "weights": (0.3, 0.35, 0.35), "topo_weights": (0.34, 0.33, 0.33),
                       "ignore_label": 2, "splits": (2, 2, 2)}


def _axis_cuts(n: int, parts: int) -> List[Tuple[int, int]]:
    """``parts`` contiguous chunks of ``range(n)``, the first ``n % parts`` one longer."""
    parts = max(1, min(parts, n))
    base, extra = divmod(n, parts)
    cuts, start = [], 0
    for i in range(parts):
        stop = start + base + (1 if i < extra else 0)
        cuts.append((start, stop))
        start = stop
    return cuts


def octant_slices(shape: Sequence[int], splits=(2, 2, 2)) -> List[Tuple[slice, ...]]:
    """The host's fixed grid of sub-volumes (2 x 2 x 2 by default), z-major order.

    Examples
    --------
    >>> octant_slices((5, 2, 2))[0]
    (slice(0, 3, None), slice(0, 1, None), slice(0, 1, None))
    """
    cuts = [_axis_cuts(n, s) for n, s in zip(shape, splits)]
    return [tuple(slice(a, b) for a, b in (z, y, x))
            for z in cuts[0] for y in cuts[1] for x in cuts[2]]


def betti_matching_counts(pred: np.ndarray, ref: np.ndarray, dims=(0, 1, 2)) -> Dict[int, Tuple[int, int, int]]:
    """(matched, prediction, reference) feature counts per dimension of one sub-volume.

    The masks are inverted (foreground 0, background 1) and matched in the sublevel filtration
    with Betti-Matching-3D's ``compute_matching`` (prediction first), so dimension 0 counts the
    components minus the one infinite feature.
    """
    bm = load_betti_matching()
    res = bm.compute_matching((~pred).astype(np.float64), (~ref).astype(np.float64))
    out = {}
    for k in dims:
        m = int(res.num_matched[k]) if k < len(res.num_matched) else 0
        p = m + (int(res.num_unmatched_input1[k]) if k < len(res.num_unmatched_input1) else 0)
        g = m + (int(res.num_unmatched_input2[k]) if k < len(res.num_unmatched_input2) else 0)
        out[k] = (m, p, g)
    return out


def _octant_job(args):
    pred, ref, dims = args
    return betti_matching_counts(pred, ref, dims)


def _limit_memory(max_bytes: Optional[int]) -> None:
    if max_bytes:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (int(max_bytes), int(max_bytes)))


def topo_score_from_counts(counts: Dict[int, Tuple[int, int, int]],
                           weights=(0.34, 0.33, 0.33)) -> Tuple[float, Dict[int, float]]:
    """TopoScore from (m, p, g) summed over sub-volumes: per dimension ``2m / (p + g)`` (``0.5 /
    (p + 0.5)`` without reference features), dimensions with ``p + g = 0`` left out and the
    weights renormalised over the rest; 1 when none is left.

    Examples
    --------
    >>> topo_score_from_counts({0: (1, 2, 1), 1: (0, 0, 0), 2: (0, 1, 0)})[0]   # (0.34*2/3 + 0.33*1/3) / 0.67
    0.5024875621890548
    """
    f1, active = {}, []
    for k, (m, p, g) in sorted(counts.items()):
        if p + g == 0:
            f1[k] = float("nan")
            continue
        f1[k] = 2.0 * m / (p + g) if g else 0.5 / (p + g + 0.5)
        active.append(k)
    if not active:
        return 1.0, f1
    w = np.array([weights[k] for k in active], dtype=float)
    return float((w / w.sum() * np.array([f1[k] for k in active])).sum()), f1


def vesuvius_topo_counts(pred: np.ndarray, ref: np.ndarray, workers: int = 1,
                         max_memory_gb: Optional[float] = None, progress: bool = False,
                         splits=(2, 2, 2)) -> Dict[int, Tuple[int, int, int]]:
    """Betti-matching counts of the host's octants, summed per dimension.

    Each octant is matched in a separate (spawned) process — ``workers`` at a time, each limited
    to ``max_memory_gb`` of address space when given (Betti matching of a 160³ octant takes about
    5 GB) — with a progress bar.
    """
    load_betti_matching()  # fail early, with the message that says what to install
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing

    from tqdm import tqdm

    jobs = [(np.ascontiguousarray(pred[s]), np.ascontiguousarray(ref[s]), (0, 1, 2))
            for s in octant_slices(pred.shape, splits)]
    total = {k: (0, 0, 0) for k in (0, 1, 2)}
    limit = None if max_memory_gb is None else int(max_memory_gb * 2 ** 30)
    with ProcessPoolExecutor(max_workers=max(1, workers),
                             mp_context=multiprocessing.get_context("spawn"),
                             initializer=_limit_memory, initargs=(limit,)) as pool, \
            tqdm(total=len(jobs), desc="Betti matching (octants)", unit="octant",
                 disable=not progress) as bar:
        try:
            for counts in pool.map(_octant_job, jobs):
                for k, c in counts.items():
                    total[k] = tuple(a + b for a, b in zip(total[k], c))
                bar.update()
        except MemoryError:
            raise MemoryError(f"Betti matching of an octant needed more than {max_memory_gb} GB; "
                              "raise the limit or use fewer workers") from None
    return total


def vesuvius_voi(pred: np.ndarray, ref: np.ndarray, connectivity: int = 26) -> Tuple[float, float, float]:
    """The host's VOI: components (cc3d) of each mask, scikit-image's VOI over the voxels in
    either mask (background inside that union is one more segment). Returns (VOI, H(R|P),
    H(P|R)) in bits; (0, 0, 0) when both are empty."""
    import cc3d
    from skimage.metrics import variation_of_information

    union = pred | ref
    if not union.any():
        return 0.0, 0.0, 0.0
    from ._common import bounding_box

    box = bounding_box(union)
    lr = cc3d.connected_components(ref[box].astype(np.uint8), connectivity=connectivity)
    lp = cc3d.connected_components(pred[box].astype(np.uint8), connectivity=connectivity)
    u = union[box]
    split, merge = variation_of_information(lr[u], lp[u])
    return float(split + merge), float(split), float(merge)


def vesuvius_masks(pred_seg: np.ndarray, ref_seg: np.ndarray,
                   ignore_label: Optional[int] = 2) -> Tuple[np.ndarray, np.ndarray]:
    """The host's binarisation: voxels where the reference is ``ignore_label`` become background
    in both volumes, then every non-zero voxel is foreground and NaN is background (the host
    applies ``nan_to_num`` first)."""
    keep = np.ones(ref_seg.shape, bool) if ignore_label is None else ref_seg != ignore_label
    def foreground(a):
        return (np.nan_to_num(a, nan=0.0) != 0) if np.issubdtype(a.dtype, np.floating) else a != 0
    return foreground(pred_seg) & keep, foreground(ref_seg) & keep


def vesuvius_leaderboard_score(pred_seg, ref_seg, workers: int = 1,
                               max_memory_gb: Optional[float] = None, progress: bool = False,
                               ignore_label: Optional[int] = 2) -> Dict[str, float]:
    """Vesuvius Surface Detection score of one volume, as the Kaggle leaderboard computes it.

    Voxels where ``ref_seg == ignore_label`` become background in both volumes, then every
    non-zero voxel is foreground. ``score = 0.30 · TopoScore + 0.35 · SurfaceDice@2 + 0.35 ·
    1 / (1 + 0.3 · VOI)``; leaderboard = mean over volumes.

    Parameters
    ----------
    pred_seg, ref_seg : ndarray, 3D, same shape
        Label volumes (the reference with the ignore label 2).
    workers, max_memory_gb, progress
        Octant processes for the Betti matching (:func:`vesuvius_topo_counts`).

    Returns
    -------
    dict with ``leaderboard_score``, ``topo_score``, ``surface_dice``, ``voi_score``, ``voi``,
    ``topo_f1_0..2`` (NaN for a dimension without features, left out of the TopoScore) and the
    summed ``counts`` per dimension.
    """
    pred_seg, ref_seg = np.asarray(pred_seg), np.asarray(ref_seg)
    if pred_seg.shape != ref_seg.shape or pred_seg.ndim != 3:
        raise ValueError(f"Vesuvius volumes must be 3D and of equal shape, got {pred_seg.shape} "
                         f"and {ref_seg.shape}")
    pred, ref = vesuvius_masks(pred_seg, ref_seg, ignore_label)
    par = VESUVIUS_PARAMETERS
    counts = vesuvius_topo_counts(pred, ref, workers, max_memory_gb, progress, par["splits"])
    topo, f1 = topo_score_from_counts(counts, par["topo_weights"])
    sdice = deepmind_surface_dice(pred, ref, (1.0, 1.0, 1.0), par["tolerance"])
    voi = vesuvius_voi(pred, ref, par["voi_connectivity"])[0]
    voi_score = 1.0 / (1.0 + par["voi_alpha"] * voi)
    w = np.asarray(par["weights"], float) / sum(par["weights"])
    score = float(w[0] * topo + w[1] * sdice + w[2] * voi_score)
    return {"leaderboard_score": score, "topo_score": topo, "surface_dice": sdice,
            "voi_score": voi_score, "voi": voi, **{f"topo_f1_{k}": f1[k] for k in (0, 1, 2)},
            "counts": counts}


# --- BraTS ----------------------------------------------------------------------------------------

#: region -> label values (2023 label convention: 1 NETC, 2 SNFH, 3 ET; 2024 GLI adds 4 RC)
BRATS_REGIONS = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,), "NETC": (1,), "SNFH": (2,), "RC": (4,)}
#: 2023 sub-challenge -> (dilation iterations, lesion volume threshold)
BRATS2023_PARAMETERS = {"GLI": (3, 50), "SSA": (3, 50), "MEN": (1, 50), "PED": (3, 50), "MET": (1, 2)}


@dataclass(frozen=True)
class BratsRules:
    """What one year's script of one sub-challenge computes.

    ``dilation`` / ``threshold``: per tissue, the 18-neighbourhood dilations that merge lesions
    and the lesion volume threshold; ``penalty``: HD95 of a missed lesion or a false positive;
    ``merge_prediction``: prediction components are merged by dilation like the reference's and
    prediction lesions of at most ``threshold`` voxels are removed (else: plain components);
    ``touching``: tissue -> the other tissues whose lesions it is relabelled by, in the script's
    order (lesions of the tissue touching one lesion of the other become one lesion);
    ``nsd``: also the normalized surface Dice at 0.5 and 1.0; ``legacy_hd95_of_labels``: the
    legacy HD95 is computed from the lesion label maps (:func:`label_map_hd95`)."""

    regions: Tuple[str, ...]
    dilation: Dict[str, int]
    threshold: Dict[str, float]
    penalty: float
    merge_prediction: bool = False
    touching: Dict[str, Tuple[str, ...]] = field(default_factory=dict)
    nsd: bool = False
    legacy_hd95_of_labels: bool = False


def brats_rules(year: int, subchallenge: str = "GLI") -> BratsRules:
    """The rules of ``BraTS-2023-Metrics`` (``year=2023``) or ``BraTS-2024-Metrics``
    (``metrics_GLI.py``, ``metrics_SSA.py``, ``metrics_MEN.py``) as they ran."""
    tissues = ("WT", "TC", "NETC", "SNFH", "ET", "RC")
    if year == 2023 and subchallenge in BRATS2023_PARAMETERS:
        d, t = BRATS2023_PARAMETERS[subchallenge]
        return BratsRules(("WT", "TC", "ET"), dict.fromkeys(tissues, d), dict.fromkeys(tissues, t), 374.0)
    if year == 2024 and subchallenge == "GLI":
        # the script means dilation 5 for SNFH, NETC and RC but tests a misspelt "SFNH"
        return BratsRules(tissues, {k: 5 if k in ("NETC", "RC") else 3 for k in tissues},
                          {k: 10 if k == "ET" else 20 for k in tissues}, 337.0,
                          merge_prediction=True, nsd=True, legacy_hd95_of_labels=True,
                          touching={"NETC": ("ET", "RC"), "ET": ("NETC", "RC"),
                                    "RC": ("ET", "NETC"), "SNFH": ("ET", "RC", "NETC")})
    if year == 2024 and subchallenge == "SSA":
        return BratsRules(("WT", "TC", "ET"), dict.fromkeys(tissues, 3), dict.fromkeys(tissues, 50),
                          374.0, merge_prediction=True, nsd=True, legacy_hd95_of_labels=True,
                          touching={"ET": ("NETC",)})
    if year == 2024 and subchallenge == "MEN":
        return BratsRules(("WT", "TC", "ET"), dict.fromkeys(tissues, 1), dict.fromkeys(tissues, 50),
                          374.0, nsd=True)
    raise ValueError(f"BraTS {year} sub-challenge {subchallenge!r} is not reproduced; "
                     "2023: GLI, SSA, MEN, PED, MET; 2024: GLI, SSA, MEN")


_STRUCT18 = ndimage.generate_binary_structure(3, 2)
#: the 18 neighbour offsets of the 3D 18-neighbourhood (the scripts' "touching")
_OFFSETS18 = np.array([o for o in itertools.product((-1, 0, 1), repeat=3)
                       if 0 < sum(map(abs, o)) <= 2], dtype=np.int64)


def _merged_by_dilation(mask: np.ndarray, iterations: int, scan: str) -> np.ndarray:
    """Components (26-connectivity) of ``mask`` that lie in one component of its dilation by the
    18-neighbourhood (``iterations`` times) share one label: the number cc3d gives that dilated
    component when it scans the array in ``scan`` order ("C" or "F"), as the scripts number
    lesions."""
    import cc3d

    dil = ndimage.binary_dilation(mask, structure=_STRUCT18, iterations=iterations)
    lab = cc3d.connected_components(np.asarray(dil, order=scan), connectivity=26)
    return np.where(mask, lab, 0).astype(np.int64)


def _without_small_lesions(labels: np.ndarray, threshold: float) -> np.ndarray:
    """Labels with the lesions of at most ``threshold`` voxels removed (the 2024 scripts'
    prediction filter counts voxels, whatever the spacing)."""
    ids, counts = np.unique(labels, return_counts=True)
    small = ids[(counts <= threshold) & (ids != 0)]
    return np.where(np.isin(labels, small), 0, labels) if small.size else labels


def _touching_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The distinct (a label, b label) pairs of voxels that are 18-neighbours, shape (n, 2)."""
    if not a.any() or not b.any():
        return np.zeros((0, 2), np.int64)
    nz = np.nonzero(a)
    lo = [max(int(x.min()) - 1, 0) for x in nz]
    hi = [min(int(x.max()) + 2, n) for x, n in zip(nz, a.shape)]
    box = tuple(slice(l, h) for l, h in zip(lo, hi))
    pa, pb = np.pad(a[box], 1), np.pad(b[box], 1)
    strides = np.array([pa.shape[1] * pa.shape[2], pa.shape[2], 1], dtype=np.int64)
    idx = np.flatnonzero(pa)
    fa, fb = pa.ravel(), pb.ravel()
    pairs = []
    for off in _OFFSETS18 @ strides:
        nb = fb[idx + off]
        hit = nb != 0
        pairs.append(np.stack([fa[idx[hit]], nb[hit]], axis=1))
    return np.unique(np.concatenate(pairs), axis=0)


def _relabel_by_touching(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The scripts' ``relabel_nifti_image(get_touching_labels(a, b), a)``: every lesion of ``a``
    that touches lesions of ``b`` takes a new label for the smallest ``b`` label it touches, so
    ``a`` lesions whose smallest touched ``b`` lesion is the same become one lesion (not
    transitive: two ``a`` lesions sharing only a larger ``b`` lesion stay apart)."""
    pairs = _touching_pairs(a, b)
    if len(pairs) <= 1:  # the script relabels only for more than one pair (one cannot merge)
        return a
    first = np.unique(pairs[:, 0], return_index=True)[1]    # pairs are sorted: smallest b first
    a_ids, b_min = pairs[first, 0], pairs[first, 1]
    lookup = np.arange(int(a.max()) + 1, dtype=np.int64)
    lookup[a_ids] = int(a.max()) + 1 + np.unique(b_min, return_inverse=True)[1].reshape(-1)
    return lookup[a]


def label_map_hd95(pred_labels: np.ndarray, ref_labels: np.ndarray, spacing) -> float:
    """The 2024 GLI and SSA scripts' legacy HD95: DeepMind's robust HD95 called with the lesion
    *label maps* instead of masks. Its surfel codes then come from the label values (uint8,
    correlated with the 2x2x2 code kernel as the package does, out-of-range sums wrapping as
    there), so with lesion numbers above 1 the surfels and their areas differ from the masks'.
    Equal to :func:`deepmind_hd95` of the masks when every label is 0 or 1. ``inf`` when a side
    has no surfel."""
    sd = _surface_distance()
    from surface_distance import lookup_tables

    nz = np.nonzero((pred_labels != 0) | (ref_labels != 0))
    if not nz[0].size:
        return float("inf")
    lo = [int(x.min()) for x in nz]
    hi = [int(x.max()) + 1 for x in nz]
    area = lookup_tables.create_table_neighbour_code_to_surface_area(tuple(spacing))
    codes, borders = [], []
    for labels in (ref_labels, pred_labels):
        crop = np.zeros([h - l + 1 for l, h in zip(lo, hi)], np.uint8)   # one layer at the top
        crop[:-1, :-1, :-1] = labels[tuple(slice(l, h) for l, h in zip(lo, hi))]  # wraps mod 256
        code = ndimage.correlate(crop, lookup_tables.ENCODE_NEIGHBOURHOOD_3D_KERNEL,
                                 mode="constant", cval=0)
        codes.append(code)
        borders.append((code != 0) & (code != 255))
    if not borders[0].any() or not borders[1].any():
        return float("inf")
    dist = [ndimage.distance_transform_edt(~b, sampling=spacing) for b in borders]
    surfaces = {"distances_gt_to_pred": dist[1][borders[0]], "surfel_areas_gt": area[codes[0][borders[0]]],
                "distances_pred_to_gt": dist[0][borders[1]], "surfel_areas_pred": area[codes[1][borders[1]]]}
    for d, a in (("distances_gt_to_pred", "surfel_areas_gt"), ("distances_pred_to_gt", "surfel_areas_pred")):
        order = np.lexsort((surfaces[a], surfaces[d]))
        surfaces[d], surfaces[a] = surfaces[d][order], surfaces[a][order]
    return float(sd.compute_robust_hausdorff(surfaces, 95))


def medpy_nsd(pred: np.ndarray, ref: np.ndarray, spacing, tolerance: float) -> float:
    """Normalized surface Dice as the 2024 BraTS scripts compute it (nnU-Net v1's
    ``normalized_surface_dice`` on MedPy's border distances): border voxels = mask minus its
    erosion by the 6-neighbourhood; ``(Pp + Pr) / 2`` where ``Pp`` is the fraction of prediction
    border voxels within ``tolerance`` (mm) of a reference border voxel and ``Pr`` the converse
    (with the script's 1e-8 in the denominator). Both empty → 1, one empty → 0."""
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    if not pred.any() and not ref.any():
        return 1.0
    if not pred.any() or not ref.any():
        return 0.0
    nz = np.nonzero(pred | ref)
    box = tuple(slice(max(int(x.min()) - 1, 0), int(x.max()) + 2) for x in nz)
    p, r = np.pad(pred[box], 1), np.pad(ref[box], 1)   # the erosion's outside is background
    six = ndimage.generate_binary_structure(p.ndim, 1)
    bp = p ^ ndimage.binary_erosion(p, structure=six)
    br = r ^ ndimage.binary_erosion(r, structure=six)
    sp = np.asarray(spacing, dtype=np.float64)
    to_r = ndimage.distance_transform_edt(~br, sampling=sp)[bp]
    to_p = ndimage.distance_transform_edt(~bp, sampling=sp)[br]
    tp = np.mean(to_r <= tolerance) + np.mean(to_p <= tolerance)
    miss = np.mean(to_r > tolerance) + np.mean(to_p > tolerance)
    return float(tp / (tp + miss + 1e-8))


def _lesion_scores(pred_labels: np.ndarray, ref_labels: np.ndarray, spacing, dilation: int,
                   threshold: float, penalty: float, nsd: bool) -> Dict[str, float]:
    voxel_volume = float(np.prod(spacing))
    tp_ids, rows = set(), []
    pred_boxes = ndimage.find_objects(pred_labels)
    for lesion, box in enumerate(ndimage.find_objects(ref_labels), start=1):
        if box is None:
            continue
        # the dilated lesion stays inside its box grown by the dilation (clipped to the array)
        grow = tuple(slice(max(s.start - dilation, 0), min(s.stop + dilation, n))
                     for s, n in zip(box, ref_labels.shape))
        les = ref_labels[grow] == lesion
        roi = ndimage.binary_dilation(les, structure=_STRUCT18, iterations=dilation)
        hits = np.unique(pred_labels[grow][roi])
        hits = hits[hits != 0]
        tp_ids.update(int(h) for h in hits)
        # Dice, HD95 and NSD between the lesion and the union of the touching prediction
        # components, inside a box holding both (every one of them is translation-invariant,
        # and both masks are background all around the box)
        boxes = [grow] + [pred_boxes[h - 1] for h in hits]
        big = tuple(slice(min(b[a].start for b in boxes), max(b[a].stop for b in boxes))
                    for a in range(3))
        g = ref_labels[big] == lesion
        p = np.isin(pred_labels[big], hits) if hits.size else np.zeros_like(g)
        dice = 2.0 * np.count_nonzero(g & p) / (np.count_nonzero(g) + np.count_nonzero(p))
        hd = deepmind_hd95(p, g, spacing) if hits.size else float("inf")
        nsds = tuple(medpy_nsd(p, g, spacing, t) for t in _NSD_TOLERANCES) if nsd else ()
        rows.append((np.count_nonzero(g) * voxel_volume, hits.size > 0, dice,
                     penalty if not np.isfinite(hd) else hd, nsds))
    n_fp = len(set(np.unique(pred_labels).tolist()) - tp_ids - {0})
    kept = [r for r in rows if r[0] > threshold]
    denom = len(kept) + n_fp
    out = {"lesion_dice": 1.0 if denom == 0 else sum(r[2] for r in kept) / denom,
           "lesion_hd95": 0.0 if denom == 0 else (sum(r[3] for r in kept) + penalty * n_fp) / denom,
           "num_tp": float(sum(1 for r in kept if r[1])), "num_fp": float(n_fp),
           "num_fn": float(sum(1 for r in kept if not r[1]))}
    for i, name in enumerate(_NSD_NAMES if nsd else ()):
        out[f"lesion_{name}"] = 1.0 if denom == 0 else sum(r[4][i] for r in kept) / denom
    return out


#: NSD tolerances (mm) of the 2024 scripts and their column suffixes
_NSD_TOLERANCES = (0.5, 1.0)
_NSD_NAMES = ("nsd05", "nsd10")


def brats_lesion_wise(pred_seg, ref_seg, spacing=(1.0, 1.0, 1.0), year: int = 2023,
                      subchallenge: str = "GLI", axis_order: str = "zyx") -> Dict[str, Dict[str, float]]:
    """BraTS lesion-wise and legacy scores of one case, per region.

    Parameters
    ----------
    pred_seg, ref_seg : ndarray of int, 3D, same shape
        Label maps in the BraTS 2023 convention (1 NETC, 2 SNFH, 3 ET; 4 RC in 2024 GLI).
    spacing : sequence of float
        Voxel size along the array axes (the scripts read the NIfTI zooms; lesion volumes are
        voxels × voxel volume).
    year : {2023, 2024}
    subchallenge : {"GLI", "SSA", "MEN", "PED", "MET"}
        2023: each with its (dilation, threshold); 2024: GLI, SSA and MEN with their scripts'
        rules (:func:`brats_rules`).
    axis_order : {"zyx", "xyz"}
        Axis order of the arrays: "zyx" as nnU-Net's and SimpleITK's readers give them, "xyz"
        as nibabel does. It only matters for the 2024 relabelling of touching lesions of
        different tissues, where the lesion numbers of the script's scan decide which lesions
        become one (cc3d scans the scripts' dilated (x, y, z) arrays in C order: x slowest).

    Returns
    -------
    dict region -> ``lesion_dice``, ``lesion_hd95``, ``legacy_dice``, ``legacy_hd95``,
    ``num_tp``, ``num_fp``, ``num_fn``, and for 2024 ``lesion_nsd05``, ``lesion_nsd10``,
    ``legacy_nsd05``, ``legacy_nsd10``. Regions: WT, TC, ET (2024 GLI: WT, TC, NETC, SNFH, ET, RC).
    """
    import cc3d

    pred_seg, ref_seg = np.asarray(pred_seg), np.asarray(ref_seg)
    if pred_seg.shape != ref_seg.shape or pred_seg.ndim != 3:
        raise ValueError(f"BraTS volumes must be 3D and of equal shape, got {pred_seg.shape} and "
                         f"{ref_seg.shape}")
    if axis_order not in ("zyx", "xyz"):
        raise ValueError(f"axis_order must be 'zyx' or 'xyz', got {axis_order!r}")
    rules = brats_rules(year, subchallenge)
    scan = "F" if axis_order == "zyx" else "C"
    sp = tuple(float(s) for s in spacing)

    def lesions(seg, tissue, prediction):
        mask = np.isin(seg, BRATS_REGIONS[tissue])
        if prediction and not rules.merge_prediction:
            return cc3d.connected_components(mask, connectivity=26).astype(np.int64)
        lab = _merged_by_dilation(mask, rules.dilation[tissue], scan)
        return _without_small_lesions(lab, rules.threshold[tissue]) if prediction else lab

    needed = set(rules.regions) | {t for others in rules.touching.values() for t in others}
    merged = {side: {t: lesions(seg, t, side == "pred") for t in needed}
              for side, seg in (("pred", pred_seg), ("ref", ref_seg))}
    out = {}
    for region in rules.regions:
        pl, rl = merged["pred"][region], merged["ref"][region]
        if region in rules.touching:
            for other in rules.touching[region]:
                pl = _relabel_by_touching(pl, merged["pred"][other])
                rl = _relabel_by_touching(rl, merged["ref"][other])
            # the script then numbers the lesions 1..n in the order of their old numbers
            pl, rl = (np.unique(x, return_inverse=True)[1].reshape(x.shape) for x in (pl, rl))
        res = _lesion_scores(pl, rl, sp, rules.dilation[region], rules.threshold[region],
                             rules.penalty, rules.nsd)
        p, r = pl > 0, rl > 0
        if not p.any() and not r.any():
            res["legacy_dice"], res["legacy_hd95"] = 1.0, 0.0
        else:
            res["legacy_dice"] = 2.0 * np.count_nonzero(p & r) / (np.count_nonzero(p) + np.count_nonzero(r))
            if not (p.any() and r.any()):
                hd = float("inf")
            elif rules.legacy_hd95_of_labels:
                # its surfel codes depend on the axis order: the script's is x, y, z
                xyz = (lambda a: a) if axis_order == "xyz" else (lambda a: a.transpose(2, 1, 0))
                hd = label_map_hd95(xyz(pl), xyz(rl), sp if axis_order == "xyz" else sp[::-1])
            else:
                hd = deepmind_hd95(p, r, sp)
            res["legacy_hd95"] = hd if np.isfinite(hd) else rules.penalty
        for name, t in zip(_NSD_NAMES if rules.nsd else (), _NSD_TOLERANCES):
            res[f"legacy_{name}"] = medpy_nsd(p, r, sp, t)
        out[region] = res
    return out


# --- MoNuSAC --------------------------------------------------------------------------------------

def panoptic_quality(pred_instances: np.ndarray, ref_instances: np.ndarray) -> Dict[str, float]:
    """Panoptic Quality of two instance maps (0 = background): instances match when their IoU
    exceeds 0.5 (which makes the matching unique); ``PQ = Σ IoU(matched) / (TP + FP/2 + FN/2)``
    (0 when both are empty is not defined here: the caller skips such classes).

    Examples
    --------
    >>> r = np.array([[1, 1, 0, 2, 2]]); p = np.array([[3, 3, 3, 0, 0]])
    >>> round(panoptic_quality(p, r)["pq"], 4)   # one match (IoU 2/3), one FN: (2/3) / 1.5
    0.4444
    """
    pi = np.asarray(pred_instances).ravel().astype(np.int64)
    ri = np.asarray(ref_instances).ravel().astype(np.int64)
    p_ids = np.unique(pi[pi != 0])
    r_ids = np.unique(ri[ri != 0])
    both = (pi != 0) & (ri != 0)
    pairs, inter = np.unique(np.stack([ri[both], pi[both]]), axis=1, return_counts=True) if both.any() \
        else (np.zeros((2, 0), np.int64), np.zeros(0, np.int64))
    size_p = dict(zip(*np.unique(pi[pi != 0], return_counts=True)))
    size_r = dict(zip(*np.unique(ri[ri != 0], return_counts=True)))
    ious = [i / (size_r[a] + size_p[b] - i) for (a, b), i in zip(pairs.T, inter)]
    matched = [x for x in ious if x > 0.5]
    tp = len(matched)
    fp, fn = len(p_ids) - tp, len(r_ids) - tp
    denom = tp + 0.5 * fp + 0.5 * fn
    return {"pq": 0.0 if denom == 0 else float(sum(matched)) / denom, "tp": tp, "fp": fp, "fn": fn,
            "sq": float(np.mean(matched)) if tp else 0.0, "rq": 0.0 if denom == 0 else tp / denom}


def instances_from_semantic(seg: np.ndarray, classes: Sequence[int]) -> Dict[int, np.ndarray]:
    """Per class, the connected components (8-connectivity in 2D) of a semantic map as
    instances: what an nnU-Net semantic prediction offers (touching nuclei of one class merge)."""
    from ._common import label_components

    seg = np.asarray(seg)
    return {c: label_components(seg == c, 8 if seg.ndim == 2 else 26)[0] for c in classes}


def monusac_pq(pred_instances: Dict[int, np.ndarray], ref_instances: Dict[int, np.ndarray],
               ambiguous: Optional[np.ndarray] = None) -> Dict[str, float]:
    """MoNuSAC Panoptic Quality of one sub-image.

    The prediction is multiplied by ``1 − ambiguous`` (the reference is left as it is); only
    classes with instances in the reference are scored (false positives of absent classes never
    count); a class without predicted instances scores 0. Returns ``pq_<class>`` for the scored
    classes and ``pq`` = their mean (the leaderboard then averages over sub-images); ``pq`` is NaN
    when the reference has no instance at all.
    """
    out, scores = {}, []
    for c, ref in ref_instances.items():
        ref = np.asarray(ref)
        if not ref.any():
            continue
        pred = np.asarray(pred_instances.get(c, np.zeros_like(ref)))
        if ambiguous is not None:
            pred = np.where(ambiguous, 0, pred)
        out[f"pq_{c}"] = panoptic_quality(pred, ref)["pq"]
        scores.append(out[f"pq_{c}"])
    out["pq"] = float(np.mean(scores)) if scores else float("nan")
    return out
