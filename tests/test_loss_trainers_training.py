"""A short real training run through the stock ``nnUNetv2_train -device cpu`` for every trainer family,
each on a different nnU-Net mode: skeleton tubes (SkelRecallTrainer, regions), radius maps + soft
skeletons (CbDiceClDiceTrainer, ignore label), signed distances with a ramped weight (BoundaryTrainer,
labels) and a Dice-only base with focal + variance terms (FocalDiceVarianceTrainer, regions).
TopoTrainer's run is in test_end_to_end.py."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from nnunet_ext.nnunet_commands import run_nnunet

pytestmark = pytest.mark.slow

#: trainer → (dataset kind, text the training log must hold: the term is active in the last epoch)
FAMILIES = {
    "SkelRecallTrainer": ("regions", "loss term weights: skeleton_recall 1"),
    "CbDiceClDiceTrainer": ("ignore", "loss term weights: cbdice 1, cldice 0.5"),
    "BoundaryTrainer": ("labels", "loss term weights: boundary 0.5"),
    "FocalDiceVarianceTrainer": ("regions", "loss term weights: focal 1, variance 0.1"),
}
BUDGET = "_2epochs_3iters"


@pytest.fixture(scope="module", params=list(FAMILIES))
def trained(request, nnunet_env, preprocessed_dataset, tmp_path_factory):
    trainer = request.param + BUDGET
    kind, _ = FAMILIES[request.param]
    dataset = preprocessed_dataset(kind)
    logs = tmp_path_factory.mktemp(f"train_{request.param}")
    did = dataset.name[len("Dataset"):len("Dataset") + 3]
    run_nnunet(["nnUNetv2_train", did, "3d_fullres", 0, "-tr", trainer, "-device", "cpu"], logs / "train.log",
               nnunet_env, echo=None)
    fold = Path(nnunet_env["nnUNet_results"]) / dataset.name / f"{trainer}__nnUNetPlans__3d_fullres" / "fold_0"
    return request.param, fold


def test_training_finishes_with_finite_losses_and_nnunets_outputs(trained):
    name, fold = trained
    assert (fold / "checkpoint_final.pth").is_file() and (fold / "progress.png").is_file()
    log = next(fold.glob("training_log_*.txt")).read_text()
    losses = [float(v) for v in re.findall(r"train_loss (\S+)", log)]
    assert len(losses) == 2 and all(np.isfinite(losses)), log
    assert FAMILIES[name][1] in log, log
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert np.isfinite(summary["foreground_mean"]["Dice"])
    assert (fold / "validation" / "summary_topology.json").is_file()
