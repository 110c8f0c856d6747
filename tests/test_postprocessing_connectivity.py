"""Connectivity-aware post-processing from the probabilities: hysteresis thresholding and gap
bridging on hand-made vessels with known answers, as pipeline steps, and chosen (or refused) by
`determine` with the topology objective and its Dice guard."""
from __future__ import annotations

import doctest
import json

import numpy as np
import pytest
from _postprocessing_fixtures import BINARY_DJ, write_seg
from skimage.filters import apply_hysteresis_threshold

from nnunet_ext.postprocessing import connectivity as conn_module
from nnunet_ext.postprocessing import (
    PipelineError, apply_pipeline, apply_pipeline_to_folder, bridge_gaps, find_bridges,
    hysteresis_threshold, load_pipeline, make_pipeline, save_pipeline, skeleton_end_points,
    validate_pipeline,
)
from nnunet_ext.postprocessing.determine import (
    candidate_steps, determine_from_folder, objective_dice_guard, objective_guards, parse_objective,
)
from nnunet_ext.postprocessing.labels import DatasetLabels
from nnunet_ext.postprocessing.nnunet_pkl import NotExpressible, nnunet_steps
from nnunet_ext.postprocessing.operations import label_components

BG = 0.02  # probability of plain background
FAINT = 0.3  # probability in a gap where the contrast fades
SHAPE = (12, 24, 40)
BINARY = DatasetLabels.from_dataset_json(BINARY_DJ)


def tube(mask, z, y, x0, x1):
    """Paint a straight vessel along x with a 3 × 3 cross-section centred at (z, y)."""
    mask[z - 1: z + 2, y - 1: y + 2, x0:x1] = True


def n_components(mask) -> int:
    return label_components(mask)[1].size


def vessel_with_gap(gap=(18, 21), gap_p=FAINT, shape=SHAPE):
    """One vessel along x (x = 2..37) at (z, y) = (6, 8) whose stretch ``gap`` is predicted with a
    faint probability: the mask is two pieces."""
    ref = np.zeros(shape, bool)
    tube(ref, 6, 8, 2, 38)
    p = np.where(ref, 0.9, BG).astype(np.float32)
    p[:, :, gap[0]:gap[1]][ref[:, :, gap[0]:gap[1]]] = gap_p
    return p > 0.5, p, ref


# ---------------------------------------------------------------------------- hysteresis
def test_hysteresis_keeps_attached_faint_segment_and_drops_isolated_blob():
    p = np.full(SHAPE, BG, np.float32)
    p[6, 8, 2:20] = 0.9  # confident
    p[6, 8, 20:30] = 0.35  # faint, attached
    p[6, 16, 5:10] = 0.35  # faint, isolated
    out = hysteresis_threshold(p, 0.3, 0.5)
    expected = np.zeros(SHAPE, bool)
    expected[6, 8, 2:30] = True
    np.testing.assert_array_equal(out, expected)
    # a plain threshold cannot do both: at 0.3 it keeps the blob, at 0.5 it loses the segment
    assert (p > 0.3)[6, 16, 5:10].all() and not (p > 0.5)[6, 8, 20:30].any()
    assert not hysteresis_threshold(p, 0.4, 0.5)[6, 8, 20:30].any()


@pytest.mark.parametrize("shape, conn", [((9, 11, 10), 6), ((30, 31), 4)])
def test_hysteresis_matches_scikit_image(shape, conn):
    rng = np.random.default_rng(3)
    p = rng.random(shape).astype(np.float32)
    ours = hysteresis_threshold(p, 0.45, 0.8, connectivity=conn)  # skimage labels face-connected
    np.testing.assert_array_equal(ours, apply_hysteresis_threshold(p, 0.45, 0.8))
    assert ours.any() and (ours != (p > 0.45)).any()
    full = hysteresis_threshold(p, 0.45, 0.8)
    assert full.sum() >= ours.sum()  # diagonal neighbours join more components


