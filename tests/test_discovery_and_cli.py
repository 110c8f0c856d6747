"""nnU-Net's own trainer lookup finds our classes (the very same objects); the CLI and `doctor`."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

import nnunet_ext.trainers as trainers
from nnunet_ext.cli import main
from nnunet_ext.discovery import run_checks, trainer_folder
from nnunet_ext.trainers.budget import parse_budget_name


@pytest.fixture
def ext_env(monkeypatch, tmp_path):
    monkeypatch.setenv("nnUNet_extTrainer", str(trainer_folder()))
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(name, str(tmp_path / name))
    return tmp_path


@pytest.mark.parametrize("name", ["TopoTrainer", "TopoTrainer_3epochs", "TopoTrainer_2epochs_10iters",
                                  "TopoTrainer_1epoch", "nnUNetTrainer_3epochs_7iters"])
def test_nnunet_lookup_returns_the_class_importable_from_nnunet_ext(ext_env, name):
    found = recursive_find_trainer_class_by_name(name)
    assert found is getattr(trainers, name)
    assert issubclass(found, nnUNetTrainer)
    assert found is recursive_find_trainer_class_by_name(name)  # stable over repeated lookups
    assert pickle.loads(pickle.dumps(found)) is found


def test_nnunet_own_variants_are_not_shadowed(ext_env):
    from nnunetv2.training.nnUNetTrainer.variants.training_length.nnUNetTrainer_Xepochs import nnUNetTrainer_5epochs

    assert recursive_find_trainer_class_by_name("nnUNetTrainer_5epochs") is nnUNetTrainer_5epochs


def test_unknown_trainer_keeps_nnunets_error(ext_env):
    with pytest.raises(RuntimeError, match="Could not find requested nnunet trainer TopoTrainerX"):
        recursive_find_trainer_class_by_name("TopoTrainerX")


def test_budget_variant_sets_the_training_length(tmp_path, monkeypatch):
    import copy
    import json
    from pathlib import Path

    import torch

    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    plans = json.loads((Path(__file__).parent / "data" / "plans_tubes.json").read_text())
    plans["continue_training"] = False
    dataset_json = {"labels": {"background": 0, "vessel": 1}, "channel_names": {"0": "x"}, "numTraining": 5,
                    "file_ending": ".nii.gz"}
    trainer = trainers.TopoTrainer_3epochs_10iters(copy.deepcopy(plans), "3d_fullres", 0, dataset_json,
                                                  torch.device("cpu"))
    assert (trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch) == (3, 10, 2)
    assert isinstance(trainer, trainers.TopoTrainer)
    # nnU-Net records the constructor arguments by name to rebuild the trainer from a checkpoint
    assert list(trainer.my_init_kwargs) == ["plans", "configuration", "fold", "dataset_json", "device"]
    assert trainer.output_folder.endswith("TopoTrainer_3epochs_10iters__nnUNetPlans__3d_fullres/fold_0")


@pytest.mark.parametrize("name,expected", [
    ("TopoTrainer_1epoch", ("TopoTrainer", 1, None)),
    ("TopoTrainer_20epochs_5iters", ("TopoTrainer", 20, 5)),
    ("TopoTrainer_1epochs", None), ("TopoTrainer_2epoch", None), ("TopoTrainer_0epochs", None),
    ("TopoTrainer", None), ("TopoTrainer_5epochs_0iters", None),
])
def test_budget_names(name, expected):
    assert parse_budget_name(name) == expected


def test_unknown_names_are_attribute_errors():
    with pytest.raises(AttributeError):
        trainers.NoSuchTrainer_5epochs
    assert not hasattr(trainers, "TopoTrainer_1epochs")


def test_doctor_passes_when_everything_is_set(ext_env, capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "All checks passed" in out and "nnU-Net finds TopoTrainer" in out


def test_doctor_names_each_missing_variable_and_the_fix(monkeypatch, capsys):
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer"):
        monkeypatch.delenv(name, raising=False)
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        assert f"{name} is not set" in out and f"export {name}=" in out
    assert "export nnUNet_extTrainer=$(nnunet-ext trainer-path)" in out


def test_doctor_reports_a_missing_folder_and_a_foreign_ext_path(ext_env, monkeypatch, tmp_path):
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "does_not_exist"))
    monkeypatch.setenv("nnUNet_extTrainer", str(tmp_path))
    checks = {c.name: c for c in run_checks()}
    assert not checks["nnUNet_raw"].ok and "mkdir -p" in checks["nnUNet_raw"].message
    assert not checks["nnUNet_extTrainer"].ok and "does not contain" in checks["nnUNet_extTrainer"].message


def test_console_script_help_and_trainer_path():
    exe = os.path.join(os.path.dirname(sys.executable), "nnunet-ext")
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("trainer-path", "trainers", "doctor", "demo", "evaluate"):
        assert command in out
    path = subprocess.run([exe, "trainer-path"], capture_output=True, text=True, check=True).stdout.strip()
    assert path == str(trainer_folder()) and os.path.isfile(os.path.join(path, "nnunet_ext_trainers.py"))


def test_trainers_command_lists_shipped_trainers(capsys):
    assert main(["trainers"]) == 0
    assert "TopoTrainer" in capsys.readouterr().out
