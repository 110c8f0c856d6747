"""Challenge scores (issue 15, items 1-2): hand-computed cases and agreement with whole-volume
computations built directly from the reference packages the hosts call."""
import importlib.util
import math

import numpy as np
import pytest

from nnunet_ext.evaluation.challenges import (
    brats_lesion_wise, monusac_pq, octant_slices, panoptic_quality, topo_score_from_counts,
)

HAS_SD = importlib.util.find_spec("surface_distance") is not None
needs_sd = pytest.mark.skipif(not HAS_SD, reason="DeepMind surface-distance not installed "
                              "(pip install 'nnunet-ext[challenge]')")


def _has_betti():
    try:
        from nnunet_ext.evaluation.challenges import load_betti_matching

        load_betti_matching()
        return True
    except ImportError:
        return False


needs_betti = pytest.mark.skipif(not _has_betti(), reason="compiled Betti matching not installed "
                                 "(pip install 'nnunet-ext[topology]')")


# --- Vesuvius -------------------------------------------------------------------------------------

def test_octants_and_topo_score_rules():
    # the host's cuts: sizes differ by at most one, the first chunk is the longer
    assert [s[0] for s in octant_slices((5, 4, 4))[::4]] == [slice(0, 3), slice(3, 5)]
    assert len(octant_slices((5, 4, 4))) == 8
    # no reference feature: 0.5 / (p + 0.5); no feature at all in any dimension: 1
    assert topo_score_from_counts({0: (0, 3, 0), 1: (0, 0, 0), 2: (0, 0, 0)})[0] == pytest.approx(0.5 / 3.5)
    assert topo_score_from_counts({0: (0, 0, 0), 1: (0, 0, 0), 2: (0, 0, 0)})[0] == 1.0
    score, f1 = topo_score_from_counts({0: (2, 3, 2), 1: (1, 1, 2), 2: (0, 0, 0)})
    assert math.isnan(f1[2])
    assert score == pytest.approx((0.34 * 0.8 + 0.33 * 2 / 3) / 0.67)


def _sheet_with_hole():
    ref = np.zeros((24, 24, 24), np.uint8)
    ref[5, 2:10, 2:10] = 1
    ref[5, 5:7, 5:7] = 0  # a hole well inside the first octant: one tunnel (dimension 1)
    pred = ref.copy()
    pred[5, 5:7, 5:7] = 1  # the hole filled
    return pred, ref


@needs_sd
@needs_betti
def test_vesuvius_sheet_with_a_hole_hand_computed():
    from nnunet_ext.evaluation.challenges import vesuvius_leaderboard_score

    pred, ref = _sheet_with_hole()
    r = vesuvius_leaderboard_score(pred, ref)
    # dimension 1: g = 1, p = 0, m = 0 -> F1 0; dimensions 0 and 2 have no finite feature
    assert r["counts"] == {0: (0, 0, 0), 1: (0, 0, 1), 2: (0, 0, 0)}
    assert r["topo_score"] == 0.0
    assert r["surface_dice"] == 1.0  # every surfel within 2 voxels
    # VOI over the 64 union voxels: the reference splits the prediction's one segment 60 / 4
    h = -(60 / 64 * math.log2(60 / 64) + 4 / 64 * math.log2(4 / 64))
    assert r["voi"] == pytest.approx(h, abs=1e-12)
    assert r["leaderboard_score"] == pytest.approx(0.35 + 0.35 / (1 + 0.3 * h), abs=1e-12)
    # the ignore label (2 in the reference) is background in both volumes
    ref2, pred2 = ref.copy(), pred.copy()
    ref2[15:20, 15:20, 15:20] = 2
    pred2[15:20, 15:20, 15:20] = 1  # predicted only where the reference is ignored
    assert vesuvius_leaderboard_score(pred2, ref2)["leaderboard_score"] == pytest.approx(
        r["leaderboard_score"], abs=1e-12)


