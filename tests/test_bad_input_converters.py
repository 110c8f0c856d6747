"""Converters with bad input or in unusual places: mismatched geometry, all problems at once, the
replaced dataset, permissions, a missing $nnUNet_raw, BraTS year detection (issue 16).

Each test failed on the code before it; all use tiny synthetic fixtures and ``verify=False`` except
where nnU-Net's own check is the point."""
from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from _conversion_fixtures import make_brats, make_minivess, make_vesuvius, write_minivess_nifti

from nnunet_ext.cli import main


@pytest.fixture
def raw_root(tmp_path):
    root = tmp_path / "nnUNet_raw"
    root.mkdir()
    return root


def _nifti_with_affine(path, data, affine):
    import nibabel as nib

    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=2)
    img.set_qform(None, code=0)
    nib.save(img, str(path))


# ---------------------------------------------------------------------------------------------- item 2
def test_labels_and_modalities_on_another_grid_are_refused(tmp_path, raw_root):
    from nnunet_ext.dataset_conversion import ConversionError
    from nnunet_ext.dataset_conversion.brats import convert_brats
    from nnunet_ext.dataset_conversion.minivess import convert_minivess

    src = make_minivess(tmp_path / "mv")
    seg = np.zeros((16, 16, 8), np.uint8)
    seg[2:6, 2:14, :] = 1
    flipped = np.diag([-0.99, 0.99, 5.0, 1.0])  # same spacing, x axis flipped
    _nifti_with_affine(src / "seg" / "mv01_y.nii.gz", seg, flipped)
    shifted = np.diag([0.62, 0.62, 5.0, 1.0])
    shifted[:3, 3] = (10.0, 0.0, 0.0)
    _nifti_with_affine(src / "seg" / "mv03_y.nii.gz", seg, shifted)
    with pytest.raises(ConversionError) as e:
        convert_minivess(src, 5, raw_root=raw_root, progress=False, verify=False)
    msg = str(e.value)
    assert "mv01_y.nii.gz: label direction" in msg and "mv03_y.nii.gz: label origin" in msg
    assert list(raw_root.iterdir()) == []

    b = make_brats(tmp_path / "b", 2021, n_patients=1)
    t2 = b / "BraTS2021_00000" / "BraTS2021_00000_t2.nii.gz"
    import nibabel as nib
    data = np.asanyarray(nib.load(str(t2)).dataobj)
    _nifti_with_affine(t2, data, np.array([[1.0, 0, 0, 0], [0, -1.0, 0, 239.0], [0, 0, 1.0, 0], [0, 0, 0, 1]]))
    with pytest.raises(ConversionError, match="BraTS2021_00000_t2.nii.gz: image direction"):
        convert_brats(b, 137, year=2021, raw_root=raw_root, progress=False, verify=False)
    assert list(raw_root.iterdir()) == []


def test_nnunet_integrity_warnings_are_kept_in_the_report():
    from nnunet_ext.dataset_conversion.nnunet_check import warnings_in

    printed = ("Verifying training set\n"
               "Warning: Origin mismatch between segmentation and corresponding images. \n"
               "Origin images: (0.0, 0.0, 0.0). \nOrigin seg: (1.0, 0.0, 0.0). \n"
               "Image files: ['/r/.tmp/imagesTr/a_0000.nii.gz']. \nSeg file: /r/.tmp/labelsTr/a.nii.gz\n"
               "WARNING: File /r/.tmp/labelsTr/b.nii.gz only has label 0 (which should be background).\n")
    found = warnings_in(printed, "/r/.tmp")
    assert len(found) == 2
    assert "Origin mismatch" in found[0] and "imagesTr/a_0000.nii.gz" in found[0] and "/r/.tmp" not in found[0]
    assert "labelsTr/b.nii.gz only has label 0" in found[1]
    from nnunet_ext.dataset_conversion.report import ConversionReport
    assert "warnings" in ConversionReport.__dataclass_fields__


# ---------------------------------------------------------------------------------------------- item 6
def test_converted_dataset_respects_the_umask(tmp_path, raw_root):
    from nnunet_ext.dataset_conversion.minivess import convert_minivess

    old = os.umask(0o022)
    try:
        convert_minivess(make_minivess(tmp_path / "mv"), 5, raw_root=raw_root, progress=False, verify=False)
    finally:
        os.umask(old)
    mode = stat.S_IMODE((raw_root / "Dataset005_MiniVess").stat().st_mode)
    assert mode == 0o755, oct(mode)


