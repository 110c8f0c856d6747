"""The stock nnU-Net commands with our trainers, on tiny synthetic tube datasets, on the CPU.

plan/preprocess (with nnU-Net's integrity check) → nnUNetv2_train -tr <short TopoTrainer> → nnUNetv2_predict
with its default mirroring TTA → checks on the written predictions. One dataset per nnU-Net mode: plain
labels, overlapping regions (sigmoid) and an ignore label.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_ext.evaluation import dice_score
from nnunet_ext.nnunet_commands import run_nnunet

pytestmark = pytest.mark.slow

TRAINER = "TopoTrainer_2epochs_25iters"
#: Dice of the vessel class/region on the test volumes after 50 training iterations, measured in repeated
#: trainings: labels 0.84, regions 0.85–0.88, ignore 0.83 (with 12 iterations regions scattered between
#: 0.28 and 0.64, too close to any floor). A broken loss or pipeline gives ≈ 0–0.1.
DICE_FLOOR = 0.5


def _pipeline(nnunet_env, kind: str, dataset: Path, tmp_path_factory) -> dict:
    did = dataset.name[len("Dataset"):len("Dataset") + 3]
    logs = tmp_path_factory.mktemp(f"logs_{kind}")
    run_nnunet(["nnUNetv2_train", did, "3d_fullres", 0, "-tr", TRAINER, "-device", "cpu"], logs / "train.log",
               nnunet_env, echo=None)
    predictions = tmp_path_factory.mktemp(f"pred_{kind}")
    run_nnunet(["nnUNetv2_predict", "-i", dataset / "imagesTs", "-o", predictions, "-d", did, "-c", "3d_fullres",
                "-f", 0, "-tr", TRAINER, "-device", "cpu"], logs / "predict.log", nnunet_env, echo=None)
    results = Path(nnunet_env["nnUNet_results"]) / dataset.name / f"{TRAINER}__nnUNetPlans__3d_fullres" / "fold_0"
    return {"dataset": dataset, "predictions": predictions, "fold": results, "logs": logs}


@pytest.fixture(scope="module", params=["labels", "regions", "ignore"])
def pipeline(request, nnunet_env, preprocessed_dataset, tmp_path_factory):
    return request.param, _pipeline(nnunet_env, request.param, preprocessed_dataset(request.param), tmp_path_factory)


def _read(path):
    image = sitk.ReadImage(str(path))
    return image, sitk.GetArrayFromImage(image)


def test_training_ran_through_our_trainer_and_wrote_nnunet_outputs(pipeline):
    kind, run = pipeline
    fold = run["fold"]
    assert (fold / "checkpoint_final.pth").is_file()
    assert (fold / "validation" / "summary.json").is_file()
    log = next(fold.glob("training_log_*.txt")).read_text()
    assert "Epoch 1" in log and "train_loss" in log
    # the final validation of nnU-Net ran on our network and produced finite Dice values
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert np.isfinite(summary["foreground_mean"]["Dice"])
    # our trainers add topology metrics beside nnU-Net's summary
    topology = json.loads((fold / "validation" / "summary_topology.json").read_text())
    assert {"dice", "cldice", "betti_0_error"} <= set(topology["foreground_mean"])
    assert topology["foreground_mean"]["dice"] == pytest.approx(summary["foreground_mean"]["Dice"], abs=1e-6)
    # the soft-skeleton iterations were chosen from the preprocessed training labels, stored and logged
    chosen = json.loads((fold / "skeleton_iterations.json").read_text())
    assert chosen["cases"] >= 3 and len(chosen["iterations"]) >= 2 and all(k >= 1 for k in chosen["iterations"])
    assert chosen["iterations"] == sorted(chosen["iterations"], reverse=True)  # coarser levels need fewer
    assert f"soft-skeleton iterations per deep-supervision level: {chosen['iterations']}" in log


def test_predictions_have_the_reference_geometry_and_valid_labels(pipeline):
    kind, run = pipeline
    references = sorted((run["dataset"] / "labelsTs").glob("*.nii.gz"))
    assert len(references) == 2
    allowed = {"labels": {0, 1}, "regions": {0, 1, 2}, "ignore": {0, 1}}[kind]
    for reference_path in references:
        reference, _ = _read(reference_path)
        predicted, prediction = _read(run["predictions"] / reference_path.name)
        assert prediction.shape == sitk.GetArrayFromImage(reference).shape
        assert np.allclose(predicted.GetSpacing(), reference.GetSpacing())
        assert np.allclose(predicted.GetOrigin(), reference.GetOrigin())
        assert np.allclose(predicted.GetDirection(), reference.GetDirection())
        assert set(np.unique(prediction).tolist()) <= allowed  # never the ignore label, never unknown values


def test_prediction_finds_the_vessels(pipeline):
    kind, run = pipeline
    scores = []
    for reference_path in sorted((run["dataset"] / "labelsTs").glob("*.nii.gz")):
        _, reference = _read(reference_path)
        _, prediction = _read(run["predictions"] / reference_path.name)
        # vessel: label 1 (labels, ignore) or the region {1, 2} (regions); ignored voxels are not scored
        labeled = reference != 2 if kind == "ignore" else np.ones(reference.shape, dtype=bool)
        scores.append(dice_score((prediction > 0) & labeled, (reference > 0) & labeled))
    assert np.mean(scores) > DICE_FLOOR, f"{kind}: mean test Dice {np.mean(scores):.3f} (per case {scores})"
