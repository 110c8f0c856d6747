"""Every shipped trainer's loss under mixed precision (autocast, as nnU-Net's train_step on CUDA) and
under torch.compile (TorchDynamo tracing + AOTAutograd; the ``aot_eager`` backend needs no compiler, so
this runs on any CPU — the graph capture is what breaks when a loss is not compile-friendly)."""
from __future__ import annotations

import pytest
import torch

from nnunet_ext.trainers import SHIPPED_TRAINERS
from nnunet_ext.trainers.terms import weights_at
from test_composite_trainer import training_targets
from test_loss_trainers import tube_segmentation
from test_topo_trainer_loss import make_trainer


def _setup(tmp_path, monkeypatch, name, mode="regions"):
    trainer = make_trainer(tmp_path, monkeypatch, mode, True, "3d_fullres", cls=SHIPPED_TRAINERS[name])
    loss = trainer._build_loss()
    loss.loss.set_weights(weights_at(trainer.term_configs(), trainer.num_epochs - 1))
    batch = [torch.stack([t, t]) for t in training_targets(trainer, tube_segmentation(trainer))]
    return trainer, loss, batch


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", sorted(SHIPPED_TRAINERS))
def test_loss_under_autocast_matches_float32(tmp_path, monkeypatch, name, dtype):
    trainer, loss, batch = _setup(tmp_path, monkeypatch, name)
    heads = trainer.label_manager.num_segmentation_heads
    torch.manual_seed(0)
    head = torch.nn.Conv3d(1, heads, 1)
    features = [torch.randn((2, 1) + tuple(t.shape[2:])) for t in batch]
    reference = loss([head(f) for f in features], batch)
    with torch.autocast("cpu", dtype=dtype):
        logits = [head(f) for f in features]
        assert logits[0].dtype == dtype
        value = loss(logits, batch)
    value.backward()
    assert value.dtype == torch.float32 and torch.isfinite(value)
    assert torch.isfinite(head.weight.grad).all() and head.weight.grad.abs().sum() > 0
    assert value.item() == pytest.approx(reference.item(), rel=3e-2, abs=3e-3)


def _confidently_wrong_logits(trainer, target: torch.Tensor, margin: float) -> torch.Tensor:
    """Logits that contradict ``target`` (one DS level) everywhere by ``margin``: softmax — the logit of
    a class other than the true one ``margin`` above the rest; sigmoid — ``-margin`` on a region's
    voxels, ``+margin`` elsewhere."""
    lm = trainer.label_manager
    if lm.has_regions:
        regions = target[:, :len(lm.foreground_regions)]
        return (margin * (1 - 2 * regions)).float()
    labels = target[:, 0].long().clamp(max=lm.num_segmentation_heads - 1)
    wrong = (labels + 1) % lm.num_segmentation_heads
    onehot = torch.nn.functional.one_hot(wrong, lm.num_segmentation_heads).movedim(-1, 1)
    return (margin * onehot).float()


@pytest.mark.parametrize("mode", ["labels", "regions"])
@pytest.mark.parametrize("name", sorted(SHIPPED_TRAINERS))
def test_confidently_wrong_float16_logits_get_gradient_of_the_right_sign(tmp_path, monkeypatch, name, mode):
    """Logits 20 off in float16 (a CUDA autocast forward): every foreground voxel of the full-resolution
    output must be pushed towards its true class. Probability-clamping CE-type terms (and a float16
    sigmoid, saturated beyond logit ≈ 8) gave these voxels exactly zero gradient (FocalDiceTrainer lost
    all of them, as its base is Dice only)."""
    trainer, loss, batch = _setup(tmp_path, monkeypatch, name, mode)
    lm = trainer.label_manager
    logits = [_confidently_wrong_logits(trainer, t, 20.0).half().requires_grad_() for t in batch]
    with torch.autocast("cpu", dtype=torch.float16):  # nnU-Net computes its loss inside autocast
        value = loss(logits, batch)
    value.backward()
    grad, target = logits[0].grad.float(), batch[0]
    assert torch.isfinite(grad).all()
    if lm.has_regions:
        valid = target[:, -1:] == 0
        true = target[:, :len(lm.foreground_regions)].bool() & valid
        assert (grad[true] < 0).all(), f"{int((grad[true] >= 0).sum())} of {int(true.sum())} region voxels not raised"
    else:
        labels = target[:, 0].long()
        foreground = (labels > 0) & (labels != lm.ignore_label)
        true_grad = grad.gather(1, labels.clamp(max=lm.num_segmentation_heads - 1)[:, None])[:, 0]
        assert foreground.any() and (true_grad[foreground] < 0).all(), \
            f"{int((true_grad[foreground] >= 0).sum())} of {int(foreground.sum())} foreground voxels not raised"


#: one trainer per distinct set of terms (CbDiceClDiceTrainer and FocalDiceTrainer add nothing new here)
COMPILED = ["TopoTrainer", "SkelRecallTrainer", "CbDiceTrainer", "BoundaryTrainer", "HausdorffTrainer",
            "FocalDiceVarianceTrainer"]


@pytest.mark.parametrize("name", COMPILED)
def test_loss_compiles_and_gives_the_eager_value_and_gradient(tmp_path, monkeypatch, name):
    """The per-output loss (nnU-Net's base + our terms) on the lowest weighted deep-supervision output: the
    graph is the same at every resolution, and tracing it once keeps the test short."""
    import torch._dynamo

    torch._dynamo.reset()
    trainer, loss, batch = _setup(tmp_path, monkeypatch, name)
    level = max(i for i, w in enumerate(loss.weights) if w != 0)
    loss, batch = loss.loss, batch[level]
    heads = trainer.label_manager.num_segmentation_heads
    torch.manual_seed(0)
    logits = [torch.randn((2, heads) + tuple(batch.shape[2:]))]
    eager_in = [x.clone().requires_grad_() for x in logits]
    eager = loss(eager_in[0], batch)
    eager.backward()
    compiled_loss = torch.compile(loss, backend="aot_eager")
    compiled_in = [x.clone().requires_grad_() for x in logits]
    compiled = compiled_loss(compiled_in[0], batch)
    compiled.backward()
    assert compiled.item() == pytest.approx(eager.item(), rel=1e-5, abs=1e-6)
    for a, b in zip(eager_in, compiled_in):
        assert (a.grad is None) == (b.grad is None)
        if a.grad is not None:
            assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-7)
