"""TopoTrainer's loss, built by the trainer from real nnU-Net plans, in every nnU-Net mode.

{labels, regions} × {ignore label, none} × {2D, 3D} × {deep supervision on, off} × {empty, normal patch}:
finite value, finite gradients, and the clDice term reaches every output that nnU-Net weights.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
from batchgeneratorsv2.transforms.utils.seg_to_regions import ConvertSegmentationToRegionsTransform

from nnunet_ext.losses import DeepSupervisedLoss, NonFiniteLossError
from nnunet_ext.synthetic.tubes import branching_tubes
from nnunet_ext.trainers import TopoTrainer

PLANS = json.loads((Path(__file__).parent / "data" / "plans_tubes.json").read_text())
DATASET_JSONS = {
    ("labels", False): {"labels": {"background": 0, "vessel": 1, "wall": 2}},
    ("labels", True): {"labels": {"background": 0, "vessel": 1, "wall": 2, "ignore": 3}},
    ("regions", False): {"labels": {"background": 0, "vessel": [1, 2], "lumen": [2]}, "regions_class_order": [1, 2]},
    ("regions", True): {"labels": {"background": 0, "vessel": [1, 2], "lumen": [2], "ignore": 3},
                        "regions_class_order": [1, 2]},
}


class ZeroLoss(torch.nn.Module):
    def forward(self, logits, target):
        return logits.sum() * 0


def make_trainer(tmp_path, monkeypatch, mode, ignore, configuration, deep_supervision=True, cls=TopoTrainer,
                 skeleton_iterations="3"):
    """A trainer on the test plans (no preprocessed data: the soft-skeleton iterations are set through the
    environment unless ``skeleton_iterations`` is None)."""
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    if skeleton_iterations is not None:
        monkeypatch.setenv("nnunet_ext_skeleton_iterations", skeleton_iterations)
    dataset_json = {"channel_names": {"0": "x"}, "numTraining": 5, "file_ending": ".nii.gz",
                    **copy.deepcopy(DATASET_JSONS[(mode, ignore)])}
    plans = copy.deepcopy(PLANS)
    plans["continue_training"] = False
    trainer = cls(plans, configuration, 0, dataset_json, torch.device("cpu"))
    trainer.enable_deep_supervision = deep_supervision
    return trainer


def make_batch(trainer, empty: bool, seed: int = 0):
    """Logits for every output of the network and nnU-Net's own targets (regions, ignore, DS)."""
    cm, lm = trainer.configuration_manager, trainer.label_manager
    patch = tuple(cm.patch_size)
    rng = np.random.default_rng(seed)
    seg = np.zeros((2, 1) + patch, dtype=np.int16)
    if not empty:
        for b in range(2):
            shape3d = patch if len(patch) == 3 else (1,) + patch
            tree = branching_tubes(shape3d, radius_range=(1.0, 2.5), seed=seed + b)
            labels = np.where(tree.mask(0.5), 2, np.where(tree.mask(), 1, 0)).reshape(patch)
            seg[b, 0] = labels
    if lm.has_ignore_label:
        frame = np.ones(patch, bool)
        frame[tuple(slice(2, -2) for _ in patch)] = False
        seg[:, 0][:, frame] = lm.ignore_label
    if empty and lm.has_ignore_label:
        seg[1] = lm.ignore_label  # the second sample is entirely ignored
    targets = []
    for b in range(2):
        sample = torch.from_numpy(seg[b])
        if lm.has_regions:
            regions = list(lm.foreground_regions) + ([lm.ignore_label] if lm.has_ignore_label else [])
            sample = ConvertSegmentationToRegionsTransform(regions, 0)(segmentation=sample)["segmentation"]
        scales = trainer._get_deep_supervision_scales()
        targets.append(DownsampleSegForDSTransform(scales)(segmentation=sample)["segmentation"] if scales else [sample])
    targets = [torch.stack(level) for level in zip(*targets)]
    heads = lm.num_segmentation_heads
    logits = [torch.from_numpy(rng.normal(size=(2, heads) + tuple(t.shape[2:])).astype(np.float32)).requires_grad_()
              for t in targets]
    if not trainer.enable_deep_supervision:
        return logits[0], targets[0]
    return logits, targets


