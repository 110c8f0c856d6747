"""Bad raw input → a ConversionError naming the file and the problem; nothing written, nothing lost."""
from __future__ import annotations

import numpy as np
import pytest

from _conversion_fixtures import make_brats, make_minivess, make_vesuvius, write_brats_nifti, write_minivess_nifti, \
    write_tiff_stack


@pytest.fixture
def raw_root(tmp_path):
    root = tmp_path / "nnUNet_raw"
    root.mkdir()
    return root


def _assert_nothing_written(raw_root):
    assert list(raw_root.iterdir()) == [], "a failed conversion must leave no (temporary) folder behind"


def _brats(tmp_path, **kw):
    return make_brats(tmp_path / "brats", 2021, n_patients=2, **kw)


def _convert_brats(src, raw_root, **kw):
    from nnunet_ext.dataset_conversion.brats import convert_brats
    return convert_brats(src, 137, year=2021, raw_root=raw_root, progress=False, verify=False, **kw)


def test_missing_modality(tmp_path, raw_root):
    from nnunet_ext.dataset_conversion import ConversionError

    src = _brats(tmp_path)
    f = src / "BraTS2021_00001" / "BraTS2021_00001_t1ce.nii.gz"
    f.unlink()
    with pytest.raises(ConversionError, match="missing modality 't1ce'") as e:
        _convert_brats(src, raw_root)
    assert str(f) in str(e.value)
    _assert_nothing_written(raw_root)


def test_missing_label_file(tmp_path, raw_root):
    from nnunet_ext.dataset_conversion import ConversionError
    from nnunet_ext.dataset_conversion.minivess import convert_minivess

    src = make_minivess(tmp_path / "mv")
    (src / "seg" / "mv03_y.nii.gz").unlink()
    with pytest.raises(ConversionError, match="missing label file") as e:
        convert_minivess(src, 5, raw_root=raw_root, progress=False)
    assert "mv03_y.nii.gz" in str(e.value)
    _assert_nothing_written(raw_root)


def test_image_label_shape_mismatch(tmp_path, raw_root):
    from nnunet_ext.dataset_conversion import ConversionError
    from nnunet_ext.dataset_conversion.vesuvius import convert_vesuvius

    src = make_vesuvius(tmp_path / "v")
    write_tiff_stack(src / "train_labels" / "3330103.tif", np.zeros((12, 8, 7), np.uint8))
    with pytest.raises(ConversionError, match=r"label shape \(12, 8, 7\) does not match") as e:
        convert_vesuvius(src, 6, raw_root=raw_root, progress=False)
    assert "train_labels/3330103.tif" in str(e.value).replace("\\", "/")
    _assert_nothing_written(raw_root)


def test_image_label_spacing_mismatch(tmp_path, raw_root):
    from nnunet_ext.dataset_conversion import ConversionError
    from nnunet_ext.dataset_conversion.minivess import convert_minivess

    src = make_minivess(tmp_path / "mv")
    write_minivess_nifti(src / "seg" / "mv01_y.nii.gz", np.zeros((16, 16, 8), np.uint8), (0.5, 0.5, 5.0))
    with pytest.raises(ConversionError, match="spacing .* does not match") as e:
        convert_minivess(src, 5, raw_root=raw_root, progress=False)
    assert "mv01_y.nii.gz" in str(e.value)
    _assert_nothing_written(raw_root)


def test_label_values_outside_allowed_set(tmp_path, raw_root):
    from nnunet_ext.dataset_conversion import ConversionError

    src = _brats(tmp_path)
    seg = np.zeros((12, 14, 10), np.uint8)
    seg[2:4, 2:4, 2:4] = 3  # BraTS 2021 has no label 3
    f = src / "BraTS2021_00000" / "BraTS2021_00000_seg.nii.gz"
    write_brats_nifti(f, seg)
    with pytest.raises(ConversionError, match=r"label values \[3\] outside the allowed set \[0, 1, 2, 4\]") as e:
        _convert_brats(src, raw_root)
    assert str(f) in str(e.value)
    _assert_nothing_written(raw_root)


