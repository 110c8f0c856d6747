"""Nested regions: hierarchy, repair rules and nesting kept by every region edit."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from nnunet_ext.postprocessing.labels import DatasetLabels
from nnunet_ext.postprocessing.pipeline import apply_pipeline, make_pipeline
from nnunet_ext.postprocessing.regions import (
    enforce_nesting, nesting_violations, region_ancestors, region_descendants,
)
from nnunet_ext.postprocessing.state import CaseState

BRATS = DatasetLabels.from_dataset_json(
    {"labels": {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3],
                "enhancing tumor": [3]}, "regions_class_order": [1, 2, 3]})
ANC = BRATS.ancestors
HYP = settings(max_examples=60, deadline=None)
shape3 = st.tuples(st.integers(1, 5), st.integers(1, 6), st.integers(1, 6))
region_masks = shape3.flatmap(lambda s: arrays(bool, (3,) + s))
brats_maps = shape3.flatmap(lambda s: arrays(np.uint8, s, elements=st.integers(0, 3)))


def test_hierarchy_from_label_sets():
    assert ANC == ((), (0,), (0, 1))
    assert region_descendants(ANC) == ((1, 2), (2,), ())
    # siblings and overlapping regions are not nested
    assert region_ancestors([(1, 2), (2, 3), (2,), (4,)]) == ((), (), (0, 1), ())
    assert BRATS.names == ("whole tumor", "tumor core", "enhancing tumor")
    assert BRATS.nnunet_keys == ((1, 2, 3), (2, 3), (3,))


@HYP
@given(region_masks, st.sampled_from(["intersect", "union"]))
def test_enforcement_nests_and_is_idempotent(masks, rule):
    out = enforce_nesting(masks, ANC, rule)
    assert nesting_violations(out, ANC) == {}
    np.testing.assert_array_equal(enforce_nesting(out, ANC, rule), out)
    if rule == "intersect":  # never adds, and leaves the outermost region alone
        assert not (out & ~masks).any()
        np.testing.assert_array_equal(out[0], masks[0])
    else:  # never removes, and the foreground is the union of all regions
        assert not (masks & ~out).any()
        np.testing.assert_array_equal(out[0], masks.any(axis=0))
    # already nested masks are left alone by both rules
    np.testing.assert_array_equal(enforce_nesting(out, ANC, "intersect"), out)
    np.testing.assert_array_equal(enforce_nesting(out, ANC, "union"), out)


def test_union_rule_is_nnunet_painting():
    masks = np.zeros((3, 1, 1, 5), bool)
    masks[0, 0, 0, :2] = True
    masks[1, 0, 0, 1:3] = True  # core sticking out of the whole tumour
    masks[2, 0, 0, 4] = True  # enhancing alone
    painted = BRATS.to_segmentation(masks)
    repaired = enforce_nesting(masks, ANC, "union")
    np.testing.assert_array_equal(BRATS.to_masks(painted), repaired)
    assert nesting_violations(masks, ANC) == {(1, 0): 1, (2, 0): 1, (2, 1): 1}
    inter = enforce_nesting(masks, ANC, "intersect")
    assert BRATS.to_segmentation(inter).tolist() == [[[1, 2, 0, 0, 0]]]


def test_region_edits_propagate():
    seg = np.zeros((1, 1, 8), np.uint8)
    seg[0, 0, :6] = [1, 2, 3, 0, 3, 1]
    st_ = CaseState(BRATS, seg=seg)
    removed = np.zeros(seg.shape, bool)
    removed[0, 0, 4] = True  # the isolated enhancing voxel, removed from the core
    st_.remove([1], removed)
    # gone from core and enhancing, still whole tumour
    assert st_.segmentation().tolist() == [[[1, 2, 3, 0, 1, 1, 0, 0]]]
    added = np.zeros(seg.shape, bool)
    added[0, 0, 7] = True
    st_.add(2, added)  # enhancing added outside everything joins core and whole tumour
    assert st_.segmentation()[0, 0, 7] == 3
    assert nesting_violations(st_.masks, ANC) == {}


@HYP
@given(brats_maps, st.sampled_from(["whole tumor", "tumor core", "enhancing tumor"]),
       st.sampled_from(["keep", "small", "holes"]))
def test_every_region_step_keeps_nesting(seg, region, op):
    step = {"keep": {"op": "keep_largest_components", "k": 1},
            "small": {"op": "remove_small_components", "min_voxels": 3},
            "holes": {"op": "fill_holes"}}[op]
    pipe = make_pipeline([{**step, "classes": [region]}], BRATS)
    out, log = apply_pipeline(seg, pipe, BRATS)
    masks_in, masks_out = BRATS.to_masks(seg), BRATS.to_masks(out)
    assert nesting_violations(masks_out, ANC) == {}
    if op != "holes":  # removals never add a voxel to any region
        assert not (masks_out & ~masks_in).any()
        assert log[0]["added"] == 0
    else:  # filling only adds, and only inside the filled region's holes
        assert not (masks_in & ~masks_out).any()
        grown = masks_out[BRATS.index(region)] & ~masks_in[BRATS.index(region)]
        assert grown.sum() == log[0]["added"]
    np.testing.assert_array_equal(apply_pipeline(out, pipe, BRATS)[0], out)


def test_enforce_nesting_step_needs_regions():
    from nnunet_ext.postprocessing.pipeline import PipelineError

    labels = DatasetLabels.from_dataset_json({"labels": {"background": 0, "a": 1}})
    with pytest.raises(PipelineError, match="no regions"):
        apply_pipeline(np.zeros((2, 2), np.uint8),
                       make_pipeline([{"op": "enforce_nesting"}]), labels)
