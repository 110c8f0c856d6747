"""The pure parts of benchmarks/bench_topology_quality.py: the fading-contrast generator and the
aggregation / statistics (no training here)."""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from nnunet_ext.synthetic.fading import FadeSettings, fade_centres, fading_contrast, hard_tube_case
from nnunet_ext.synthetic.tubes import branching_tubes, vessel_image

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_topology_quality.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_topology_quality", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(spec.name, None)
    return module


# ------------------------------------------------------------------------------------ generator
def test_fading_contrast_profile():
    c = fading_contrast((1, 41), np.array([[0.5, 20.5]]), length=6.0, floor=0.2)
    row = c[0]
    assert row[20] == pytest.approx(0.2)                 # the stretch: at the floor
    assert np.all(row[18:23] == pytest.approx(0.2))      # within length/2 = 3 of the centre
    assert row[0] == 1.0 and row[-1] == 1.0              # untouched far away
    assert np.all(np.diff(row[20:]) >= 0)                # rises monotonically back to 1
    assert np.all((c >= 0.2) & (c <= 1.0))


def test_fading_contrast_rejects_bad_arguments():
    with pytest.raises(ValueError):
        fading_contrast((4, 4), np.zeros((1, 2)), length=2, floor=1.5)
    with pytest.raises(ValueError):
        fading_contrast((4, 4), np.zeros((1, 2)), length=0, floor=0.1)


@pytest.mark.parametrize("shape", [(64, 64), (24, 48, 48)])
def test_fading_keeps_reference_and_drops_image_contrast(shape):
    fade = FadeSettings(n_fades=2, length=5.0, floor=0.0)
    faded = hard_tube_case(shape, seed=3, fade=fade, noise=0.0, n_touching=0)
    plain = hard_tube_case(shape, seed=3, fade=None, noise=0.0, n_touching=0)
    # the reference is the same tree, whatever the contrast
    np.testing.assert_array_equal(faded.label, plain.label)
    assert len(faded.centres) >= 1
    labels, n_faded = ndimage.label(faded.label, np.ones((3,) * len(shape)))
    _, n_plain = ndimage.label(plain.label, np.ones((3,) * len(shape)))
    assert n_faded == n_plain  # fading does not cut the reference
    grid_index = np.floor(faded.centres).astype(int)
    for index in grid_index:
        index = tuple(index)
        assert faded.label[index] == 1                     # the stretch lies on the reference
        assert faded.contrast[index] == pytest.approx(0.0)
        # the tube at the centre of the stretch is as dark as the background there
        assert faded.image[index] < plain.image[index]
    stretch = (faded.contrast < 0.5) & (faded.label == 1)
    outside = (faded.contrast == 1.0) & (faded.label == 1)
    assert stretch.any() and outside.any()
    # mean tube intensity drops on the stretches and is unchanged elsewhere
    assert faded.image[stretch].mean() < 0.5 * plain.image[stretch].mean() + 0.5 * faded.image[faded.label == 0].mean()
    np.testing.assert_array_equal(faded.image[outside], plain.image[outside])


def test_fade_centres_are_separated_and_on_centre_lines():
    tree = branching_tubes((48, 48), seed=1, radius_range=(1.0, 2.0))
    centres = fade_centres(tree, 4, min_distance=10.0, seed=0)
    assert 1 <= len(centres) <= 4
    for i in range(len(centres)):
        assert tree.distance_to_centre[tuple(np.floor(centres[i]).astype(int))] < 0.35
        for j in range(i):
            assert np.linalg.norm(centres[i] - centres[j]) >= 10.0


def test_touching_partner_is_separate_but_close():
    case = hard_tube_case((64, 64), seed=5, fade=None, noise=0.0, n_touching=1, touching_gap=1.0)
    alone = hard_tube_case((64, 64), seed=5, fade=None, noise=0.0, n_touching=0)
    added = (case.label == 1) & (alone.label == 0)
    assert added.any()
    # the partner comes within ~2 pixels of the tube it runs along
    distance = ndimage.distance_transform_edt(alone.label == 0)
    assert distance[added].min() <= 2.5


