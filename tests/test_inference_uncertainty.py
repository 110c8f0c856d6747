"""Streaming moments and uncertainty maps (nnunet_ext.inference.uncertainty) against two-pass formulas."""
from __future__ import annotations

import math

import pytest
import torch

from nnunet_ext.inference.uncertainty import (
    KINDS,
    TileMoments,
    WeightedMoments,
    check_kinds,
    entropy,
    maps_from_variants,
    uncertainty_maps,
)


def _softmax_variants(n, shape=(3, 4, 5, 6), seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return [torch.softmax(scale * torch.randn(shape, generator=g), 0) for _ in range(n)]


def _accumulate(variants, tiles, weights, regions=False, kinds=KINDS):
    """variants[i] is added as part of tile tiles[i] with per-voxel weight weights[i]."""
    second, with_h = "variance" in kinds, "mutual_information" in kinds
    c, *s = variants[0].shape
    acc = WeightedMoments(c, s, second, with_h)
    sl = (slice(None),) + tuple(slice(None) for _ in s)
    groups = {}
    for p, t, w in zip(variants, tiles, weights):
        groups.setdefault(t, []).append((p, w))
    for t, items in groups.items():
        tile = TileMoments.first(items[0][0], second, with_h, regions)
        for p, _ in items[1:]:
            tile.add(p, regions)
        acc.add_tile(sl, tile, items[0][1])
    return acc


def test_streaming_equals_two_pass_with_tile_weights():
    variants = _softmax_variants(6)
    g = torch.Generator().manual_seed(1)
    tile_w = [torch.rand((4, 5, 6), generator=g) + 0.1 for _ in range(3)]
    tiles = [0, 0, 1, 1, 2, 2]
    acc = _accumulate(variants, tiles, [tile_w[t] for t in tiles])
    got = uncertainty_maps(acc, KINDS, regions=False)
    # reference: per-voxel weights, two-pass in float64
    w = torch.stack([tile_w[t] for t in tiles]).double()[:, None]
    p = torch.stack(variants).double()
    mu = (w * p).sum(0) / w.sum(0)
    var = ((w * (p - mu) ** 2).sum(0) / w.sum(0)).mean(0)
    h_mu = -(mu * torch.log(mu)).sum(0)
    h_v = -(p * torch.log(p)).sum(1)
    mi = h_mu - (w[:, 0] * h_v).sum(0) / w[:, 0].sum(0)
    torch.testing.assert_close(got["variance"].double(), var, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got["entropy"].double(), h_mu, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got["mutual_information"].double(), mi.clamp_min(0), atol=1e-5, rtol=1e-4)


def test_constant_weights_match_reference_helper_and_merge_order():
    variants = _softmax_variants(5, seed=3)
    ref = maps_from_variants(variants, kinds=KINDS)
    a = _accumulate(variants[:2], [0, 0], [1.0, 1.0])
    b = _accumulate(variants[2:], [0, 1, 1], [1.0, 1.0, 1.0])
    a.merge(b)
    got = uncertainty_maps(a, KINDS, regions=False)
    for k in KINDS:
        torch.testing.assert_close(got[k], ref[k], atol=1e-6, rtol=1e-5)


def test_fold_weights_scale_the_variants():
    variants = _softmax_variants(4, seed=5)
    a = _accumulate(variants[:2], [0, 0], [1.0, 1.0]).scale_(3.0)
    b = _accumulate(variants[2:], [0, 0], [1.0, 1.0])
    a.merge(b, other_scale=0.5)
    ref = maps_from_variants(variants, weights=[3.0, 3.0, 0.5, 0.5], kinds=KINDS)
    got = uncertainty_maps(a, KINDS, regions=False)
    for k in KINDS:
        torch.testing.assert_close(got[k], ref[k], atol=1e-6, rtol=1e-5)


def test_exact_zero_where_variants_agree_positive_where_they_differ():
    base = _softmax_variants(1, seed=7)[0]
    other = base.clone()
    other[:, 0, 0, 0] = torch.tensor([0.9, 0.05, 0.05])  # one voxel disagrees in one variant
    g = torch.rand((4, 5, 6)) + 0.5
    acc = _accumulate([base, base.clone(), other, base.clone()], [0, 0, 1, 2], [g, g, g * 0.3, 1.0])
    maps = uncertainty_maps(acc, KINDS, regions=False)
    for k in ("variance", "mutual_information"):
        m = maps[k].clone()
        assert m[0, 0, 0] > 0, k
        m[0, 0, 0] = 0
        assert torch.count_nonzero(m) == 0, k  # bitwise zero, no rounding noise
    torch.testing.assert_close(maps["entropy"][1:], entropy(base, False)[1:], atol=0, rtol=0)


def test_regions_use_binary_entropy_averaged_over_regions():
    p = torch.tensor([[0.5], [0.9]])
    h = entropy(p, regions=True)
    expected = (math.log(2) + -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))) / 2
    assert h.item() == pytest.approx(expected, rel=1e-6)
    variants = [torch.rand((2, 3, 3)) for _ in range(3)]
    ref = maps_from_variants(variants, kinds=KINDS, regions=True)
    got = uncertainty_maps(_accumulate(variants, [0, 0, 1], [1.0, 1.0, 1.0], regions=True), KINDS, True)
    for k in KINDS:
        torch.testing.assert_close(got[k], ref[k], atol=1e-6, rtol=1e-5)


def test_bounds():
    variants = _softmax_variants(8, scale=6.0, seed=11)
    maps = uncertainty_maps(_accumulate(variants, range(8), [1.0] * 8), KINDS, regions=False)
    assert maps["variance"].min() >= 0 and maps["variance"].max() <= 0.25
    assert maps["entropy"].min() >= 0 and maps["entropy"].max() <= math.log(3) + 1e-6
    assert maps["mutual_information"].min() >= 0
    assert torch.all(maps["mutual_information"] <= maps["entropy"] + 1e-6)


def test_uncovered_voxels_and_bad_requests():
    acc = WeightedMoments(2, (3, 3), second=True, with_entropy=False)
    assert torch.count_nonzero(uncertainty_maps(acc, ["variance"], False)["variance"]) == 0
    with pytest.raises(ValueError, match="mutual information"):
        uncertainty_maps(acc, ["mutual_information"], False)
    with pytest.raises(ValueError, match="unknown uncertainty kind 'std'"):
        check_kinds(["variance", "std"])
    assert check_kinds(["entropy", "variance", "entropy"]) == ("entropy", "variance")
    with pytest.raises(ValueError, match="cannot merge"):
        acc.merge(WeightedMoments(2, (3, 4), second=True, with_entropy=False))
