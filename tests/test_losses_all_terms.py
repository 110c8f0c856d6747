"""Properties every loss term shares: all modes, ignore label, 2D/3D, degenerate patches, fp16, gradcheck."""
from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest
import torch

from _loss_terms import TERMS, auxiliary_batch, call, prediction_for, takes_logits
from nnunet_ext.losses import CompoundLoss, LossTerm


def _batch(dims: int, mode: str, ignore: bool, empty: bool, seed: int = 0, dtype=torch.float64):
    """Logits → probabilities as nnU-Net produces them, a target with real structures, a validity mask."""
    rng = np.random.default_rng(seed)
    spatial = (12, 14) if dims == 2 else (6, 10, 12)
    n_fg = 2
    if mode == "softmax":
        logits = torch.from_numpy(rng.normal(0, 2, (2, n_fg + 1) + spatial)).to(dtype).requires_grad_()
        probabilities = torch.softmax(logits, 1)[:, 1:]
    else:
        logits = torch.from_numpy(rng.normal(0, 2, (2, n_fg) + spatial)).to(dtype).requires_grad_()
        probabilities = torch.sigmoid(logits)
    target = torch.zeros((2, n_fg) + spatial, dtype=dtype)
    if not empty:
        lead = (slice(1, 5),) if dims == 3 else ()
        target[(slice(None), 0) + lead + (slice(2, 7), slice(1, 12))] = 1
        target[(slice(None), 1) + lead + (slice(7, 10), slice(3, 9))] = 1
        if mode == "sigmoid":  # overlapping regions
            target[(slice(None), 1) + lead + (slice(4, 7), slice(3, 9))] = 1
    valid = None
    if ignore:
        valid = torch.from_numpy(rng.random((2, 1) + spatial) > 0.2)
        valid[..., :3] = False
        target = target * valid
    return logits, probabilities, target, valid


@pytest.mark.parametrize("empty", [False, True], ids=["normal", "empty"])
@pytest.mark.parametrize("ignore", [False, True], ids=["none", "ignore"])
@pytest.mark.parametrize("dims", [2, 3], ids=["2d", "3d"])
@pytest.mark.parametrize("mode", ["softmax", "sigmoid"])
@pytest.mark.parametrize("name", sorted(TERMS))
def test_forward_backward_is_finite_and_ignored_voxels_get_no_gradient(name, mode, dims, ignore, empty):
    logits, probabilities, target, valid = _batch(dims, mode, ignore, empty)
    probabilities.retain_grad()
    prediction = prediction_for(name, logits, probabilities)
    loss = call(name, mode, prediction, target, valid)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and torch.isfinite(prediction.grad).all()
    if valid is not None:
        assert prediction.grad.masked_select(~valid.expand_as(prediction)).abs().max() == 0
    if not empty:
        assert prediction.grad.abs().max() > 0
    # what the target says on ignored voxels never matters
    if valid is not None:
        flipped = torch.where(valid, target, 1 - target)
        other = call(name, mode, prediction.detach(), flipped, valid)
        assert torch.allclose(other, loss.detach(), atol=1e-12)


@pytest.mark.parametrize("mode", ["softmax", "sigmoid"])
@pytest.mark.parametrize("name", sorted(TERMS))
def test_all_ignored_patch_gives_zero_and_zero_gradient(name, mode):
    logits, probabilities, target, _ = _batch(3, mode, False, False)
    valid = torch.zeros((2, 1) + tuple(target.shape[2:]), dtype=torch.bool)
    loss = call(name, mode, prediction_for(name, logits, probabilities), target * 0, valid)
    loss.backward()
    assert loss.item() == 0 and torch.isfinite(logits.grad).all() and logits.grad.abs().max() == 0


def _saturated_predictions(name, target):
    """Confidently right and confidently wrong predictions of a sigmoid target: exact zeros and ones as
    probabilities (as float32 sigmoid gives for confident logits), or logits of ±30."""
    if takes_logits(name):
        return [30.0 * (2 * target - 1), -30.0 * (2 * target - 1)]
    return [target.clone(), 1 - target]


