"""Acceptance: a converted dataset goes through the stock `nnUNetv2_plan_and_preprocess --verify_dataset_integrity`."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from _conversion_fixtures import make_vesuvius


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nnUNetv2_plan_and_preprocess") is None, reason="nnU-Net CLI not on PATH")
def test_vesuvius_passes_stock_plan_and_preprocess(tmp_path):
    from nnunet_ext.dataset_conversion.vesuvius import convert_vesuvius

    env = dict(os.environ)
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (tmp_path / var).mkdir()
        env[var] = str(tmp_path / var)
    src = make_vesuvius(tmp_path / "vesuvius")
    convert_vesuvius(src, 991, raw_root=tmp_path / "nnUNet_raw", progress=False, n_folds=2, verify=False)
    proc = subprocess.run(["nnUNetv2_plan_and_preprocess", "-d", "991", "--verify_dataset_integrity",
                           "-c", "3d_fullres", "-np", "1", "-npfp", "1"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    pp = tmp_path / "nnUNet_preprocessed" / "Dataset991_VesuviusSurface"
    plans = json.loads((pp / "nnUNetPlans.json").read_text())
    assert plans["configurations"]["3d_fullres"]["spacing"] == [1.0, 1.0, 1.0]
    assert len(json.loads((pp / "splits_final.json").read_text())) == 2  # copied from the raw folder
    assert len(list((pp / "nnUNetPlans_3d_fullres").glob("*.b2nd"))) >= 3 or \
        len(list((pp / "nnUNetPlans_3d_fullres").iterdir())) >= 3