@pytest.mark.parametrize("empty", [False, True], ids=["patch", "empty"])
@pytest.mark.parametrize("deep_supervision", [True, False], ids=["ds", "nods"])
@pytest.mark.parametrize("configuration", ["3d_fullres", "2d"])
@pytest.mark.parametrize("ignore", [False, True], ids=["noignore", "ignore"])
@pytest.mark.parametrize("mode", ["labels", "regions"])
def test_every_mode_gives_finite_loss_and_gradients(tmp_path, monkeypatch, mode, ignore, configuration,
                                                   deep_supervision, empty):
    trainer = make_trainer(tmp_path, monkeypatch, mode, ignore, configuration, deep_supervision)
    loss = trainer._build_loss()
    logits, targets = make_batch(trainer, empty)
    value = loss(logits, targets)
    value.backward()
    assert torch.isfinite(value)
    outputs = logits if deep_supervision else [logits]
    weights = loss.weights if deep_supervision else (1.0,)
    for w, output in zip(weights, outputs):
        if w != 0:
            assert torch.isfinite(output.grad).all() and output.grad.abs().sum() > 0
    terms = loss.loss.last_values
    assert set(terms) == {"base", "cldice"} and all(torch.isfinite(v) for v in terms.values())


@pytest.mark.parametrize("mode", ["labels", "regions"])
def test_cldice_term_reaches_every_weighted_deep_supervision_output(tmp_path, monkeypatch, mode):
    trainer = make_trainer(tmp_path, monkeypatch, mode, True, "3d_fullres")
    full = trainer._build_loss()
    assert isinstance(full, DeepSupervisedLoss)
    # isolate the topology term: same trainer, base loss switched off
    full.loss.base = ZeroLoss()
    logits, targets = make_batch(trainer, empty=False)
    full(logits, targets).backward()
    weights = full.weights
    assert weights[-1] == 0 and all(w > 0 for w in weights[:-1])  # nnU-Net's DS weights, lowest unused
    for w, output in zip(weights, logits):
        reached = output.grad is not None and output.grad.abs().sum() > 0
        assert reached == (w != 0)


def test_default_weight_and_deep_supervision_weights_match_nnunet(tmp_path, monkeypatch):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    trainer = make_trainer(tmp_path, monkeypatch, "labels", False, "3d_fullres")
    stock = make_trainer(tmp_path, monkeypatch, "labels", False, "3d_fullres", cls=nnUNetTrainer)
    ours, theirs = trainer._build_loss(), stock._build_loss()
    assert ours.weights == tuple(theirs.weight_factors)
    assert [t.weight for t in ours.loss.term_specs] == [0.5]
    # with the clDice weight at 0 the loss is exactly nnU-Net's
    ours.loss.set_weights({"cldice": 0.0})
    logits, targets = make_batch(trainer, empty=False)
    assert torch.allclose(ours(logits, targets), theirs(logits, targets))


def test_nan_logits_are_described_and_raise_a_clear_error_outside_the_trainer(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path, monkeypatch, "labels", False, "3d_fullres")
    loss = trainer._build_loss()
    logits, targets = make_batch(trainer, empty=False)
    assert torch.isfinite(loss(logits, targets)) and loss.last_non_finite is None
    with torch.no_grad():
        logits[1][0, 0, 0, 0, 0] = float("nan")
    # the trainer's loss describes it (the trainer skips the step), a standalone one raises
    assert not torch.isfinite(loss(logits, targets))
    assert "output 1" in loss.last_non_finite and "NaN/Inf logits" in loss.last_non_finite
    standalone = DeepSupervisedLoss(loss.loss, loss.weights)
    with pytest.raises(NonFiniteLossError, match="output 1 .* NaN/Inf logits"):
        standalone(logits, targets)


def test_an_overflowing_term_is_named_with_its_output(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path, monkeypatch, "labels", False, "3d_fullres")
    loss = trainer._build_loss()
    cldice = loss.loss.term_specs[0].loss
    monkeypatch.setattr(cldice, "forward", lambda *args, **kwargs: torch.tensor(float("nan")))
    logits, targets = make_batch(trainer, empty=False)
    assert not torch.isfinite(loss(logits, targets))
    assert "every network output is finite: cldice = nan at output 0, cldice = nan at output 1" \
        in loss.last_non_finite and "base" not in loss.last_non_finite
