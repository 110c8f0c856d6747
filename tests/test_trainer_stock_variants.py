"""Our trainers combine with nnU-Net's own trainer variants through the MRO: ``class X(TopoTrainer,
nnUNetTrainerNoDA)`` trains with the variant's augmentation (and keeps our auxiliary targets)."""
from __future__ import annotations

import pytest
import torch
from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerDA5 import nnUNetTrainerDA5
from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoDA import nnUNetTrainerNoDA

from nnunet_ext.targets import TargetLayout
from nnunet_ext.trainers import SkelRecallTrainer, TopoTrainer
from test_composite_trainer import training_targets
from test_loss_trainers import tube_segmentation
from test_topo_trainer_loss import make_trainer


class TopoNoDA(TopoTrainer, nnUNetTrainerNoDA):
    pass


class SkelRecallNoDA(SkelRecallTrainer, nnUNetTrainerNoDA):
    pass


class SkelRecallDA5(SkelRecallTrainer, nnUNetTrainerDA5):
    pass


def transform_types(transform) -> list[str]:
    """Class names of ``transform`` and of every transform nested in it (Compose, Random, OneOf)."""
    names = [type(transform).__name__]
    for attribute in ("transforms", "transform", "list_of_transforms"):
        inner = getattr(transform, attribute, None)
        if inner is None:
            continue
        for child in (inner if isinstance(inner, (list, tuple)) else [inner]):
            names += transform_types(child)
    return names


def pipeline(trainer):
    rotation, dummy_2d, _, mirror_axes = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    lm = trainer.label_manager
    return trainer.get_training_transforms(
        trainer.configuration_manager.patch_size, rotation, trainer._get_deep_supervision_scales(), mirror_axes,
        dummy_2d, use_mask_for_norm=trainer.configuration_manager.use_mask_for_norm, is_cascaded=False,
        foreground_labels=lm.foreground_labels, regions=lm.foreground_regions if lm.has_regions else None,
        ignore_label=lm.ignore_label)


@pytest.mark.parametrize("cls", [TopoTrainer, SkelRecallTrainer])
def test_alone_our_trainers_keep_nnunets_default_augmentation(tmp_path, monkeypatch, cls):
    types = transform_types(pipeline(make_trainer(tmp_path, monkeypatch, "labels", False, "3d_fullres", cls=cls)))
    assert "SpatialTransform" in types and "MirrorTransform" in types


@pytest.mark.parametrize("cls", [TopoNoDA, SkelRecallNoDA])
def test_no_da_variant_switches_augmentation_off(tmp_path, monkeypatch, cls):
    trainer = make_trainer(tmp_path, monkeypatch, "labels", False, "3d_fullres", cls=cls)
    types = transform_types(pipeline(trainer))
    assert "SpatialTransform" not in types and "MirrorTransform" not in types and "GammaTransform" not in types
    # the segmentation goes through unchanged (no spatial augmentation): full-resolution labels equal the input
    seg = tube_segmentation(trainer)
    targets = training_targets(trainer, seg)
    n_seg = TargetLayout(1, 2).n_segmentation_channels
    assert torch.equal(targets[0][:n_seg], seg.float())


def test_no_da_variant_keeps_our_auxiliary_targets(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path, monkeypatch, "labels", False, "3d_fullres", cls=SkelRecallNoDA)
    layout = trainer.target_layout()
    targets = training_targets(trainer, tube_segmentation(trainer))
    assert all(t.shape[0] == layout.n_channels for t in targets)
    assert all(t[layout.n_segmentation_channels:].sum() > 0 for t in targets)


def test_da5_variant_adds_its_own_transforms(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path, monkeypatch, "regions", True, "3d_fullres", cls=SkelRecallDA5)
    types = transform_types(pipeline(trainer))
    stock = transform_types(pipeline(make_trainer(tmp_path, monkeypatch, "regions", True, "3d_fullres",
                                                  cls=SkelRecallTrainer)))
    da5_only = {"BlankRectangleTransform", "MedianFilterTransform", "SharpeningTransform"}
    assert da5_only <= set(types) and not da5_only & set(stock)