def _vesuvius_whole_volume(pred_seg, ref_seg):
    """The host's score written out from its definition, whole volumes, no cropping."""
    import cc3d
    import surface_distance as sd
    from skimage.metrics import variation_of_information

    from nnunet_ext.evaluation.challenges import load_betti_matching

    keep = ref_seg != 2
    p, r = (pred_seg != 0) & keep, (ref_seg != 0) & keep
    bm = load_betti_matching()
    m, pp, g = np.zeros(3), np.zeros(3), np.zeros(3)
    for s in octant_slices(p.shape):
        res = bm.compute_matching((~p[s]).astype(np.uint8).astype(float), (~r[s]).astype(np.uint8).astype(float))
        m += res.num_matched
        pp += np.asarray(res.num_matched) + res.num_unmatched_input1
        g += np.asarray(res.num_matched) + res.num_unmatched_input2
    f1 = {k: (2 * m[k] / (pp[k] + g[k]) if g[k] else 0.5 / (pp[k] + g[k] + 0.5))
          for k in range(3) if pp[k] + g[k]}
    w = {0: 0.34, 1: 0.33, 2: 0.33}
    topo = sum(w[k] * f1[k] for k in f1) / sum(w[k] for k in f1) if f1 else 1.0
    sdice = sd.compute_surface_dice_at_tolerance(sd.compute_surface_distances(r, p, (1, 1, 1)), 2.0)
    lr, lp = cc3d.connected_components(r, connectivity=26), cc3d.connected_components(p, connectivity=26)
    u = r | p
    voi = sum(variation_of_information(lr[u], lp[u]))
    return 0.3 * topo + 0.35 * sdice + 0.35 / (1 + 0.3 * voi)


@needs_sd
@needs_betti
@pytest.mark.parametrize("seed", [0, 1])
def test_vesuvius_equals_whole_volume_definition(seed):
    from _evaluation_reference import random_blobs
    from nnunet_ext.evaluation.challenges import vesuvius_leaderboard_score

    rng = np.random.default_rng(seed)
    shape = (20, 22, 18)
    ref = random_blobs(rng, shape, 0.2).astype(np.uint8)
    ref[random_blobs(rng, shape, 0.05) & (ref == 0)] = 2
    pred = random_blobs(rng, shape, 0.22).astype(np.uint8)
    got = vesuvius_leaderboard_score(pred, ref, workers=2)["leaderboard_score"]
    assert got == pytest.approx(_vesuvius_whole_volume(pred, ref), abs=1e-12)


def test_vesuvius_without_betti_matching_says_what_to_install(monkeypatch):
    import nnunet_ext.evaluation.challenges as ch

    def missing():
        raise ImportError("the Vesuvius TopoScore needs the compiled Betti matching: pip install "
                          "'nnunet-ext[topology]'")

    monkeypatch.setattr(ch, "load_betti_matching", missing)
    pred, ref = _sheet_with_hole()
    with pytest.raises(ImportError, match=r"nnunet-ext\[topology\]"):
        ch.vesuvius_leaderboard_score(pred, ref)


# --- BraTS ------------------------------------------------------------------------------------

def _brats_case():
    ref = np.zeros((40, 40, 40), np.uint8)
    ref[5:9, 5:9, 5:9] = 3      # lesion A: 64 voxels (> 50)
    ref[25:28, 25:28, 25:28] = 3  # lesion B: 27 voxels, below the threshold: excluded
    pred = np.zeros_like(ref)
    pred[5:9, 5:9, 5:9] = 3     # A found exactly
    pred[30:32, 5:7, 30:32] = 3  # a false positive, 8 voxels
    return pred, ref


