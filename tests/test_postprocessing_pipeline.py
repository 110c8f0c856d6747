"""The JSON pipeline: validation errors that name the key, round trip, application to label
maps (invariants), thresholds from probabilities."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from nnunet_ext.postprocessing.labels import DatasetLabels
from nnunet_ext.postprocessing.pipeline import (
    PipelineError, apply_pipeline, load_pipeline, make_pipeline, needs_probabilities,
    save_pipeline, validate_pipeline,
)
from nnunet_ext.postprocessing.operations import fill_holes

LABELS = DatasetLabels.from_dataset_json({"labels": {"background": 0, "liver": 1, "tumour": 2}})
HYP = settings(max_examples=60, deadline=None)
label_maps = st.tuples(st.integers(1, 5), st.integers(1, 6), st.integers(1, 6)).flatmap(
    lambda s: arrays(np.uint8, s, elements=st.integers(0, 2)))
removal_steps = st.one_of(
    st.builds(lambda c, k: {"op": "keep_largest_components", "classes": c, "k": k},
              st.sampled_from([["liver"], ["tumour"], ["liver", "tumour"]]), st.integers(1, 3)),
    st.builds(lambda c, n: {"op": "remove_small_components", "classes": c, "min_voxels": n},
              st.sampled_from([["liver"], ["tumour"], ["liver", "tumour"]]), st.integers(1, 6)))


@pytest.mark.parametrize("obj, match", [
    ({"steps": [{"op": "dilate", "classes": ["liver"]}]}, r"steps\[0\]\.op: unknown step 'dilate'"),
    ({"steps": [{"classes": ["liver"]}]}, r"steps\[0\]: missing key 'op'"),
    ({"steps": [{"op": "keep_largest_components"}]}, r"steps\[0\] \(keep_largest_components\): "
                                                     r"missing parameter 'classes'"),
    ({"steps": [{"op": "threshold", "classes": "liver"}]}, "missing parameter 'threshold'"),
    ({"steps": [{"op": "threshold", "classes": "liver", "threshold": 2}]}, r"threshold: must be .* \[0, 1\]"),
    ({"steps": [{"op": "remove_small_components", "classes": ["liver"]}]}, "exactly one of 'min_voxels'"),
    ({"steps": [{"op": "remove_small_components", "classes": ["liver"], "min_voxels": 2.5}]}, "min_voxels"),
    ({"steps": [{"op": "keep_largest_components", "classes": ["liver"], "k": 0}]}, r"\.k: must be"),
    ({"steps": [{"op": "keep_largest_components", "classes": ["liver"], "size": 3}]},
     r"unknown parameter\(s\) \['size'\]"),
    ({"steps": [{"op": "fill_holes", "classes": ["liver", "tumour"]}]}, "edits one class"),
    ({"steps": [{"op": "enforce_nesting", "rule": "vote"}]}, r"\.rule: must be one of"),
    ({"steps": [{"op": "fill_holes", "classes": [], }]}, r"\.classes: must be"),
    ({"steps": [{"op": "fill_holes", "classes": ["liver"], "connectivity": 5}]}, r"\.connectivity"),
    ({"steps": {}}, r"\.steps: must be a list"),
    ({}, "missing key 'steps'"),
    ({"steps": [], "input": "logits"}, r"\.input: must be one of"),
    ({"steps": [], "version": 7}, r"\.version: only version 1"),
    ({"steps": [], "extra": 1}, r"unknown key\(s\) \['extra'\]"),
])
def test_validation_errors_name_the_key(obj, match):
    with pytest.raises(PipelineError, match=match):
        validate_pipeline(obj, source="pp.json")


def test_unknown_class_and_foreign_labels_are_errors():
    pipe = make_pipeline([{"op": "fill_holes", "classes": ["tumor"]}])
    with pytest.raises(PipelineError, match=r"steps\[0\] \(fill_holes\)\.classes: 'tumor' is not a "
                                            r"class of dataset.json \(known: \['liver', 'tumour'\]\)"):
        apply_pipeline(np.zeros((2, 2), np.uint8), pipe, LABELS)
    other = DatasetLabels.from_dataset_json({"labels": {"background": 0, "liver": 1, "tumour": 3}})
    pipe = make_pipeline([], LABELS)
    with pytest.raises(PipelineError, match="made for labels"):
        apply_pipeline(np.zeros((2, 2), np.uint8), pipe, other)


def test_json_round_trip_and_no_silent_overwrite(tmp_path):
    pipe = make_pipeline([{"op": "keep_largest_components", "classes": "liver"},
                          {"op": "remove_small_components", "classes": ["tumour"], "min_volume": 3.5},
                          {"op": "threshold", "classes": ["tumour"], "threshold": 0.4}],
                         LABELS, metadata={"note": "x"})
    path = str(tmp_path / "pp.json")
    save_pipeline(pipe, path)
    assert load_pipeline(path) == pipe
    assert json.loads(open(path).read())["steps"][0] == {
        "op": "keep_largest_components", "classes": ["liver"], "k": 1, "connectivity": None}
    assert needs_probabilities(pipe)
    with pytest.raises(FileExistsError):
        save_pipeline(pipe, path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(PipelineError, match="bad.json is not valid JSON"):
        load_pipeline(str(tmp_path / "bad.json"))


@HYP
@given(label_maps, st.lists(removal_steps, min_size=1, max_size=3))
def test_removals_add_nothing_and_are_idempotent(seg, steps):
    pipe = make_pipeline(steps, LABELS)
    out, log = apply_pipeline(seg, pipe, LABELS, spacing=(2.0, 1.0, 1.0))
    assert out.dtype == seg.dtype and out.shape == seg.shape
    for c in (1, 2):  # every class only shrinks; nothing outside the original foreground
        assert not ((out == c) & (seg != c)).any()
    assert all(entry["added"] == 0 for entry in log)
    assert sum(e["removed"] for e in log) == int(((out == 0) & (seg != 0)).sum())
    if len(steps) == 1:
        np.testing.assert_array_equal(apply_pipeline(out, pipe, LABELS)[0], out)


@HYP
@given(label_maps, st.sampled_from(["liver", "tumour"]))
def test_fill_holes_only_fills_background_in_holes(seg, name):
    value = LABELS.values[LABELS.index(name)][0]
    out, log = apply_pipeline(seg, make_pipeline([{"op": "fill_holes", "classes": name}], LABELS), LABELS)
    changed = out != seg
    # only background voxels change, they become the class, and they lie in its holes
    assert (seg[changed] == 0).all() and (out[changed] == value).all()
    assert not (changed & ~fill_holes(seg == value)).any()
    assert log[0]["added"] == int(changed.sum())
    np.testing.assert_array_equal(
        apply_pipeline(out, make_pipeline([{"op": "fill_holes", "classes": name}], LABELS), LABELS)[0], out)


def test_threshold_on_labels_uses_probabilities():
    p = np.zeros((3, 1, 5), np.float32)
    p[:, 0] = [[0.5, 0.2, 0.6, 0.1, 0.3],   # background
               [0.3, 0.45, 0.3, 0.2, 0.3],  # liver
               [0.2, 0.35, 0.1, 0.7, 0.4]]  # tumour
    seg = LABELS.probabilities_to_segmentation(p)
    assert seg.tolist() == [[0, 1, 0, 2, 2]]
    pipe = make_pipeline([{"op": "threshold", "classes": ["liver"], "threshold": 0.25}], LABELS)
    out, log = apply_pipeline(seg, pipe, LABELS, probabilities=p)
    assert out.tolist() == [[1, 1, 1, 2, 1]]
    assert log == [{"removed": 0, "added": 3}]
    pipe = make_pipeline([{"op": "threshold", "classes": ["liver"], "threshold": 0.5}], LABELS)
    # the released liver voxel goes to the more probable other label (tumour 0.35 > background 0.2)
    out, _ = apply_pipeline(seg, pipe, LABELS, probabilities=p)
    assert out.tolist() == [[0, 2, 0, 2, 2]]
    with pytest.raises(PipelineError, match="needs the saved probabilities"):
        apply_pipeline(seg, pipe, LABELS)
    with pytest.raises(PipelineError, match=r"shape \(3, 2, 5\), expected \(3, 1, 5\)"):
        apply_pipeline(seg, pipe, LABELS, probabilities=np.zeros((3, 2, 5)))


def test_input_probabilities_rebuilds_the_raw_decision():
    brats = DatasetLabels.from_dataset_json(
        {"labels": {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3],
                    "enhancing tumor": 3}, "regions_class_order": [1, 2, 3]})
    p = np.zeros((3, 1, 4), np.float32)
    p[:, 0] = [[0.9, 0.9, 0.1, 0.1], [0.1, 0.9, 0.1, 0.1], [0.1, 0.9, 0.1, 0.8]]
    seg = brats.probabilities_to_segmentation(p)  # nnU-Net's painting
    assert seg.tolist() == [[1, 3, 0, 3]]
    pipe = make_pipeline([], brats, input="probabilities")
    np.testing.assert_array_equal(apply_pipeline(seg, pipe, brats, probabilities=p)[0], seg)
    pipe = make_pipeline([{"op": "enforce_nesting", "rule": "intersect"}], brats, input="probabilities")
    out, log = apply_pipeline(seg, pipe, brats, probabilities=p)
    assert out.tolist() == [[1, 3, 0, 0]] and log == [{"removed": 1, "added": 0}]
    pipe = make_pipeline([{"op": "enforce_nesting", "rule": "union"}], brats, input="probabilities")
    np.testing.assert_array_equal(apply_pipeline(seg, pipe, brats, probabilities=p)[0], seg)


def test_2d_and_connectivity_errors_name_the_step():
    seg = np.zeros((6, 6), np.uint8)
    seg[0, 0] = seg[1, 1] = seg[4:6, 4:6] = 1
    pipe = make_pipeline([{"op": "keep_largest_components", "classes": ["liver"], "connectivity": 4}])
    out, _ = apply_pipeline(seg, pipe, LABELS)
    assert out.sum() == 4
    pipe = make_pipeline([{"op": "keep_largest_components", "classes": ["liver"], "connectivity": 6}])
    with pytest.raises(PipelineError, match=r"steps\[0\] \(keep_largest_components\): connectivity 6"):
        apply_pipeline(seg, pipe, LABELS)