def test_vessel_image_defaults_unchanged_and_2d():
    tree = branching_tubes((8, 16, 16), seed=0)
    np.testing.assert_array_equal(vessel_image(tree, seed=1), vessel_image(tree, seed=1, contrast=None))
    flat = branching_tubes((32, 32), seed=0)
    assert flat.mask().shape == (32, 32) and flat.mask().any()
    assert vessel_image(flat, seed=0).shape == (32, 32)
    with pytest.raises(ValueError):
        vessel_image(flat, contrast=np.ones((4, 4), np.float32))


# ------------------------------------------------------------------------------- aggregation
def _rows(trainer, per_seed_values, cases=3):
    """Fake per-case rows: seed s gets the per-seed metric values ± a case offset that averages out."""
    rows = []
    for seed, values in per_seed_values.items():
        for c, offset in zip(range(cases), (-0.01, 0.0, 0.01)):
            rows.append({"trainer": trainer, "seed": seed, "case": f"c{c}", "postprocessed": False,
                         **{m: v + offset for m, v in values.items()}})
    return rows


def _values(dice, cldice, b0, b1=1.0, hd=3.0):
    return {"dice": dice, "cldice": cldice, "betti_0_error": b0, "betti_1_error": b1, "hd95": hd}


def test_run_means_and_aggregate(bench):
    rows = _rows("nnUNetTrainer", {0: _values(0.80, 0.80, 4.0), 1: _values(0.82, 0.81, 6.0), 2: _values(0.81, 0.79, 5.0)})
    rows += _rows("TopoTrainer", {0: _values(0.80, 0.90, 2.0), 1: _values(0.81, 0.91, 2.0), 2: _values(0.82, 0.92, 2.0)})
    means = bench.run_means(rows)
    assert means[("nnUNetTrainer", 1)]["dice"] == pytest.approx(0.82)
    summary = bench.aggregate(rows)
    stock = summary["nnUNetTrainer"]["metrics"]
    assert stock["dice"]["mean"] == pytest.approx(0.81)
    assert stock["dice"]["sd"] == pytest.approx(0.01)           # ddof 1 over seeds
    assert stock["betti_0_error"]["sd"] == pytest.approx(1.0)
    assert stock["dice"]["n_seeds"] == 3 and "diff" not in stock["dice"]
    topo = summary["TopoTrainer"]["metrics"]
    cl = topo["cldice"]
    assert cl["diff"] == pytest.approx(0.11)
    assert cl["spread"] == pytest.approx(math.hypot(0.01, 0.01))
    assert cl["exceeds_spread"] and cl["verdict"] == "better"
    b0 = topo["betti_0_error"]
    assert b0["diff"] == pytest.approx(-3.0) and b0["verdict"] == "better"  # lower error is better
    assert topo["dice"]["verdict"] == "same"
    goal = summary["TopoTrainer"]["goal"]
    assert goal["betti_0_ratio"] == pytest.approx(0.4)
    assert goal["met"]
    # paired by seed: Topo − stock Betti-0 = -2, -4, -3 → mean -3, sd 1
    assert b0["paired_diff"] == pytest.approx(-3.0) and b0["paired_sd"] == pytest.approx(1.0)
    assert b0["paired_seeds"] == 3 and b0["paired_verdict"] == "better"
    # Dice differences 0, -0.01, +0.01: mean 0 → same
    assert topo["dice"]["paired_verdict"] == "same"
    paired = bench.paired_table(summary).splitlines()
    assert len(paired) == 3 and paired[2].startswith("| TopoTrainer | 3 |") and "-3.00 ± 1.00▲" in paired[2]


def test_aggregate_worse_and_goal_missed(bench):
    rows = _rows("nnUNetTrainer", {0: _values(0.80, 0.80, 4.0), 1: _values(0.80, 0.80, 4.0)})
    rows += _rows("X", {0: _values(0.70, 0.85, 3.0), 1: _values(0.70, 0.85, 3.0)})
    summary = bench.aggregate(rows)
    x = summary["X"]["metrics"]
    assert x["dice"]["verdict"] == "worse"          # zero spread: any difference exceeds it
    goal = summary["X"]["goal"]
    assert goal["betti_0_ratio"] == pytest.approx(0.75)
    assert not goal["betti_0_ok"] and goal["cldice_ok"] and not goal["dice_ok"] and not goal["met"]


