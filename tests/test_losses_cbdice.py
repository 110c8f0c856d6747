"""cbDice (ground-truth-side variant): auxiliary target by hand, diameter awareness, degenerate cases."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from nnunet_ext.losses.cbdice import CenterlineBoundaryDiceLoss, capped_distance_transform
from nnunet_ext.targets.ground_truth import centerline_radius_target


def _vessels_2d():
    """A thick (7-pixel) and a thin (3-pixel) horizontal vessel."""
    labels = np.zeros((1, 24, 30), bool)
    labels[0, 3:10, 2:28] = True
    labels[0, 16:19, 2:28] = True
    return labels


def test_radius_target_depth_and_inverse_radius_weights():
    labels = _vessels_2d()
    out = centerline_radius_target(labels)
    assert out.shape == (2, 24, 30) and out.dtype == np.float32
    depth, weight = out[0], out[1]
    assert depth[6, 15] == 1 and depth[17, 15] == 1  # both centrelines are fully central
    assert depth[3, 15] == pytest.approx(1 / 4) and depth[16, 15] == pytest.approx(1 / 2)
    assert not depth[~labels[0]].any() and not weight[~labels[0]].any()
    # inverse normalised radius (2D: power 1): thick radius 4 → 1, thin radius 2 → 2
    assert weight[6, 15] == pytest.approx(1.0) and weight[17, 15] == pytest.approx(2.0)


def test_radius_target_3d_uses_squared_inverse_radius_and_spacing():
    labels = np.zeros((1, 13, 13, 20), bool)
    labels[0, 1:8, 1:8, 1:19] = True  # radius 4
    labels[0, 9:12, 9:12, 1:19] = True  # radius 2
    out = centerline_radius_target(labels)
    assert out[1][4, 4, 10] == pytest.approx(1.0) and out[1][10, 10, 10] == pytest.approx(4.0)
    # isotropic: the depth across the thick tube falls by 1/4 per voxel along both cross-section axes
    ramp = [0.25, 0.5, 0.75, 1.0, 0.75, 0.5, 0.25]
    assert out[0][1:8, 4, 10] == pytest.approx(ramp) and out[0][4, 1:8, 10] == pytest.approx(ramp)
    # spacing 2 along axis 0: the tube is 14 units deep there, 7 along axis 1, so its radius stays 4 (set by
    # axis 1) and the inside distance of voxel i along axis 0 is D = min(2·min(i, 8 - i), 4): depth D/4
    anisotropic = centerline_radius_target(labels, None, (2.0, 1.0, 1.0))
    assert anisotropic[0][1:8, 4, 10] == pytest.approx([0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5])
    assert anisotropic[0][4, 1:8, 10] == pytest.approx(ramp)
    # thin tube: radius min(2·2, 2) = 2 units, so its weight stays (4/2)²
    assert anisotropic[1][10, 10, 10] == pytest.approx(4.0)


def test_radius_target_ignores_and_empty_channels():
    labels = np.concatenate([_vessels_2d(), np.zeros((1, 24, 30), bool)])
    valid = np.ones((24, 30), bool)
    valid[:, 20:] = False
    out = centerline_radius_target(labels, valid)
    assert out.shape == (4, 24, 30)
    assert not out[:, ~valid].any() and not out[1].any() and not out[3].any()


def _loss(p, labels, **kw):
    aux = torch.from_numpy(centerline_radius_target(labels))[None].double()
    return CenterlineBoundaryDiceLoss(smooth=1e-6, **kw)(p, torch.from_numpy(labels)[None].double(), None, aux)


def test_perfect_prediction_is_near_zero_and_better_than_shifted_ones():
    labels = _vessels_2d()
    target = torch.from_numpy(labels)[None].double()
    perfect = _loss(target, labels).item()
    assert perfect < 0.02
    # the same one-pixel shift costs more on the thin vessel than on the thick one: diameter awareness
    thick_shifted = target.clone()
    thick_shifted[..., 0:12, :] = torch.roll(target[..., 0:12, :], 1, dims=-2)
    thin_shifted = target.clone()
    thin_shifted[..., 12:24, :] = torch.roll(target[..., 12:24, :], 1, dims=-2)
    assert perfect < _loss(thick_shifted, labels).item() < _loss(thin_shifted, labels).item()


def test_missing_the_thin_vessel_costs_more_than_its_volume_share():
    """Hand-built auxiliary target: centrelines of 20 (thick, ω = 1) and 24 (thin, ω = 2) pixels."""
    labels = _vessels_2d()
    target = torch.from_numpy(labels)[None].double()
    aux = torch.zeros(1, 2, 24, 30, dtype=torch.float64)
    aux[0, 0][torch.from_numpy(labels[0])] = 0.5
    aux[0, 0, 6, 5:25] = 1.0  # the thick vessel's centreline (rows 3..9 → row 6)
    aux[0, 0, 17, 3:27] = 1.0
    aux[0, 1, 6, 5:25] = 1.0
    aux[0, 1, 17, 3:27] = 2.0  # the thin vessel's centreline counts twice per pixel
    no_thin = target.clone()
    no_thin[..., 12:, :] = 0
    loss = CenterlineBoundaryDiceLoss(smooth=1e-6)(no_thin, target, None, aux).item()
    # the soft skeleton (3 erosions) of the 7×26 thick bar is its centre row, columns 5..24: Tprec = 20/20;
    # Tsens = 20·1 / (20·1 + 24·2), well below the unweighted recall 20/44
    tsens = 20 / 68
    assert loss == pytest.approx(1 - 2 * tsens / (1 + tsens), abs=1e-6)
    assert 1 - 2 * (20 / 44) / (1 + 20 / 44) < loss - 0.1


def test_empty_target_penalises_predicted_centrelines_and_is_finite():
    labels = np.zeros((1, 10, 12), bool)
    p = torch.zeros(1, 1, 10, 12, dtype=torch.float64, requires_grad=True)
    assert _loss(p, labels).item() == pytest.approx(0)
    q = torch.zeros(1, 1, 10, 12, dtype=torch.float64)
    q[..., 2:7, 1:11] = 0.6
    q.requires_grad_()
    loss = _loss(q, labels)
    loss.backward()
    assert loss.item() > 0.5 and torch.isfinite(q.grad).all()


def test_arguments():
    with pytest.raises(ValueError, match="smooth"):
        CenterlineBoundaryDiceLoss(smooth=0)
    with pytest.raises(ValueError, match="iterations"):
        CenterlineBoundaryDiceLoss(iterations=-1)
    with pytest.raises(ValueError, match="radius_target"):
        CenterlineBoundaryDiceLoss()(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), None, torch.zeros(1, 2, 4, 4))


def test_iterations_per_deep_supervision_level_and_arguments():
    labels = _vessels_2d()
    target = torch.from_numpy(labels)[None].double()
    aux = torch.from_numpy(centerline_radius_target(labels))[None].double()
    p = torch.roll(target, 1, dims=-2) * 0.7 + 0.1  # shifted by one row
    for formulation in ("loader", "shi2024"):
        per_level = CenterlineBoundaryDiceLoss(iterations=(4, 1), formulation=formulation)
        values = [CenterlineBoundaryDiceLoss(iterations=k, formulation=formulation)(p, target, None, aux).item()
                  for k in (4, 1)]
        assert values[0] != pytest.approx(values[1], abs=1e-3)  # the count matters on this input
        assert per_level(p, target, None, aux).item() == values[0]
        assert per_level(p, target, None, aux, level=1).item() == values[1]
        assert per_level(p, target, None, aux, level=3).item() == values[1]  # deeper levels reuse the last
    for bad in (-1, True, 2.5, (), (3, -1)):
        with pytest.raises(ValueError, match="iterations"):
            CenterlineBoundaryDiceLoss(iterations=bad)
    with pytest.raises(ValueError, match="formulation"):
        CenterlineBoundaryDiceLoss(formulation="shi")
    loader, shi = CenterlineBoundaryDiceLoss(), CenterlineBoundaryDiceLoss(formulation="shi2024")
    assert (loader.iterations, loader.smooth, shi.iterations, shi.smooth) == (3, 1.0, 10, 1e-3)
    assert CenterlineBoundaryDiceLoss(5, 0.5, formulation="shi2024").iterations == 5


# --- formulation="shi2024": Shi et al.'s published loss ---------------------------------------------------


@pytest.mark.parametrize("dims", [2, 3])
def test_capped_distance_transform_is_scipys_edt_up_to_the_cap(dims):
    rng = np.random.default_rng(dims)
    shape = (2, 2, 19, 23) if dims == 2 else (1, 2, 9, 12, 14)
    background = rng.random(shape) < 0.06
    background[0, 0] = False  # no background at all: the cap everywhere
    for cap in (0, 1, 2, 4, 40):
        ours = capped_distance_transform(torch.from_numpy(background), cap, torch.float64).numpy()
        for b in range(shape[0]):
            for c in range(shape[1]):
                if background[b, c].any():
                    expected = np.minimum(ndimage.distance_transform_edt(~background[b, c]), cap)
                else:
                    expected = np.full(shape[2:], float(cap))
                np.testing.assert_allclose(ours[b, c], expected, atol=1e-12)


def test_shi2024_hand_computed_shifted_bar():
    """Ground truth: 3×7 bar (rows 1-3); prediction: the same bar one row lower with p = q inside.

    Both soft skeletons are the bars' middle rows, columns 2..6 (5 pixels) with radius D = 2 = R_max, so
    I = (2 − 2 + 1)/2 = 1/2 and R̂ = 1 there; D̂ = 1/2 on the bars' other pixels. The predicted centreline
    (row 3) lies on the ground truth's edge row (D̂_L = 1/2) and off its skeleton; the ground-truth
    centreline (row 2) lies on the prediction's edge row (D̂_P = 1/2) and off its skeleton::

        Tprec = (5 · q/2 · 1/2 + s) / (5 · q/2 · q + s),   Tsens = (5 · 1/2 · q/2 + s) / (5 · 1/2 · 1 + s)
    """
    target = torch.zeros(1, 1, 6, 9, dtype=torch.float64)
    target[..., 1:4, 1:8] = 1
    q, s = 0.8, 1e-3
    p = torch.full_like(target, 0.2)
    p[..., 2:5, 1:8] = q
    aux = torch.zeros(1, 2, 6, 9, dtype=torch.float64)
    loss = CenterlineBoundaryDiceLoss(formulation="shi2024")(p, target, None, aux).item()
    tprec = (1.25 * q + s) / (2.5 * q * q + s)
    tsens = (1.25 * q + s) / (2.5 + s)
    assert loss == pytest.approx(1 - 2 * tprec * tsens / (tprec + tsens), abs=1e-12)
    assert CenterlineBoundaryDiceLoss(formulation="shi2024")(target * q, target, None, aux).item() == 0


def _vessel_tree_2d():
    """A wavy thick vessel (~8 px), a thin one (2-3 px) and a thin diagonal branch joining them, 40×48;
    and the thin vessel's own pixels."""
    y, x = np.mgrid[:40, :48].astype(float)
    thick = np.abs(y - (11 + 3 * np.sin(x / 7))) <= 3.5
    thin = np.abs(y - (30 + 1.5 * np.cos(x / 6))) <= 1.2
    branch = (np.abs((y - 11) - 0.8 * (x - 24)) <= 1.2) & (y > 11) & (y < 31)
    return (thick | thin | branch)[None], thin & ~thick & ~branch


