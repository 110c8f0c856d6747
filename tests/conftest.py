"""Shared fixtures: an isolated nnU-Net folder tree with nnunet-ext's trainers on nnUNet_extTrainer."""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import settings

from nnunet_ext.discovery import trainer_folder

# Property tests draw the same examples on every run, so CI is reproducible; set
# HYPOTHESIS_PROFILE=explore to search with fresh random examples.
settings.register_profile("reproducible", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "reproducible"))

#: one tiny synthetic dataset per nnU-Net mode, shared by every slow test that trains on it
SYNTHETIC_DATASET_IDS = {"labels": 801, "regions": 802, "ignore": 803}
SYNTHETIC_SHAPE = (16, 40, 40)


@pytest.fixture(autouse=True)
def _seeded_random_generators():
    """Every test starts from the same global random state (tests that draw unseeded tensors or arrays
    give the same values on every run)."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


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
    env["nnUNet_def_n_proc"] = "1"  # nnU-Net's final validation would start 8 export workers on 2 cores
    env["nnUNet_compile"] = "false"
    env["PYTHONWARNINGS"] = "ignore"
    return env


@pytest.fixture(scope="session")
def preprocessed_dataset(nnunet_env, tmp_path_factory):
    """``preprocessed_dataset(kind)`` → the raw dataset folder of a tiny synthetic tube dataset
    (``kind`` = "labels", "regions" or "ignore"; 5 training + 2 test cases of 16×40×40), planned and
    preprocessed for 3d_fullres by the stock command with nnU-Net's integrity check, once per session."""
    from nnunet_ext.nnunet_commands import run_nnunet
    from nnunet_ext.synthetic import write_synthetic_dataset

    done: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in done:
            did = SYNTHETIC_DATASET_IDS[kind]
            logs = tmp_path_factory.mktemp(f"plan_{kind}")
            dataset = write_synthetic_dataset(nnunet_env["nnUNet_raw"], did, kind, n_train=5, n_test=2,
                                              shape=SYNTHETIC_SHAPE, seed=did)
            run_nnunet(["nnUNetv2_plan_and_preprocess", "-d", did, "-c", "3d_fullres", "--verify_dataset_integrity",
                        "-np", 1, "-npfp", 1], logs / "plan.log", nnunet_env, echo=None)
            done[kind] = dataset
        return done[kind]

    return get
