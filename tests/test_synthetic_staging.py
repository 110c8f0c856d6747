"""The shared raw-dataset writer of the synthetic generators (nnunet_ext.synthetic.staging)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_ext.synthetic.fading import FadeSettings, hard_tube_case, write_hard_tubes_dataset
from nnunet_ext.synthetic.staging import write_raw_dataset


def _read(path):
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), image.GetSpacing()


def test_tubes_dataset_holds_exactly_the_generated_cases(tmp_path):
    fade = FadeSettings(n_fades=1, length=4.0, floor=0.1)
    folder = write_hard_tubes_dataset(tmp_path, 12, "T", (32, 32), (1.0, 0.5), n_train=2, n_test=1, seed=7, fade=fade,
                                      noise=0.2)
    for i, (images, labels) in enumerate([("imagesTr", "labelsTr")] * 2 + [("imagesTs", "labelsTs")]):
        case = hard_tube_case((32, 32), (1.0, 0.5), seed=7 + 1000 * i, fade=fade, noise=0.2)
        image, spacing = _read(folder / images / f"case_{i:03d}_0000.nii.gz")
        label, _ = _read(folder / labels / f"case_{i:03d}.nii.gz")
        np.testing.assert_array_equal(image, case.image[None])   # 2D → one-slice volume
        np.testing.assert_array_equal(label, case.label[None])
        assert spacing == (0.5, 1.0, 999.0)                      # x, y, z: nnU-Net's 2D convention
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["numTraining"] == 2 and dataset["name"] == "T" and dataset["labels"]["tube"] == 1


def test_writer_refuses_clashes_and_bad_cases_without_leaving_files(tmp_path):
    def make_case(i):
        return np.full((4, 5, 6), i, np.uint16), np.zeros((4, 5, 6), np.uint8)

    meta = {"channel_names": {"0": "x"}, "labels": {"background": 0, "a": 1}}
    first = write_raw_dataset(tmp_path, 5, "A", make_case, 1, 1, (2.0, 1.0, 1.0), meta)
    assert _read(first / "imagesTs" / "case_001_0000.nii.gz")[1] == (1.0, 1.0, 2.0)
    with pytest.raises(FileExistsError, match="Dataset005_A"):
        write_raw_dataset(tmp_path, 5, "B", make_case, 1, 1, (1.0, 1.0, 1.0), meta)
    with pytest.raises(ValueError, match="disagree"):
        write_raw_dataset(tmp_path, 6, "C", make_case, 1, 0, (1.0, 1.0), meta)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset005_A"]  # no staging left behind
    replaced = write_raw_dataset(tmp_path, 5, "B", make_case, 2, 0, (1.0, 1.0, 1.0), meta, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [replaced.name] == ["Dataset005_B"]
    with pytest.raises(ValueError, match="dataset_id"):
        write_raw_dataset(tmp_path, 1000, "D", make_case, 1, 0, (1.0, 1.0, 1.0), meta)
