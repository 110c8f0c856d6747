"""Connected-component labelling: every labelling of the package goes through one function, which
works around cc3d 4.1.1 mislabelling boolean 2D input under 8-connectivity (a background pixel
labelled, label values skipped — which crashed the skeleton planner and misled component sizes)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from nnunet_ext.evaluation._common import label_components
from nnunet_ext.evaluation.challenges import instances_from_semantic
from nnunet_ext.postprocessing.operations import component_sizes, keep_largest_components

#: one 8-connected component of 15 pixels (found by a random search: cc3d 4.1.1 labels the bool
#: version as two components, one of them the background pixel (2, 0))
ONE_COMPONENT = np.array([
    [0, 0, 0, 0, 0, 0, 0],
    [0, 0, 0, 1, 0, 1, 0],
    [0, 0, 0, 1, 0, 1, 0],
    [0, 0, 1, 1, 0, 1, 0],
    [0, 1, 0, 1, 0, 1, 0],
    [0, 1, 1, 0, 1, 1, 0],
    [0, 0, 0, 0, 1, 0, 0],
    [0, 0, 0, 0, 0, 0, 0]], dtype=bool)


def test_a_boolean_2d_mask_is_labelled_as_one_component():
    labels, n = label_components(ONE_COMPONENT, 8)
    assert n == 1
    assert np.array_equal(labels, ONE_COMPONENT.astype(labels.dtype))  # no background pixel labelled


def test_the_package_operations_see_one_component_of_15_pixels():
    assert component_sizes(ONE_COMPONENT, 8).tolist() == [15]
    assert np.array_equal(keep_largest_components(ONE_COMPONENT, 1, 8), ONE_COMPONENT)
    instances = instances_from_semantic(ONE_COMPONENT.astype(np.uint8), [1])[1]
    assert np.array_equal(instances > 0, ONE_COMPONENT) and instances.max() == 1


@pytest.mark.parametrize("ndim, connectivity", [(2, 4), (2, 8), (3, 6), (3, 18), (3, 26)])
def test_labels_are_scipys_partition_numbered_one_to_n(ndim, connectivity):
    rng = np.random.default_rng(ndim * 100 + connectivity)
    structure = ndimage.generate_binary_structure(ndim, {4: 1, 8: 2, 6: 1, 18: 2, 26: 3}[connectivity])
    for _ in range(300):
        mask = rng.random(tuple(rng.integers(2, 8, size=ndim))) < 0.4
        labels, n = label_components(mask, connectivity)
        reference, n_reference = ndimage.label(mask, structure)
        assert n == n_reference
        assert set(np.unique(labels[mask])) == set(range(1, n + 1)) and not labels[~mask].any()
        pairs = set(zip(labels[mask].tolist(), reference[mask].tolist()))
        assert len(pairs) == n  # the same partition: a one-to-one map between the two labellings