def test_hysteresis_rejects_bad_parameters():
    p = np.zeros((3, 3), np.float32)
    with pytest.raises(ValueError, match="low < high"):
        hysteresis_threshold(p, 0.5, 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        hysteresis_threshold(p + 2, 0.2, 0.5)


# ---------------------------------------------------------------------------- bridging
def test_a_faint_gap_is_bridged_through_the_gap():
    mask, p, ref = vessel_with_gap()
    assert n_components(mask) == 2
    bridges = find_bridges(mask, p, max_length=4.0)
    assert len(bridges) == 1  # both pieces' end points find the gap: one bridge per pair
    b = bridges[0]
    assert b.gap_length == pytest.approx(3.0) and b.mean_probability == pytest.approx(FAINT)
    assert b.angle < 30
    out = bridge_gaps(mask, p, max_length=4.0)
    assert n_components(out) == 1
    added = out & ~mask
    assert added.sum() == 3 and (added <= ref).all()  # the path runs inside the true vessel
    assert (out >= mask).all()  # nothing removed
    # the input is not modified
    assert n_components(mask) == 2


def test_gap_longer_than_the_maximum_is_not_bridged():
    mask, p, _ = vessel_with_gap(gap=(16, 22))  # 6 voxels
    np.testing.assert_array_equal(bridge_gaps(mask, p, max_length=5.0), mask)
    assert n_components(bridge_gaps(mask, p, max_length=6.0)) == 1


def test_gap_below_the_probability_floor_is_not_bridged():
    mask, p, _ = vessel_with_gap(gap_p=0.08)
    np.testing.assert_array_equal(bridge_gaps(mask, p, max_length=4.0, min_probability=0.1), mask)
    assert n_components(bridge_gaps(mask, p, max_length=4.0, min_probability=0.05)) == 1


def test_parallel_vessels_three_voxels_apart_are_not_merged():
    # vessel A (y = 8) with a faint gap; vessel B (y = 14, 3 background rows between them)
    # runs beside A and beyond A's far end, inside the direction cone of A's end points
    mask, p, ref_a = vessel_with_gap(gap=(10, 13))
    mask[:, :, 20:] &= False
    ref_a[:, :, 20:] = False
    p[:, :, 20:] = np.where(ref_a[:, :, 20:], p[:, :, 20:], BG)
    tube(mask, 6, 14, 2, 38)
    p[mask & ~ref_a] = 0.9
    assert n_components(mask) == 3
    out = bridge_gaps(mask, p, max_length=6.0)
    assert n_components(out) == 2  # A's gap closed, B separate
    assert not (out & ~mask)[:, 10:13].any()  # nothing painted between the vessels
    np.testing.assert_array_equal(bridge_gaps(mask, p, max_length=6.0, min_probability=0.01), out)


def test_side_by_side_vessels_in_a_faint_halo_are_not_joined_sideways():
    # two vessels ending at the same x, 3 background rows apart (y = 8, 9, 10), the rows between
    # them as faint as a gap: their end points look along x, the other vessel lies at ~80°,
    # outside the 60° cone
    mask = np.zeros(SHAPE, bool)
    tube(mask, 6, 6, 2, 30)
    tube(mask, 6, 12, 2, 30)
    p = np.where(mask, 0.9, BG).astype(np.float32)
    p[5:8, 8:11, 2:30] = FAINT
    np.testing.assert_array_equal(bridge_gaps(mask, p, max_length=6.0), mask)
    # with a cone wide enough to look sideways they would be joined: the angle rule decides
    assert n_components(bridge_gaps(mask, p, max_length=6.0, max_angle=100.0)) == 1


def test_no_bridge_within_one_component():
    # a loop-shaped vessel whose two stubs face each other across a faint 6-voxel gap: joining
    # them would only close a loop
    mask = np.zeros(SHAPE, bool)
    mask[5:8, 3:21, 4:7] = True  # left side
    mask[5:8, 18:21, 4:36] = True  # top
    mask[5:8, 3:21, 33:36] = True  # right side
    mask[5:8, 3:6, 4:16] = True  # left stub, tip at x = 15
    mask[5:8, 3:6, 22:36] = True  # right stub, tip at x = 22
    p = np.where(mask, 0.9, BG).astype(np.float32)
    p[5:8, 3:6, 16:22] = FAINT
    assert n_components(mask) == 1
    np.testing.assert_array_equal(bridge_gaps(mask, p, max_length=8.0), mask)
    cut = mask.copy()
    cut[:, 18:21, 18:20] = False  # open the top: two components, now the gap is bridged
    assert n_components(bridge_gaps(cut, p, max_length=8.0)) == 1


def test_anisotropic_spacing_decides_which_gaps_are_bridged():
    # vessel along x with a 2-voxel gap, vessel along z with a 2-voxel gap
    mask = np.zeros((20, 24, 24), bool)
    mask[2:20, 16:19, 2:5] = True  # along z
    mask[8:11, 4:7, 2:22] = True  # along x
    p = np.where(mask, 0.9, BG).astype(np.float32)
    p[9:11, 16:19, 2:5] = FAINT  # z gap: z = 9, 10
    p[8:11, 4:7, 11:13] = FAINT  # x gap: x = 11, 12
    mask = p > 0.5
    assert n_components(mask) == 4
    z_gap = np.zeros_like(mask)
    z_gap[9:11, 16:19, 2:5] = True
    x_gap = np.zeros_like(mask)
    x_gap[8:11, 4:7, 11:13] = True
    iso = bridge_gaps(mask, p, spacing=(1.0, 1.0, 1.0), max_length=3.0)
    assert (iso & z_gap).any() and (iso & x_gap).any() and n_components(iso) == 2
    thick_z = bridge_gaps(mask, p, spacing=(2.5, 1.0, 1.0), max_length=3.0)  # z gap 5 mm
    assert not (thick_z & z_gap).any() and (thick_z & x_gap).any()
    thick_x = bridge_gaps(mask, p, spacing=(1.0, 1.0, 2.5), max_length=3.0)  # x gap 5 mm
    assert (thick_x & z_gap).any() and not (thick_x & x_gap).any()
    b = find_bridges(mask, p, spacing=(1.0, 1.0, 2.5), max_length=6.0)
    assert sorted(round(x.gap_length, 6) for x in b) == [2.0, 5.0]


def _random_vessels(seed, shape=(24, 48, 48)):
    """Random straight tubes, faded in short stretches; returns the broken mask and p."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    ref = np.zeros(shape, bool)
    zz, yy, xx = np.indices(shape)
    for _ in range(5):
        a = rng.uniform(3, np.array(shape) - 3)
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        rel = np.stack([zz - a[0], yy - a[1], xx - a[2]], -1)
        t = rel @ d
        dist = np.linalg.norm(rel - t[..., None] * d, axis=-1)
        ref |= (dist <= rng.uniform(1.0, 2.0)) & (np.abs(t) < 20)
    p = ndimage.gaussian_filter(np.where(ref, 0.9, BG), 0.7).astype(np.float32)
    for c in np.argwhere(ref)[rng.choice(ref.sum(), 8, replace=False)]:
        sl = tuple(slice(max(v - 2, 0), v + 3) for v in c)
        p[sl] = np.minimum(p[sl], rng.uniform(0.15, 0.4))
    return p > 0.5, p


@pytest.mark.parametrize("dilate", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_bridging_is_idempotent_deterministic_and_only_adds(seed, dilate):
    mask, p = _random_vessels(seed)
    spacing = (1.5, 1.0, 1.0)
    once = bridge_gaps(mask, p, spacing, max_length=5.0, dilate=dilate)
    assert n_components(once) < n_components(mask)  # the fixture has gaps to close
    np.testing.assert_array_equal(bridge_gaps(once, p, spacing, max_length=5.0, dilate=dilate), once)
    np.testing.assert_array_equal(bridge_gaps(mask, p, spacing, max_length=5.0, dilate=dilate), once)
    assert (once >= mask).all()
    # a bridge joins components, it never splits or removes one
    lab_once = label_components(once)[0]
    assert len(np.unique(lab_once[mask])) == n_components(once)


def test_dilation_paints_the_local_radius():
    mask = np.zeros((16, 24, 40), bool)
    zz, yy = np.indices((16, 24))
    disk = (zz - 8) ** 2 + (yy - 12) ** 2 <= 9  # radius-3 tube along x
    mask[disk[..., None] & (np.arange(40) < 18)] = True
    mask[disk[..., None] & (np.arange(40) >= 21)] = True
    p = np.where(mask, 0.9, BG).astype(np.float32)
    p[disk[..., None] & (np.arange(40) >= 18) & (np.arange(40) < 21)] = FAINT
    thin = bridge_gaps(mask, p, max_length=4.0)
    wide = bridge_gaps(mask, p, max_length=4.0, dilate=True)
    assert n_components(thin) == n_components(wide) == 1
    assert (thin & ~mask).sum() == 3 and (wide & ~mask).sum() > 3 * 9
    assert ((wide & ~mask)[..., 18:21] <= disk[..., None]).all()  # stays inside the vessel's radius


def test_bridges_do_not_touch_a_third_component():
    # a radius-3 vessel with a gap; a speck just outside its radius beside the gap, outside the
    # cone of both end points (63°): the dilated bridge would touch it, the bare path does not
    mask = np.zeros((16, 24, 40), bool)
    zz, yy = np.indices((16, 24))
    disk = (zz - 8) ** 2 + (yy - 12) ** 2 <= 9
    mask[disk[..., None] & ((np.arange(40) < 18) | (np.arange(40) >= 21))] = True
    p = np.where(mask, 0.9, BG).astype(np.float32)
    p[8, 12, 18:21] = FAINT  # only the centre line is faint: nothing else can be bridged
    assert (bridge_gaps(mask, p, max_length=4.0, dilate=True) & ~mask).sum() == 3 * 29
    mask[8, 16, 19] = True
    p[8, 16, 19] = 0.9
    out = bridge_gaps(mask, p, max_length=4.0, dilate=True)
    assert n_components(out) == 2 and (out & ~mask).sum() == 3  # fell back to the bare path


def test_two_dimensional_and_bad_input():
    m = np.zeros((5, 20), bool)
    m[2, 1:8] = m[2, 11:19] = True
    p = np.where(m, 0.9, BG)
    p[2, 8:11] = FAINT
    assert n_components(bridge_gaps(m, p, max_length=3.0)) == 1
    _, ends = skeleton_end_points(m)
    assert ends.tolist() == [[2, 1], [2, 7], [2, 11], [2, 18]]
    with pytest.raises(ValueError, match="needs the probability map"):
        bridge_gaps(m, None, max_length=3.0)
    with pytest.raises(ValueError, match="expected the mask's shape"):
        bridge_gaps(m, p[:, :5], max_length=3.0)
    with pytest.raises(ValueError, match="max_length"):
        bridge_gaps(m, p, max_length=0)
    with pytest.raises(ValueError, match="spacing"):
        bridge_gaps(m, p, spacing=(1.0,), max_length=3.0)
    with pytest.raises(ValueError, match="connectivity"):
        bridge_gaps(m, p, max_length=3.0, connectivity=26)


def test_docstring_examples():
    assert doctest.testmod(conn_module, extraglobs={"np": np}).failed == 0


def test_speed_on_a_64x128x128_volume():
    import time

    shape = (64, 128, 128)
    mask = np.zeros(shape, bool)
    p = np.full(shape, BG, np.float32)
    for k in range(8):
        tube(mask, 8 + 6 * k, 10 + 14 * k, 4, 124)
    p[mask] = 0.9
    for k in range(8):  # 8 vessels, each broken 4 times by a faint gap
        z, y = 8 + 6 * k, 10 + 14 * k
        for x in (30, 55, 80, 105):
            p[z - 1: z + 2, y - 1: y + 2, x: x + 3] = FAINT
    mask = p > 0.5
    assert n_components(mask) == 40
    t = time.perf_counter()
    out = bridge_gaps(mask, p, (1.0, 0.8, 0.8), max_length=3.0)
    assert time.perf_counter() - t < 20  # ~1 s here; generous for loaded CI machines
    assert n_components(out) == 8


# ---------------------------------------------------------------------------- pipeline steps
def test_pipeline_steps_validate_round_trip_and_apply(tmp_path):
    steps = [{"op": "hysteresis", "classes": "vessel", "low": 0.2, "high": 0.5},
             {"op": "bridge_gaps", "classes": ["vessel"], "max_length": 4, "dilate": True}]
    pipe = make_pipeline(steps, BINARY)
    assert pipe["steps"][1] == {"op": "bridge_gaps", "classes": ["vessel"], "max_length": 4.0,
                                "min_probability": 0.1, "max_angle": 60.0, "dilate": True,
                                "connectivity": None, "close_loops": 0.0}
    path = str(tmp_path / "pp.json")
    save_pipeline(pipe, path)
    assert load_pipeline(path) == pipe
    assert validate_pipeline(json.loads(open(path).read())) == pipe
    mask, p, _ = vessel_with_gap(gap_p=0.15)  # below the hysteresis low: only the bridge closes it
    probs = np.stack([1 - p, p])
    seg = mask.astype(np.uint8)
    out, log = apply_pipeline(seg, pipe, BINARY, spacing=(2.0, 1.0, 1.0), probabilities=probs)
    # dilated to the local radius: 2 mm (the y neighbours, 1 mm away, lie strictly inside it; the
    # z neighbours, 2 mm away, do not) → 3 voxels per gap slice
    assert n_components(out == 1) == 1 and log[1]["added"] == 3 * 3
    assert log[0] == {"removed": 0, "added": 0}
    again, _ = apply_pipeline(out, pipe, BINARY, spacing=(2.0, 1.0, 1.0), probabilities=probs)
    np.testing.assert_array_equal(again, out)
    with pytest.raises(PipelineError, match="needs the saved probabilities"):
        apply_pipeline(seg, pipe, BINARY)
    with pytest.raises(NotExpressible, match=r"steps\[0\] \(hysteresis\): needs the saved probabilities"):
        nnunet_steps(pipe, BINARY)


@pytest.mark.parametrize("step, match", [
    ({"op": "hysteresis", "classes": "vessel", "low": 0.5, "high": 0.5},
     r"\(hysteresis\)\.low: must be below"),
    ({"op": "hysteresis", "classes": "vessel", "low": 0.2}, "missing parameter 'high'"),
    ({"op": "hysteresis", "classes": "vessel", "low": -0.1, "high": 0.5},
     r"\.low: must be a number in \[0, 1\]"),
    ({"op": "bridge_gaps", "classes": "vessel"}, "missing parameter 'max_length'"),
    ({"op": "bridge_gaps", "classes": "vessel", "max_length": 0}, r"\.max_length: must be a positive"),
    ({"op": "bridge_gaps", "classes": "vessel", "max_length": 3, "min_probability": 2},
     r"\.min_probability: must be"),
    ({"op": "bridge_gaps", "classes": "vessel", "max_length": 3, "max_angle": 0}, r"\.max_angle"),
    ({"op": "bridge_gaps", "classes": "vessel", "max_length": 3, "dilate": "yes"}, r"\.dilate: must be"),
    ({"op": "bridge_gaps", "classes": ["vessel", "x"], "max_length": 3}, "edits one class"),
    ({"op": "bridge_gaps", "classes": "vessel", "max_length": 3, "radius": 2},
     r"unknown parameter\(s\) \['radius'\]"),
])
def test_step_errors_name_the_key(step, match):
    with pytest.raises(PipelineError, match=match):
        validate_pipeline({"steps": [step]}, source="pp.json")


def test_bridge_never_crosses_another_class_of_a_label_map():
    labels = DatasetLabels.from_dataset_json(
        {"labels": {"background": 0, "vessel": 1, "wall": 2}, "file_ending": ".nii.gz"})
    mask, p, _ = vessel_with_gap()
    seg = mask.astype(np.uint8)
    probs = np.stack([1 - p, p, np.zeros_like(p)])
    pipe = make_pipeline([{"op": "bridge_gaps", "classes": "vessel", "max_length": 4.0}], labels)
    out, _ = apply_pipeline(seg, pipe, labels, probabilities=probs)
    assert n_components(out == 1) == 1
    seg[:, :, 19] = 2  # a wall of the other class across the gap
    out, log = apply_pipeline(seg, pipe, labels, probabilities=probs)
    np.testing.assert_array_equal(out, seg)
    assert log == [{"removed": 0, "added": 0}]


def test_apply_to_folder_reads_the_probabilities(tmp_path):
    pred = tmp_path / "pred"
    pred.mkdir()
    (pred / "dataset.json").write_text(json.dumps(BINARY_DJ))
    mask, p, _ = vessel_with_gap()
    write_seg(pred / "c.nii.gz", mask)
    pipe = make_pipeline([{"op": "bridge_gaps", "classes": "vessel", "max_length": 4.0}], BINARY)
    with pytest.raises(FileNotFoundError, match=r"needs the saved probabilities.*c\.npz"):
        apply_pipeline_to_folder(str(pred), str(tmp_path / "out"), pipe, progress=False)
    probs = tmp_path / "probs"
    probs.mkdir()
    np.savez_compressed(probs / "c.npz", probabilities=np.stack([1 - p, p]).astype(np.float16))
    res = apply_pipeline_to_folder(str(pred), str(tmp_path / "out"), pipe, progress=False,
                                   probabilities_folder=str(probs))
    assert res["changed"] == ["c"] and res["steps"][0]["added"] == 3


# ---------------------------------------------------------------------------- determine
def test_topology_objective_and_candidates():
    assert parse_objective("topology") == {"cldice": 1.0, "betti_0_relative_error": 0.1,
                                           "betti_1_relative_error": 0.1}
    assert objective_dice_guard("topology") == 0.01 and objective_dice_guard("dice") is None
    assert objective_guards("topology") == {"dice": 0.01, "cldice": 0.0} and objective_guards("dice") == {}
    assert parse_objective("cldice=1,betti_0_relative_error=0.3")["betti_0_relative_error"] == 0.3
    sizes = [np.array([100, 50]), np.array([80])]
    c = candidate_steps(["vessel"], sizes, [1.0, 1.0], True, probabilities=True,
                        thresholds=(0.4,), hysteresis=((0.3, 0.5),), bridge_lengths=(3.0,),
                        bridge_floors=(0.1, 0.2))
    ops = [s["op"] for s in c]
    assert [o for k, o in enumerate(ops) if k == 0 or ops[k - 1] != o] == [
        "threshold", "hysteresis", "keep_largest_components", "remove_small_components",
        "fill_holes", "bridge_gaps"]
    assert [(s["max_length"], s["min_probability"]) for s in c if s["op"] == "bridge_gaps"] == [
        (3.0, 0.1), (3.0, 0.2)]
    c = candidate_steps(["vessel"], sizes, [1.0, 1.0], True, probabilities=True,
                        done=("hysteresis",), bridge_lengths=(3.0,))
    assert not {"threshold", "hysteresis"} & {s["op"] for s in c}
    c = candidate_steps(["vessel"], [np.array([5])], [1.0], True, probabilities=True,
                        bridge_lengths=(3.0,))
    assert "bridge_gaps" not in {s["op"] for s in c}  # one component: nothing to bridge
    # ... unless the references have loops: then ring-closing bridges are candidates
    c = candidate_steps(["vessel"], [np.array([5])], [1.0], True, probabilities=True,
                        bridge_lengths=(3.0,), bridge_floors=(0.1,), close_loops=True)
    assert [(s["op"], s["close_loops"]) for s in c if s["op"] == "bridge_gaps"] == [("bridge_gaps", 12.0)]


def _cv_folder(root, make_case, n_cases=6, npz=True):
    pred_dir, gt = root / "pred", root / "gt"
    pred_dir.mkdir()
    gt.mkdir()
    for i in range(n_cases):
        pred, ref, p = make_case(i)
        write_seg(pred_dir / f"case_{i:03d}.nii.gz", pred)
        write_seg(gt / f"case_{i:03d}.nii.gz", ref)
        if npz:
            np.savez_compressed(pred_dir / f"case_{i:03d}.npz",
                                probabilities=np.stack([1 - p, p]).astype(np.float16))
    (pred_dir / "dataset.json").write_text(json.dumps(BINARY_DJ))
    return pred_dir, gt


def _gap_case(i):
    """A vessel broken by a 2–3 voxel gap too faint for any threshold or hysteresis (p = 0.15)."""
    mask, p, ref = vessel_with_gap(gap=(16 + i % 3, 19), gap_p=0.15)
    return mask, ref, p


def _merge_case(i):
    """Two separate vessels tip to tip, 3 background voxels apart in the reference, with the
    same faint p = 0.15 between them: bridging would merge them."""
    ref = np.zeros(SHAPE, bool)
    tube(ref, 6, 8, 2, 16 + i % 3)
    tube(ref, 6, 8, 19 + i % 3, 38)
    p = np.where(ref, 0.9, BG).astype(np.float32)
    p[5:8, 7:10, 16 + i % 3: 19 + i % 3] = 0.15
    return ref.copy(), ref, p


@pytest.mark.parametrize("metric", ["topology", "dice"])
def test_determine_chooses_bridging_where_it_helps(tmp_path, metric):
    pred, gt = _cv_folder(tmp_path, _gap_case)
    det, _ = determine_from_folder(str(pred), gt_folder=str(gt), metric=metric, progress=False)
    assert det.pipeline["steps"] == [{"op": "bridge_gaps", "classes": ["vessel"], "max_length": 3.0,
                                      "min_probability": 0.1, "max_angle": 60.0, "dilate": False,
                                      "connectivity": None, "close_loops": 0.0}]
    bridge = det.accepted[0]
    assert bridge["cases_changed"] == 6 and bridge["removed"] == 0
    assert bridge["added"] == sum(3 - i % 3 for i in range(6))
    # the 0.25 floor is above the gap's probability: tried, changes nothing
    floors = [r for r in det.tried if r["op"] == "bridge_gaps" and "min_probability=0.25" in r["parameters"]]
    assert floors and all(r["cases_changed"] == 0 for r in floors)
    assert det.final["vessel"] > det.baseline["vessel"]
    if metric == "topology":
        assert det.max_dice_drop == 0.01 and det.pipeline["metadata"]["max_dice_drop"] == 0.01
        # mean over cases of clDice − 0.1 · |β0 error| / β0(ref): the β0 error 1 → 0
        assert det.final["vessel"] - det.baseline["vessel"] > 0.1


def test_determine_refuses_bridging_that_only_merges(tmp_path):
    pred, gt = _cv_folder(tmp_path, _merge_case)
    det, _ = determine_from_folder(str(pred), gt_folder=str(gt), metric="topology", progress=False)
    assert det.pipeline["steps"] == []
    tried = [r for r in det.tried if r["op"] == "bridge_gaps" and "min_probability=0.1" in r["parameters"]]
    assert tried and tried[0]["cases_changed"] == 6  # it did bridge — and was refused for it
    assert tried[0]["target_after"] < tried[0]["target_before"] and not tried[0]["accepted"]


def _blob_case(i):
    """A vessel with a thick blob attached through a 1-voxel neck the prediction misses: removing
    the detached blob fixes β0 (2 → 1) but loses a large part of the Dice."""
    ref = np.zeros(SHAPE, bool)
    tube(ref, 6, 6, 2, 38)
    ref[4:9, 12:17, 14:20 + i % 2] = True  # blob, smaller than the vessel
    ref[6, 8:12, 17] = True  # neck
    pred = ref.copy()
    pred[6, 9:11, 17] = False
    return pred, ref, np.where(pred, 0.9, BG).astype(np.float32)


def test_dice_guard_refuses_a_step_that_costs_more_than_a_dice_point(tmp_path):
    pred, gt = _cv_folder(tmp_path, _blob_case, npz=False)
    free, _ = determine_from_folder(str(pred), gt_folder=str(gt), metric="topology",
                                    max_dice_drop=1.0, max_cldice_drop=1.0, progress=False)
    removal = [r for r in free.accepted if r["op"] in ("keep_largest_components", "remove_small_components")]
    assert removal  # the topology objective alone takes the blob away
    det, _ = determine_from_folder(str(pred), gt_folder=str(gt), metric="topology", progress=False)
    assert det.pipeline["steps"] == []
    guarded = [r for r in det.tried if r["reason"].startswith("Dice guard")]
    assert guarded and all(r["op"] in ("keep_largest_components", "remove_small_components")
                           for r in guarded)


def test_cldice_guard_refuses_removing_a_true_piece_for_fewer_components(tmp_path):
    """The blob is part of the reference: taking it away fixes β0 (worth 0.1 · 1/1 of objective) but
    loses the skeleton inside it, so clDice falls. With the Dice guard opened, only the clDice guard
    stands between the topology objective and that removal (which the objective alone accepts)."""
    pred, gt = _cv_folder(tmp_path, _blob_case, npz=False)
    det, _ = determine_from_folder(str(pred), gt_folder=str(gt), metric="topology", max_dice_drop=1.0,
                                   progress=False)
    assert det.pipeline["steps"] == []
    assert det.max_cldice_drop == 0.0 and det.pipeline["metadata"]["max_cldice_drop"] == 0.0
    guarded = [r for r in det.tried if r["reason"].startswith("clDice guard")]
    assert guarded and all(r["op"] in ("keep_largest_components", "remove_small_components") for r in guarded)
    assert all(r["target_after"] > r["target_before"] for r in guarded)  # the objective itself would gain


# ---------------------------------------------------------------------------- closing broken rings
def _broken_ring(shape=(40, 40), centre=(20, 20), radius=12.0, width=1.6, gap_pixels=3, gap_p=0.3):
    """A ring (one component, one hole) cut at its right-hand side by ``gap_pixels`` columns,
    the probability high on the ring, faint in the cut, near zero elsewhere."""
    yy, xx = np.indices(shape)
    r = np.hypot(yy - centre[0], xx - centre[1])
    ring = np.abs(r - radius) < width
    cut = ring & (np.abs(yy - centre[0]) <= gap_pixels // 2) & (xx > centre[1])
    p = np.where(ring, 0.9, 0.01)
    p[cut] = gap_p
    return ring & ~cut, ring, p


def _betti(mask):
    from nnunet_ext.evaluation import betti_numbers

    return tuple(int(b) for b in betti_numbers(mask)[:2])


def test_close_loops_closes_a_broken_ring_and_only_with_the_option():
    broken, ring, p = _broken_ring()
    assert _betti(broken) == (1, 0) and _betti(ring) == (1, 1)
    # without the option a component is never joined to itself
    np.testing.assert_array_equal(bridge_gaps(broken, p, max_length=6.0), broken)
    closed = bridge_gaps(broken, p, max_length=6.0, close_loops=10.0)
    assert _betti(closed) == (1, 1)
    added = closed & ~broken
    assert added.any() and not (added & ~ring).any()      # painted inside the cut only
    # one bridge although the gap is seen from both of its ends
    bridges = find_bridges(broken, p, max_length=6.0, close_loops=10.0)
    assert len(bridges) == 1 and bridges[0].source == bridges[0].target
    # a fixed point
    np.testing.assert_array_equal(bridge_gaps(closed, p, max_length=6.0, close_loops=10.0), closed)


def test_close_loops_keeps_rules_of_length_probability_and_distance_along_the_component():
    broken, _, p = _broken_ring(gap_pixels=5)
    # the gap is longer than max_length: not closed
    np.testing.assert_array_equal(bridge_gaps(broken, p, max_length=3.0, close_loops=10.0), broken)
    # no faint probability in the cut: not closed
    dark = np.where(broken, 0.9, 0.01)
    np.testing.assert_array_equal(bridge_gaps(broken, dark, max_length=8.0, close_loops=10.0), broken)
    # the ring's ends are ~70 px apart along the ring: a loop that must be longer is refused
    np.testing.assert_array_equal(bridge_gaps(broken, p, max_length=8.0, close_loops=100.0), broken)
    # a hook whose end lies next to its own stem (4 px along the component) is not closed
    hook = np.zeros((20, 20), bool)
    hook[3:16, 5] = True            # stem
    hook[15, 5:9] = True            # foot
    hook[12:16, 9] = False
    hp = np.where(hook, 0.9, 0.3)
    assert _betti(bridge_gaps(hook, hp, max_length=4.0, max_angle=180.0, close_loops=8.0)) == (1, 0)


def test_close_loops_is_spacing_aware_and_never_touches_another_component():
    broken, ring, p = _broken_ring()
    # the cut (3 pixels) runs along axis 0; with 3 units per pixel there it is 9 units long
    assert _betti(bridge_gaps(broken, p, spacing=(3.0, 1.0), max_length=6.0, close_loops=10.0)) == (1, 0)
    assert _betti(bridge_gaps(broken, p, spacing=(3.0, 1.0), max_length=12.0, close_loops=10.0)) == (1, 1)
    # another component right in the cut: a loop may not touch it (joining it is a normal bridge)
    other = broken.copy()
    other[20, 32] = True
    out = bridge_gaps(other, p, max_length=6.0, close_loops=10.0)
    assert not (find_bridges(other, p, max_length=6.0, close_loops=10.0)
                and any(b.source == b.target for b in find_bridges(other, p, max_length=6.0,
                                                                   close_loops=10.0)))
    assert out[20, 32]


def test_close_loops_is_a_pipeline_option():
    from nnunet_ext.postprocessing.pipeline import validate_step

    step = validate_step({"op": "bridge_gaps", "classes": ["vessel"], "max_length": 6,
                          "close_loops": 10}, "step")
    assert step["close_loops"] == 10.0
    with pytest.raises(PipelineError, match="close_loops"):
        validate_step({"op": "bridge_gaps", "classes": ["vessel"], "max_length": 6,
                       "close_loops": -1}, "step")


def _ring_case(i):
    """A ring extruded over 3 slices (a solid torus: one loop) predicted broken where its
    contrast fades too much for any threshold or hysteresis (p = 0.15 in a 3-voxel cut): one
    component, no loop."""
    broken, ring, p = _broken_ring(radius=11.0 + i % 2, gap_p=0.15)
    vol = lambda a, bg: np.stack([np.full(a.shape, bg, a.dtype)] * 2 + [a] * 3 + [np.full(a.shape, bg, a.dtype)] * 2)  # noqa: E731
    return vol(broken, False), vol(ring, False), vol(p.astype(np.float32), 0.01)


def test_determine_closes_broken_rings_only_where_the_references_have_loops(tmp_path):
    (tmp_path / "rings").mkdir()
    pred, gt = _cv_folder(tmp_path / "rings", _ring_case)
    det, _ = determine_from_folder(str(pred), gt_folder=str(gt), metric="topology", progress=False)
    (step,) = det.pipeline["steps"]
    assert step["op"] == "bridge_gaps" and step["close_loops"] == 4 * step["max_length"]
    assert det.accepted[0]["cases_changed"] == 6 and det.accepted[0]["removed"] == 0
    # vessels without loops in their references: no ring-closing candidate is even tried
    (tmp_path / "vessels").mkdir()
    pred, gt = _cv_folder(tmp_path / "vessels", _gap_case)
    det, _ = determine_from_folder(str(pred), gt_folder=str(gt), metric="topology", progress=False)
    assert not any(t["step"].get("close_loops") for t in det.tried)
