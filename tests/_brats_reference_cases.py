"""Hand-built BraTS cases for the parity test against the official 2024 scripts; arrays in
nibabel (x, y, z) order, as the scripts read them, with the voxel spacing."""
import numpy as np


def box(a, lo, hi, v):
    a[tuple(slice(l, h) for l, h in zip(lo, hi))] = v


def cases():
    """name -> (prediction, reference, spacing)."""
    out = {}
    # 1. one NETC core with two ET lesions on opposite sides (separate lesions after 3
    #    dilations), the prediction finds one ET and the core; SNFH shell around part of it
    ref = np.zeros((48, 40, 36), np.uint8); pred = np.zeros_like(ref)
    box(ref, (10, 10, 10), (22, 18, 18), 1)           # NETC core
    box(ref, (22, 11, 11), (25, 17, 17), 3)           # ET right, touching the core
    box(ref, (6, 11, 11), (10, 17, 17), 3)            # ET left, touching the core
    box(ref, (10, 18, 10), (22, 22, 18), 2)           # SNFH beside the core
    box(pred, (10, 10, 10), (22, 18, 18), 1)
    box(pred, (22, 11, 11), (25, 17, 17), 3)          # right ET found, left missed
    box(pred, (11, 18, 10), (21, 21, 18), 2)
    out["two_et_one_core"] = (pred, ref, (1.0, 1.0, 1.0))
    # 2. two NETC lesions N1, N2 with ET between and beside them (one ET lesion touching both);
    #    the prediction misses part of the ET and has an ET false positive far away
    ref = np.zeros((60, 30, 30), np.uint8); pred = np.zeros_like(ref)
    box(ref, (5, 10, 10), (15, 18, 18), 1)            # N1
    box(ref, (15, 10, 10), (18, 18, 18), 3)           # ET right of N1
    box(ref, (5, 18, 10), (15, 21, 18), 3)            # ET between N1 and N2
    box(ref, (5, 21, 10), (15, 26, 18), 1)            # N2 above E2
    pred[:] = ref
    box(pred, (15, 10, 10), (18, 18, 18), 0)          # the ET right of N1 missed
    box(pred, (40, 5, 5), (46, 11, 11), 3)            # an ET false positive
    out["touching_chain"] = (pred, ref, (1.0, 1.0, 1.0))
    # 3. RC (label 4) touching NETC, SNFH touching everything, anisotropic spacing
    ref = np.zeros((40, 40, 24), np.uint8); pred = np.zeros_like(ref)
    box(ref, (8, 8, 6), (16, 16, 14), 4)
    box(ref, (16, 8, 6), (22, 16, 14), 1)
    box(ref, (8, 16, 6), (22, 24, 14), 2)
    box(ref, (28, 28, 4), (34, 34, 10), 2)            # a second SNFH lesion, apart
    box(pred, (8, 8, 6), (15, 16, 14), 4)
    box(pred, (15, 8, 6), (22, 16, 14), 1)
    box(pred, (8, 16, 6), (22, 23, 14), 2)
    box(pred, (30, 5, 15), (33, 8, 18), 2)            # SNFH false positive, 27 voxels
    box(pred, (36, 36, 20), (38, 38, 22), 3)          # tiny ET prediction, 8 voxels
    out["rc_and_spacing"] = (pred, ref, (1.0, 1.0, 1.5))
    # 4. small reference lesions near the thresholds, prediction lesions merged by dilation
    ref = np.zeros((40, 40, 30), np.uint8); pred = np.zeros_like(ref)
    box(ref, (5, 5, 5), (8, 8, 7), 3)                 # 18 voxels
    box(ref, (20, 20, 5), (25, 25, 7), 3)             # 50 voxels
    box(ref, (20, 5, 20), (26, 11, 22), 1)            # 72 voxels NETC
    box(pred, (5, 5, 5), (8, 8, 7), 3)
    box(pred, (20, 20, 5), (22, 25, 7), 3)            # two pieces 2 apart: merged by dilation
    box(pred, (24, 20, 5), (25, 25, 7), 3)
    box(pred, (30, 30, 25), (33, 33, 28), 1)          # NETC false positive, 27 voxels
    out["thresholds"] = (pred, ref, (1.0, 1.0, 1.0))
    # 5. empty prediction, and 6. both empty
    ref = np.zeros((30, 30, 30), np.uint8); box(ref, (5, 5, 5), (15, 15, 15), 2); box(ref, (8, 8, 8), (12, 12, 12), 3)
    out["empty_prediction"] = (np.zeros_like(ref), ref, (1.0, 1.0, 1.0))
    out["both_empty"] = (np.zeros((20, 20, 20), np.uint8), np.zeros((20, 20, 20), np.uint8), (1.0, 1.0, 1.0))
    # 7. a lesion touching the array edge, shifted prediction
    ref = np.zeros((32, 32, 32), np.uint8); pred = np.zeros_like(ref)
    box(ref, (0, 10, 10), (10, 20, 20), 2); box(ref, (0, 12, 12), (6, 18, 18), 3); box(ref, (0, 14, 14), (3, 16, 16), 1)
    box(pred, (0, 11, 10), (11, 21, 20), 2); box(pred, (0, 13, 12), (7, 19, 18), 3); box(pred, (0, 15, 14), (3, 17, 16), 1)
    out["edge_shift"] = (pred, ref, (1.0, 1.0, 1.0))
    # 8. lesion numbering decides the merge: ET lesion E touches NETC lesions Na and Nb, E2
    #    touches Nb only; E joins the lower-numbered of Na / Nb
    ref = np.zeros((40, 20, 40), np.uint8)
    box(ref, (2, 5, 28), (6, 10, 34), 1)              # Na: small x, large z
    box(ref, (24, 5, 2), (38, 10, 8), 1)              # Nb: large x, small z
    box(ref, (6, 5, 28), (27, 10, 31), 3)             # E, bar along x from Na
    box(ref, (24, 5, 8), (27, 10, 31), 3)             # E, bar along z down to Nb
    box(ref, (34, 5, 8), (38, 10, 11), 3)             # E2 on Nb, far from E
    pred = ref.copy()
    box(pred, (34, 5, 8), (38, 10, 11), 0)            # E2 missed
    out["numbering"] = (pred, ref, (1.0, 1.0, 1.0))
    return out