# ---------------------------------------------------------------------------------------------- item 8
def test_overwrite_that_cannot_move_the_old_dataset_leaves_nothing_behind(tmp_path, raw_root, monkeypatch, capsys):
    from nnunet_ext.dataset_conversion import ConversionError
    from nnunet_ext.dataset_conversion import writer
    from nnunet_ext.dataset_conversion.minivess import convert_minivess

    src = make_minivess(tmp_path / "mv")
    existing = raw_root / "Dataset005_MiniVess"
    existing.mkdir()
    (existing / "precious.txt").write_text("keep me")
    real_rename = os.rename

    def rename(a, b):
        if os.fspath(a) == str(existing):
            raise PermissionError(13, "Permission denied", os.fspath(a))
        return real_rename(a, b)

    monkeypatch.setattr(writer.os, "rename", rename)
    with pytest.raises(ConversionError, match="cannot move the existing dataset aside"):
        convert_minivess(src, 5, raw_root=raw_root, overwrite=True, progress=False, verify=False)
    monkeypatch.undo()
    assert sorted(p.name for p in raw_root.iterdir()) == ["Dataset005_MiniVess"]  # no .old-*, no .tmp-*
    assert (existing / "precious.txt").read_text() == "keep me"

    # an old copy that cannot be deleted is said, not left silently
    real_rmtree = writer.shutil.rmtree

    def rmtree(path, *a, onerror=None, **k):
        if ".old-" in os.fspath(path) and onerror is not None:
            onerror(os.rmdir, os.fspath(path), (PermissionError, PermissionError("Permission denied"), None))
            return None
        return real_rmtree(path, *a, onerror=onerror, **k)

    monkeypatch.setattr(writer.shutil, "rmtree", rmtree)
    report = convert_minivess(src, 5, raw_root=raw_root, overwrite=True, progress=False, verify=False)
    monkeypatch.undo()
    assert any(".old-" in w and "remove" in w for w in report.warnings)
    assert ".old-" in capsys.readouterr().err
    saved = json.loads((existing / "conversion_report.json").read_text())
    assert saved["warnings"] == report.warnings


# ---------------------------------------------------------------------------------------------- item 10
def test_every_missing_file_is_reported_at_once(tmp_path, raw_root):
    from nnunet_ext.dataset_conversion import ConversionError
    from nnunet_ext.dataset_conversion.brats import convert_brats
    from nnunet_ext.dataset_conversion.minivess import convert_minivess
    from nnunet_ext.dataset_conversion.vesuvius import convert_vesuvius

    b = make_brats(tmp_path / "b", 2021, n_patients=2)
    (b / "BraTS2021_00000" / "BraTS2021_00000_t1.nii.gz").unlink()
    (b / "BraTS2021_00001" / "BraTS2021_00001_seg.nii.gz").unlink()
    with pytest.raises(ConversionError) as e:
        convert_brats(b, 137, year=2021, raw_root=raw_root, progress=False, verify=False)
    assert "BraTS2021_00000_t1.nii.gz: missing modality 't1'" in str(e.value)
    assert "BraTS2021_00001_seg.nii.gz: missing label file" in str(e.value)

    mv = make_minivess(tmp_path / "mv")
    (mv / "seg" / "mv01_y.nii.gz").unlink()
    (mv / "raw" / "mv03.nii.gz").unlink()
    with pytest.raises(ConversionError) as e:
        convert_minivess(mv, 5, raw_root=raw_root, progress=False, verify=False)
    assert "mv01_y.nii.gz: missing label file" in str(e.value) and "mv03.nii.gz: missing image" in str(e.value)

    v = make_vesuvius(tmp_path / "v")
    (v / "train_labels" / "3330103.tif").unlink()
    (v / "train_images" / "26894125.tif").unlink()
    with pytest.raises(ConversionError) as e:
        convert_vesuvius(v, 6, raw_root=raw_root, progress=False, verify=False)
    assert "3330103.tif: missing label file" in str(e.value) and "26894125.tif: missing image" in str(e.value)
    assert list(raw_root.iterdir()) == []