def _vessel_tree_3d():
    """A thick (radius 3) and a thin (radius 1.5) wavy tube along the last axis, 20×24×32."""
    z, y, x = np.mgrid[:20, :24, :32].astype(float)
    thick = (z - 7 - 2 * np.sin(x / 6)) ** 2 + (y - 7) ** 2 <= 9.0
    thin = (z - 13) ** 2 + (y - 16 - 1.5 * np.cos(x / 5)) ** 2 <= 2.25
    return (thick | thin)[None], thin & ~thick


def _predictions(labels, thin):
    """Foreground probabilities of varying quality (float64, the shape of ``labels``)."""
    gt = labels.astype(float)
    grid = np.indices(labels.shape[1:]).astype(float)
    ripple = np.cos(1.7 * grid[-1] + 0.3 * grid[0]) * np.cos(2.3 * grid[-2])
    return {
        "confident": 0.1 + 0.8 * gt,
        "shifted": np.roll(0.1 + 0.8 * gt, 1, axis=-2),
        "missed_thin": 0.1 + 0.8 * gt * ~thin,
        "dilated": 0.1 + 0.7 * ndimage.binary_dilation(labels[0])[None],
        "blurred": ndimage.gaussian_filter(gt[0], 1.2)[None] * 0.96 + 0.02,
        "speckled": np.clip(0.15 + 0.7 * gt + 0.4 * (ripple > 0.7) - 0.4 * gt * (ripple < -0.8), 0.02, 0.98),
    }


