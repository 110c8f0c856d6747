"""MiniVess and Vesuvius converters on synthetic raw folders with the real layout."""
from __future__ import annotations

import json

import numpy as np
import pytest

from _conversion_fixtures import MINIVESS_SPACINGS, VESUVIUS_TEST, VESUVIUS_TRAIN, make_minivess, make_vesuvius


@pytest.fixture
def raw_root(tmp_path):
    root = tmp_path / "nnUNet_raw"
    root.mkdir()
    return root


def test_minivess_layout_spacing_report_and_splits(tmp_path, raw_root):
    import SimpleITK as sitk
    from nnunet_ext.dataset_conversion.minivess import convert_minivess

    src = make_minivess(tmp_path / "minivess")
    report = convert_minivess(src, 501, raw_root=raw_root, progress=False)  # verifies with nnU-Net
    out = raw_root / "Dataset501_MiniVess"
    ds = json.loads((out / "dataset.json").read_text())
    assert ds["labels"] == {"background": 0, "vessel": 1}
    assert ds["numTraining"] == len(MINIVESS_SPACINGS) and ds["file_ending"] == ".nii.gz"
    for case, sp in MINIVESS_SPACINGS.items():
        img = sitk.ReadImage(str(out / "imagesTr" / f"{case}_0000.nii.gz"))
        lab = sitk.ReadImage(str(out / "labelsTr" / f"{case}.nii.gz"))  # `_y` stripped
        assert np.allclose(img.GetSpacing(), sp, atol=1e-5)
        assert np.allclose(lab.GetSpacing(), sp, atol=1e-5)
        assert lab.GetPixelID() == sitk.sitkUInt8
        assert (out / "source_metadata" / f"{case}.json").is_file()
    assert sitk.ReadImage(str(out / "imagesTr" / "mv39_0000.nii.gz")).GetSize()[2] == 5
    # the raw image is copied byte for byte, header included
    assert (out / "imagesTr" / "mv01_0000.nii.gz").read_bytes() == (src / "raw" / "mv01.nii.gz").read_bytes()

    # 3 folds, seed 42, every case validated exactly once
    splits = json.loads((out / "splits_final.json").read_text())
    assert len(splits) == 3
    assert sorted(c for s in splits for c in s["val"]) == sorted(MINIVESS_SPACINGS)
    for s in splits:
        assert not set(s["train"]) & set(s["val"])

    assert report.num_training == 6
    outliers = {o["case"]: o for o in report.spacing_outliers}
    assert "mv02" in outliers and outliers["mv02"]["enlarged"] and outliers["mv02"]["max_zoom"] == pytest.approx(5.02, abs=0.05)
    assert report.label_counts[1] > 0 and report.cases_per_label[1] == 6
    assert "mv02" in report.format()
    saved = json.loads((out / "conversion_report.json").read_text())
    assert saved["num_training"] == 6
    assert not [p for p in raw_root.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_minivess_splits_match_nnunet_kfold_with_seed(tmp_path, raw_root):
    from nnunetv2.utilities.crossval_split import generate_crossval_split
    from nnunet_ext.dataset_conversion.minivess import convert_minivess

    src = make_minivess(tmp_path / "minivess")
    convert_minivess(src, 502, raw_root=raw_root, verify=False, progress=False, n_folds=3, seed=42)
    splits = json.loads((raw_root / "Dataset502_MiniVess" / "splits_final.json").read_text())
    expected = generate_crossval_split(sorted(MINIVESS_SPACINGS), seed=42, n_splits=3)
    assert [sorted(s["val"]) for s in splits] == [sorted(s["val"]) for s in expected]


def test_vesuvius_tiff3d_sidecars_ignore_label_and_skipped_rows(tmp_path, raw_root):
    import tifffile
    from nnunetv2.imageio.tif_reader_writer import Tiff3DIO
    from nnunet_ext.dataset_conversion.vesuvius import convert_vesuvius

    src = make_vesuvius(tmp_path / "vesuvius")
    report = convert_vesuvius(src, 503, raw_root=raw_root, progress=False)  # verifies with nnU-Net
    out = raw_root / "Dataset503_VesuviusSurface"
    ds = json.loads((out / "dataset.json").read_text())
    assert ds["labels"] == {"background": 0, "surface": 1, "ignore": 2}
    assert ds["overwrite_image_reader_writer"] == "Tiff3DIO" and ds["file_ending"] == ".tif"
    for cid, (_, shape) in VESUVIUS_TRAIN.items():
        for folder in ("imagesTr", "labelsTr"):
            assert json.loads((out / folder / f"{cid}.json").read_text()) == {"spacing": [1.0, 1.0, 1.0]}
        assert not (out / "imagesTr" / f"{cid}_0000.json").exists()
        img = tifffile.imread(out / "imagesTr" / f"{cid}_0000.tif")
        assert img.shape == shape and img.dtype == np.uint8
        # nnU-Net's own reader sees the right shape and takes the spacing from the sidecar
        arr, props = Tiff3DIO().read_images([str(out / "imagesTr" / f"{cid}_0000.tif")])
        assert arr.shape == (1, *shape) and list(props["spacing"]) == [1.0, 1.0, 1.0]
        assert np.array_equal(tifffile.imread(out / "labelsTr" / f"{cid}.tif"),
                              tifffile.imread(src / "train_labels" / f"{cid}.tif"))
    for cid in VESUVIUS_TEST:
        assert (out / "imagesTs" / f"{cid}_0000.tif").is_file() and (out / "imagesTs" / f"{cid}.json").is_file()
    assert report.num_training == 3 and report.num_test == 1
    assert any("987654321" in s for s in report.skipped)
    assert set(report.label_counts) == {0, 1, 2}


def test_vesuvius_ids_are_strings_and_folds_by_scroll(tmp_path, raw_root):
    from nnunet_ext.dataset_conversion.vesuvius import convert_vesuvius, find_vesuvius_cases

    src = make_vesuvius(tmp_path / "vesuvius")
    cases, _ = find_vesuvius_cases(src)
    assert {c.case_id for c in cases if c.label} == set(VESUVIUS_TRAIN)
    convert_vesuvius(src, 504, raw_root=raw_root, verify=False, progress=False, n_folds=2, group_by_scroll=True)
    splits = json.loads((raw_root / "Dataset504_VesuviusSurface" / "splits_final.json").read_text())
    scroll = {cid: s for cid, (s, _) in VESUVIUS_TRAIN.items()}
    for s in splits:
        assert not {scroll[c] for c in s["train"]} & {scroll[c] for c in s["val"]}
