"""Soft clDice: hand-computed values, MONAI as independent reference, ignore mask, empty patches, gradcheck."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from nnunet_ext.losses import SoftClDiceLoss


def _tube(shape=(1, 1, 7, 9, 9)):
    t = torch.zeros(shape)
    t[..., 2:5, 3:6, 1:8] = 1
    return t


def test_perfect_binary_prediction_gives_zero_loss():
    target = _tube()
    assert SoftClDiceLoss(iterations=3, smooth=1e-6)(target.clone(), target).item() == pytest.approx(0, abs=1e-6)


def test_hand_computed_two_dimensional_case():
    # target: horizontal bar rows 1-3, cols 1-5 → skeleton = row 2, cols 2-4 (3 pixels)
    target = torch.zeros(1, 1, 5, 7)
    target[0, 0, 1:4, 1:6] = 1
    # prediction: the single pixel line row 2, cols 0-6 (7 pixels); its skeleton is itself
    pred = torch.zeros(1, 1, 5, 7)
    pred[0, 0, 2, :] = 1
    # Tprec = |S_P ∩ T| / |S_P| = 5 / 7 ; Tsens = |S_T ∩ P| / |S_T| = 3 / 3
    precision, sensitivity = 5 / 7, 1.0
    expected = 1 - 2 * precision * sensitivity / (precision + sensitivity)
    loss = SoftClDiceLoss(iterations=2, smooth=1e-8)(pred, target)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([2, 3]), st.integers(1, 3))
def test_matches_monai_soft_cldice(seed, dims, batch):
    monai_losses = pytest.importorskip("monai.losses")
    rng = np.random.default_rng(seed)
    shape = (batch, 1) + (8,) * dims
    probabilities = torch.from_numpy(rng.random(shape).astype(np.float64))
    target = torch.from_numpy((rng.random(shape) > 0.5).astype(np.float64))
    ours = SoftClDiceLoss(iterations=3, smooth=1.0, reduction="none")(probabilities, target)[:, 0]
    # MONAI adds `smooth` to the harmonic-mean denominator; make it negligible to compare the definition
    reference = monai_losses.SoftclDiceLoss(iter_=3, smooth_nr=1.0, smooth_dr=1.0, smooth=1e-12,
                                            reduction="none")(probabilities, target)
    assert torch.allclose(ours, reference, atol=1e-9)


def test_batch_dice_equals_one_sample_holding_the_whole_batch_side_by_side():
    monai_losses = pytest.importorskip("monai.losses")
    rng = np.random.default_rng(3)
    shape = (2, 1, 6, 8, 8)
    probabilities = torch.zeros(shape, dtype=torch.float64)
    target = torch.zeros(shape, dtype=torch.float64)
    # a zero rim keeps each sample's skeleton unchanged when the samples are put side by side
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1), slice(1, -1))
    probabilities[inner] = torch.from_numpy(rng.random((2, 1, 4, 6, 6)))
    target[inner] = torch.from_numpy((rng.random((2, 1, 4, 6, 6)) > 0.5).astype(np.float64))
    pooled = SoftClDiceLoss(batch_dice=True, smooth=1.0)(probabilities, target)
    side_by_side = (torch.cat(list(probabilities), dim=-1)[None], torch.cat(list(target), dim=-1)[None])
    assert torch.allclose(pooled, SoftClDiceLoss(smooth=1.0)(*side_by_side), atol=1e-12)
    reference = monai_losses.SoftclDiceLoss(iter_=3, smooth=1e-12)(*side_by_side)
    assert torch.allclose(pooled, reference, atol=1e-9)
    assert not torch.allclose(pooled, SoftClDiceLoss(smooth=1.0)(probabilities, target))  # pooling ≠ averaging


def test_channels_are_independent_classes():
    rng = np.random.default_rng(4)
    probabilities = torch.from_numpy(rng.random((1, 3, 6, 8, 8)))
    target = torch.from_numpy((rng.random((1, 3, 6, 8, 8)) > 0.6).astype(np.float64))
    loss = SoftClDiceLoss(reduction="none")
    together = loss(probabilities, target)
    for c in range(3):
        assert torch.allclose(together[:, c], loss(probabilities[:, c:c + 1], target[:, c:c + 1])[:, 0])


def test_ignored_voxels_get_no_gradient_and_do_not_change_the_value():
    rng = np.random.default_rng(5)
    probabilities = torch.from_numpy(rng.random((1, 1, 8, 10, 10))).requires_grad_()
    target = torch.from_numpy((rng.random((1, 1, 8, 10, 10)) > 0.5).astype(np.float64))
    valid = torch.ones(1, 1, 8, 10, 10, dtype=torch.bool)
    valid[..., :3] = False
    loss = SoftClDiceLoss()(probabilities, target, valid)
    loss.backward()
    assert probabilities.grad[..., :3].abs().max() == 0
    assert probabilities.grad[..., 3:].abs().max() > 0
    # whatever the target says inside the ignored region does not matter
    other_target = target.clone()
    other_target[..., :3] = 1 - other_target[..., :3]
    assert torch.allclose(loss, SoftClDiceLoss()(probabilities.detach(), other_target, valid))


@pytest.mark.parametrize("case", ["empty target and prediction", "empty target", "all ignored", "empty prediction"])
@pytest.mark.parametrize("batch_dice", [False, True])
def test_degenerate_patches_are_finite_with_finite_gradients(case, batch_dice):
    shape = (2, 2, 6, 8, 8)
    probabilities = torch.zeros(shape, dtype=torch.float64)
    if "prediction" not in case:
        probabilities[..., 1:5, 3:5, 1:7] = 0.7
    probabilities.requires_grad_()
    target = torch.zeros(shape, dtype=torch.float64)
    if case == "empty prediction":
        target[..., 2:4, 2:6, 2:6] = 1
    valid = torch.zeros(2, 1, 6, 8, 8, dtype=torch.bool) if case == "all ignored" else None
    loss = SoftClDiceLoss(batch_dice=batch_dice)(probabilities, target, valid)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(probabilities.grad).all()
    if case == "empty target and prediction" or case == "all ignored":
        assert loss.item() == pytest.approx(0.0, abs=1e-12)
    else:
        assert loss.item() > 0


def test_gradcheck_float64():
    rng = np.random.default_rng(6)
    probabilities = torch.from_numpy(rng.uniform(0.05, 0.95, (1, 2, 5, 6, 6))).requires_grad_()
    target = torch.from_numpy((rng.random((1, 2, 5, 6, 6)) > 0.5).astype(np.float64))
    valid = torch.from_numpy(rng.random((1, 1, 5, 6, 6)) > 0.2)
    outside = torch.from_numpy(rng.uniform(0.05, 0.95, (1, 2, 5, 6, 6)))
    loss = SoftClDiceLoss(iterations=2)
    # ignored voxels are detached by design; hold them fixed so the numerical gradient agrees there too
    assert torch.autograd.gradcheck(lambda p: loss(torch.where(valid, p, outside), target, valid), (probabilities,),
                                    eps=1e-6, atol=1e-5, fast_mode=True)
    assert torch.autograd.gradcheck(lambda p: loss(p, target), (probabilities,), eps=1e-6, atol=1e-5, fast_mode=True)


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match="smooth"):
        SoftClDiceLoss(smooth=0)
    with pytest.raises(ValueError, match="reduction"):
        SoftClDiceLoss(reduction="sum")
    with pytest.raises(ValueError, match="differ"):
        SoftClDiceLoss()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 2, 4, 4))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_give_the_float32_value(dtype):
    rng = np.random.default_rng(7)
    probabilities = torch.from_numpy(rng.random((2, 2, 8, 16, 16)).astype(np.float32))
    target = torch.from_numpy((rng.random((2, 2, 8, 16, 16)) > 0.5).astype(np.float32))
    reference = SoftClDiceLoss(batch_dice=True)(probabilities, target)
    low = probabilities.to(dtype).requires_grad_()
    loss = SoftClDiceLoss(batch_dice=True)(low, target.to(dtype))
    loss.backward()
    assert loss.dtype == torch.float32  # sums are accumulated in float32
    assert torch.isfinite(low.grad.float()).all()
    assert loss.item() == pytest.approx(reference.item(), abs=2e-2)
