"""Acceptance: converted datasets go through the stock `nnUNetv2_plan_and_preprocess --verify_dataset_integrity`.

One call for one dataset of each converter (MiniVess, Vesuvius with its ignore label, BraTS 2023 regions,
MoNuSAC 2D RGB with ternary labels): nnU-Net's integrity check, fingerprint and plans for all four, and
3d_fullres preprocessing for the 3D ones (nnU-Net skips configurations a 2D dataset's plans lack).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from _conversion_fixtures import make_brats, make_minivess, make_monusac, make_vesuvius


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nnUNetv2_plan_and_preprocess") is None, reason="nnU-Net CLI not on PATH")
def test_every_converter_passes_stock_plan_and_preprocess(tmp_path):
    from nnunet_ext.dataset_conversion.brats import convert_brats
    from nnunet_ext.dataset_conversion.minivess import convert_minivess
    from nnunet_ext.dataset_conversion.monusac import convert_monusac
    from nnunet_ext.dataset_conversion.vesuvius import convert_vesuvius

    env = dict(os.environ)
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (tmp_path / var).mkdir()
        env[var] = str(tmp_path / var)
    raw = tmp_path / "nnUNet_raw"
    common = dict(raw_root=raw, progress=False, verify=False)
    convert_vesuvius(make_vesuvius(tmp_path / "vesuvius"), 991, n_folds=2, **common)
    convert_minivess(make_minivess(tmp_path / "minivess"), 992, n_folds=2, **common)
    convert_brats(make_brats(tmp_path / "ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData", 2023, n_patients=2,
                             timepoints=2), 993, year=2023, n_folds=2, **common)
    convert_monusac(make_monusac(tmp_path / "monusac"), 994, ternary=True, boundary_width=2, **common)
    ids = ["991", "992", "993", "994"]
    proc = subprocess.run(["nnUNetv2_plan_and_preprocess", "-d", *ids, "--verify_dataset_integrity",
                           "-c", "3d_fullres", "-np", "1", "-npfp", "1"],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("verify_dataset_integrity Done") == 4, proc.stdout[-3000:]

    pre = tmp_path / "nnUNet_preprocessed"
    folders = {d.name[:10]: d for d in pre.iterdir()}
    assert sorted(folders) == [f"Dataset{i}" for i in ids]
    ves = folders["Dataset991"]
    plans = json.loads((ves / "nnUNetPlans.json").read_text())
    assert plans["configurations"]["3d_fullres"]["spacing"] == [1.0, 1.0, 1.0]
    assert len(json.loads((ves / "splits_final.json").read_text())) == 2  # copied from the raw folder
    for d in ("Dataset991", "Dataset992", "Dataset993"):
        assert len(list((folders[d] / "nnUNetPlans_3d_fullres").iterdir())) >= 2, d
    brats_dj = json.loads((folders["Dataset993"] / "dataset.json").read_text())
    assert "regions_class_order" in brats_dj
    monusac_plans = json.loads((folders["Dataset994"] / "nnUNetPlans.json").read_text())
    assert "2d" in monusac_plans["configurations"] and "3d_fullres" not in monusac_plans["configurations"]
