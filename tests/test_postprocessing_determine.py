"""`determine` on synthetic cross-validation folders whose best post-processing is known."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from _postprocessing_fixtures import (
    BINARY_DJ, make_label_cv, make_region_cv, make_threshold_folder, write_seg,
)

from nnunet_ext.postprocessing.determine import (
    candidate_steps, determine_from_folder, determine_postprocessing, parse_objective,
)
from nnunet_ext.postprocessing.folder import Case, find_cases
from nnunet_ext.postprocessing.report import OUTPUT_FILES, write_determination


def _ops(det):
    return [(s["op"], tuple(s.get("classes") or ())) for s in det.pipeline["steps"]]


def test_label_dataset_finds_the_known_pipeline(tmp_path):
    res, gt, _ = make_label_cv(tmp_path)
    det, dj = determine_from_folder(str(res), gt_folder=str(gt), progress=False)
    assert dj == os.path.join(str(res), "dataset.json")
    assert _ops(det) == [("keep_largest_components", ("liver",)),
                         ("remove_small_components", ("tumour",)),
                         ("fill_holes", ("tumour",))]
    steps = det.pipeline["steps"]
    assert steps[0]["k"] == 1 and 2 < steps[1]["min_voxels"] <= 26  # FPs ≤ 2, true cubes ≥ 26
    assert det.final == {"liver": 1.0, "tumour": 1.0, "all": 1.0}
    assert det.baseline["tumour"] < det.baseline["liver"] < 1.0
    # nnU-Net's keep-largest-of-all-foreground was tried first and rejected (it deletes tumours)
    first = det.tried[0]
    assert first["target"] == "liver, tumour" and not first["accepted"]
    accepted = det.accepted
    assert [r["cases_changed"] for r in accepted] == [6, 6, 6]
    assert accepted[0]["removed"] == 6 * 6 and accepted[2]["added"] == 6  # 2+4 voxels; cavities
    assert det.pipeline["input"] == "segmentation" and det.probabilities is False


def test_region_dataset_with_probabilities_enforces_nesting_first(tmp_path):
    res, gt = make_region_cv(tmp_path)
    det, _ = determine_from_folder(str(res), gt_folder=str(gt), progress=False)
    assert det.pipeline["input"] == "probabilities"
    assert det.pipeline["steps"] == [{"op": "enforce_nesting", "rule": "intersect"}]
    assert det.tried[0]["op"] == "enforce_nesting" and det.tried[0]["accepted"]
    union = det.tried[1]
    assert union["step"]["rule"] == "union" and union["gain"] == 0.0  # = nnU-Net's own painting
    assert det.final["all"] == 1.0 and det.baseline["enhancing tumor"] < 0.9


def test_region_dataset_without_probabilities_keeps_largest_whole_tumour(tmp_path):
    res, gt = make_region_cv(tmp_path, npz=False)
    det, dj = determine_from_folder(str(res), gt_folder=str(gt), progress=False)
    assert _ops(det) == [("keep_largest_components", ("whole tumor",))]
    assert det.final["all"] == 1.0
    assert any("nested by construction" in n for n in det.notes)
    out = tmp_path / "out"
    paths = write_determination(det, str(out), dj)
    assert set(paths) == {"pipeline", "report", "determination", "pkl"}  # WT is expressible


def test_threshold_chosen_from_probabilities(tmp_path):
    pred, gt = make_threshold_folder(tmp_path)
    det, _ = determine_from_folder(str(pred), gt_folder=str(gt), progress=False)
    assert det.pipeline["steps"] == [{"op": "threshold", "classes": ["vessel"], "threshold": 0.4}]
    assert det.final["vessel"] == 1.0
    det, _ = determine_from_folder(str(pred), gt_folder=str(gt), progress=False,
                                   use_probabilities=False)
    assert det.pipeline["steps"] == [] and not det.probabilities


def test_metric_changes_the_choice(tmp_path):
    # a vessel predicted in two pieces (a gap): the small piece is true foreground, so Dice
    # keeps it, while the Betti-0 error (one component in the reference) removes it
    pred_dir, gt = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt.mkdir()
    for i in range(4):
        ref = np.zeros((5, 5, 30), np.uint8)
        ref[2, 2, 2:28] = 1
        pred = ref.copy()
        pred[2, 2, 20 + i] = 0
        write_seg(pred_dir / f"v{i}.nii.gz", pred)
        write_seg(gt / f"v{i}.nii.gz", ref)
    (pred_dir / "dataset.json").write_text(json.dumps(BINARY_DJ))
    dice, _ = determine_from_folder(str(pred_dir), gt_folder=str(gt), progress=False)
    assert dice.pipeline["steps"] == []
    betti, _ = determine_from_folder(str(pred_dir), gt_folder=str(gt), progress=False,
                                     metric="betti_0_error")
    assert _ops(betti) == [("keep_largest_components", ("vessel",))]
    assert betti.baseline["vessel"] == 1.0 and betti.final["vessel"] == 0.0
    both, _ = determine_from_folder(str(pred_dir), gt_folder=str(gt), progress=False,
                                    metric="dice=1,betti_0_error=0.01")
    assert both.pipeline["steps"] == []  # 0.01 per component is worth less than the lost Dice


def test_objective_parsing():
    assert parse_objective("dice") == {"dice": 1.0}
    assert parse_objective("dice,cldice") == {"dice": 0.5, "cldice": 0.5}
    assert parse_objective("dice=0.7, betti_0_error=0.05") == {"dice": 0.7, "betti_0_error": 0.05}
    with pytest.raises(ValueError, match=r"unknown metric\(s\) \['dise'\]"):
        parse_objective("dise")
    with pytest.raises(ValueError, match="positive"):
        parse_objective("dice=-1")


def test_candidates_use_volume_when_spacings_differ():
    sizes = [np.array([100, 2, 5]), np.array([80, 1])]
    c = candidate_steps(["liver"], sizes, [1.0, 8.0], same_spacing=False, probabilities=False)
    vols = [s["min_volume"] for s in c if s["op"] == "remove_small_components"]
    assert vols and all("min_voxels" not in s or s["min_voxels"] is None for s in c)
    assert [s["k"] for s in c if s["op"] == "keep_largest_components"] == [1, 2]
    c = candidate_steps(["liver"], sizes, [1.0, 1.0], same_spacing=True, probabilities=True,
                        done=("keep_largest_components",), thresholds=(0.45,))
    assert [s["op"] for s in c][0] == "threshold" and "keep_largest_components" not in [s["op"] for s in c]


def test_bad_input_is_named(tmp_path):
    res, gt, arrays = make_label_cv(tmp_path)
    # a prediction without a reference
    os.remove(gt / "case_003.nii.gz")
    with pytest.raises(FileNotFoundError, match="case_003.nii.gz"):
        determine_from_folder(str(res), gt_folder=str(gt), progress=False)
    # mismatched shapes
    write_seg(gt / "case_003.nii.gz", np.zeros((3, 4, 5), np.uint8))
    with pytest.raises(ValueError, match=r"case_003.*shape \(12, 24, 24\).*shape \(3, 4, 5\)"):
        determine_from_folder(str(res), gt_folder=str(gt), progress=False)
    with pytest.raises(ValueError, match="not an nnU-Net results folder"):
        determine_from_folder(str(gt), progress=False)
    with pytest.raises(FileNotFoundError, match="have no .npz"):
        cases = find_cases(str(res / "fold_0" / "validation"), str(gt), ".nii.gz")
        determine_postprocessing(cases, str(res / "dataset.json"), use_probabilities=True,
                                 progress=False)
    with pytest.raises(FileNotFoundError, match="without reference"):
        determine_postprocessing([Case("x", "x.nii.gz", None, None)], str(res / "dataset.json"))


def test_written_files_and_no_overwrite(tmp_path):
    res, gt, _ = make_label_cv(tmp_path)
    det, dj = determine_from_folder(str(res), gt_folder=str(gt), progress=False)
    out = tmp_path / "pp"
    paths = write_determination(det, str(out), dj)
    assert set(os.listdir(out)) == {"pipeline.json", "report.md", "determination.json"}
    assert "pkl" not in paths  # remove_small / fill_holes have no nnU-Net equivalent
    report = (out / "report.md").read_text()
    assert "| 1 | liver | keep_largest_components | k=1 |" in report
    assert "no postprocessing.pkl for nnU-Net: steps[1] (remove_small_components)" in report
    saved = json.loads((out / "determination.json").read_text())
    assert saved["pipeline"] == json.loads((out / "pipeline.json").read_text())
    before = (out / "report.md").stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="pipeline.json"):
        write_determination(det, str(out), dj)
    assert (out / "report.md").stat().st_mtime_ns == before
    assert sorted(os.listdir(out)) == sorted(f for f in OUTPUT_FILES if f != "postprocessing.pkl")


def test_parallel_workers_give_the_same_result(tmp_path):
    res, gt, _ = make_label_cv(tmp_path)
    serial, _ = determine_from_folder(str(res), gt_folder=str(gt), progress=False)
    parallel, _ = determine_from_folder(str(res), gt_folder=str(gt), progress=False, num_processes=2)
    assert parallel.pipeline == serial.pipeline and parallel.tried == serial.tried


def test_ignore_label_voxels_do_not_count(tmp_path):
    # false positives that lie entirely under the ignore label cost nothing, so removing them
    # gains nothing; outside it they are removed
    dj = {"labels": {"background": 0, "vessel": 1, "ignore": 2}, "file_ending": ".nii.gz"}
    for where, expected in (("ignored", []), ("visible", [("keep_largest_components", ("vessel",))])):
        pred_dir, gt = tmp_path / where / "pred", tmp_path / where / "gt"
        pred_dir.mkdir(parents=True)
        gt.mkdir()
        for i in range(3):
            ref = np.zeros((6, 10, 10), np.uint8)
            ref[1:5, 1:5, 1:5] = 1
            ref[:, 7:, 7:] = 2 if where == "ignored" else 0
            pred = (ref == 1).astype(np.uint8)
            pred[2:4, 8, 8:10] = 1  # a 4-voxel false positive
            write_seg(pred_dir / f"c{i}.nii.gz", pred)
            write_seg(gt / f"c{i}.nii.gz", ref)
        (pred_dir / "dataset.json").write_text(json.dumps(dj))
        det, _ = determine_from_folder(str(pred_dir), gt_folder=str(gt), progress=False)
        assert _ops(det) == expected
        if where == "ignored":
            assert det.baseline["vessel"] == 1.0