def test_nan_intensities(tmp_path, raw_root):
    from nnunet_ext.dataset_conversion import ConversionError

    src = _brats(tmp_path, float_images=True)
    data = np.ones((12, 14, 10), np.float32)
    data[1, 1, 1] = np.nan
    f = src / "BraTS2021_00001" / "BraTS2021_00001_flair.nii.gz"
    write_brats_nifti(f, data)
    with pytest.raises(ConversionError, match="1 NaN") as e:
        _convert_brats(src, raw_root)
    assert str(f) in str(e.value)
    _assert_nothing_written(raw_root)


def test_truncated_nifti(tmp_path, raw_root):
    from nnunet_ext.dataset_conversion import ConversionError

    src = _brats(tmp_path)
    f = src / "BraTS2021_00000" / "BraTS2021_00000_t2.nii.gz"
    f.write_bytes(f.read_bytes()[:-40])
    with pytest.raises(ConversionError, match="truncated") as e:
        _convert_brats(src, raw_root)
    assert str(f) in str(e.value)
    _assert_nothing_written(raw_root)


def test_unreadable_file(tmp_path, raw_root):
    from nnunet_ext.dataset_conversion import ConversionError
    from nnunet_ext.dataset_conversion.vesuvius import convert_vesuvius

    src = make_vesuvius(tmp_path / "v")
    f = src / "train_images" / "26894125.tif"
    f.write_bytes(b"this is not a TIFF file at all")
    with pytest.raises(ConversionError, match="unreadable") as e:
        convert_vesuvius(src, 6, raw_root=raw_root, progress=False)
    assert "26894125.tif" in str(e.value)
    _assert_nothing_written(raw_root)


def test_truncated_tiff(tmp_path, raw_root):
    from nnunet_ext.dataset_conversion import ConversionError
    from nnunet_ext.dataset_conversion.vesuvius import convert_vesuvius

    src = make_vesuvius(tmp_path / "v")
    f = src / "train_labels" / "1004283650.tif"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(ConversionError, match="truncated") as e:
        convert_vesuvius(src, 6, raw_root=raw_root, progress=False)
    assert "1004283650.tif" in str(e.value)
    _assert_nothing_written(raw_root)


def test_empty_source_folder(tmp_path, raw_root):
    from nnunet_ext.dataset_conversion import ConversionError

    (tmp_path / "empty").mkdir()
    with pytest.raises(ConversionError, match="no BraTS 2021 case folders") as e:
        _convert_brats(tmp_path / "empty", raw_root)
    assert str(tmp_path / "empty") in str(e.value)
    _assert_nothing_written(raw_root)


def test_wrong_source_folder(tmp_path, raw_root):
    from nnunet_ext.dataset_conversion import ConversionError
    from nnunet_ext.dataset_conversion.brats import convert_brats
    from nnunet_ext.dataset_conversion.minivess import convert_minivess

    src2023 = make_brats(tmp_path / "b23", 2023, n_patients=1)
    with pytest.raises(ConversionError, match="look like BraTS 2023"):
        _convert_brats(src2023, raw_root)
    with pytest.raises(ConversionError, match="not a MiniVess archive"):
        convert_minivess(src2023, 5, raw_root=raw_root)
    with pytest.raises(ConversionError, match="does not exist"):
        convert_brats(tmp_path / "nope", 5, year=2023, raw_root=raw_root)
    _assert_nothing_written(raw_root)


def test_target_exists_is_never_overwritten_without_flag(tmp_path, raw_root):
    from nnunet_ext.dataset_conversion import ConversionError

    src = _brats(tmp_path)
    existing = raw_root / "Dataset137_BraTS2021"
    existing.mkdir()
    (existing / "precious.txt").write_text("keep me")
    with pytest.raises(ConversionError, match="already exists") as e:
        _convert_brats(src, raw_root)
    assert str(existing) in str(e.value)
    assert (existing / "precious.txt").read_text() == "keep me"

    # another dataset holding the same id is a conflict even with overwrite
    other = raw_root / "Dataset138_Other"
    other.mkdir()
    with pytest.raises(ConversionError, match="already used"):
        from nnunet_ext.dataset_conversion.brats import convert_brats
        convert_brats(src, 138, year=2021, raw_root=raw_root, overwrite=True, verify=False, progress=False)

    # a failing conversion with overwrite keeps the old dataset
    (src / "BraTS2021_00000" / "BraTS2021_00000_seg.nii.gz").unlink()
    with pytest.raises(ConversionError):
        _convert_brats(src, raw_root, overwrite=True)
    assert (existing / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in raw_root.iterdir()) == ["Dataset137_BraTS2021", "Dataset138_Other"]