@pytest.mark.parametrize("name", sorted(TERMS))
def test_saturated_predictions_stay_finite(name):
    _, _, target, valid = _batch(2, "sigmoid", True, False, dtype=torch.float32)
    for prediction in _saturated_predictions(name, target):
        prediction.requires_grad_()
        loss = call(name, "sigmoid", prediction, target, valid)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(prediction.grad).all()


@pytest.mark.parametrize("name", sorted(TERMS))
def test_half_precision_inputs_are_accumulated_in_float32(name):
    logits, _, target, valid = _batch(3, "softmax", True, False, dtype=torch.float32)
    spatial = tuple(target.shape[2:])
    big = [torch.nn.functional.interpolate(x.float(), scale_factor=4, mode="nearest") for x in
           (logits.detach(), target, valid.float())]  # 48·40·48 voxels: an fp16 sum would overflow
    logits, target, valid = big[0], big[1], big[2] > 0.5
    prediction = prediction_for(name, logits, torch.softmax(logits, 1)[:, 1:])
    reference = call(name, "softmax", prediction, target, valid, spacing=(4.0, 4.0, 4.0))
    low = prediction.half().requires_grad_()
    factory, compute = TERMS[name]
    module = factory("softmax", target.shape[1])
    args = (low, target.half(), valid)
    if compute is not None:
        args += (auxiliary_batch(compute, target, valid, (4.0, 4.0, 4.0)).half(),)
    loss = module(*args)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and torch.isfinite(low.grad.float()).all()
    assert loss.item() == pytest.approx(reference.item(), rel=2e-2, abs=2e-3)
    assert spatial != tuple(target.shape[2:])


@pytest.mark.parametrize("mode", ["softmax", "sigmoid"])
@pytest.mark.parametrize("name", sorted(TERMS))
def test_gradcheck_float64(name, mode):
    _, _, target, valid = _batch(2, mode, True, False, seed=3)
    rng = np.random.default_rng(4)
    target, valid = target[:1, :, 2:10, 2:11], valid[:1, :, 2:10, 2:11]
    shape = target.shape
    if takes_logits(name):
        shape = (1, shape[1] + (mode == "softmax")) + tuple(shape[2:])
        prediction = torch.from_numpy(rng.normal(0, 2, shape)).requires_grad_()
        outside = torch.from_numpy(rng.normal(0, 2, shape))
    elif mode == "softmax":  # probabilities that sum to < 1 over the foreground, as a softmax gives
        prediction = torch.from_numpy(rng.uniform(0.05, 0.45, shape)).requires_grad_()
        outside = torch.from_numpy(rng.uniform(0.05, 0.45, shape))
    else:
        prediction = torch.from_numpy(rng.uniform(0.05, 0.95, shape)).requires_grad_()
        outside = torch.from_numpy(rng.uniform(0.05, 0.45, shape))
    factory, compute = TERMS[name]
    module = factory(mode, target.shape[1])
    extra = () if compute is None else (auxiliary_batch(compute, target, valid),)
    # ignored voxels are detached by design; hold them fixed so the numerical gradient agrees there too
    assert torch.autograd.gradcheck(lambda p: module(torch.where(valid, p, outside), target, valid, *extra),
                                    (prediction,), eps=1e-6, atol=1e-5, fast_mode=True)
    extra = () if compute is None else (auxiliary_batch(compute, target, None),)
    assert torch.autograd.gradcheck(lambda p: module(p, target, None, *extra), (prediction,), eps=1e-6,
                                    atol=1e-5, fast_mode=True)


#: reduction="none": (shape for B=2 samples, C=2 regions of S voxels, how "mean" is obtained from it)
_MAP = "map"  # per-voxel loss map (B, C, *S), "mean" = its sum over valid voxels and regions
NONE_SHAPES = {
    "skeleton_recall": "BC", "skeleton_recall_batch": "C", "weighted_dice": "BC", "weighted_dice_batch": "C",
    "boundary": "BC", "boundary_diagonal": "BC", "hausdorff": "BC", "cbdice": "BC", "cbdice_batch": "C",
    "cbdice_shi2024": "BC", "cbdice_shi2024_batch": "C", "variance": "BC", "focal": _MAP, "focal_per_class": _MAP, "weighted_ce": _MAP,
}