def _two_class_logits(probabilities: np.ndarray) -> torch.Tensor:
    """``(B, 2, *S)`` float32 logits [0, logit p]: what the authors' loss was given for these figures."""
    logit = torch.from_numpy(np.log(probabilities) - np.log1p(-probabilities)).float()
    return torch.cat([torch.zeros_like(logit), logit], 1)


#: The authors' SoftcbDiceLoss(iter_=10, smooth=1e-3) (their trainers' settings; morphological skeleton,
#: github.com/PengchengShi1220/cbDice, loss/cbdice_loss.py at a970c1d, CPU distance transforms) on
#: _two_class_logits of these predictions and the label map of the vessel tree: 1 + their value (they return
#: -cbDice), the L1 norm of their gradient w.r.t. the foreground logit, and that gradient's dot product with
#: the probabilities. A batch of two is pooled by them: compared with batch_dice=True.
AUTHORS_FIGURES = {
    (2, "confident"): (0.0, 0.0, 0.0),
    (2, "shifted"): (0.30772483348846436, 0.0615058798, -0.00522801455),
    (2, "missed_thin"): (0.2639811038970947, 0.0199705873, -0.0175172098),
    (2, "dilated"): (0.006330668926239014, 0.0141743987, -0.00365259794),
    (2, "blurred"): (0.0201113224029541, 0.0126040702, -0.000682883983),
    (2, "speckled"): (0.22487366199493408, 0.148105036, 0.0413825773),
    (2, ("shifted", "speckled")): (0.2629883289337158, 0.110719058, 0.0196926749),
    (3, "confident"): (0.0, 0.0, 0.0),
    (3, "shifted"): (0.2636394500732422, 0.0727307139, -0.0068464198),
    (3, "missed_thin"): (0.3697603940963745, 0.023301372, -0.0209712349),
    (3, "dilated"): (0.0, 0.0, 0.0),
    (3, "blurred"): (0.01246345043182373, 0.01814238, -0.0119715275),
    (3, "speckled"): (0.6320159733295441, 0.206271431, 0.077812046),
    (3, ("shifted", "speckled")): (0.599292665719986, 0.202869795, 0.0755563538),
}