def test_single_seed_has_zero_sd_and_table_renders(bench):
    rows = _rows("nnUNetTrainer", {0: _values(0.8, 0.8, 2.0)}) + _rows("Y", {0: _values(0.8, 0.8, 2.0)})
    summary = bench.aggregate(rows)
    assert summary["Y"]["metrics"]["dice"]["sd"] == 0.0
    assert summary["Y"]["metrics"]["dice"]["verdict"] == "same"  # |0| is not > 0
    table = bench.markdown_table(summary)
    lines = table.splitlines()
    assert lines[0].startswith("| trainer | seeds | Dice | clDice")
    assert len(lines) == 4 and "0.800 ± 0.000" in lines[2]


def test_trainer_specs_and_class_names(bench):
    spec = bench.parse_trainer_spec("TopoTrainer:cldice_weight=1.0:cldice_iterations=3")
    assert spec.base == "TopoTrainer"
    assert spec.attributes == (("cldice_weight", 1.0), ("cldice_iterations", 3))
    name = bench.class_name(spec, 6, 25, 2)
    assert name == "TopoTrainer_cldiceweight1p0_cldiceiterations3_6ep25it_seed2"
    assert "__" not in name and name.isidentifier()
    assert bench.parse_trainer_spec("TopoTrainer:cldice_iterations=auto").attributes == (("cldice_iterations", "auto"),)
    assert bench.parse_trainer_spec("nnUNetTrainer").is_stock
    with pytest.raises(ValueError):
        bench.parse_trainer_spec("TopoTrainer:oops")
    with pytest.raises(ValueError):
        bench.parse_trainer_spec("Topo_Trainer")
    assert bench.budget_name("TopoTrainer", 1, 5) == "TopoTrainer_1epoch_5iters"
    assert bench.parse_seeds("3") == [0, 1, 2] and bench.parse_seeds("4,7") == [4, 7]


