"""BraTS-like nested regions (nnunet_ext.synthetic.nested): nesting, the rim's topology, fading, determinism."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import euler_number

from nnunet_ext.synthetic.fading import FadeSettings
from nnunet_ext.synthetic.nested import EDEMA, ENHANCING, NECROSIS, nested_case, star_modulation


@pytest.mark.parametrize("shape", [(64, 64), (32, 48, 48)])
def test_regions_are_nested_with_a_margin(shape):
    full = np.ones((3,) * len(shape))
    for seed in range(4):
        label = nested_case(shape, seed=seed, fade=None, noise=0.0).label
        assert set(np.unique(label)) == {0, NECROSIS, EDEMA, ENHANCING}
        necrosis, core = label == NECROSIS, np.isin(label, (NECROSIS, ENHANCING))
        # the necrosis touches nothing but the rim, the core nothing but edema (26/8-neighbourhood)
        assert set(np.unique(label[ndimage.binary_dilation(necrosis, full)])) <= {NECROSIS, ENHANCING}
        assert set(np.unique(label[ndimage.binary_dilation(core, full)])) <= {NECROSIS, ENHANCING, EDEMA}
        # every region is one piece
        for region in ((1, 2, 3), (1, 3), (3,)):
            assert ndimage.label(np.isin(label, region), full)[1] == 1


def test_rim_is_a_ring_in_2d_and_a_shell_in_3d():
    for seed in range(3):
        rim = nested_case((64, 64), seed=seed, fade=None).label == ENHANCING
        assert euler_number(rim, connectivity=2) == 0          # β0 = 1, β1 = 1
        shell = nested_case((32, 48, 48), seed=seed, fade=None).label == ENHANCING
        assert euler_number(shell, connectivity=3) == 2        # β0 = 1, β1 = 0, β2 = 1


def test_rim_fades_but_the_reference_does_not():
    fade = FadeSettings(n_fades=1, length=5.0, floor=0.0)
    faded = nested_case((64, 64), seed=3, fade=fade, noise=0.0)
    plain = nested_case((64, 64), seed=3, fade=None, noise=0.0)
    np.testing.assert_array_equal(faded.label, plain.label)
    (centre,) = faded.centres
    index = tuple(np.floor(centre).astype(int))
    assert faded.label[index] == ENHANCING
    # with floor 0 the rim at the stretch is as bright as the edema, elsewhere untouched
    edema_value = int(plain.image[plain.label == EDEMA][0])
    assert abs(int(faded.image[index]) - edema_value) <= 1        # uint16 rounding
    assert int(plain.image[index]) - edema_value >= 0.5 * 600   # the unfaded rim: 0.55 above edema
    far = faded.contrast == 1.0
    np.testing.assert_array_equal(faded.image[far], plain.image[far])


def test_star_modulation_range():
    u = np.random.default_rng(0).normal(size=(500, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    m = star_modulation(u, seed=1, depth=0.2)
    assert m.min() >= 0.8 - 1e-9 and m.max() <= 1.2 + 1e-9 and m.std() > 0


def test_deterministic_per_seed_and_bad_arguments():
    a, b, c = (nested_case((48, 48), seed=s) for s in (5, 5, 6))
    np.testing.assert_array_equal(a.image, b.image)
    assert not np.array_equal(a.label, c.label)
    with pytest.raises(ValueError, match="necrosis_fraction"):
        nested_case((48, 48), necrosis_fraction=0.7, core_fraction=0.6)
    with pytest.raises(ValueError, match="does not fit"):
        nested_case((8, 8), radius_fraction=(0.45, 0.5))
    with pytest.raises(ValueError, match="shape"):
        nested_case((4, 4, 4, 4))
