"""The converters' building blocks: the one-pass NIfTI scan, label histograms, nnU-Net's check in-process."""
from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from _conversion_fixtures import make_brats, write_brats_nifti


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, bool, np.float32])
def test_label_histogram_equals_np_unique(dtype):
    from nnunet_ext.dataset_conversion.io import label_histogram

    rng = np.random.default_rng(0)
    a = rng.choice([0, 0, 0, 1, 2, 4] if dtype is not bool else [0, 1], size=(9, 8, 7)).astype(dtype)
    if dtype is np.int16:
        a[0, 0, :3] = -3  # negative values sort before background
    values, counts = label_histogram(a)
    ref_values, ref_counts = np.unique(a, return_counts=True)
    assert values.tolist() == ref_values.tolist() and counts.tolist() == ref_counts.tolist()
    assert label_histogram(np.ones((3, 3), np.uint8))[0].tolist() == [1]  # no background at all


def test_finite_counter_across_arbitrary_piece_boundaries():
    from nnunet_ext.dataset_conversion.nifti_scan import _FiniteCounter

    x = np.arange(1000, dtype=">f8")  # big-endian, 8-byte items
    x[[0, 499, 999]] = np.nan
    x[500] = -np.inf
    raw = x.tobytes()
    counter = _FiniteCounter(x.dtype)
    for lo, hi in zip([0, 3, 1001, 4000], [3, 1001, 4000, len(raw)]):
        counter.feed(memoryview(raw)[lo:hi])
    assert (counter.n_nan, counter.n_inf, counter.carry) == (3, 1, b"")


@pytest.mark.parametrize("path", ["one call", "streaming"])
def test_scan_accepts_multi_member_gzip_and_counts_nan_and_inf(tmp_path, monkeypatch, path):
    from nnunet_ext.dataset_conversion import ConversionError, nifti_scan
    from nnunet_ext.dataset_conversion.nifti_scan import scan_nifti

    if path == "streaming":
        monkeypatch.setattr(nifti_scan, "WHOLE_FILE_LIMIT", 0)  # every file takes the zlib stream
    data = np.ones((30, 20, 10), np.float32)
    f = tmp_path / "img.nii.gz"
    write_brats_nifti(f, data)
    raw = gzip.decompress(f.read_bytes())
    assert scan_nifti(f).total_bytes == len(raw)
    f.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))  # two members, as pigz -i may write
    scan = scan_nifti(f)
    assert scan.shape == (30, 20, 10) and scan.total_bytes == len(raw) and scan.data_bytes == data.nbytes

    data[3, 2, 1] = data[29, 19, 9] = np.nan
    data[0, 0, 0] = np.inf
    write_brats_nifti(f, data)
    with pytest.raises(ConversionError, match="2 NaN and 1 infinite"):
        scan_nifti(f)
    f.write_bytes(f.read_bytes()[:-30])
    with pytest.raises(ConversionError, match="truncated image: the gzip stream ends before its end marker"):
        scan_nifti(f)


def test_integer_nifti_is_only_decompressed(tmp_path, monkeypatch):
    """int16 voxels cannot be NaN: the scan must not convert them (that is what keeps it cheap)."""
    from nnunet_ext.dataset_conversion import nifti_scan

    f = tmp_path / "img.nii.gz"
    write_brats_nifti(f, np.zeros((8, 8, 8), np.int16))
    monkeypatch.setattr(nifti_scan, "_FiniteCounter", None)  # would raise if used
    assert nifti_scan.scan_nifti(f).dtype == np.dtype("<i2")


def test_nnunet_check_runs_in_process_and_reports_failures(tmp_path):
    import multiprocessing

    import nnunetv2.experiment_planning.verify_dataset_integrity as vdi
    import nnunetv2.utilities.utils as nnunet_utils
    from nnunet_ext.dataset_conversion import ConversionError
    from nnunet_ext.dataset_conversion.brats import convert_brats
    from nnunet_ext.dataset_conversion.nnunet_check import verify_dataset_in_process

    raw = tmp_path / "raw"
    raw.mkdir()
    convert_brats(make_brats(tmp_path / "b", 2021, n_patients=2), 137, year=2021, raw_root=raw, verify=False,
                  progress=False)
    folder = raw / "Dataset137_BraTS2021"
    printed = verify_dataset_in_process(str(folder), 2)
    assert "verify_dataset_integrity Done" in printed
    assert multiprocessing.active_children() == []  # no pool was started
    assert vdi.multiprocessing is multiprocessing and nnunet_utils.Pool is multiprocessing.Pool  # restored

    ds = json.loads((folder / "dataset.json").read_text())
    ds["numTraining"] = 3
    (folder / "dataset.json").write_text(json.dumps(ds))
    with pytest.raises(ConversionError, match="nnU-Net's integrity check failed: AssertionError: Did not find the "
                                              "expected number of training cases"):
        verify_dataset_in_process(str(folder))
    assert vdi.multiprocessing is multiprocessing


@pytest.mark.parametrize("case", ["uint8", "int16 big-endian", "float32", "scaled int16", "4D"])
def test_read_nifti_returns_what_simpleitk_reads(tmp_path, case):
    """Voxels decoded by the validation pass are used only where SimpleITK would return them unchanged."""
    import nibabel as nib
    import SimpleITK as sitk
    from nnunet_ext.dataset_conversion.io import read_nifti

    rng = np.random.default_rng(1)
    shape = (7, 6, 5, 2) if case == "4D" else (7, 6, 5)
    dtype = {"uint8": np.uint8, "float32": np.float32}.get(case, np.int16)
    data = rng.integers(0, 200, shape).astype(dtype)
    affine = np.array([[-0.8, 0, 0, 3.0], [0, 0.9, 0, -2.0], [0, 0, 2.5, 1.0], [0, 0, 0, 1]])
    img = nib.Nifti1Image(data, affine)
    if case == "int16 big-endian":
        img = nib.Nifti1Image(data.astype(">i2"), affine, nib.Nifti1Header(endianness=">"))
    if case == "scaled int16":
        img.header.set_slope_inter(0.5, 10.0)
    f = tmp_path / "x.nii.gz"
    nib.save(img, str(f))
    ref = sitk.ReadImage(str(f))
    vol = read_nifti(f)
    expected = sitk.GetArrayFromImage(ref)
    assert vol.array.dtype == expected.dtype and np.array_equal(vol.array, expected)
    assert vol.spacing == tuple(ref.GetSpacing()[::-1]) and vol.origin == ref.GetOrigin()
    assert vol.direction == ref.GetDirection()
    assert (vol.itk_image is None) == (case in ("uint8", "int16 big-endian", "float32"))  # decoded only once