# ---------------------------------------------------------------------------------------------- item 11
def test_converter_messages_say_what_is_wrong(tmp_path, raw_root, capsys):
    from nnunet_ext.dataset_conversion import ConversionError
    from nnunet_ext.dataset_conversion.brats import convert_brats
    from nnunet_ext.dataset_conversion.minivess import convert_minivess
    from nnunet_ext.dataset_conversion.vesuvius import convert_vesuvius

    b = make_brats(tmp_path / "b", 2021, n_patients=1)
    f = b / "BraTS2021_00000" / "BraTS2021_00000_t1ce.nii.gz"
    f.unlink()
    f.mkdir()  # a folder where the file should be
    with pytest.raises(ConversionError, match="t1ce.nii.gz: modality 't1ce' is a folder, not a file"):
        convert_brats(b, 137, year=2021, raw_root=raw_root, progress=False, verify=False)
    f.rmdir()
    os.symlink(tmp_path / "gone.nii.gz", f)
    with pytest.raises(ConversionError, match="dangling symbolic link"):
        convert_brats(b, 137, year=2021, raw_root=raw_root, progress=False, verify=False)

    # spacings in errors in the order the report uses (x, y, z)
    mv = make_minivess(tmp_path / "mv")
    write_minivess_nifti(mv / "seg" / "mv01_y.nii.gz", np.zeros((16, 16, 8), np.uint8), (0.5, 0.5, 5.0))
    with pytest.raises(ConversionError, match=r"spacing \(x, y, z\) \(0.5, 0.5, 5.0\) does not match .* \(0.99, 0.99, 5.0\)"):
        convert_minivess(mv, 5, raw_root=raw_root, progress=False, verify=False)

    (raw_root / "Dataset006_VesuviusSurface").mkdir()
    v = make_vesuvius(tmp_path / "v")
    with pytest.raises(ConversionError) as e:
        convert_vesuvius(v, 6, raw_root=raw_root, progress=False, verify=False)
    assert "--overwrite" in str(e.value) and "overwrite=True (--overwrite)" not in str(e.value)
    (raw_root / "Dataset006_VesuviusSurface").rmdir()
    with pytest.raises(ConversionError, match="--folds"):
        convert_vesuvius(v, 6, raw_root=raw_root, progress=False, verify=False, group_by_scroll=True)
    report = convert_vesuvius(v, 6, raw_root=raw_root, progress=False, verify=False, group_by_scroll=True,
                              n_folds=2)
    assert report.splits.endswith("grouped by scroll")

    rc = main(["convert", "minivess", str(mv), "-d", "5", "--raw-root", str(tmp_path / "no" / "root")])
    err = capsys.readouterr().err
    assert rc == 1 and "--raw-root" in err and "nnUNet_raw folder" not in err


# ---------------------------------------------------------------------------------------------- item 12
def test_a_missing_nnunet_raw_is_created(tmp_path, monkeypatch, capsys):
    from nnunet_ext.dataset_conversion import ConversionError
    from nnunet_ext.dataset_conversion.minivess import convert_minivess

    mv = make_minivess(tmp_path / "mv")
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "nnUNet_raw"))
    convert_minivess(mv, 5, progress=False, verify=False)
    assert (tmp_path / "nnUNet_raw" / "Dataset005_MiniVess" / "dataset.json").is_file()
    assert f"created the $nnUNet_raw folder {tmp_path / 'nnUNet_raw'}" in capsys.readouterr().err
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "missing_parent" / "nnUNet_raw"))
    with pytest.raises(ConversionError, match="nor does its parent"):
        convert_minivess(mv, 5, progress=False, verify=False)
    assert not (tmp_path / "missing_parent").exists()


# ---------------------------------------------------------------------------------------------- item 13
def test_brats_year_is_detected_from_the_layout(tmp_path, raw_root, capsys):
    from nnunet_ext.dataset_conversion import ConversionError
    from nnunet_ext.dataset_conversion.brats import detect_brats_year

    for year in (2021, 2023, 2024):
        src = make_brats(tmp_path / str(year), year, n_patients=2)
        assert detect_brats_year(src)[0] == year
    rc = main(["convert", "brats", str(tmp_path / "2024"), "-d", "224", "--raw-root", str(raw_root), "--no-verify",
               "--no-progress"])
    out = capsys.readouterr()
    assert rc == 0 and "detected BraTS 2024" in out.err and "label 4" in out.err
    ds = json.loads((raw_root / "Dataset224_BraTS2024" / "dataset.json").read_text())
    assert ds["brats_year"] == 2024
    # --year overrides the detection
    rc = main(["convert", "brats", str(tmp_path / "2023"), "-d", "225", "--year", "2024", "--name", "X",
               "--raw-root", str(raw_root), "--no-verify", "--no-progress"])
    assert rc == 0 and "detected" not in capsys.readouterr().err
    # both layouts in one folder: ambiguous
    mixed = make_brats(tmp_path / "mixed", 2021, n_patients=1)
    make_brats(mixed, 2023, n_patients=1)
    with pytest.raises(ConversionError, match="cannot tell the BraTS year.*--year"):
        detect_brats_year(mixed)