@needs_sd
def test_brats2023_two_lesions_one_false_positive_one_below_threshold():
    pred, ref = _brats_case()
    et = brats_lesion_wise(pred, ref, year=2023)["ET"]
    assert (et["num_tp"], et["num_fp"], et["num_fn"]) == (1, 1, 0)
    assert et["lesion_dice"] == pytest.approx(0.5)       # (1 + 0) / (1 lesion + 1 FP)
    assert et["lesion_hd95"] == pytest.approx(374 / 2)   # (0 + 374) / 2
    assert et["legacy_dice"] == pytest.approx(2 * 64 / (72 + 91))
    import surface_distance as sd

    legacy = sd.compute_robust_hausdorff(sd.compute_surface_distances(ref == 3, pred == 3, (1, 1, 1)), 95)
    assert et["legacy_hd95"] == pytest.approx(legacy)
    # MET: threshold 2 voxels -> lesion B counts, missed: Dice 1/3, HD95 (0 + 374 + 374) / 3
    met = brats_lesion_wise(pred, ref, year=2023, subchallenge="MET")["ET"]
    assert (met["num_tp"], met["num_fp"], met["num_fn"]) == (1, 1, 1)
    assert met["lesion_dice"] == pytest.approx(1 / 3)
    assert met["lesion_hd95"] == pytest.approx(2 * 374 / 3)
    # both empty (no NETC anywhere): Dice 1, HD95 0
    tc = brats_lesion_wise(np.zeros_like(ref), np.zeros_like(ref), year=2023)["TC"]
    assert (tc["lesion_dice"], tc["lesion_hd95"], tc["legacy_dice"], tc["legacy_hd95"]) == (1, 0, 1, 0)


@needs_sd
def test_brats_lesions_merged_by_dilation_and_prediction_touching_the_dilated_lesion():
    ref = np.zeros((30, 30, 30), np.uint8)
    ref[5:10, 5:10, 5:10] = 2
    ref[5:10, 5:10, 13:18] = 2  # 3 voxels apart: one lesion after 3 dilations (GLI)
    pred = np.zeros_like(ref)
    pred[5:10, 5:10, 20:22] = 2  # touches only the dilated lesion: a true positive
    wt = brats_lesion_wise(pred, ref, year=2023)["WT"]
    assert (wt["num_tp"], wt["num_fp"], wt["num_fn"]) == (1, 0, 0)
    assert wt["lesion_dice"] == pytest.approx(0.0)
    # MEN dilates once: two lesions of 125 voxels, the prediction touches neither: FN 2, FP 1
    men = brats_lesion_wise(pred, ref, year=2023, subchallenge="MEN")["WT"]
    assert (men["num_tp"], men["num_fp"], men["num_fn"]) == (0, 1, 2)
    assert men["lesion_hd95"] == pytest.approx(374.0)


@needs_sd
def test_brats2024_gli_thresholds_penalty_and_small_prediction_lesions():
    pred, ref = _brats_case()
    pred[20, 20, 2] = 3  # a one-voxel prediction lesion: removed (<= 10 voxels for ET)
    res = brats_lesion_wise(pred, ref, year=2024)
    assert list(res) == ["WT", "TC", "NETC", "SNFH", "ET", "RC"]
    et = res["ET"]
    # B (27 voxels > 10) now counts and is missed; the 8-voxel FP is removed (<= 10 voxels)
    assert (et["num_tp"], et["num_fp"], et["num_fn"]) == (1, 0, 1)
    assert et["lesion_dice"] == pytest.approx(0.5)
    assert et["lesion_hd95"] == pytest.approx(337 / 2)
    with pytest.raises(ValueError, match="not reproduced"):
        brats_lesion_wise(pred, ref, year=2024, subchallenge="MET")


# --- MoNuSAC -----------------------------------------------------------------------------------

def test_monusac_pq_nuclei_with_one_ambiguous_region():
    ref1 = np.zeros((20, 20), np.int32)
    ref1[2:6, 2:6] = 1    # nucleus A (class 1)
    ref1[10:14, 2:6] = 2  # nucleus B (class 1), missed
    pred1 = np.zeros_like(ref1)
    pred1[2:6, 2:6] = 7   # matches A exactly
    pred1[14:18, 14:18] = 8  # inside the ambiguous region: masked, not a false positive
    ambiguous = np.zeros((20, 20), bool)
    ambiguous[13:19, 13:19] = True
    pred2 = np.zeros_like(ref1)
    pred2[2:4, 10:12] = 1  # class 2 predicted, absent from the reference: never counted
    r = monusac_pq({1: pred1, 2: pred2}, {1: ref1, 2: np.zeros_like(ref1)}, ambiguous)
    assert r == {"pq_1": pytest.approx(1 / 1.5), "pq": pytest.approx(1 / 1.5)}
    # without the mask the ambiguous nucleus is a false positive: 1 / (1 + 0.5 + 0.5)
    assert monusac_pq({1: pred1}, {1: ref1})["pq"] == pytest.approx(0.5)
    # a class without predicted instances scores 0; a reference without nuclei scores nothing
    assert monusac_pq({}, {1: ref1})["pq"] == 0.0
    assert math.isnan(monusac_pq({1: pred1}, {1: np.zeros_like(ref1)})["pq"])
    # IoU must exceed 0.5: exactly 0.5 is no match
    a = np.zeros((1, 4), int); a[0, :2] = 1
    b = np.zeros((1, 4), int); b[0, :4] = 1
    assert panoptic_quality(a, b) == {"pq": 0.0, "tp": 0, "fp": 1, "fn": 1, "sq": 0.0, "rq": 0.0}


