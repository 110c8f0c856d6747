"""Shared fixtures: an isolated nnU-Net folder tree with nnunet-ext's trainers on nnUNet_extTrainer."""
from __future__ import annotations

import os

import pytest

from nnunet_ext.discovery import trainer_folder


@pytest.fixture(scope="session")
def nnunet_env(tmp_path_factory):
    """Environment for the stock nnU-Net commands, pointing at fresh raw/preprocessed/results folders."""
    root = tmp_path_factory.mktemp("nnunet")
    env = dict(os.environ)
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (root / name).mkdir()
        env[name] = str(root / name)
    env["nnUNet_extTrainer"] = str(trainer_folder())
    env["nnUNet_n_proc_DA"] = "1"
    env["nnUNet_compile"] = "false"
    env["PYTHONWARNINGS"] = "ignore"
    return env
