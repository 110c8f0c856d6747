"""CompositeLossTrainer: auxiliary targets go through nnU-Net's real augmentation pipeline and reach the
loss at every deep-supervision resolution, in label and region mode, with and without ignore label."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nnunet_ext.losses import LossTerm
from nnunet_ext.targets import AuxiliaryTarget
from nnunet_ext.trainers.composite import CompositeLossTrainer
from test_topo_trainer_loss import make_trainer


def foreground_as_float(foreground, valid, spacing):
    return foreground.astype(np.float32)


class SoftRecallOnAuxiliary(torch.nn.Module):
    def forward(self, probabilities, target, valid, auxiliary):
        return 1 - ((probabilities * auxiliary).sum() + 1) / (auxiliary.sum() + 1)


class AuxRecallTrainer(CompositeLossTrainer):
    def auxiliary_targets(self):
        return (AuxiliaryTarget("fg", 1, foreground_as_float, "max"),)

    def loss_terms(self):
        return [LossTerm("recall", 1.0, SoftRecallOnAuxiliary(), auxiliary="fg")]


def training_targets(trainer, seg: torch.Tensor):
    """Run ``seg`` (1, *patch) through the trainer's real training transforms → list of DS targets."""
    rotation, dummy_2d, _, mirror_axes = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    lm = trainer.label_manager
    transforms = trainer.get_training_transforms(
        trainer.configuration_manager.patch_size, rotation, trainer._get_deep_supervision_scales(), mirror_axes,
        dummy_2d, use_mask_for_norm=trainer.configuration_manager.use_mask_for_norm, is_cascaded=False,
        foreground_labels=lm.foreground_labels, regions=lm.foreground_regions if lm.has_regions else None,
        ignore_label=lm.ignore_label)
    return transforms(image=torch.randn(seg.shape), segmentation=seg)["segmentation"]


@pytest.mark.parametrize("ignore", [False, True], ids=["noignore", "ignore"])
@pytest.mark.parametrize("mode", ["labels", "regions"])
def test_auxiliary_targets_travel_through_nnunets_pipeline_to_every_output(tmp_path, monkeypatch, mode, ignore):
    trainer = make_trainer(tmp_path, monkeypatch, mode, ignore, "3d_fullres", cls=AuxRecallTrainer)
    scales = trainer._get_deep_supervision_scales()
    lm = trainer.label_manager
    patch = tuple(trainer.configuration_manager.patch_size)
    seg = torch.zeros((1,) + patch, dtype=torch.int16)
    seg[0, :, 10:14, :] = 1
    seg[0, :, 11:13, 20:30] = 2
    if ignore:
        seg[0, :2] = lm.ignore_label
    targets = training_targets(trainer, seg)
    layout = trainer.target_layout()
    assert isinstance(targets, list) and len(targets) == len(scales)
    for target, scale in zip(targets, scales):
        assert target.shape[0] == layout.n_channels
        assert list(target.shape[1:]) == [round(p * s) for p, s in zip(patch, scale)]
    # the auxiliary channels are the foreground of the segmentation channels, per class/region
    seg_part, aux = layout.split(targets[0][None])
    assert aux["fg"].shape[1] == layout.n_foreground and aux["fg"].sum() > 0
    if not lm.has_regions:
        for c in range(layout.n_foreground):
            assert torch.equal(aux["fg"][0, c] > 0, seg_part[0, 0] == c + 1)
    # the loss receives packed targets at every resolution and gives gradient to every weighted output
    loss = trainer._build_loss()
    batch = [torch.stack([t, t]) for t in targets]
    logits = [torch.zeros((2, lm.num_segmentation_heads) + tuple(t.shape[2:]), requires_grad=True) for t in batch]
    loss(logits, batch).backward()
    assert set(loss.loss.last_values) == {"base", "recall"}
    for w, output in zip(loss.weights, logits):
        reached = output.grad is not None and bool(output.grad.abs().sum() > 0)
        assert reached == (w != 0)


def test_without_auxiliary_targets_the_pipeline_is_nnunets(tmp_path, monkeypatch):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    trainer = make_trainer(tmp_path, monkeypatch, "labels", False, "3d_fullres", cls=CompositeLossTrainer)
    rotation, dummy_2d, _, mirror_axes = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    args = (trainer.configuration_manager.patch_size, rotation, trainer._get_deep_supervision_scales(), mirror_axes,
            dummy_2d)
    ours = trainer.get_training_transforms(*args)
    theirs = nnUNetTrainer.get_training_transforms(*args)
    assert [type(t) for t in ours.transforms] == [type(t) for t in theirs.transforms]


@pytest.mark.parametrize("ignore", [False, True], ids=["noignore", "ignore"])
@pytest.mark.parametrize("mode", ["labels", "regions"])
def test_skeleton_recall_trainer_gets_per_class_tubes_at_every_weighted_output(tmp_path, monkeypatch, mode, ignore):
    from nnunet_ext.trainers import SkelRecallTrainer

    trainer = make_trainer(tmp_path, monkeypatch, mode, ignore, "3d_fullres", cls=SkelRecallTrainer)
    lm = trainer.label_manager
    patch = tuple(trainer.configuration_manager.patch_size)
    seg = torch.zeros((1,) + patch, dtype=torch.int16)
    seg[0, 4:12, 10:16, 5:40] = 1
    seg[0, 6:10, 12:14, 10:30] = 2
    if ignore:
        seg[0, :2] = lm.ignore_label
    targets = training_targets(trainer, seg)
    layout = trainer.target_layout()
    _, aux = layout.split(targets[0][None])
    tubes = aux["skeleton_tube"][0]
    assert tubes.shape[0] == layout.n_foreground and all(tubes[c].sum() > 0 for c in range(layout.n_foreground))
    loss = trainer._build_loss()
    batch = [torch.stack([t, t]) for t in targets]
    logits = [torch.zeros((2, lm.num_segmentation_heads) + tuple(t.shape[2:]), requires_grad=True) for t in batch]
    value = loss(logits, batch)
    value.backward()
    assert torch.isfinite(value) and set(loss.loss.last_values) == {"base", "skeleton_recall"}
    for w, output in zip(loss.weights, logits):
        assert (output.grad is not None and bool(output.grad.abs().sum() > 0)) == (w != 0)
