"""A non-finite loss skips the training step (as nnU-Net's GradScaler skips steps with non-finite gradients),
is logged with what went non-finite, and stops the run only after repeated non-finite steps."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nnunet_ext.losses import NonFiniteLossError
from test_topo_trainer_loss import make_batch, make_trainer


class DeepSupervisionNet(torch.nn.Module):
    """A 1×1×1 convolution whose output is resampled to every deep-supervision target's shape."""

    def __init__(self, heads: int, shapes):
        super().__init__()
        self.conv = torch.nn.Conv3d(1, heads, 1)
        self.shapes = shapes

    def forward(self, x):
        logits = self.conv(x)
        return [F.interpolate(logits, size=s, mode="trilinear") for s in self.shapes]


def _trainer_with_network(tmp_path, monkeypatch, max_steps=3):
    trainer = make_trainer(tmp_path, monkeypatch, "labels", False, "3d_fullres")
    logits, targets = make_batch(trainer, empty=False)
    heads = trainer.label_manager.num_segmentation_heads
    trainer.network = DeepSupervisionNet(heads, [tuple(t.shape[2:]) for t in targets])
    trainer.optimizer = torch.optim.SGD(trainer.network.parameters(), lr=0.1, momentum=0.9)
    trainer.loss = trainer._build_loss()
    trainer.max_consecutive_non_finite_steps = max_steps
    data = torch.randn((2, 1) + tuple(targets[0].shape[2:]))
    return trainer, data, targets


def _parameters(trainer):
    return [p.detach().clone() for p in trainer.network.parameters()]


def test_a_finite_step_updates_the_network(tmp_path, monkeypatch):
    trainer, data, targets = _trainer_with_network(tmp_path, monkeypatch)
    before = _parameters(trainer)
    result = trainer.train_step({"data": data, "target": targets})
    assert np.isfinite(result["loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, _parameters(trainer)))


def test_a_non_finite_step_is_skipped_logged_and_left_out_of_the_epoch_mean(tmp_path, monkeypatch):
    trainer, data, targets = _trainer_with_network(tmp_path, monkeypatch)
    trainer.train_step({"data": data, "target": targets})  # momentum buffers exist: a 0-gradient step would move
    before = _parameters(trainer)
    bad = data.clone()
    bad[0, 0, 0, 0, 0] = float("nan")
    result = trainer.train_step({"data": bad, "target": targets})
    assert np.isnan(result["loss"])
    assert all(torch.equal(a, b) for a, b in zip(before, _parameters(trainer)))  # no optimizer step at all
    log = open(trainer.log_file).read()
    assert "skipped a training step (epoch 0)" in log and "NaN/Inf logits" in log
    trainer.on_train_epoch_end([{"loss": np.array(0.5)}, result, {"loss": np.array(1.5)}])
    assert trainer.logger.local_logger.my_fantastic_logging["train_losses"][-1] == pytest.approx(1.0)
    assert "1 of 3 training steps of this epoch were skipped" in open(trainer.log_file).read()


def test_repeated_non_finite_steps_stop_the_run_and_a_finite_one_resets_the_count(tmp_path, monkeypatch):
    trainer, data, targets = _trainer_with_network(tmp_path, monkeypatch, max_steps=3)
    bad = data.clone()
    bad[..., 0] = float("inf")
    for _ in range(2):
        trainer.train_step({"data": bad, "target": targets})
    trainer.train_step({"data": data, "target": targets})  # finite: the count starts again
    for _ in range(2):
        trainer.train_step({"data": bad, "target": targets})
    with pytest.raises(NonFiniteLossError, match="3 consecutive training steps had a non-finite loss"):
        trainer.train_step({"data": bad, "target": targets})