@pytest.mark.parametrize("dims, case", sorted(AUTHORS_FIGURES, key=str), ids=str)
def test_shi2024_reproduces_the_authors_loss_and_gradient(dims, case):
    labels, thin = _vessel_tree_2d() if dims == 2 else _vessel_tree_3d()
    predictions = _predictions(labels, thin)
    names = case if isinstance(case, tuple) else (case,)
    logits = _two_class_logits(np.stack([predictions[n] for n in names]))[:, 1:].double().requires_grad_()
    target = torch.from_numpy(np.stack([labels] * len(names))).double()
    aux = torch.zeros((len(names), 2) + labels.shape[1:], dtype=torch.float64)  # not read by "shi2024"
    loss = CenterlineBoundaryDiceLoss(formulation="shi2024", batch_dice=True)(torch.sigmoid(logits), target,
                                                                              None, aux)
    loss.backward()
    value, gradient_l1, gradient_dot_p = AUTHORS_FIGURES[(dims, case)]
    assert loss.item() == pytest.approx(value, abs=3e-7)  # theirs is float32
    assert logits.grad.abs().sum().item() == pytest.approx(gradient_l1, rel=1e-5, abs=1e-12)
    assert (logits.grad * torch.sigmoid(logits)).sum().item() == pytest.approx(gradient_dot_p, rel=1e-5,
                                                                               abs=1e-12)


