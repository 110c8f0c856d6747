"""`nnunet-ext predict` and `nnunet-ext ensemble` through their argument parsers."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

from nnunet_ext.commands import predict as predict_command
from nnunet_ext.inference.untrained import shrink_configuration, write_untrained_model_folder

LABELS = {"channel_names": {"0": "x"}, "labels": {"background": 0, "a": 1, "b": 2}, "numTraining": 0,
          "file_ending": ".nii.gz"}


def run(argv):
    parser = argparse.ArgumentParser()
    predict_command.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def _centred_head(network, fold):
    head = network.decoder.seg_layers[-1]
    head.weight.sub_(head.weight.mean(1, keepdim=True)).mul_(25.0)
    head.bias.zero_()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    plans = shrink_configuration(json.loads((Path(__file__).parent / "data" / "plans_tubes.json").read_text()),
                                 "3d_fullres", (8, 16, 16), (4, 8))
    models = []
    for i, trainer in enumerate(("nnUNetTrainer", "nnUNetTrainer_5epochs")):
        models.append(write_untrained_model_folder(str(root / f"{trainer}__nnUNetPlans__3d_fullres"), plans, LABELS,
                                                   "3d_fullres", folds=(0, 1), trainer_name=trainer, seed=10 * i,
                                                   modify=_centred_head))
    (root / "in").mkdir()
    rng = np.random.default_rng(0)
    for k in range(2):
        img = sitk.GetImageFromArray(rng.normal(size=(10, 19, 17)).astype(np.float32) + 2)
        img.SetSpacing((0.8, 1.2, 1.0))
        sitk.WriteImage(img, str(root / "in" / f"case{k}_0000.nii.gz"))
    return root, models


def test_predict_in_worker_processes_equals_stock_then_refuses_to_overwrite(setup, tmp_path, monkeypatch, capsys):
    root, models = setup
    monkeypatch.delenv("nnUNet_extTrainer", raising=False)  # restored afterwards; the command sets it itself
    out = tmp_path / "out"
    argv = ["predict", "-i", str(root / "in"), "-o", str(out), "-m", models[0], "-f", "0", "1", "-device", "cpu",
            "--uncertainty", "variance", "entropy", "--save_probabilities", "-npp", "1", "-nps", "1",
            "--disable_progress_bar"]
    assert run(argv) == 0
    stock_out = tmp_path / "stock"
    stock_out.mkdir()
    stock = nnUNetPredictor(device=torch.device("cpu"), allow_tqdm=False)
    stock.initialize_from_trained_model_folder(models[0], (0, 1))
    stock.predict_from_files_sequential(str(root / "in"), str(stock_out))
    for k in range(2):
        ref = sitk.ReadImage(str(stock_out / f"case{k}.nii.gz"))
        got = sitk.ReadImage(str(out / f"case{k}.nii.gz"))
        assert np.array_equal(sitk.GetArrayFromImage(ref), sitk.GetArrayFromImage(got))
        for kind in ("variance", "entropy"):
            u = sitk.ReadImage(str(out / f"case{k}_uncertainty_{kind}.nii.gz"))
            assert u.GetSize() == got.GetSize() and u.GetSpacing() == got.GetSpacing()
        assert not (out / f"case{k}_uncertainty_mutual_information.nii.gz").exists()
        assert (out / f"case{k}.npz").is_file()
    capsys.readouterr()
    assert run(argv) == 1
    assert "exist already" in capsys.readouterr().err
    assert run(argv + ["--continue_prediction"]) == 0


def test_predict_sequential_with_uncertainty_folder_and_package_trainer_lookup(setup, tmp_path, monkeypatch):
    root, models = setup
    monkeypatch.delenv("nnUNet_extTrainer", raising=False)
    out, maps = tmp_path / "seg", tmp_path / "maps"
    # nnUNetTrainer_5epochs is a budget variant that only nnunet-ext provides
    assert run(["predict", "-i", str(root / "in"), "-o", str(out), "-m", models[1], "-f", "0", "-device", "cpu",
                "-chk", "checkpoint_final.pth", "--uncertainty", "mutual_information", "--uncertainty_folder",
                str(maps), "-npp", "0", "-nps", "0", "--disable_tta", "--disable_progress_bar"]) == 0
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["case0.nii.gz", "case1.nii.gz"]
    assert sorted(p.name for p in maps.glob("*.nii.gz")) == ["case0_uncertainty_mutual_information.nii.gz",
                                                             "case1_uncertainty_mutual_information.nii.gz"]


def test_predict_errors(setup, tmp_path, capsys):
    root, models = setup
    base = ["predict", "-i", str(root / "in"), "-o", str(tmp_path / "o"), "-device", "cpu", "-npp", "0", "-nps", "0"]
    assert run(base + ["-m", models[0], "-f", "3"]) == 1
    assert "fold_3" in capsys.readouterr().err
    assert run(base + ["-m", models[0], "--uncertainty", "std"]) == 1
    assert "unknown uncertainty kind 'std'" in capsys.readouterr().err
    assert run(base + ["-d", "999"]) == 1
    assert "-d and -c" in capsys.readouterr().err
    assert run(base + ["-m", str(tmp_path / "nothing")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_ensemble_command_with_weights_and_fit(setup, tmp_path, capsys):
    root, models = setup
    members = []
    for i, m in enumerate(models):
        out = tmp_path / f"p{i}"
        assert run(["predict", "-i", str(root / "in"), "-o", str(out), "-m", m, "-f", "0", "-device", "cpu",
                    "--uncertainty", "none", "--save_probabilities", "-npp", "0", "-nps", "0",
                    "--disable_progress_bar"]) == 0
        members.append(str(out))
    assert run(["ensemble", "-i", *members, "-o", str(tmp_path / "e"), "--weights", "1", "0"]) == 0
    a = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "e" / "case0.nii.gz")))
    b = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "p0" / "case0.nii.gz")))
    assert np.array_equal(a, b)
    # the members' own segmentations serve as references: the first member alone is perfect on them
    capsys.readouterr()
    assert run(["ensemble", "-i", *members, "-o", str(tmp_path / "f"), "--fit-on", *members, "--gt", members[0],
                "--grid-step", "0.5"]) == 0
    fitted = json.loads((tmp_path / "f" / "fitted_weights.json").read_text())
    assert fitted["weights"] == [1.0, 0.0] and fitted["score"] == pytest.approx(1.0)
    assert run(["ensemble", "-i", *members, "-o", str(tmp_path / "g"), "--weights",
                str(tmp_path / "f" / "fitted_weights.json")]) == 0
    assert run(["ensemble", "-i", *members, "-o", str(tmp_path / "g"), "--weights", "1", "1"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert run(["ensemble", "-i", *members, "-o", str(tmp_path / "h"), "--fit-on", members[0]]) == 1
    assert "--gt" in capsys.readouterr().err