@pytest.mark.parametrize("name", sorted(TERMS))
def test_reduction_none_has_the_documented_shape_and_mean_reduces_it(name):
    logits, probabilities, target, valid = _batch(2, "sigmoid", True, False)
    prediction = prediction_for(name, logits, probabilities).detach()
    factory, compute = TERMS[name]
    module = factory("sigmoid", 2)
    mean = call(name, "sigmoid", prediction, target, valid, module=module)
    module.reduction = "none"
    value = call(name, "sigmoid", prediction, target, valid, module=module)
    kind = NONE_SHAPES[name]
    expected_shape = {"BC": (2, 2), "C": (2,), _MAP: tuple(target.shape)}[kind]
    assert tuple(value.shape) == expected_shape
    if kind == _MAP:
        assert value.masked_select(~valid.expand_as(value)).abs().max() == 0  # zero on ignored voxels
        assert mean.item() == pytest.approx((value.sum() / (valid.sum() * 2)).item(), rel=1e-12)
    elif name != "variance":  # variance averages over the non-empty regions only (all are here)
        assert mean.item() == pytest.approx(value.mean().item(), rel=1e-12)


@pytest.mark.parametrize("name", sorted(TERMS))
def test_bad_shapes_are_refused(name):
    logits, probabilities, target, valid = _batch(2, "sigmoid", True, False)
    prediction = prediction_for(name, logits, probabilities).detach()
    factory, compute = TERMS[name]
    module = factory("sigmoid", 2)
    with pytest.raises(ValueError):
        module(prediction[:, :1], target, valid, *(() if compute is None else (target,)))
    with pytest.raises(ValueError):
        module(prediction, target, valid[:, :, :4], *(() if compute is None else (target,)))


def test_terms_plug_into_compound_loss_with_and_without_auxiliary_targets():
    from _loss_terms import BoundaryLoss, FocalLoss, SkeletonRecallLoss

    class Zero(torch.nn.Module):
        def forward(self, logits, target):
            return logits.sum() * 0

    logits, _, target, valid = _batch(3, "softmax", True, False)
    labels = target[:, :1] * 0
    for c in range(target.shape[1]):
        labels = torch.where(target[:, c:c + 1] > 0, float(c + 1), labels)
    labels = torch.where(valid, labels, 9.0)
    tube = auxiliary_batch(skeleton_tube_target_default, target, valid)
    sdm = auxiliary_batch(signed_distance_default, target, valid)

    class Layout:
        def split(self, packed):
            return packed[:, :1], {"tube": packed[:, 1:3], "sdm": packed[:, 3:5]}

    loss = CompoundLoss(Zero(), [LossTerm("focal", 1.0, FocalLoss("softmax")),
                                 LossTerm("skel", 1.0, SkeletonRecallLoss(), auxiliary="tube"),
                                 LossTerm("boundary", 0.01, BoundaryLoss(), auxiliary="sdm")],
                        "softmax", ignore_label=9, target_layout=Layout())
    total = loss(logits, torch.cat([labels, tube, sdm], 1))
    total.backward()
    assert torch.isfinite(total) and set(loss.last_values) == {"base", "focal", "skel", "boundary"}
    assert torch.isfinite(logits.grad).all()


def skeleton_tube_target_default(labels, valid, spacing):
    from nnunet_ext.targets.ground_truth import skeleton_tube_target
    return skeleton_tube_target(labels, valid, spacing)


def signed_distance_default(labels, valid, spacing):
    from nnunet_ext.targets.ground_truth import signed_distance_target
    return signed_distance_target(labels, valid, spacing)


@pytest.mark.parametrize("module", ["targets.ground_truth", "losses.skeleton_recall", "focal", "weighted_ce", "weighted_dice",
                                    "boundary", "hausdorff", "variance", "cbdice", "schedules"])
def test_docstring_examples(module):
    module = module if "." in module or module == "schedules" else f"losses.{module}"
    result = doctest.testmod(importlib.import_module(f"nnunet_ext.{module}"))
    assert result.attempted > 0 and result.failed == 0