def _shi_batch(dims: int, seed: int = 0):
    """Probabilities away from the 0.5 threshold (finite differences never cross it), a two-channel target
    with a thick and a thin structure, and a validity mask."""
    rng = np.random.default_rng(seed)
    spatial = (12, 15) if dims == 2 else (4, 10, 11)
    target = torch.zeros((2, 2) + spatial, dtype=torch.float64)
    lead = (slice(0, 3),) if dims == 3 else ()
    target[(slice(None), 0) + lead + (slice(1, 6), slice(1, 10))] = 1
    target[(slice(None), 1) + lead + (slice(7, 9), slice(2, 9))] = 1
    margin = rng.uniform(0.05, 0.4, target.shape)
    likely = rng.random(target.shape) < np.where(target.numpy() > 0, 0.85, 0.1)
    probabilities = torch.from_numpy(np.where(likely, 0.5 + margin, 0.5 - margin))
    valid = torch.from_numpy(rng.random((2, 1) + spatial) > 0.15)
    valid[..., :2] = False
    return probabilities, target * valid, valid


@pytest.mark.parametrize("dims", [2, 3])
def test_shi2024_gradcheck_float64(dims):
    probabilities, target, valid = _shi_batch(dims)
    probabilities = probabilities[:1].clone().requires_grad_()
    target, valid = target[:1], valid[:1]
    aux = torch.zeros((1, 4) + tuple(target.shape[2:]), dtype=torch.float64)
    module = CenterlineBoundaryDiceLoss(iterations=3, formulation="shi2024")
    fixed = probabilities.detach().clone()
    assert torch.autograd.gradcheck(lambda p: module(torch.where(valid, p, fixed), target, valid, aux),
                                    (probabilities,), eps=1e-6, atol=1e-6, fast_mode=True)
    assert torch.autograd.gradcheck(lambda p: module(p, target, None, aux), (probabilities,), eps=1e-6,
                                    atol=1e-6, fast_mode=True)


