"""`nnunet-ext validate`: nnU-Net's final validation for any saved checkpoint, end to end on a tiny dataset
(issue 13, item 9): two checkpoints whose weights differ, each validated into its own folder, with the
checkpoint view that results-folder tools read."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnunet_ext.nnunet_commands import run_nnunet
from nnunet_ext.recipes.loader import RECIPES_VARIABLE

RECIPE_NAME = "validate_tiny"
TRAINER = f"Recipe_{RECIPE_NAME}"
RECIPE = {
    "description": "two tiny epochs; checkpoint_best_first holds epoch 0, checkpoint_final epoch 1",
    "epochs": 2, "iterations_per_epoch": 3, "val_iterations_per_epoch": 1, "save_every": 1,
    # a constant never improves after its first value: checkpoint_best_first is epoch 0 for sure
    "checkpoints": {"every": 1, "metrics": {"first": {"expression": "0 * val_loss", "mode": "max"}}},
}


def validate(env, *argv):
    return subprocess.run([sys.executable, "-m", "nnunet_ext.cli", "validate", *map(str, argv)], env=env,
                          capture_output=True, text=True)


@pytest.mark.slow
def test_validate_scores_two_checkpoints_into_their_own_folders(nnunet_env, preprocessed_dataset, tmp_path):
    import torch
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / f"{RECIPE_NAME}.json").write_text(json.dumps(RECIPE))
    env = {**nnunet_env, RECIPES_VARIABLE: str(recipes), "nnUNet_results": str(tmp_path / "results"),
           "OMP_NUM_THREADS": "2"}
    dataset = preprocessed_dataset("labels")
    did = dataset.name[len("Dataset"):len("Dataset") + 3]
    run_nnunet(["nnUNetv2_train", did, "3d_fullres", 0, "-tr", TRAINER, "-device", "cpu"], tmp_path / "train.log",
               env, echo=None)
    results = tmp_path / "results" / dataset.name / f"{TRAINER}__nnUNetPlans__3d_fullres"
    fold = results / "fold_0"
    epochs = {name: torch.load(fold / name, map_location="cpu", weights_only=False)["current_epoch"] - 1
              for name in ("checkpoint_best_first.pth", "checkpoint_final.pth")}
    assert epochs == {"checkpoint_best_first.pth": 0, "checkpoint_final.pth": 1}

    done = validate(env, "-d", did, "-c", "3d_fullres", "-tr", TRAINER, "-f", 0, "-chk", "checkpoint_best_first.pth",
                    "checkpoint_final.pth", "--npz", "-device", "cpu")
    assert done.returncode == 0, done.stderr[-3000:]
    first, final = fold / "validation_checkpoint_best_first", fold / "validation_checkpoint_final"
    for folder in (first, final):
        assert (folder / "summary.json").is_file() and (folder / "summary_topology.json").is_file(), folder
    assert json.loads((first / "checkpoint.json").read_text())["epoch"] == 0
    cases = sorted(p.name for p in (fold / "validation").glob("*.nii.gz"))
    assert cases and cases == sorted(p.name for p in first.glob("*.nii.gz")) == sorted(p.name for p in final.glob("*.nii.gz"))
    # the same cases and settings as nnU-Net's own final validation: checkpoint_final reproduces it exactly
    for case in cases:
        ours, stock = (SimpleITKIO().read_seg(str(f / case))[0] for f in (final, fold / "validation"))
        assert np.array_equal(ours, stock), case
    # the two checkpoints differ, and so do their predicted probabilities
    case = cases[0].replace(".nii.gz", ".npz")
    p_first, p_final = (np.load(f / case)["probabilities"] for f in (first, final))
    assert p_first.shape == p_final.shape and not np.allclose(p_first, p_final)

    # the checkpoint view is a results folder for compare / postprocess / ensemble / find_best_configuration
    view = results.parent / f"{TRAINER}@best_first__nnUNetPlans__3d_fullres"
    assert (view / "fold_0" / "validation").resolve() == first.resolve()
    assert (view / "fold_0" / "checkpoint_final.pth").resolve() == (fold / "checkpoint_best_first.pth").resolve()
    from nnunet_ext.evaluation.compare import is_nnunet_results_folder
    assert is_nnunet_results_folder(str(view)) and (view / "dataset.json").is_file() and (view / "plans.json").is_file()

    # a missing checkpoint says what exists
    missing = validate(env, "-d", did, "-c", "3d_fullres", "-tr", TRAINER, "-f", 0, "-chk", "checkpoint_best_dice.pth",
                       "-device", "cpu")
    assert missing.returncode == 1 and "available: checkpoint_best.pth, checkpoint_best_first.pth" in missing.stderr
