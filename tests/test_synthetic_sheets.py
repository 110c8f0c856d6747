"""Vesuvius-like sheets (nnunet_ext.synthetic.sheets): hole counts, separate sheets, fading, determinism."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import euler_number

from nnunet_ext.synthetic.fading import FadeSettings
from nnunet_ext.synthetic.sheets import height_field, place_holes, sheet_case

SHAPE = (24, 48, 48)
FULL = np.ones((3, 3, 3))


def _holes_of(component: np.ndarray) -> int:
    """Holes of one sheet counted independently of the Euler characteristic: the bounded components of
    the complement of its (y, x) footprint (the sheet is a height field over the whole (y, x) extent)."""
    footprint = component.any(axis=0)
    labels, n = ndimage.label(~footprint)  # 4-connected background pieces
    border = set(np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))) - {0}
    return n - len(border)


@pytest.mark.parametrize("n_sheets,n_holes", [(1, 0), (1, 3), (2, 2), (3, 1)])
def test_each_sheet_has_the_requested_holes(n_sheets, n_holes):
    for seed in range(3):
        case = sheet_case(SHAPE, seed=seed, n_sheets=n_sheets, n_holes=n_holes, fade=None, noise=0.0)
        labels, n = ndimage.label(case.label, FULL)
        assert n == n_sheets  # separate sheets, even with 26-connectivity (the gap holds)
        for k in range(1, n + 1):
            assert _holes_of(labels == k) == n_holes
        assert [len(h) for h in case.holes] == [n_holes] * n_sheets
        # Betti numbers through the Euler characteristic (β2 = 0): χ = β0 − β1
        assert euler_number(case.label, connectivity=3) == n_sheets - n_sheets * n_holes
        assert euler_number(case.label, connectivity=1) == n_sheets - n_sheets * n_holes


def test_sheet_thickness_and_hole_positions():
    case = sheet_case(SHAPE, seed=4, n_sheets=1, n_holes=2, thickness=2.0, fade=None, noise=0.0)
    per_column = case.label.sum(axis=0)
    y, x = np.meshgrid(np.arange(48) + 0.5, np.arange(48) + 0.5, indexing="ij")
    in_hole = np.zeros((48, 48), bool)
    for cy, cx, r in case.holes[0]:
        in_hole |= np.hypot(y - cy, x - cx) < r
    assert np.all(per_column[in_hole] == 0)           # holes go through
    assert np.all(per_column[~in_hole] == 2)          # a 2-voxel band along z everywhere else


def test_place_holes_keeps_clearance_and_refuses_what_does_not_fit():
    rng = np.random.default_rng(0)
    holes = place_holes(rng, (48.0, 48.0), 4, (3.0, 5.0), clearance=2.0)
    assert len(holes) == 4
    for i, (y, x, r) in enumerate(holes):
        assert r + 2.0 <= y <= 48 - r - 2.0 and r + 2.0 <= x <= 48 - r - 2.0
        for yo, xo, ro in holes[:i]:
            assert np.hypot(y - yo, x - xo) >= r + ro + 2.0
    with pytest.raises(ValueError, match="do not fit"):
        place_holes(rng, (12.0, 12.0), 5, (4.0, 5.0), clearance=2.0)


def test_height_field_is_bounded_and_smooth():
    h = height_field((48, 48), (1.0, 1.0), amplitude=3.0, seed=1)
    assert np.abs(h).max() <= 3.0 + 1e-9
    assert np.abs(np.diff(h, axis=0)).max() < 1.0 and np.abs(np.diff(h, axis=1)).max() < 1.0


def test_fading_fades_the_image_not_the_reference():
    fade = FadeSettings(n_fades=2, length=6.0, floor=0.0)
    faded = sheet_case(SHAPE, seed=2, fade=fade, noise=0.0)
    plain = sheet_case(SHAPE, seed=2, fade=None, noise=0.0)
    np.testing.assert_array_equal(faded.label, plain.label)
    assert len(faded.centres) == 2
    for centre in faded.centres:
        index = tuple(np.floor(centre).astype(int))
        assert faded.label[index] == 1 and faded.contrast[index] == pytest.approx(0.0)
        assert faded.image[index] < plain.image[index]
    far = faded.contrast == 1.0
    np.testing.assert_array_equal(faded.image[far], plain.image[far])


def test_deterministic_per_seed():
    a = sheet_case(SHAPE, seed=7)
    b = sheet_case(SHAPE, seed=7)
    c = sheet_case(SHAPE, seed=8)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    assert not np.array_equal(a.label, c.label)


def test_bad_arguments():
    with pytest.raises(ValueError, match="3D"):
        sheet_case((48, 48))
    with pytest.raises(ValueError, match="along z"):
        sheet_case((10, 48, 48), n_sheets=3)
    with pytest.raises(ValueError):
        sheet_case(SHAPE, thickness=0.0)
