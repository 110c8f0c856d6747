"""Applying a pipeline to a folder (geometry, no overwriting, nothing half-written), the
`postprocess` command, and the postprocessing.pkl against nnU-Net's own apply."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from _postprocessing_fixtures import (
    LABEL_DJ, PLANS, REGION_DJ, SPACING_ZYX, make_label_cv, make_region_cv, read_seg, write_seg,
)

from nnunet_ext.commands import postprocess as postprocess_command
from nnunet_ext.postprocessing.folder import apply_pipeline_to_folder
from nnunet_ext.postprocessing.labels import DatasetLabels
from nnunet_ext.postprocessing.nnunet_pkl import NotExpressible, nnunet_steps, write_nnunet_pkl
from nnunet_ext.postprocessing.pipeline import PipelineError, apply_pipeline, make_pipeline

LABELS = DatasetLabels.from_dataset_json(LABEL_DJ)
BRATS = DatasetLabels.from_dataset_json(REGION_DJ)
KEEP_LIVER = make_pipeline([{"op": "keep_largest_components", "classes": ["liver"]}], LABELS)


def _predictions(tmp_path, dj=LABEL_DJ, n=3, seed=0):
    """Random blobs of labels 1..max: many components of various sizes per class."""
    rng = np.random.default_rng(seed)
    folder = tmp_path / "pred"
    folder.mkdir()
    top = max(v if isinstance(v, int) else max(v) for v in dj["labels"].values())
    arrays = {}
    for i in range(n):
        noise = rng.random((10, 14, 14))
        seg = np.zeros(noise.shape, np.uint8)
        seg[noise > 0.6] = rng.integers(1, top + 1, size=int((noise > 0.6).sum()))
        write_seg(folder / f"c{i}.nii.gz", seg)
        arrays[f"c{i}.nii.gz"] = seg
    (folder / "dataset.json").write_text(json.dumps(dj))
    (folder / "plans.json").write_text(json.dumps(PLANS))
    return folder, arrays


def test_apply_keeps_geometry_and_matches_arrays(tmp_path):
    folder, arrays = _predictions(tmp_path)
    pp = tmp_path / "pp.json"
    pp.write_text(json.dumps(make_pipeline(
        [{"op": "keep_largest_components", "classes": ["liver"]},
         {"op": "remove_small_components", "classes": ["tumour"], "min_volume": 6.0}], LABELS)))
    out = tmp_path / "out"
    res = apply_pipeline_to_folder(str(folder), str(out), str(pp), progress=False)
    assert sorted(os.listdir(out)) == ["c0.nii.gz", "c1.nii.gz", "c2.nii.gz", "dataset.json",
                                       "plans.json"]
    assert res["steps"][0]["cases_changed"] == 3 and res["steps"][1]["removed"] > 0
    for name, seg in arrays.items():
        img_in, img_out = sitk.ReadImage(str(folder / name)), sitk.ReadImage(str(out / name))
        assert img_out.GetSpacing() == img_in.GetSpacing() and img_out.GetOrigin() == img_in.GetOrigin()
        expected, _ = apply_pipeline(seg, json.loads(pp.read_text()), LABELS, spacing=SPACING_ZYX)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(img_out), expected)
    # min_volume is physical: 6.0 units are 3 voxels of 2.0
    tum = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "c0.nii.gz"))) == 2
    from nnunet_ext.postprocessing.operations import component_sizes
    assert component_sizes(tum).min() >= 3


def test_no_overwrite_and_nothing_half_written(tmp_path):
    folder, _ = _predictions(tmp_path)
    out = tmp_path / "out"
    apply_pipeline_to_folder(str(folder), str(out), KEEP_LIVER, progress=False)
    stamp = (out / "c0.nii.gz").stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="overwrite"):
        apply_pipeline_to_folder(str(folder), str(out), KEEP_LIVER, progress=False)
    assert (out / "c0.nii.gz").stat().st_mtime_ns == stamp
    apply_pipeline_to_folder(str(folder), str(out), KEEP_LIVER, progress=False, overwrite=True)
    # a broken last case: no output at all, no temporary folder left
    (folder / "c9.nii.gz").write_bytes(b"not an image")
    fresh = tmp_path / "fresh"
    with pytest.raises(ValueError, match="c9.nii.gz: corrupt gzip data"):
        apply_pipeline_to_folder(str(folder), str(fresh), KEEP_LIVER, progress=False)
    assert os.listdir(fresh) == []


def test_apply_errors_name_what_is_wrong(tmp_path):
    folder, _ = _predictions(tmp_path)
    bad = make_pipeline([{"op": "fill_holes", "classes": ["kidney"]}])
    with pytest.raises(PipelineError, match="'kidney' is not a class"):
        apply_pipeline_to_folder(str(folder), str(tmp_path / "o"), bad, progress=False)
    thr = make_pipeline([{"op": "threshold", "classes": ["liver"], "threshold": 0.3}])
    with pytest.raises(FileNotFoundError, match=r"3 case\(s\) have no .npz"):
        apply_pipeline_to_folder(str(folder), str(tmp_path / "o"), thr, progress=False)
    os.remove(folder / "dataset.json")
    with pytest.raises(FileNotFoundError, match="dataset.json not found"):
        apply_pipeline_to_folder(str(folder), str(tmp_path / "o"), KEEP_LIVER, progress=False)
    assert not (tmp_path / "o").exists() or os.listdir(tmp_path / "o") == []


def _run_cli(argv):
    parser = argparse.ArgumentParser()
    postprocess_command.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_determine_then_apply(tmp_path, capsys):
    res, gt = make_region_cv(tmp_path)
    assert _run_cli(["postprocess", "determine", str(res), "--gt-folder", str(gt), "-f", "0", "1"]) == 0
    printed = capsys.readouterr().out
    assert "enforce_nesting (from probabilities)" in printed
    pp = res / "postprocessing_ext" / "pipeline.json"
    assert pp.is_file() and not (res / "postprocessing_ext" / "postprocessing.pkl").exists()
    assert _run_cli(["postprocess", "determine", str(res), "--gt-folder", str(gt)]) == 1
    assert "use --overwrite" in capsys.readouterr().err
    val = res / "fold_0" / "validation"
    out = tmp_path / "applied"
    assert _run_cli(["postprocess", "apply", "-i", str(val), "-o", str(out), "-pp", str(pp),
                     "-dj", str(res / "dataset.json")]) == 0
    assert "3 case(s) written" in capsys.readouterr().out
    for f in ("case_000.nii.gz", "case_002.nii.gz"):
        np.testing.assert_array_equal(read_seg(out / f), read_seg(gt / f))
    assert _run_cli(["postprocess", "apply", "-i", str(val), "-o", str(out), "-pp", str(pp),
                     "-dj", str(res / "dataset.json")]) == 1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"steps": [{"op": "erode", "classes": ["whole tumor"]}]}))
    assert _run_cli(["postprocess", "apply", "-i", str(val), "-o", str(tmp_path / "x"), "-pp",
                     str(bad), "-dj", str(res / "dataset.json")]) == 1
    assert "steps[0].op: unknown step 'erode'" in capsys.readouterr().err


def test_pkl_expressibility():
    assert nnunet_steps(make_pipeline([{"op": "keep_largest_components", "classes": ["liver", "tumour"]}],
                                      LABELS), LABELS) == [{"labels_or_regions": [1, 2]}]
    assert nnunet_steps(make_pipeline([{"op": "keep_largest_components", "classes": ["whole tumor"]}],
                                      BRATS), BRATS) == [{"labels_or_regions": (1, 2, 3)}]
    for steps, match in [
        ([{"op": "keep_largest_components", "classes": ["tumor core"]}], "share labels"),
        ([{"op": "keep_largest_components", "classes": ["whole tumor"], "k": 2}], "k = 2"),
        ([{"op": "fill_holes", "classes": ["whole tumor"]}], "only keeps the largest"),
        ([{"op": "keep_largest_components", "classes": ["whole tumor"], "connectivity": 6}], "connectivity 6"),
    ]:
        with pytest.raises(NotExpressible, match=match):
            nnunet_steps(make_pipeline(steps, BRATS), BRATS)
    with pytest.raises(NotExpressible, match="probabilities"):
        nnunet_steps(make_pipeline([], BRATS, input="probabilities"), BRATS)


def _nnunet_apply_in_process(folder, out, pkl, dj):
    from batchgenerators.utilities.file_and_folder_operations import load_pickle
    from nnunetv2.postprocessing.remove_connected_components import apply_postprocessing_to_folder

    fns, kwargs = load_pickle(str(pkl))
    apply_postprocessing_to_folder(str(folder), str(out), fns, kwargs, plans_file_or_dict=PLANS,
                                   dataset_json_file_or_dict=dj, num_processes=1)


def test_pkl_gives_the_same_result_in_nnunet(tmp_path):
    folder, arrays = _predictions(tmp_path, n=2)
    pipe = make_pipeline([{"op": "keep_largest_components", "classes": ["tumour"]},
                          {"op": "keep_largest_components", "classes": ["liver", "tumour"]}], LABELS)
    pkl = write_nnunet_pkl(pipe, LABELS, str(tmp_path / "postprocessing.pkl"))
    _nnunet_apply_in_process(folder, tmp_path / "nnunet", pkl, LABEL_DJ)
    apply_pipeline_to_folder(str(folder), str(tmp_path / "ours"), pipe, progress=False)
    for name in arrays:
        ours, theirs = read_seg(tmp_path / "ours" / name), read_seg(tmp_path / "nnunet" / name)
        assert (ours != arrays[name]).any()
        np.testing.assert_array_equal(ours, theirs)


def test_pkl_matches_nnunet_on_regions(tmp_path):
    # nnU-Net's per-file function, in this process (the pool around it adds nothing)
    from batchgenerators.utilities.file_and_folder_operations import load_pickle
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.postprocessing.remove_connected_components import load_postprocess_save

    res, gt = make_region_cv(tmp_path, npz=False)
    val = res / "fold_0" / "validation"
    pipe = make_pipeline([{"op": "keep_largest_components", "classes": ["whole tumor"]}], BRATS)
    pkl = write_nnunet_pkl(pipe, BRATS, str(tmp_path / "postprocessing.pkl"))
    fns, kwargs = load_pickle(pkl)
    (tmp_path / "nnunet").mkdir()
    apply_pipeline_to_folder(str(val), str(tmp_path / "ours"), pipe, str(res / "dataset.json"),
                             progress=False)
    for name in sorted(f for f in os.listdir(val) if f.endswith(".nii.gz")):
        load_postprocess_save(str(val / name), str(tmp_path / "nnunet" / name), SimpleITKIO(), fns, kwargs)
        ours = read_seg(tmp_path / "ours" / name)
        np.testing.assert_array_equal(ours, read_seg(tmp_path / "nnunet" / name))
        np.testing.assert_array_equal(ours, read_seg(gt / name))


@pytest.mark.slow
def test_stock_nnunet_command_runs_our_pkl(tmp_path):
    folder, arrays = _predictions(tmp_path, n=2, seed=3)
    pipe = make_pipeline([{"op": "keep_largest_components", "classes": ["liver"]}], LABELS)
    pkl = write_nnunet_pkl(pipe, LABELS, str(tmp_path / "postprocessing.pkl"))
    exe = shutil.which("nnUNetv2_apply_postprocessing",
                       path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    assert exe, "nnUNetv2_apply_postprocessing not found"
    subprocess.run([exe, "-i", str(folder), "-o", str(tmp_path / "stock"), "-pp_pkl_file", pkl,
                    "-np", "1"], check=True, capture_output=True, timeout=300)
    apply_pipeline_to_folder(str(folder), str(tmp_path / "ours"), pipe, progress=False)
    for name in arrays:
        np.testing.assert_array_equal(read_seg(tmp_path / "ours" / name),
                                      read_seg(tmp_path / "stock" / name))


def test_label_cv_pipeline_applies_to_validation_folders(tmp_path):
    res, gt, arrays = make_label_cv(tmp_path)
    pipe = make_pipeline([{"op": "keep_largest_components", "classes": ["liver"]},
                          {"op": "remove_small_components", "classes": ["tumour"], "min_voxels": 10},
                          {"op": "fill_holes", "classes": ["tumour"]}], LABELS)
    for fold in (0, 1):
        val = res / f"fold_{fold}" / "validation"
        apply_pipeline_to_folder(str(val), str(tmp_path / "out"), pipe, str(res / "dataset.json"),
                                 progress=False)
    for name, (_, ref) in arrays.items():
        np.testing.assert_array_equal(read_seg(tmp_path / "out" / f"{name}.nii.gz"), ref)


def test_uncertainty_maps_beside_segmentations_are_not_cases(tmp_path):
    """``nnunet-ext predict`` writes <case>_uncertainty_<kind><ending> next to the segmentations."""
    folder, arrays = _predictions(tmp_path, n=2)
    write_seg(folder / "c0_uncertainty_entropy.nii.gz", np.zeros((10, 14, 14), np.uint8))
    pp = tmp_path / "pp.json"
    pp.write_text(json.dumps(KEEP_LIVER))
    out = tmp_path / "out"
    apply_pipeline_to_folder(str(folder), str(out), str(pp), progress=False)
    assert sorted(f for f in os.listdir(out) if f.endswith(".nii.gz")) == sorted(arrays)


def test_uncertainty_map_names_follow_the_predictor():
    from nnunet_ext.inference.export import uncertainty_file_name
    from nnunet_ext.inference.naming import _KIND_NAMES, is_uncertainty_map
    from nnunet_ext.inference.uncertainty import KINDS
    assert tuple(_KIND_NAMES) == tuple(KINDS)
    for kind in KINDS:
        assert is_uncertainty_map(uncertainty_file_name("out/case_001", kind, ".nii.gz"))
    assert not is_uncertainty_map("case_001.nii.gz")
    assert not is_uncertainty_map("uncertainty_variance_study_001.nii.gz")