# --- folder evaluation, CLI and compare --------------------------------------------------------

@needs_sd
def test_evaluate_challenge_cli_and_compare(tmp_path, capsys):
    import json

    import SimpleITK as sitk

    from nnunet_ext.cli import main

    pred, ref = _brats_case()
    for folder in ("ref", "a", "b"):
        (tmp_path / folder).mkdir()
    for i in range(3):
        for folder, arr in (("ref", ref), ("a", pred), ("b", ref if i else pred)):
            sitk.WriteImage(sitk.GetImageFromArray(arr), str(tmp_path / folder / f"c{i}.nii.gz"))
    dj = tmp_path / "dataset.json"
    dj.write_text(json.dumps({"labels": {"background": 0, "NETC": 1, "SNFH": 2, "ET": 3},
                              "file_ending": ".nii.gz", "channel_names": {"0": "t1"}, "numTraining": 3}))
    for folder in ("a", "b"):
        assert main(["evaluate", str(tmp_path / folder), str(tmp_path / "ref"), "-dj", str(dj),
                     "--challenge", "brats2023", "--bootstrap", "200"]) == 0
    summary = json.loads((tmp_path / "a" / "metrics_summary.json").read_text())
    assert summary["classes"]["ET"]["lesion_dice"]["mean"] == pytest.approx(0.5)
    assert summary["settings"]["challenge"] == "brats2023"
    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(out),
                 "--bootstrap", "200", "--no-plots"]) == 0
    report = (out / "report.md").read_text()
    assert "lesion_dice ↑" in report and "lesion_hd95 ↓" in report
    capsys.readouterr()


@needs_sd
def test_evaluate_brats2024_folder_mode_reports_nsd_and_relabels_touching_lesions(tmp_path):
    """Folder mode reads (z, y, x) arrays through nnU-Net's reader: the scores equal the Python
    function's on the nibabel-order arrays with axis_order="xyz" (the official scripts' layout)."""
    import csv
    import json

    import SimpleITK as sitk

    from _brats_reference_cases import cases
    from nnunet_ext.cli import main

    pred, ref, spacing = cases()["numbering"]          # x, y, z
    for folder, arr in (("ref", ref), ("pred", pred)):
        (tmp_path / folder).mkdir()
        image = sitk.GetImageFromArray(arr.transpose(2, 1, 0).copy())  # SimpleITK: z, y, x
        image.SetSpacing(spacing)
        sitk.WriteImage(image, str(tmp_path / folder / "c0.nii.gz"))
    dj = tmp_path / "dataset.json"
    dj.write_text(json.dumps({"labels": {"background": 0, "NETC": 1, "SNFH": 2, "ET": 3, "RC": 4},
                              "file_ending": ".nii.gz", "channel_names": {"0": "t1"}, "numTraining": 1}))
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref"), "-dj", str(dj),
                 "--challenge", "brats2024", "--bootstrap", "100"]) == 0
    rows = {r["class"]: r for r in csv.DictReader(open(tmp_path / "pred" / "metrics_per_case.csv"))}
    expected = brats_lesion_wise(pred, ref, spacing, year=2024, axis_order="xyz")
    assert set(rows) == set(expected)
    for region, values in expected.items():
        for key in ("lesion_dice", "lesion_nsd10", "legacy_hd95", "num_fn"):
            assert float(rows[region][key]) == pytest.approx(values[key]), (region, key)
    # the ET lesion touching two NETC lesions stays apart from E2 (the scripts' numbering)
    assert float(rows["ET"]["num_fn"]) == 1.0
