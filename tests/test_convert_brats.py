"""BraTS 2021/2023/2024 conversion, incl. equivalence with nnU-Net's own Dataset137_BraTS21 conversion."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from _conversion_fixtures import BRATS_2021_MODALITIES, make_brats


@pytest.fixture
def raw_root(tmp_path):
    root = tmp_path / "nnUNet_raw"
    root.mkdir()
    return root


def _nnunet_dataset137(src, out):
    """What nnU-Net's Dataset137_BraTS21 script does, called through its own functions."""
    from nnunetv2.dataset_conversion.Dataset137_BraTS21 import copy_BraTS_segmentation_and_convert_labels_to_nnUNet
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    (out / "imagesTr").mkdir(parents=True)
    (out / "labelsTr").mkdir()
    cases = sorted(p.name for p in src.iterdir() if p.name.startswith("BraTS"))
    for c in cases:
        for i, m in enumerate(BRATS_2021_MODALITIES):
            shutil.copy(src / c / f"{c}_{m}.nii.gz", out / "imagesTr" / f"{c}_{i:04d}.nii.gz")
        copy_BraTS_segmentation_and_convert_labels_to_nnUNet(str(src / c / f"{c}_seg.nii.gz"),
                                                             str(out / "labelsTr" / f"{c}.nii.gz"))
    generate_dataset_json(str(out), channel_names={0: "T1", 1: "T1ce", 2: "T2", 3: "Flair"},
                          labels={"background": 0, "whole tumor": (1, 2, 3), "tumor core": (2, 3),
                                  "enhancing tumor": (3,)},
                          num_training_cases=len(cases), file_ending=".nii.gz", regions_class_order=(1, 2, 3))
    return cases


def _geometry(img):
    return img.GetSize(), img.GetSpacing(), img.GetOrigin(), img.GetDirection()


def test_brats2021_identical_to_nnunet_dataset137(tmp_path, raw_root):
    import SimpleITK as sitk
    from nnunet_ext.dataset_conversion.brats import convert_brats

    src = make_brats(tmp_path / "BraTS2021_Training_Data", 2021, n_patients=3)
    convert_brats(src, 137, year=2021, raw_root=raw_root, progress=False)  # verifies with nnU-Net
    ours = raw_root / "Dataset137_BraTS2021"
    ref = tmp_path / "reference" / "Dataset137_BraTS2021"
    cases = _nnunet_dataset137(src, ref)

    ds_ours = json.loads((ours / "dataset.json").read_text())
    ds_ref = json.loads((ref / "dataset.json").read_text())
    for key in ("channel_names", "labels", "regions_class_order", "file_ending", "numTraining"):
        assert ds_ours[key] == ds_ref[key], key
    assert sorted(p.name for p in (ours / "imagesTr").iterdir()) == sorted(p.name for p in (ref / "imagesTr").iterdir())
    for c in cases:
        for i in range(4):
            name = f"{c}_{i:04d}.nii.gz"
            a, b = sitk.ReadImage(str(ours / "imagesTr" / name)), sitk.ReadImage(str(ref / "imagesTr" / name))
            assert _geometry(a) == _geometry(b)
            assert np.array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
        a, b = sitk.ReadImage(str(ours / "labelsTr" / f"{c}.nii.gz")), sitk.ReadImage(str(ref / "labelsTr" / f"{c}.nii.gz"))
        assert _geometry(a) == _geometry(b)
        la, lb = sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b)
        assert np.array_equal(la, lb) and set(np.unique(la)) == {0, 1, 2, 3}


def _paint_regions(seg, labels, order):
    """Encode a label map as region masks, then decode with nnU-Net's LabelManager."""
    import torch
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    lm = LabelManager(labels, regions_class_order=order)
    regions = [r for r in lm.foreground_regions]
    probs = np.stack([np.isin(seg, r).astype(np.float32) for r in regions])
    return np.asarray(lm.convert_probabilities_to_segmentation(torch.from_numpy(probs)))


@pytest.mark.parametrize("year", [2021, 2023])
def test_regions_class_order_round_trips(year):
    from nnunet_ext.dataset_conversion.brats import get_convention

    conv = get_convention(year)
    seg = np.array([0, 1, 2, 3, 3, 2, 1, 0])
    painted = _paint_regions(seg, conv.labels, conv.regions_class_order)
    assert np.array_equal(painted, seg)


def test_brats2023_order_123_would_not_round_trip():
    from nnunet_ext.dataset_conversion.brats import get_convention

    labels = get_convention(2023).labels
    seg = np.array([0, 1, 2, 3])
    assert not np.array_equal(_paint_regions(seg, labels, (1, 2, 3)), seg)


def test_brats2023_timepoints_grouped_by_patient(tmp_path, raw_root):
    import SimpleITK as sitk
    from nnunet_ext.dataset_conversion.brats import convert_brats

    src = make_brats(tmp_path / "ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData", 2023, n_patients=4, timepoints=2)
    report = convert_brats(src, 223, year=2023, raw_root=raw_root, progress=False, n_folds=2, seed=1)
    out = raw_root / "Dataset223_BraTS2023"
    ds = json.loads((out / "dataset.json").read_text())
    assert ds["labels"]["tumor core"] == [1, 3] and ds["regions_class_order"] == [2, 1, 3]
    assert ds["channel_names"] == {"0": "T1", "1": "T1C", "2": "T2W", "3": "T2F"}
    # labels kept as they are
    c = "BraTS-GLI-00001-001"
    raw = sitk.GetArrayFromImage(sitk.ReadImage(str(src / c / f"{c}-seg.nii.gz")))
    conv = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "labelsTr" / f"{c}.nii.gz")))
    assert np.array_equal(raw, conv)
    # channel order t1n, t1c, t2w, t2f
    assert (out / "imagesTr" / f"{c}_0003.nii.gz").read_bytes() == (src / c / f"{c}-t2f.nii.gz").read_bytes()
    splits = json.loads((out / "splits_final.json").read_text())
    assert len(splits) == 2
    for s in splits:
        patients_val = {v.rsplit("-", 1)[0] for v in s["val"]}
        patients_train = {v.rsplit("-", 1)[0] for v in s["train"]}
        assert not patients_val & patients_train
        assert len(s["val"]) == 4
    assert report.num_training == 8


def test_brats2024_plain_labels_with_resection_cavity_and_test_cases(tmp_path, raw_root):
    from nnunet_ext.dataset_conversion.brats import convert_brats

    src = make_brats(tmp_path / "train", 2024, n_patients=2)
    val = make_brats(tmp_path / "val", 2024, n_patients=1, seed=3, first_patient=100)
    for p in val.iterdir():
        (p / f"{p.name}-seg.nii.gz").unlink()  # validation data come without segmentations
    report = convert_brats(src, 224, year=2024, test_source=val, raw_root=raw_root, progress=False)
    out = raw_root / "Dataset224_BraTS2024"
    ds = json.loads((out / "dataset.json").read_text())
    assert ds["labels"] == {"background": 0, "NETC": 1, "SNFH": 2, "ET": 3, "RC": 4}
    assert "regions_class_order" not in ds
    assert report.label_counts[4] > 0 and report.num_test == 1
    assert len(list((out / "imagesTs").iterdir())) == 4
