"""Synthetic cross-validation folders for the post-processing tests (imported by the other
``test_postprocessing_*`` modules) whose best post-processing is known by construction."""
from __future__ import annotations

import json
import os

import numpy as np
import SimpleITK as sitk

SPACING_ZYX = (2.0, 1.0, 1.0)
SHAPE = (12, 24, 24)
LABEL_DJ = {"labels": {"background": 0, "liver": 1, "tumour": 2}, "file_ending": ".nii.gz",
            "channel_names": {"0": "CT"}, "numTraining": 6}
REGION_DJ = {"labels": {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3],
                        "enhancing tumor": [3]},
             "regions_class_order": [1, 2, 3], "file_ending": ".nii.gz",
             "channel_names": {"0": "T1"}, "numTraining": 6}
BINARY_DJ = {"labels": {"background": 0, "vessel": 1}, "file_ending": ".nii.gz",
             "channel_names": {"0": "MR"}, "numTraining": 6}
PLANS = {"image_reader_writer": "SimpleITKIO"}


def write_seg(path, arr, spacing_zyx=SPACING_ZYX) -> None:
    """Write a label map with SimpleITK (spacing given in array order, stored as x, y, z)."""
    img = sitk.GetImageFromArray(np.asarray(arr).astype(np.uint8))
    img.SetSpacing(tuple(float(s) for s in spacing_zyx[::-1]))
    img.SetOrigin((3.0, -2.0, 1.5))
    sitk.WriteImage(img, str(path))


def read_seg(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def results_layout(root, dataset_json: dict, n_folds: int = 2):
    """``nnUNet_results/Dataset900_PP/nnUNetTrainer__nnUNetPlans__3d_fullres`` with fold
    validation folders, ``dataset.json`` and ``plans.json``; ``gt`` for the references."""
    res = root / "nnUNet_results" / "Dataset900_PP" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    vals = []
    for f in range(n_folds):
        v = res / f"fold_{f}" / "validation"
        v.mkdir(parents=True)
        vals.append(v)
    (res / "dataset.json").write_text(json.dumps(dataset_json))
    (res / "plans.json").write_text(json.dumps(PLANS))
    gt = root / "gt"
    gt.mkdir()
    return res, vals, gt


def label_case(i: int):
    """Liver box + 1..3 separate tumour cubes. Prediction: the reference plus liver false
    positives (2 and 4 voxels), tumour false positives (1 and 2 voxels) and a one-voxel cavity
    in the first tumour cube. Best: keep the largest liver component, remove tumour components
    below a size between 3 and 26 voxels, fill the tumour's holes."""
    ref = np.zeros(SHAPE, np.uint8)
    ref[2:10, 2:14, 2:14] = 1
    for j in range(1 + i % 3):
        ref[1 + 4 * j: 4 + 4 * j, 17:20, 17:20] = 2
    pred = ref.copy()
    pred[2, 18, 18] = 0  # cavity in the first tumour cube
    pred[0, 21, 1:3] = 1  # 2-voxel liver false positive
    pred[5:7, 21, 5:7] = 1  # 4-voxel liver false positive
    pred[10, 21, 1] = 2  # 1-voxel tumour false positive
    pred[5, 22, 10:12] = 2  # 2-voxel tumour false positive
    return pred, ref


def make_label_cv(root, n_cases: int = 6):
    res, vals, gt = results_layout(root, LABEL_DJ)
    arrays = {}
    for i in range(n_cases):
        pred, ref = label_case(i)
        name = f"case_{i:03d}"
        write_seg(vals[i % len(vals)] / f"{name}.nii.gz", pred)
        write_seg(gt / f"{name}.nii.gz", ref)
        arrays[name] = (pred, ref)
    return res, gt, arrays


def region_case(i: int):
    """BraTS-like nesting: whole tumour (label 1) ⊃ core (2) ⊃ enhancing (3). The probabilities
    are confident and correct except for a cluster where only the enhancing channel fires
    (p = 0.8) outside the whole tumour; nnU-Net's painting makes it label 3, i.e. a false
    positive of all three regions. Best: start from the probabilities and intersect."""
    ref = np.zeros(SHAPE, np.uint8)
    ref[2:10, 3:15, 3:15] = 1
    ref[3:9, 5:12, 5:12] = 2
    ref[4:8, 6:10, 6:10 + i % 2] = 3
    probs = np.full((3,) + SHAPE, 0.1, np.float32)
    probs[0][ref >= 1] = 0.9
    probs[1][ref >= 2] = 0.9
    probs[2][ref == 3] = 0.9
    probs[2, 4:7, 18:21, 18:21] = 0.8  # enhancing outside the tumour
    pred = np.zeros(SHAPE, np.uint8)
    for ch, lab in enumerate((1, 2, 3)):  # nnU-Net's regions_class_order painting
        pred[probs[ch] > 0.5] = lab
    return pred, ref, probs


def make_region_cv(root, n_cases: int = 6, npz: bool = True):
    res, vals, gt = results_layout(root, REGION_DJ)
    for i in range(n_cases):
        pred, ref, probs = region_case(i)
        name = f"case_{i:03d}"
        v = vals[i % len(vals)]
        write_seg(v / f"{name}.nii.gz", pred)
        write_seg(gt / f"{name}.nii.gz", ref)
        if npz:
            np.savez_compressed(v / f"{name}.npz", probabilities=probs.astype(np.float16))
    return res, gt


def threshold_case(i: int):
    """A box whose rim is predicted with p = 0.45 (true foreground) inside a shell with
    p = 0.35 (background). Best: threshold 0.4."""
    ref = np.zeros(SHAPE, np.uint8)
    ref[2:10, 4:16 + i % 3, 4:16] = 1
    p1 = np.full(SHAPE, 0.05, np.float32)
    p1[1:11, 3:17 + i % 3, 3:17] = 0.35
    p1[ref == 1] = 0.45
    p1[3:9, 5:15 + i % 3, 5:15] = 0.95
    probs = np.stack([1 - p1, p1])
    return probs.argmax(0).astype(np.uint8), ref, probs


def make_threshold_folder(root, n_cases: int = 6):
    pred_dir, gt = root / "pred", root / "gt"
    pred_dir.mkdir()
    gt.mkdir()
    for i in range(n_cases):
        pred, ref, probs = threshold_case(i)
        write_seg(pred_dir / f"case_{i:03d}.nii.gz", pred)
        write_seg(gt / f"case_{i:03d}.nii.gz", ref)
        np.savez_compressed(pred_dir / f"case_{i:03d}.npz", probabilities=probs.astype(np.float16))
    (pred_dir / "dataset.json").write_text(json.dumps(BINARY_DJ))
    return pred_dir, gt


def test_fixtures_have_the_intended_defects(tmp_path):
    pred, ref = label_case(0)
    assert ((pred == 1) & (ref != 1)).sum() == 6 and ((pred == 2) & (ref != 2)).sum() == 3
    pred, ref, probs = region_case(0)
    assert ((pred == 3) & (ref == 0)).sum() == 27
    pred, ref, _ = threshold_case(0)
    assert ((ref == 1) & (pred == 0)).sum() > 0 and ((pred == 1) & (ref == 0)).sum() == 0
    assert sorted(os.listdir(make_threshold_folder(tmp_path)[0]))[0] == "case_000.nii.gz"
