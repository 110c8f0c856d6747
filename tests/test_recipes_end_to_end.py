"""A user recipe through the stock commands on the CPU: nnUNetv2_train -tr Recipe_<name>, nnUNetv2_predict -chk
checkpoint_best_<metric>.pth, and a run interrupted after one epoch and continued with --c, whose weights and
learning rates must equal the uninterrupted run's."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from nnunet_ext.nnunet_commands import nnunet_executable, run_nnunet
from nnunet_ext.recipes.loader import RECIPES_VARIABLE

pytestmark = pytest.mark.slow

RECIPE_NAME = "e2e_tiny"
TRAINER = f"Recipe_{RECIPE_NAME}"
RECIPE = {
    "description": "two tiny epochs with every recipe feature switched on",
    "epochs": 2, "iterations_per_epoch": 4, "val_iterations_per_epoch": 2, "save_every": 1,
    "class_weights": "auto",
    "terms": {
        "cldice": {"weight": {"type": "linear", "start_epoch": 0, "end_epoch": 1, "end_value": 0.5}},
        "weighted_ce": {"weight": 0.5, "options": {"class_weights": "class_weights"}},
    },
    "lr_schedule": {"type": "cosine", "warmup_epochs": 1},
    "checkpoints": {"every": 1, "metrics": {"val_loss": "val_loss", "dice_vessel": "dice_vessel",
                                            "topo": "0.5 * (1 - min(masd, 50) / 50) + 0.5 * cldice"}},
    "swa": {"start_epoch": 0},
}


def fold_folder(results: str | Path, dataset: Path) -> Path:
    return Path(results) / dataset.name / f"{TRAINER}__nnUNetPlans__3d_fullres" / "fold_0"


@pytest.fixture(scope="module")
def recipe_env(nnunet_env, tmp_path_factory):
    """The session's nnU-Net environment plus a user recipe folder; one export process for validation."""
    folder = tmp_path_factory.mktemp("user_recipes")
    (folder / f"{RECIPE_NAME}.json").write_text(json.dumps(RECIPE))
    return {**nnunet_env, RECIPES_VARIABLE: str(folder), "nnUNet_def_n_proc": "1", "OMP_WAIT_POLICY": "PASSIVE",
            "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def trained(recipe_env, preprocessed_dataset, tmp_path_factory):
    dataset = preprocessed_dataset("labels")
    did = dataset.name[len("Dataset"):len("Dataset") + 3]
    logs = tmp_path_factory.mktemp("recipe_logs")
    run_nnunet(["nnUNetv2_train", did, "3d_fullres", 0, "-tr", TRAINER, "-device", "cpu"], logs / "train.log",
               recipe_env, echo=None)
    return dataset, did, fold_folder(recipe_env["nnUNet_results"], dataset), logs


def test_user_recipe_trains_with_every_feature(trained):
    dataset, _, fold, _ = trained
    for name in ("checkpoint_final.pth", "checkpoint_best.pth", "checkpoint_best_val_loss.pth",
                 "checkpoint_best_dice_vessel.pth", "checkpoint_best_topo.pth", "checkpoint_swa.pth",
                 "recipe.json", "loss_terms.json", "progress.png", "progress_terms.png"):
        assert (fold / name).is_file(), name
    saved = json.loads((fold / "recipe.json").read_text())
    assert saved["recipe"]["epochs"] == 2 and saved["source"].endswith(f"{RECIPE_NAME}.json")
    background, vessel = saved["derived"]["class_weights"]
    assert background == 1.0 and vessel > 1.0  # vessels are the rare class
    log = next(fold.glob("training_log_*.txt")).read_text()
    assert "class weights (auto" in log and "'vessel' is up-weighted" in log
    assert "loss terms (unweighted mean × weight): base" in log and "checkpoint metrics: val_loss" in log
    assert "SWA: the network normalises with instance norm" in log
    terms = json.loads((fold / "loss_terms.json").read_text())
    assert terms["weights"]["cldice"] == [0.0, 0.5] and terms["values"]["cldice"][0] is None
    assert all(np.isfinite(v) for v in terms["values"]["cldice"][1:] + terms["values"]["weighted_ce"])


def test_every_checkpoint_loads_and_predicts_through_the_stock_command(trained, recipe_env, tmp_path, monkeypatch):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    dataset, did, fold, logs = trained
    for key in ("nnUNet_results", "nnUNet_extTrainer", RECIPES_VARIABLE):
        monkeypatch.setenv(key, recipe_env[key])
    for checkpoint in sorted(p.name for p in fold.glob("checkpoint_*.pth")):
        predictor = nnUNetPredictor(device=torch.device("cpu"), use_mirroring=False)
        predictor.initialize_from_trained_model_folder(str(fold.parent), (0,), checkpoint_name=checkpoint)
        assert predictor.trainer_name == TRAINER
    case = sorted((dataset / "imagesTs").glob("*.nii.gz"))[0]
    (tmp_path / "in").mkdir()
    shutil.copy(case, tmp_path / "in" / case.name)
    run_nnunet(["nnUNetv2_predict", "-i", tmp_path / "in", "-o", tmp_path / "out", "-d", did, "-c", "3d_fullres",
                "-f", 0, "-tr", TRAINER, "-chk", "checkpoint_best_topo.pth", "-device", "cpu", "--disable_tta",
                "-npp", 1, "-nps", 1], logs / "predict.log", recipe_env, echo=None)
    assert (tmp_path / "out" / case.name.replace("_0000", "")).is_file()


def _train_until_second_epoch_starts(command: list[str], env: dict, log: Path) -> None:
    """Run nnUNetv2_train and kill it (with its data-loader workers) as soon as epoch 1 begins, i.e. after the
    checkpoint of epoch 0 was written."""
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                   start_new_session=True)
        try:
            for line in process.stdout:
                out.write(line)
                if "Epoch 1" in line:
                    break
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:  # it ended by itself (a failure: the log tells why)
                pass
            process.wait()


def test_continue_reproduces_the_uninterrupted_weights_and_learning_rates(trained, recipe_env, tmp_path):
    dataset, did, uninterrupted, logs = trained
    env = {**recipe_env, "nnUNet_results": str(tmp_path / "results")}
    command = [nnunet_executable("nnUNetv2_train"), did, "3d_fullres", "0", "-tr", TRAINER, "-device", "cpu"]
    _train_until_second_epoch_starts(command, env, logs / "interrupted.log")
    fold = fold_folder(env["nnUNet_results"], dataset)
    assert (fold / "checkpoint_latest.pth").is_file() and not (fold / "checkpoint_final.pth").exists(), \
        (logs / "interrupted.log").read_text()[-3000:]
    run_nnunet(["nnUNetv2_train", did, "3d_fullres", 0, "-tr", TRAINER, "-device", "cpu", "--c"],
               logs / "continued.log", env, echo=None)
    assert "Epoch 0\n" not in (logs / "continued.log").read_text()  # it really continued
    ours, reference = (json.loads((f / "loss_terms.json").read_text()) for f in (fold, uninterrupted))
    assert ours["epochs"] == reference["epochs"] == [0, 1]
    assert ours["weights"] == reference["weights"] and ours["lr"] == reference["lr"]
    stock_lrs = [torch.load(f / "checkpoint_final.pth", map_location="cpu", weights_only=False)["logging"]["lrs"]
                 for f in (fold, uninterrupted)]
    assert stock_lrs[0] == stock_lrs[1] == reference["lr"]
    assert json.loads((fold / "recipe.json").read_text())["derived"] == \
        json.loads((uninterrupted / "recipe.json").read_text())["derived"]
