"""The loss trainers built from real nnU-Net plans: every term reaches every weighted deep-supervision
output in label and region mode, with and without ignore label, 2D and 3D; bases and schedules."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nnunet_ext.schedules import Linear
from nnunet_ext.trainers import (SHIPPED_TRAINERS, BoundaryTrainer, CbDiceClDiceTrainer, CbDiceTrainer,
                                 FocalDiceTrainer, FocalDiceVarianceTrainer, HausdorffTrainer)
from nnunet_ext.trainers.loss_trainers import ramp_over_training
from nnunet_ext.trainers.terms import weights_at
from test_composite_trainer import training_targets
from test_topo_trainer_loss import make_trainer

#: trainer → (term labels, auxiliary targets in the batch)
EXPECTED = {
    CbDiceTrainer: ({"cbdice"}, {"centerline_radius"}),
    CbDiceClDiceTrainer: ({"cbdice", "cldice"}, {"centerline_radius"}),
    BoundaryTrainer: ({"boundary"}, {"signed_distance"}),
    HausdorffTrainer: ({"hausdorff"}, {"signed_distance"}),
    FocalDiceTrainer: ({"focal"}, set()),
    FocalDiceVarianceTrainer: ({"focal", "variance"}, set()),
}


def tube_segmentation(trainer) -> torch.Tensor:
    """A thick tube (class 1) holding a thin one (class 2) across the patch, ignore label on two slabs."""
    lm = trainer.label_manager
    patch = tuple(trainer.configuration_manager.patch_size)
    seg = torch.zeros((1,) + patch, dtype=torch.int16)
    inner = (slice(None),) * (len(patch) - 2)
    seg[(0,) + inner + (slice(10, 18), slice(3, -3))] = 1
    seg[(0,) + inner + (slice(12, 16), slice(6, -6))] = 2
    if lm.has_ignore_label:
        seg[0, :2] = lm.ignore_label
    return seg


def terms_only_loss_and_batch(trainer):
    """The trainer's loss with nnU-Net's base switched off and every term at its final weight, and a
    batch of two patches that went through the trainer's real training transforms."""
    loss = trainer._build_loss()
    loss.loss.set_weights({"base": 0.0, **weights_at(trainer.term_configs(), trainer.num_epochs - 1)})
    targets = training_targets(trainer, tube_segmentation(trainer))
    batch = [torch.stack([t, t]) for t in targets]
    rng = np.random.default_rng(0)
    heads = trainer.label_manager.num_segmentation_heads
    logits = [torch.from_numpy(rng.normal(size=(2, heads) + tuple(t.shape[2:])).astype(np.float32)).requires_grad_()
              for t in batch]
    return loss, logits, batch


@pytest.mark.parametrize("ignore", [False, True], ids=["noignore", "ignore"])
@pytest.mark.parametrize("mode", ["labels", "regions"])
@pytest.mark.parametrize("cls", list(EXPECTED), ids=lambda c: c.__name__)
def test_every_term_reaches_every_weighted_output(tmp_path, monkeypatch, cls, mode, ignore):
    trainer = make_trainer(tmp_path, monkeypatch, mode, ignore, "3d_fullres", cls=cls)
    term_names, auxiliary_names = EXPECTED[cls]
    assert {a.name for a in trainer.auxiliary_targets()} == auxiliary_names
    loss, logits, batch = terms_only_loss_and_batch(trainer)
    value = loss(logits, batch)
    value.backward()
    assert torch.isfinite(value)
    assert set(loss.loss.last_values) == {"base"} | term_names  # auxiliary targets arrived: no term skipped
    for w, output in zip(loss.weights, logits):
        reached = output.grad is not None and bool(output.grad.abs().sum() > 0)
        assert reached == (w != 0), f"output of weight {w}"
        if reached:
            assert torch.isfinite(output.grad).all()


@pytest.mark.parametrize("cls", list(EXPECTED), ids=lambda c: c.__name__)
def test_2d_configuration_and_empty_patches_stay_finite(tmp_path, monkeypatch, cls):
    trainer = make_trainer(tmp_path, monkeypatch, "labels", True, "2d", cls=cls)
    loss = trainer._build_loss()
    loss.loss.set_weights(weights_at(trainer.term_configs(), trainer.num_epochs - 1))
    patch = tuple(trainer.configuration_manager.patch_size)
    for seg in (torch.zeros((1,) + patch, dtype=torch.int16),  # nothing at all
                torch.full((1,) + patch, trainer.label_manager.ignore_label, dtype=torch.int16)):  # only ignore
        batch = [torch.stack([t, t]) for t in training_targets(trainer, seg)]
        logits = [torch.randn((2, 3) + tuple(t.shape[2:]), requires_grad=True) for t in batch]
        value = loss(logits, batch)
        value.backward()
        assert torch.isfinite(value)
        assert all(torch.isfinite(o.grad).all() for o in logits if o.grad is not None)