def test_shi2024_ignore_mask():
    probabilities, target, valid = _shi_batch(2, seed=1)
    probabilities.requires_grad_()
    aux = torch.zeros((2, 4) + tuple(target.shape[2:]), dtype=torch.float64)
    module = CenterlineBoundaryDiceLoss(iterations=4, formulation="shi2024")
    loss = module(probabilities, target, valid, aux)
    loss.backward()
    assert 0 < loss.item() < 1 and probabilities.grad.abs().max() > 0
    assert probabilities.grad.masked_select(~valid.expand_as(probabilities)).abs().max() == 0
    # neither the target nor the prediction on ignored voxels matters
    flipped = torch.where(valid, target, 1 - target)
    other = torch.where(valid, probabilities.detach(), 1 - probabilities.detach())
    assert module(other, flipped, valid, aux).item() == pytest.approx(loss.item(), abs=1e-12)
    # an ignored border strip is the outside of the patch, for both sides: the same as cropping it off (and
    # not the same as a background strip). A 7-column bar along the strip, predicted one column off.
    bar = torch.zeros(1, 1, 12, 15, dtype=torch.float64)
    bar[..., 2:9] = 1
    low = torch.roll(bar, 1, dims=-1) * 0.7 + 0.1
    strip = torch.ones(1, 1, 12, 15, dtype=torch.bool)
    strip[..., :2] = False
    zeros = torch.zeros(1, 2, 12, 15, dtype=torch.float64)
    cropped = module(low[..., 2:], bar[..., 2:], None, zeros[..., 2:]).item()
    assert module(low, bar, strip, zeros).item() == pytest.approx(cropped, abs=1e-12)
    as_background = module(low * strip, bar * strip, None, zeros).item()
    assert abs(as_background - cropped) > 0.05
    # everything ignored: 0, no gradient
    p = probabilities.detach().clone().requires_grad_()
    nothing = module(p, target * 0, torch.zeros_like(valid), aux)
    nothing.backward()
    assert nothing.item() == 0 and p.grad.abs().max() == 0


def test_shi2024_empty_patches_are_finite():
    aux = torch.zeros(1, 2, 10, 12, dtype=torch.float64)
    empty = torch.zeros(1, 1, 10, 12, dtype=torch.float64)
    module = CenterlineBoundaryDiceLoss(formulation="shi2024")
    p = torch.full_like(empty, 0.2, requires_grad=True)
    loss = module(p, empty, None, aux)
    loss.backward()
    assert loss.item() == 0 and torch.isfinite(p.grad).all()
    q = torch.full_like(empty, 0.2)
    q[..., 2:7, 1:11] = 0.6
    q.requires_grad_()
    loss = module(q, empty, None, aux)  # predicted centrelines on an empty ground truth are penalised
    loss.backward()
    assert loss.item() > 0.9 and torch.isfinite(q.grad).all() and q.grad.abs().max() > 0
    # saturated: exact zeros and ones, everything foreground
    full = torch.ones_like(empty, requires_grad=True)
    loss = module(full, torch.ones_like(empty), None, aux)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(full.grad).all()


def test_shi2024_half_precision_inputs_are_accumulated_in_float32():
    probabilities, target, valid = _shi_batch(3, seed=2)
    big = [torch.nn.functional.interpolate(x.float(), scale_factor=3, mode="nearest") for x in
           (probabilities, target, valid.float())]  # 21·30·36 voxels per channel
    probabilities, target, valid = big[0], big[1], big[2] > 0.5
    aux = torch.zeros((2, 4) + tuple(target.shape[2:]))
    module = CenterlineBoundaryDiceLoss(formulation="shi2024")
    reference = module(probabilities, target, valid, aux)
    low = probabilities.half().requires_grad_()
    loss = module(low, target.half(), valid, aux.half())
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and torch.isfinite(low.grad.float()).all()
    assert low.grad.abs().max() > 0
    assert loss.item() == pytest.approx(reference.item(), rel=2e-3, abs=1e-4)


def test_shi2024_cbdice_can_exceed_one_as_the_authors_does():
    """A 7-column bar along the patch edge, predicted one column off (p = 0.8): the authors' loss gives
    -0.11105966567993164 (cbDice 1.111, above 1: Tprec's numerator weighs the predicted centreline by the
    ground truth's clipped depth, its denominator by the prediction's normalised radius times p)."""
    bar = torch.zeros(1, 1, 12, 13, dtype=torch.float64)
    bar[..., 0:7] = 1
    logits = _two_class_logits((torch.roll(bar, 1, dims=-1) * 0.7 + 0.1).numpy())[:, 1:].double()
    loss = CenterlineBoundaryDiceLoss(4, formulation="shi2024")(torch.sigmoid(logits), bar, None,
                                                                torch.zeros(1, 2, 12, 13, dtype=torch.float64))
    assert loss.item() == pytest.approx(1 - 1.11105966567993164, abs=3e-7)