def test_trainer_module_defines_seeded_subclasses(bench, tmp_path):
    spec = bench.parse_trainer_spec("TopoTrainer:cldice_weight=1.0")
    bench.check_trainer_spec(spec)
    with pytest.raises(ValueError):
        bench.check_trainer_spec(bench.parse_trainer_spec("TopoTrainer:no_such_attribute=1"))
    name = bench.class_name(spec, 2, 5, 1)
    path = bench.write_trainer_module(tmp_path, [(name, bench.budget_name("TopoTrainer", 2, 5), 1,
                                                  {"cldice_weight": 1.0})])
    module_spec = importlib.util.spec_from_file_location("nnunet_ext_bench_trainers_test", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    cls = getattr(module, name)
    from nnunet_ext.trainers import TopoTrainer

    assert issubclass(cls, TopoTrainer) and cls.__name__ == name
    assert cls.cldice_weight == 1.0 and cls.benchmark_seed == 1


# --------------------------------------------------------------- seed spread display (issue 12, item 2)
def test_tiny_seed_spread_is_not_printed_as_zero(bench):
    # the recorded stock runs: three different models whose test-set mean Dice agree to 3 decimals
    # (0.8128, 0.8132, 0.8127); "± 0.000" read as three identical runs
    per_seed = {0: 0.8128, 1: 0.8132, 2: 0.8127}
    rows = _rows("nnUNetTrainer", {s: _values(d, 0.8, 3.0) for s, d in per_seed.items()})
    table = bench.markdown_table(bench.aggregate(rows))
    sd = float(np.std(list(per_seed.values()), ddof=1))
    assert f"0.813 ± {sd:.1g}" in table and "0.813 ± 0.000 " not in table
    assert bench.format_sd(0.0, 3) == "0.000"        # truly identical runs still read as such
    assert bench.format_sd(0.0123, 3) == "0.012"
    assert bench.format_sd(0.004, 2) == "0.004"


# ------------------------------------------------------------------ post-processing on validation
def test_postprocess_defaults_to_cross_validation(bench):
    args = bench.build_parser().parse_args([])
    assert args.postprocess == bench.CV and args.pp_max_dice_drop is None
    assert bench.cv_key(None) == "cv-topology-v4"
    assert bench.cv_key(0.005) == "cv-topology-v4-maxdicedrop0.005" != bench.cv_key(0.01)


def _results_splits(tmp_path, bench, spec, val):
    folder = tmp_path / "nnUNet_preprocessed" / f"Dataset{spec.dataset_id:03d}_{spec.name}"
    folder.mkdir(parents=True)
    (folder / "splits_final.json").write_text(
        __import__("json").dumps([{"train": ["case_000"], "val": val}, {"train": val, "val": ["case_000"]}]))


def test_validation_cases_and_links(bench, tmp_path):
    spec = bench.DATASETS["tubes2d"]
    _results_splits(tmp_path, bench, spec, ["case_002", "case_001"])
    assert bench.validation_cases(spec, tmp_path, "0") == ["case_001", "case_002"]
    assert bench.validation_cases(spec, tmp_path, "1") == ["case_000"]
    with pytest.raises(ValueError, match="all"):
        bench.validation_cases(spec, tmp_path, "all")
    images = tmp_path / "imagesTr"
    images.mkdir()
    for name in ("case_000_0000", "case_001_0000", "case_001_0001", "case_002_0000", "case_0010_0000"):
        (images / f"{name}.nii.gz").write_text(name)
    target = tmp_path / "links"
    (target / "stale").mkdir(parents=True)
    bench.link_case_images(["case_001"], images, target)
    assert sorted(p.name for p in target.iterdir()) == ["case_001_0000.nii.gz", "case_001_0001.nii.gz"]
    assert (target / "case_001_0001.nii.gz").read_text() == "case_001_0001"
    with pytest.raises(FileNotFoundError, match="case_009"):
        bench.link_case_images(["case_009"], images, target)


def test_chosen_pipelines_are_listed(bench):
    from nnunet_ext.postprocessing.cross_validation import describe_pipeline

    pipeline = {"steps": [{"op": "bridge_gaps", "classes": ["tube"], "max_length": 6.0, "min_probability": 0.1,
                           "connectivity": None},
                          {"op": "remove_small_components", "classes": ["tube"], "min_voxels": 25}]}
    text = describe_pipeline(pipeline)
    assert text == "bridge_gaps(max_length=6, min_probability=0.1) → remove_small_components(min_voxels=25)"
    assert describe_pipeline({"steps": []}) == "none"
    regions = {"steps": [{"op": "fill_holes", "classes": ["whole tumor"]},
                         {"op": "threshold", "classes": ["tumor core"], "threshold": 0.3}]}
    assert describe_pipeline(regions) == "fill_holes[whole tumor] → threshold[tumor core](threshold=0.3)"
    # one step on one region of a region dataset still names it (the dataset's labels decide)
    one = {"steps": regions["steps"][:1], "labels": {"background": 0, "whole tumor": [1, 2], "core": [2]}}
    assert describe_pipeline(one) == "fill_holes[whole tumor]"
    assert describe_pipeline({**pipeline, "labels": {"background": 0, "tube": 1}}) == text
    table = bench.pipelines_table({"TopoTrainer": {1: "none", 0: text}}).splitlines()
    assert table[2] == f"| TopoTrainer | 0 | {text} |" and table[3] == "| TopoTrainer | 1 | none |"


def test_score_folder_averages_regions(bench, tmp_path):
    import SimpleITK as sitk

    ref = np.zeros((1, 8, 8), np.uint8)
    ref[0, 1:7, 1:7] = 2
    ref[0, 3:5, 3:5] = 3        # region (2, 3) = 36 px, region (3,) = 4 px
    pred = ref.copy()
    pred[0, 3:5, 3:5] = 2       # region (3,) missed entirely; region (2, 3) perfect
    for folder, array in (("ref", ref), ("pred", pred)):
        (tmp_path / folder).mkdir()
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((1.0, 1.0, 999.0))
        sitk.WriteImage(image, str(tmp_path / folder / "c.nii.gz"))
    (row,) = bench.score_folder(tmp_path / "pred", tmp_path / "ref", ("dice",), regions=((2, 3), (3,)))
    assert row["dice@0"] == pytest.approx(1.0) and row["dice@1"] == pytest.approx(0.0)
    assert row["dice"] == pytest.approx(0.5)
    (single,) = bench.score_folder(tmp_path / "pred", tmp_path / "ref", ("dice",), regions=((2,),))
    assert single["dice"] == pytest.approx(2 * 32 / (36 + 32)) and "dice@0" not in single


@pytest.mark.parametrize("key", ["sheets3d", "nested2d"])
def test_new_datasets_are_written_in_nnunet_format(bench, tmp_path, key):
    import dataclasses
    import json

    import SimpleITK as sitk

    spec = dataclasses.replace(bench.DATASETS[key], n_train=2, n_test=1)
    folder = bench.write_dataset(spec, tmp_path)
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["numTraining"] == 2 and dataset["file_ending"] == ".nii.gz"
    assert sorted(p.name for p in (folder / "labelsTs").iterdir()) == ["case_002.nii.gz"]
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labelsTr" / "case_000.nii.gz")))
    image = sitk.ReadImage(str(folder / "imagesTr" / "case_000_0000.nii.gz"))
    if key == "sheets3d":
        assert label.shape == spec.shape and set(np.unique(label)) == {0, 1}
        # the sheets lie close, but every reference sheet stays one component of its own under
        # the full (26-) connectivity the metrics use, with its holes
        from nnunet_ext.evaluation import betti_numbers

        for case in ("case_000", "case_001"):
            lab = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labelsTr" / f"{case}.nii.gz")))
            assert tuple(betti_numbers(lab > 0)[:2]) == (spec.case_options["n_sheets"],
                                                         spec.case_options["n_sheets"] * spec.case_options["n_holes"])
    else:
        assert label.shape == (1, *spec.shape) and image.GetSpacing()[2] == 999.0
        assert dataset["regions_class_order"] == [2, 1, 3] and set(np.unique(label)) == {0, 1, 2, 3}
        assert [tuple(v) for k, v in dataset["labels"].items() if k != "background"] == list(spec.regions)


def test_determine_and_apply_runs_the_two_commands(tmp_path):
    """The helper behind the "+ pp" rows: the real ``nnunet-ext postprocess determine`` chooses on one
    folder and ``postprocess apply`` applies the choice to another (fixture: the known best step is a
    probability threshold of 0.4)."""
    from _postprocessing_fixtures import make_threshold_folder, read_seg, threshold_case

    from nnunet_ext.postprocessing.cross_validation import describe_pipeline, determine_and_apply, run_cli

    (tmp_path / "val").mkdir()
    (tmp_path / "test").mkdir()
    validation, gt = make_threshold_folder(tmp_path / "val")
    test_predictions, _ = make_threshold_folder(tmp_path / "test", n_cases=2)
    chosen = determine_and_apply(validation, test_predictions, tmp_path / "pp", tmp_path / "determine",
                                 tmp_path / "logs", gt_folder=gt, metric="dice")
    assert [s["op"] for s in chosen["steps"]] == ["threshold"]
    assert describe_pipeline(chosen).startswith("threshold(")
    assert (tmp_path / "logs" / "postprocess_determine.log").exists()
    for i in range(2):
        _, ref, probs = threshold_case(i)
        out = read_seg(tmp_path / "pp" / f"case_{i:03d}.nii.gz")
        np.testing.assert_array_equal(out, (probs[1] > 0.4).astype(np.uint8))
        np.testing.assert_array_equal(out, ref)  # the fixture's threshold recovers the reference
    with pytest.raises(RuntimeError, match="postprocess apply failed"):
        run_cli(["postprocess", "apply", "-i", tmp_path / "nowhere", "-o", tmp_path / "x", "-pp",
                 tmp_path / "determine" / "pipeline.json"], tmp_path / "logs" / "bad.log")
