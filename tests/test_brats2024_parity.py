"""BraTS 2024 lesion-wise scores against the official scripts' own output.

The reference figures in ``data/brats2024_official_scores.json`` were produced by running the
official ``BraTS-2024-Metrics`` scripts (GLI, SSA, MEN) on the hand-built cases of
``_brats_reference_cases.py`` (provenance in the file's ``source``). They cover the relabelling
of touching lesions of different tissues (with a case where the script's lesion numbering
decides which lesions become one), prediction lesions merged by dilation and removed below the
threshold, NSD at 0.5 and 1.0, lesions at the array edge, anisotropic spacing, empty masks, and
the legacy HD95 that the GLI/SSA scripts compute from lesion label maps.
"""
import json
from pathlib import Path

import numpy as np
import pytest

from _brats_reference_cases import cases
from nnunet_ext.evaluation.challenges import (
    _relabel_by_touching, brats_lesion_wise, deepmind_hd95, label_map_hd95, medpy_nsd,
)
from test_challenge_scores import needs_sd

OFFICIAL = json.loads((Path(__file__).parent / "data" / "brats2024_official_scores.json").read_text())
CASES = cases()
PARAMS = [(sub, name) for sub, by_case in OFFICIAL["scores"].items() for name in by_case]


@needs_sd
@pytest.mark.parametrize("subchallenge,case", PARAMS)
@pytest.mark.parametrize("axis_order", ["xyz", "zyx"])
def test_every_score_equals_the_official_scripts(subchallenge, case, axis_order):
    pred, ref, spacing = CASES[case]
    if axis_order == "zyx":  # as nnU-Net's reader hands them over: axes and spacing reversed
        pred, ref, spacing = pred.transpose(2, 1, 0), ref.transpose(2, 1, 0), spacing[::-1]
    ours = brats_lesion_wise(pred, ref, spacing, year=2024, subchallenge=subchallenge,
                             axis_order=axis_order)
    official = OFFICIAL["scores"][subchallenge][case]
    assert set(ours) == set(official)
    for region, values in official.items():
        for key, expected in values.items():
            assert ours[region][key] == pytest.approx(expected, abs=1e-9), (region, key)


def test_reference_cases_exercise_what_they_claim():
    """The parity test proves something only if the cases hit each rule: relabelling changes
    a score, the numbering case depends on the scan order, label-valued HD95 differs."""
    gli = OFFICIAL["scores"]["GLI"]
    # two ET lesions on one NETC core count as one lesion (half found: Dice < 1 but > 0.5)
    assert gli["two_et_one_core"]["ET"]["num_fn"] == 0 and 0.5 < gli["two_et_one_core"]["ET"]["lesion_dice"] < 1
    # ET lesion E joins NETC lesion Na (numbered first in the script's scan), E2 stays apart
    assert (gli["numbering"]["ET"]["num_tp"], gli["numbering"]["ET"]["num_fn"]) == (1, 1)


def test_touching_lesions_take_the_smallest_touched_label_and_do_not_chain():
    a = np.zeros((1, 3, 9), np.int64)
    b = np.zeros_like(a)
    a[0, 1, 0], a[0, 1, 4], a[0, 1, 8] = 1, 2, 3   # three lesions of tissue A
    b[0, 1, 1:4] = 5   # B lesion 5 touches A1 and A2
    b[0, 1, 5:8] = 7   # B lesion 7 touches A2 and A3
    out = _relabel_by_touching(a, b)
    # A1 and A2 share their smallest touched B lesion (5) and merge; A3's smallest is 7: apart,
    # although A2 and A3 both touch 7
    assert out[0, 1, 0] == out[0, 1, 4] != out[0, 1, 8]
    assert len(np.unique(out[out > 0])) == 2
    # diagonal (18-neighbourhood) contact counts, corner (26-only) contact does not
    c = np.zeros((3, 3, 3), np.int64); d = np.zeros_like(c)
    c[0, 0, 0], c[2, 2, 0] = 1, 2; d[1, 1, 0] = 4        # edge-diagonal to both: 18-neighbours
    assert len(np.unique(_relabel_by_touching(c, d)[c > 0])) == 1
    c[2, 2, 0], c[2, 2, 2] = 0, 2                          # now 2 is a corner (26-)neighbour only
    d[1, 1, 0], d[1, 1, 1] = 0, 4
    assert _relabel_by_touching(c, d)[2, 2, 2] == 2 and _relabel_by_touching(c, d)[0, 0, 0] == 1


def test_medpy_nsd_hand_case():
    # two 4x4x4 cubes, the prediction shifted by 2 voxels along x: border voxels are the 56
    # surface voxels of each cube (6-neighbourhood erosion leaves the 2x2x2 core); the
    # fractions within 1 mm are counted by brute force over the border voxels
    ref = np.zeros((12, 8, 8), bool); ref[2:6, 2:6, 2:6] = True
    pred = np.zeros_like(ref); pred[4:8, 2:6, 2:6] = True
    from scipy import ndimage
    six = ndimage.generate_binary_structure(3, 1)
    bp = pred ^ ndimage.binary_erosion(pred, six)
    br = ref ^ ndimage.binary_erosion(ref, six)
    assert bp.sum() == br.sum() == 56
    # distances of the prediction's border voxels to the reference's border, by brute force
    pr = np.argwhere(br)
    d = np.array([np.min(np.linalg.norm(pr - v, axis=1)) for v in np.argwhere(bp)])
    q = np.array([np.min(np.linalg.norm(np.argwhere(bp) - v, axis=1)) for v in pr])
    expected = ((d <= 1).mean() + (q <= 1).mean()) / 2
    assert medpy_nsd(pred, ref, (1, 1, 1), 1.0) == pytest.approx(expected, abs=1e-7)
    assert 0 < expected < 1
    assert medpy_nsd(ref, ref, (1, 1, 1), 0.5) == pytest.approx(1.0, abs=1e-7)
    assert medpy_nsd(np.zeros_like(ref), ref, (1, 1, 1), 1.0) == 0.0
    assert medpy_nsd(np.zeros_like(ref), np.zeros_like(ref), (1, 1, 1), 1.0) == 1.0


@needs_sd
def test_label_map_hd95_is_the_mask_hd95_for_zero_one_maps_and_differs_for_lesion_numbers():
    pred, ref, spacing = CASES["touching_chain"]
    p, r = np.isin(pred, (1, 2, 3)), np.isin(ref, (1, 2, 3))
    assert label_map_hd95(p.astype(np.int64), r.astype(np.int64), spacing) == \
        pytest.approx(deepmind_hd95(p, r, spacing))
    # the false positive as lesion 2: other surfel codes, another HD95 (what the script reports)
    import cc3d
    pl = cc3d.connected_components(p, connectivity=26).astype(np.int64)
    assert pl.max() == 2
    assert label_map_hd95(pl, r.astype(np.int64), spacing) != pytest.approx(deepmind_hd95(p, r, spacing))