def test_dice_base_is_nnunets_own_loss_without_its_cross_entropy(tmp_path, monkeypatch):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from test_topo_trainer_loss import make_batch

    ours = make_trainer(tmp_path, monkeypatch, "labels", True, "3d_fullres", cls=FocalDiceTrainer)._build_loss()
    stock_trainer = make_trainer(tmp_path, monkeypatch, "labels", True, "3d_fullres", cls=nnUNetTrainer)
    stock = stock_trainer._build_loss()
    logits, targets = make_batch(stock_trainer, empty=False)
    ours.loss.set_weights({"focal": 0.0})
    with_ce = stock(logits, targets)
    stock.loss.weight_ce = 0
    assert torch.allclose(ours(logits, targets), stock(logits, targets))
    assert not torch.allclose(with_ce, stock(logits, targets))  # the CE part is really gone


def test_ramps_are_fractions_of_the_training_length(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path, monkeypatch, "regions", False, "3d_fullres", cls=BoundaryTrainer)
    trainer.num_epochs = 1000
    (config,) = trainer.term_configs()
    assert config.weight == Linear(300, 600, 0.0, 0.5)  # BraTS: 0 → 0.5 over epochs 300–600
    assert [weights_at([config], e)["boundary"] for e in (0, 300, 450, 600, 999)] == [0, 0, 0.25, 0.5, 0.5]
    trainer.num_epochs = 10
    assert trainer.term_configs()[0].weight == Linear(3, 6, 0.0, 0.5)
    hd = make_trainer(tmp_path, monkeypatch, "labels", False, "3d_fullres", cls=HausdorffTrainer)
    hd.num_epochs = 100
    assert hd.term_configs()[0].weight == Linear(10, 30, 0.0, 0.1)


@pytest.mark.parametrize("epochs", [1, 2, 3, 5, 1000])
def test_short_runs_still_reach_the_final_weight_before_their_last_epoch(epochs):
    ramp = ramp_over_training(epochs, 0.3, 0.6, 0.5)
    assert ramp.start_epoch < ramp.end_epoch and ramp(0) == 0.0
    if epochs > 1:
        assert ramp(epochs - 1) == 0.5


def test_scheduled_weights_are_set_at_every_epoch_start(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path, monkeypatch, "labels", False, "3d_fullres", cls=BoundaryTrainer)
    trainer.num_epochs = 10
    trainer.loss = trainer._build_loss()
    seen = []
    for epoch in range(10):
        trainer.current_epoch = epoch
        trainer.on_epoch_start()
        seen.append(trainer.compound_loss().weights["boundary"])
    assert seen == pytest.approx([0, 0, 0, 0, 1 / 6, 2 / 6, 0.5, 0.5, 0.5, 0.5])
    # the weights depend on the epoch only: a run continued at epoch 5 gets the same weight
    resumed = make_trainer(tmp_path, monkeypatch, "labels", False, "3d_fullres", cls=BoundaryTrainer)
    resumed.num_epochs = 10
    resumed.loss = resumed._build_loss()
    for epoch in range(5):
        resumed.logger.log("epoch_start_timestamps", 0.0, epoch)  # what loading a checkpoint restores
    resumed.current_epoch = 5
    resumed.on_epoch_start()
    assert resumed.compound_loss().weights["boundary"] == pytest.approx(seen[5])


def test_every_shipped_trainer_declares_catalogue_terms(tmp_path, monkeypatch):
    for name, cls in SHIPPED_TRAINERS.items():
        trainer = make_trainer(tmp_path, monkeypatch, "regions", True, "3d_fullres", cls=cls)
        terms = trainer.loss_terms()
        assert terms and all(t.weight >= 0 for t in terms), name
        assert cls.__doc__ and "nnU-Net" in cls.__doc__, name


@pytest.mark.parametrize("cls", [CbDiceClDiceTrainer, BoundaryTrainer, FocalDiceVarianceTrainer],
                         ids=lambda c: c.__name__)
def test_under_ddp_every_output_is_used_so_ddp_finds_no_unused_parameters(tmp_path, monkeypatch, cls):
    """nnU-Net gives the lowest output weight 1e-6 under DDP (without torch.compile) so that every decoder
    head gets a gradient; our loss keeps nnU-Net's weights, and every term reaches that head too."""
    trainer = make_trainer(tmp_path, monkeypatch, "labels", True, "3d_fullres", cls=cls)
    trainer.is_ddp = True
    loss, logits, batch = terms_only_loss_and_batch(trainer)
    assert all(w > 0 for w in loss.weights) and min(loss.weights) < 1e-5
    loss(logits, batch).backward()
    assert all(o.grad is not None and o.grad.abs().sum() > 0 for o in logits)
