"""MoNuSAC (semantic and ternary) and back-conversion of predictions."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from _conversion_fixtures import make_monusac, make_vesuvius, write_brats_nifti, write_tiff_stack


@pytest.fixture
def raw_root(tmp_path):
    root = tmp_path / "nnUNet_raw"
    root.mkdir()
    return root


def test_monusac_semantic_with_ambiguous_and_layer_names(tmp_path, raw_root):
    from PIL import Image
    from nnunet_ext.dataset_conversion.monusac import convert_monusac

    src = make_monusac(tmp_path / "monusac")
    report = convert_monusac(src.parent, 301, raw_root=raw_root, progress=False)  # verifies with nnU-Net
    out = raw_root / "Dataset301_MoNuSAC"
    ds = json.loads((out / "dataset.json").read_text())
    assert ds["labels"] == {"background": 0, "Epithelial": 1, "Lymphocyte": 2, "Neutrophil": 3,
                            "Macrophage": 4, "ignore": 5}
    assert ds["file_ending"] == ".png" and len(ds["channel_names"]) == 3
    case = "TCGA-55-1594-01Z-00-DX1_1"
    img = np.asarray(Image.open(out / "imagesTr" / f"{case}_0000.png"))
    lab = np.asarray(Image.open(out / "labelsTr" / f"{case}.png"))
    assert img.shape == (40, 48, 3) and lab.shape == (40, 48) and lab.dtype == np.uint8
    assert lab[30, 30] == 4  # 'Macrophages' layer → Macrophage
    assert lab[34, 44] == 5  # Ambiguous region → ignore
    assert lab[2, 2] == 0  # 'Description' layer skipped
    assert set(np.unique(lab)) == {0, 1, 2, 3, 4, 5}
    assert report.num_training == 3
    assert any("Description" in n for n in report.notes)
    assert (out / "imagesTr" / "TCGA-A2-A0ES-01Z-00-DX1-1_0000.png").is_file()  # older '-n' naming


def test_ternary_boundary_width(tmp_path, raw_root):
    from PIL import Image
    from nnunet_ext.dataset_conversion.monusac import convert_monusac, ternary_from_instances

    inst = np.zeros((20, 20), int)
    inst[2:18, 2:10] = 1
    inst[2:18, 10:18] = 2  # touching instance
    t1, t3 = ternary_from_instances(inst, 1), ternary_from_instances(inst, 3)
    assert t1[10, 9] == 2 and t1[10, 10] == 2  # touching nuclei are separated
    assert t1[10, 7] == 1 and t3[10, 7] == 2  # width 3 reaches 3 px into the nucleus
    assert t3[10, 6] == 1 and (t3 == 2).sum() > 2 * (t1 == 2).sum()
    assert np.array_equal(t1 > 0, inst > 0) and np.array_equal(t3 > 0, inst > 0)

    src = make_monusac(tmp_path / "monusac")
    convert_monusac(src, 302, ternary=True, boundary_width=3, raw_root=raw_root, progress=False, n_folds=2)
    out = raw_root / "Dataset302_MoNuSACTernary"
    ds = json.loads((out / "dataset.json").read_text())
    assert ds["labels"] == {"background": 0, "inside": 1, "boundary": 2, "ignore": 3}
    lab = np.asarray(Image.open(out / "labelsTr" / "TCGA-55-1594-01Z-00-DX1_1.png"))
    assert set(np.unique(lab)) == {0, 1, 2, 3} and lab[34, 44] == 3
    splits = json.loads((out / "splits_final.json").read_text())
    for s in splits:  # the two images of one patient stay together
        assert {c[:23] for c in s["train"]}.isdisjoint({c[:23] for c in s["val"]})


def test_brats_back_conversion_inverts_forward(tmp_path):
    import SimpleITK as sitk
    from nnunet_ext.dataset_conversion.back_conversion import brats_labels_from_nnunet, convert_brats_predictions
    from nnunet_ext.dataset_conversion.brats import raw_to_nnunet_labels
    from nnunetv2.dataset_conversion.Dataset137_BraTS21 import convert_labels_back_to_BraTS

    raw = np.random.default_rng(0).choice([0, 1, 2, 4], size=(6, 7, 5)).astype(np.uint8)
    ours = raw_to_nnunet_labels(raw, 2021)
    assert np.array_equal(brats_labels_from_nnunet(ours, 2021), raw)
    assert np.array_equal(brats_labels_from_nnunet(ours, 2021), convert_labels_back_to_BraTS(ours))
    seg23 = np.array([0, 1, 2, 3])
    assert np.array_equal(brats_labels_from_nnunet(seg23, 2023), seg23)
    with pytest.raises(ValueError, match=r"\[4\]"):
        brats_labels_from_nnunet(np.array([0, 4]), 2023)

    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    write_brats_nifti(pred_dir / "BraTS2021_00000.nii.gz", ours)
    done = convert_brats_predictions(pred_dir, tmp_path / "brats", 2021)
    back = sitk.ReadImage(str(tmp_path / "brats" / done[0]))
    assert np.array_equal(sitk.GetArrayFromImage(back), np.transpose(raw, (2, 1, 0)))
    assert back.GetSpacing() == sitk.ReadImage(str(pred_dir / "BraTS2021_00000.nii.gz")).GetSpacing()


def test_vesuvius_submission_zip(tmp_path):
    import io

    import tifffile
    from nnunet_ext.dataset_conversion import ConversionError
    from nnunet_ext.dataset_conversion.back_conversion import write_vesuvius_submission

    src = make_vesuvius(tmp_path / "v")
    pred = tmp_path / "pred"
    pred.mkdir()
    p = np.zeros((10, 10, 10), np.uint8)
    p[:, 5, :] = 1
    write_tiff_stack(pred / "1407735.tif", p, compression="zlib")
    (pred / "1407735.json").write_text('{"spacing": [1, 1, 1]}')
    ids = write_vesuvius_submission(pred, tmp_path / "submission.zip", src / "test_images")
    assert ids == ["1407735"]
    with zipfile.ZipFile(tmp_path / "submission.zip") as zf:
        assert zf.namelist() == ["1407735.tif"]
        arr = tifffile.imread(io.BytesIO(zf.read("1407735.tif")))
    assert arr.dtype == np.uint8 and arr.shape == (10, 10, 10) and np.array_equal(arr, p)

    write_tiff_stack(pred / "1407735.tif", np.zeros((10, 10, 9), np.uint8))
    with pytest.raises(ConversionError, match="differs from test volume"):
        write_vesuvius_submission(pred, tmp_path / "bad.zip", src / "test_images")
    assert not (tmp_path / "bad.zip").exists()


def test_monusac_reads_svs_slides_at_full_resolution_in_worker_processes(tmp_path, raw_root):
    import tifffile
    from PIL import Image
    from nnunet_ext.dataset_conversion.monusac import convert_monusac, find_monusac_cases

    src = make_monusac(tmp_path / "monusac", image_format="svs")
    slide = src / "TCGA-55-1594-01Z-00-DX1" / "TCGA-55-1594-01Z-00-DX1_1.svs"
    with tifffile.TiffFile(slide) as tif:  # the fixture is what tifffile recognises as an Aperio slide
        assert tif.is_svs and [lv.shape for lv in tif.series[0].levels] == [(40, 48, 3), (20, 24, 3)]
        level0 = tif.series[0].levels[0].asarray()
    assert all(c.images[0].endswith(".svs") for c in find_monusac_cases(src))
    report = convert_monusac(src, 303, raw_root=raw_root, progress=False, num_processes=2, verify=False)
    out = raw_root / "Dataset303_MoNuSAC"
    img = np.asarray(Image.open(out / "imagesTr" / "TCGA-55-1594-01Z-00-DX1_1_0000.png"))
    assert img.dtype == np.uint8 and np.array_equal(img, level0)  # level 0, RGB, decoded pixels unchanged
    lab = np.asarray(Image.open(out / "labelsTr" / "TCGA-55-1594-01Z-00-DX1_1.png"))
    assert lab.shape == (40, 48) and lab[30, 30] == 4 and lab[34, 44] == 5
    assert report.num_training == 3


def test_monusac_undecodable_slide_names_the_file(tmp_path, raw_root):
    import tifffile
    from nnunet_ext.dataset_conversion import ConversionError
    from nnunet_ext.dataset_conversion.monusac import convert_monusac

    src = make_monusac(tmp_path / "monusac", image_format="svs")
    slide = src / "TCGA-A2-A0ES-01Z-00-DX1" / "TCGA-A2-A0ES-01Z-00-DX1-1.svs"
    with tifffile.TiffFile(slide) as tif:
        offset, size = tif.pages[0].dataoffsets[1], tif.pages[0].databytecounts[1]
    data = bytearray(slide.read_bytes())
    data[offset: offset + size] = b"\x55" * size  # one JPEG tile of level 0 overwritten
    slide.write_bytes(bytes(data))
    with pytest.raises(ConversionError, match="cannot decode this slide") as e:
        convert_monusac(src, 304, raw_root=raw_root, progress=False, verify=False)
    assert str(slide) in str(e.value)
    assert list(raw_root.iterdir()) == []


def test_monusac_annotation_without_slide_or_tif(tmp_path, raw_root):
    from nnunet_ext.dataset_conversion import ConversionError
    from nnunet_ext.dataset_conversion.monusac import convert_monusac

    src = make_monusac(tmp_path / "monusac")
    stem = src / "TCGA-55-1594-01Z-00-DX1" / "TCGA-55-1594-01Z-00-DX1_2"
    stem.with_suffix(".tif").unlink()
    stem.with_suffix(".svs").unlink()
    with pytest.raises(ConversionError, match=r"missing image \(.svs or .tif\) for existing annotation XML") as e:
        convert_monusac(src, 305, raw_root=raw_root, progress=False, verify=False)
    assert str(stem.with_suffix(".svs")) in str(e.value)
    assert list(raw_root.iterdir()) == []
