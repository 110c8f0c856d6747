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
        return (AuxiliaryTarget("fg", 1, foreground_as_float),)

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


def thin_vessels(patch, ignore_label=None) -> torch.Tensor:
    """Label map ``(1, *patch)``: a 4-voxel class-1 vessel with a one-voxel class-2 line inside it, a
    one-voxel class-2 line touching it from outside, and a one-/two-voxel class-1 vessel on its own —
    thinner than the half- and quarter-resolution voxels."""
    seg = torch.zeros((1,) + tuple(patch), dtype=torch.int16)
    seg[0, 6:10, 20:24, 4:44] = 1
    seg[0, 8, 22, 8:40] = 2
    seg[0, 7:9, 24, 8:40] = 2
    seg[0, 3, 36:38, 4:44] = 1
    seg[0, 12:14, 41, 6:42] = 1
    if ignore_label is not None:
        seg[0, :2] = ignore_label
    return seg


def level_foreground(target: torch.Tensor, lm, layout) -> tuple[np.ndarray, np.ndarray]:
    """What the segmentation target of one level says: ``(foreground (C, *S) bool, valid (*S) bool)``,
    read from the segmentation channels directly (labels: ``label == c``; regions: the region channels,
    ignore mask last)."""
    seg = target[: layout.n_segmentation_channels].numpy()
    if lm.has_regions:
        valid = ~seg[-1].astype(bool) if lm.has_ignore_label else np.ones(seg.shape[1:], bool)
        return seg[: layout.n_foreground].astype(bool) & valid, valid
    labels = seg[0]
    valid = labels != lm.ignore_label if lm.has_ignore_label else np.ones(labels.shape, bool)
    return np.stack([labels == c for c in lm.foreground_labels]), valid


def what_auxiliary_asks_for(name: str, values: np.ndarray, n: int) -> np.ndarray:
    """``(C, *S)`` bool: where an auxiliary target asks class/region c to be foreground."""
    if name.startswith("skeleton_tube"):
        return values > 0
    if name == "centerline_radius":  # depths of all classes, then skeleton weights of all classes
        return (values[:n] > 0) | (values[n:] > 0)
    if name.startswith("signed_distance"):
        return values < 0
    raise AssertionError(f"no rule for auxiliary target {name!r}")


@pytest.mark.parametrize("ignore", [False, True], ids=["noignore", "ignore"])
@pytest.mark.parametrize("mode", ["labels", "regions"])
@pytest.mark.parametrize("trainer_name", ["SkelRecallTrainer", "CbDiceTrainer", "BoundaryTrainer"])
def test_auxiliary_targets_agree_with_the_segmentation_target_of_every_level(tmp_path, monkeypatch, trainer_name,
                                                                            mode, ignore):
    import nnunet_ext.trainers as trainers

    trainer = make_trainer(tmp_path, monkeypatch, mode, ignore, "3d_fullres", cls=getattr(trainers, trainer_name))
    lm, layout = trainer.label_manager, trainer.target_layout()
    scales = trainer._get_deep_supervision_scales()
    assert len(scales) == 3 and scales[1] == [0.5, 0.5, 0.5]
    targets = training_targets(trainer, thin_vessels(trainer.configuration_manager.patch_size, lm.ignore_label))
    n = layout.n_foreground
    for level, target in enumerate(targets):
        foreground, valid = level_foreground(target, lm, layout)
        _, auxiliary = layout.split(target[None])
        for name, values in auxiliary.items():
            values = values[0].numpy()
            asked = what_auxiliary_asks_for(name, values, n)
            where = f"{name} at level {level}"
            assert not (asked & ~foreground).any(), \
                f"{where}: {int((asked & ~foreground).sum())} voxels asked to be foreground on background"
            assert not (asked & ~valid).any(), f"{where}: asks for foreground on ignored voxels"
            if not lm.has_regions:  # a softmax voxel is one class
                assert asked.sum(axis=0).max() <= 1, f"{where}: voxels asked to be two classes"
            if name.startswith("signed_distance"):  # the sign is the level's segmentation
                assert (values[foreground] <= 0).all() and (values[~foreground] >= 0).all(), \
                    f"{where}: the sign contradicts the segmentation"
            for c in range(n):  # every class present at this level gets its target (no vacuous pass)
                assert asked[c].any() == foreground[c].any(), f"{where}, class {c}: present != asked for"
    # the thin class-2 lines and the thin class-1 vessels survive at half resolution (what is tested matters)
    half, _ = level_foreground(targets[1], lm, layout)
    assert all(half[c].any() for c in range(n))


@pytest.mark.parametrize("mode", ["labels", "regions"])
def test_every_level_is_nnunets_segmentation_and_the_targets_computed_from_it(tmp_path, monkeypatch, mode):
    from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform

    from nnunet_ext.trainers import CbDiceTrainer

    trainer = make_trainer(tmp_path, monkeypatch, mode, True, "3d_fullres", cls=CbDiceTrainer)
    lm, layout, cm = trainer.label_manager, trainer.target_layout(), trainer.configuration_manager
    scales = trainer._get_deep_supervision_scales()
    targets = training_targets(trainer, thin_vessels(cm.patch_size, lm.ignore_label))
    n_seg = layout.n_segmentation_channels
    # the full-resolution level is the augmented segmentation; nnU-Net's own transform downsamples it
    theirs = DownsampleSegForDSTransform(scales)(segmentation=targets[0][:n_seg].clone())["segmentation"]
    (aux,) = layout.auxiliary
    for level, (target, reference, scale) in enumerate(zip(targets, theirs, scales)):
        assert torch.equal(target[:n_seg], reference), f"segmentation at level {level} is not nnU-Net's"
        foreground, valid = level_foreground(target, lm, layout)
        spacing = [s / f for s, f in zip(cm.spacing, scale)]
        expected = aux.compute(foreground, valid, spacing)
        assert np.allclose(target[n_seg:].numpy(), expected), f"auxiliary target at level {level}"


def test_without_deep_supervision_the_targets_are_computed_at_full_resolution(tmp_path, monkeypatch):
    from nnunet_ext.trainers import SkelRecallTrainer

    trainer = make_trainer(tmp_path, monkeypatch, "labels", True, "3d_fullres", deep_supervision=False,
                           cls=SkelRecallTrainer)
    lm, layout, cm = trainer.label_manager, trainer.target_layout(), trainer.configuration_manager
    target = training_targets(trainer, thin_vessels(cm.patch_size, lm.ignore_label))
    assert isinstance(target, torch.Tensor) and tuple(target.shape) == (layout.n_channels,) + tuple(cm.patch_size)
    foreground, valid = level_foreground(target, lm, layout)
    (aux,) = layout.auxiliary
    assert np.array_equal(target[1:].numpy(), aux.compute(foreground, valid, cm.spacing))
    assert all(target[1 + c].sum() > 0 for c in range(layout.n_foreground))