def test_overwrite_replaces_after_success(tmp_path, raw_root):
    src = _brats(tmp_path)
    existing = raw_root / "Dataset137_BraTS2021"
    existing.mkdir()
    (existing / "stale.txt").write_text("old")
    _convert_brats(src, raw_root, overwrite=True)
    assert not (existing / "stale.txt").exists() and (existing / "dataset.json").is_file()
    assert [p.name for p in raw_root.iterdir()] == ["Dataset137_BraTS2021"]


def test_all_failing_cases_are_reported_together(tmp_path, raw_root):
    from nnunet_ext.dataset_conversion import ConversionError

    src = _brats(tmp_path)
    for c in ("BraTS2021_00000", "BraTS2021_00001"):
        f = src / c / f"{c}_t1.nii.gz"
        f.write_bytes(f.read_bytes()[:-40])
    with pytest.raises(ConversionError, match="2 of 2 cases could not be converted") as e:
        _convert_brats(src, raw_root, num_processes=2)
    assert "BraTS2021_00000_t1.nii.gz" in str(e.value) and "BraTS2021_00001_t1.nii.gz" in str(e.value)
    _assert_nothing_written(raw_root)


def test_gzip_checksum_mismatch(tmp_path, raw_root):
    """A stream that ends properly but whose CRC-32 trailer does not match the data (corrupted bytes)."""
    from nnunet_ext.dataset_conversion import ConversionError

    src = _brats(tmp_path)
    f = src / "BraTS2021_00001" / "BraTS2021_00001_t1.nii.gz"
    data = bytearray(f.read_bytes())
    data[-8] ^= 0xFF  # first byte of the CRC-32 trailer
    f.write_bytes(bytes(data))
    with pytest.raises(ConversionError, match="corrupt gzip data in image") as e:
        _convert_brats(src, raw_root)
    assert str(f) in str(e.value)
    _assert_nothing_written(raw_root)


def test_nifti_data_section_shorter_than_header_declares(tmp_path, raw_root):
    """A complete gzip stream around a NIfTI file that was cut before it was compressed."""
    import gzip

    from nnunet_ext.dataset_conversion import ConversionError

    src = _brats(tmp_path)
    f = src / "BraTS2021_00000" / "BraTS2021_00000_t1ce.nii.gz"
    f.write_bytes(gzip.compress(gzip.decompress(f.read_bytes())[:-100]))
    with pytest.raises(ConversionError, match=r"truncated image: the data section holds 3260 of the 3360") as e:
        _convert_brats(src, raw_root)
    assert str(f) in str(e.value)
    _assert_nothing_written(raw_root)


def test_gzip_file_that_is_not_nifti(tmp_path, raw_root):
    import gzip

    from nnunet_ext.dataset_conversion import ConversionError

    src = _brats(tmp_path)
    f = src / "BraTS2021_00001" / "BraTS2021_00001_seg.nii.gz"
    f.write_bytes(gzip.compress(b"segmentation exported as text\n" * 40))
    with pytest.raises(ConversionError, match="unreadable label: not a NIfTI-1/2 file") as e:
        _convert_brats(src, raw_root)
    assert str(f) in str(e.value)
    _assert_nothing_written(raw_root)


def test_truncated_tiff_among_parallel_cases_names_only_that_file(tmp_path, raw_root):
    """Cases run on threads with -np 2: tifffile's logged damage must be charged to the right file."""
    from nnunet_ext.dataset_conversion import ConversionError
    from nnunet_ext.dataset_conversion.vesuvius import convert_vesuvius

    src = make_vesuvius(tmp_path / "v")
    f = src / "train_images" / "26894125.tif"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(ConversionError, match="1 of 4 cases could not be converted") as e:
        convert_vesuvius(src, 6, raw_root=raw_root, progress=False, num_processes=2)
    assert "26894125.tif" in str(e.value)
    assert all(i not in str(e.value) for i in ("1004283650", "3330103", "1407735"))
    _assert_nothing_written(raw_root)
