"""Commands after conversion (evaluate, postprocess, brats-back, vesuvius-submission, ensemble) with bad
input: damaged files, mismatched geometry, unknown labels, overwrites, half-made outputs, tracebacks.

Each test guards one item of issue 16 and failed on the code before it (tiny images, no nnU-Net
planning or training)."""
from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest
import SimpleITK as sitk

from _conversion_fixtures import make_vesuvius, write_tiff_stack

from nnunet_ext.cli import main

LABEL_DJ = {"labels": {"background": 0, "liver": 1, "tumour": 2}, "file_ending": ".nii.gz",
            "channel_names": {"0": "CT"}, "numTraining": 2}
PIPELINE = {"steps": [{"op": "keep_largest_components", "classes": ["liver"]}]}
SHAPE = (24, 32, 32)  # large enough that a 70 % cut falls into the voxel data


def _write(path, arr, origin=(0.0, 0.0, 0.0), direction=None):
    img = sitk.GetImageFromArray(np.asarray(arr).astype(np.uint8))
    img.SetSpacing((0.8, 0.8, 2.0))
    img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(direction)
    sitk.WriteImage(img, str(path))


def _blob(seed=0):
    rng = np.random.default_rng(seed)
    seg = np.zeros(SHAPE, np.uint8)
    seg[4:20, 6:26, 6:26] = 1
    seg[8:14, 10:18, 10:18] = 2
    seg[rng.random(SHAPE) < 0.02] = 0  # some texture, so the gzip stream is not trivially short
    return seg


@pytest.fixture
def folders(tmp_path):
    """pred/ and ref/ with two identical cases, dataset.json (+ plans.json) in pred/."""
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir()
    ref.mkdir()
    for i in range(2):
        _write(ref / f"c{i}.nii.gz", _blob(i))
        _write(pred / f"c{i}.nii.gz", _blob(i))
    (tmp_path / "dataset.json").write_text(json.dumps(LABEL_DJ))
    (pred / "dataset.json").write_text(json.dumps(LABEL_DJ))
    (pred / "plans.json").write_text(json.dumps({"image_reader_writer": "SimpleITKIO"}))
    (tmp_path / "pipeline.json").write_text(json.dumps(PIPELINE))
    return tmp_path


def _truncate(path, fraction=0.7):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def _run(argv, capsys):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _evaluate(root, capsys, *extra):
    return _run(["evaluate", root / "pred", root / "ref", "-dj", root / "dataset.json", "--metrics", "dice",
                 "--bootstrap", "50", "-o", root / "eval", *extra], capsys)


def _brats_pred(folder, n=2):
    folder.mkdir(exist_ok=True)
    for i in range(n):
        seg = np.zeros((10, 12, 14), np.uint8)
        seg[2:8, 3:9, 3:11] = 1
        seg[3:6, 4:8, 4:8] = 2
        seg[4:5, 5:7, 5:7] = 3
        _write(folder / f"BraTS2021_{i:05d}.nii.gz", seg)
    return folder


# ---------------------------------------------------------------------------------------------- item 1
def test_truncated_files_are_refused_by_every_command_that_reads_images(folders, capsys):
    root = folders
    victim = root / "pred" / "c1.nii.gz"
    _truncate(victim)
    # SimpleITK itself reads it without an error: the quirk this guards against
    sitk.ReadImage(str(victim))

    rc, _, err = _evaluate(root, capsys)
    assert rc == 1 and "c1.nii.gz" in err and "truncated" in err
    assert not (root / "eval").exists()

    rc, _, err = _run(["postprocess", "determine", root / "pred", "--gt-folder", root / "ref",
                       "-dj", root / "dataset.json", "-o", root / "det"], capsys)
    assert rc == 1 and "c1.nii.gz" in err and "truncated" in err

    rc, _, err = _run(["postprocess", "apply", "-i", root / "pred", "-o", root / "applied",
                       "-pp", root / "pipeline.json"], capsys)
    assert rc == 1 and "c1.nii.gz" in err and "truncated" in err
    assert not (root / "applied" / "c0.nii.gz").exists()

    brats = _brats_pred(root / "brats_pred")
    _truncate(brats / "BraTS2021_00001.nii.gz")
    rc, _, err = _run(["convert", "brats-back", brats, root / "brats_out", "--year", "2021"], capsys)
    assert rc == 1 and "BraTS2021_00001.nii.gz" in err and "truncated" in err
    assert not (root / "brats_out").exists()


# ---------------------------------------------------------------------------------------------- item 2
def test_evaluate_refuses_a_prediction_on_another_grid(folders, capsys):
    root = folders
    _write(root / "pred" / "c0.nii.gz", _blob(0), origin=(5.0, 0.0, 0.0))
    rc, _, err = _evaluate(root, capsys)
    assert rc == 1 and "c0.nii.gz" in err and "origin" in err
    _write(root / "pred" / "c0.nii.gz", _blob(0), direction=(-1, 0, 0, 0, 1, 0, 0, 0, 1))
    rc, _, err = _evaluate(root, capsys)
    assert rc == 1 and "c0.nii.gz" in err and "direction" in err
    rc, _, err = _run(["postprocess", "determine", root / "pred", "--gt-folder", root / "ref",
                       "-dj", root / "dataset.json", "-o", root / "det"], capsys)
    assert rc == 1 and "c0.nii.gz" in err and "direction" in err


# ---------------------------------------------------------------------------------------------- item 3
def test_labels_outside_dataset_json_are_refused(folders, capsys):
    root = folders
    seg = _blob(1)
    seg[0, 0, :3] = 7
    _write(root / "pred" / "c1.nii.gz", seg)
    rc, _, err = _evaluate(root, capsys)
    assert rc == 1 and "c1.nii.gz" in err and "7" in err and "dataset.json" in err
    rc, _, err = _run(["postprocess", "determine", root / "pred", "--gt-folder", root / "ref",
                       "-dj", root / "dataset.json", "-o", root / "det"], capsys)
    assert rc == 1 and "c1.nii.gz" in err and "label value(s) 7" in err
    rc, _, err = _run(["postprocess", "apply", "-i", root / "pred", "-o", root / "applied",
                       "-pp", root / "pipeline.json"], capsys)
    assert rc == 1 and "c1.nii.gz" in err and "label value(s) 7" in err
    assert not (root / "applied" / "c0.nii.gz").exists()


# ---------------------------------------------------------------------------------------------- item 4
def test_nothing_is_overwritten_without_overwrite(folders, tmp_path, capsys):
    root = folders
    brats = _brats_pred(root / "brats_pred")
    out = root / "brats_out"
    out.mkdir()
    (out / "BraTS2021_00000.nii.gz").write_bytes(b"precious")
    rc, _, err = _run(["convert", "brats-back", brats, out, "--year", "2021"], capsys)
    assert rc == 1 and "--overwrite" in err
    assert (out / "BraTS2021_00000.nii.gz").read_bytes() == b"precious"
    before = {p.name: p.read_bytes() for p in brats.iterdir()}
    rc, _, err = _run(["convert", "brats-back", brats, brats, "--year", "2021"], capsys)
    assert rc == 1 and "in place" in err
    assert {p.name: p.read_bytes() for p in brats.iterdir()} == before
    assert _run(["convert", "brats-back", brats, out, "--year", "2021", "--overwrite"], capsys)[0] == 0
    assert (out / "BraTS2021_00000.nii.gz").read_bytes() != b"precious"

    pred = tmp_path / "vpred"
    pred.mkdir()
    write_tiff_stack(pred / "1407735.tif", np.zeros((10, 10, 10), np.uint8), compression="zlib")
    zip_path = tmp_path / "submission.zip"
    zip_path.write_bytes(b"my earlier submission")
    rc, _, err = _run(["convert", "vesuvius-submission", pred, zip_path], capsys)
    assert rc == 1 and "--overwrite" in err and zip_path.read_bytes() == b"my earlier submission"
    assert _run(["convert", "vesuvius-submission", pred, zip_path, "--overwrite"], capsys)[0] == 0
    assert zipfile.is_zipfile(zip_path)

    rc, _, _ = _run(["evaluate", root / "pred", root / "ref", "-dj", root / "dataset.json", "--metrics", "dice",
                     "--bootstrap", "50"], capsys)
    assert rc == 0 and (root / "pred" / "metrics_summary.json").is_file()
    (root / "pred" / "metrics_summary.json").write_text("earlier results")
    rc, _, err = _run(["evaluate", root / "pred", root / "ref", "-dj", root / "dataset.json", "--metrics", "dice",
                       "--bootstrap", "50"], capsys)
    assert rc == 1 and "--overwrite" in err and "metrics_summary.json" in err
    assert (root / "pred" / "metrics_summary.json").read_text() == "earlier results"


# ---------------------------------------------------------------------------------------------- item 5
def test_back_conversion_and_ensemble_write_all_or_nothing(tmp_path, capsys):
    from test_inference_ensemble import random_probabilities, write_member

    brats = _brats_pred(tmp_path / "brats_pred", n=3)
    seg = np.zeros((10, 12, 14), np.uint8)
    seg[1, 1, 1] = 5  # the last case fails, after the first two were converted
    _write(brats / "BraTS2021_00002.nii.gz", seg)
    out = tmp_path / "out"
    out.mkdir()
    rc, _, err = _run(["convert", "brats-back", brats, out, "--year", "2021"], capsys)
    assert rc == 1 and "BraTS2021_00002.nii.gz" in err
    assert list(out.iterdir()) == []  # no converted case, no temporary folder

    rng = np.random.default_rng(0)
    a = write_member(tmp_path / "a", random_probabilities(rng, ["c0", "c1"]))
    b = write_member(tmp_path / "b", random_probabilities(rng, ["c0", "c1"]))
    _truncate(tmp_path / "b" / "c1.npz", 0.5)
    rc, _, err = _run(["ensemble", "-i", a, b, "-o", tmp_path / "ens"], capsys)
    assert rc == 1 and "c1.npz" in err and "Traceback" not in err
    assert not (tmp_path / "ens").exists()


# ---------------------------------------------------------------------------------------------- item 7
def test_vesuvius_submission_skips_uncertainty_maps(tmp_path, capsys):
    import tifffile

    src = make_vesuvius(tmp_path / "v")
    pred = tmp_path / "pred"
    pred.mkdir()
    p = np.zeros((10, 10, 10), np.uint8)
    p[:, 5, :] = 1
    write_tiff_stack(pred / "1407735.tif", p, compression="zlib")
    (pred / "1407735.json").write_text('{"spacing": [1, 1, 1]}')
    tifffile.imwrite(pred / "1407735_uncertainty_variance.tif",
                     np.random.default_rng(0).random((10, 10, 10)).astype(np.float32), photometric="minisblack")
    rc, out, err = _run(["convert", "vesuvius-submission", pred, tmp_path / "s.zip", "--test-images",
                         src / "test_images"], capsys)
    assert rc == 0, err
    with zipfile.ZipFile(tmp_path / "s.zip") as zf:
        assert zf.namelist() == ["1407735.tif"]


# ---------------------------------------------------------------------------------------------- item 9
def test_user_mistakes_never_print_a_traceback(folders, tmp_path, capsys, monkeypatch):
    root = folders
    (root / "empty").mkdir()
    (root / "empty" / "c0.nii.gz").write_bytes(b"")
    (root / "empty" / "c1.nii.gz").write_bytes(b"")
    (root / "a_file").write_text("x")
    (root / "bad.json").write_text("{not json")
    recipe = tmp_path / "utf16.json"
    recipe.write_text('{"name": "utf16", "terms": {}}', encoding="utf-16")
    (tmp_path / "garbage.npz").write_bytes(b"garbage, not an archive" * 10)
    mistakes = [
        ["evaluate", root / "empty", root / "ref", "-dj", root / "dataset.json", "--metrics", "dice"],
        ["evaluate", root / "pred", root / "ref", "-dj", root / "dataset.json", "-o", root / "a_file"],
        ["evaluate", root / "pred", root / "ref", "-dj", root / "bad.json"],
        ["recipes", "check", recipe],
        ["recipes", "check", "cbdice", "-dj", root / "bad.json"],
        ["recipes", "check", "cbdice", "-d", "notadataset"],
        ["ensemble", "-i", tmp_path / "nonexistent", "-o", tmp_path / "ens"],
        ["postprocess", "apply", "-i", root / "empty", "-o", root / "x", "-pp", root / "pipeline.json",
         "-dj", root / "dataset.json"],
        ["convert", "minivess", tmp_path / "nope", "-d", "5", "--raw-root", tmp_path / "no" / "such" / "root"],
    ]
    for argv in mistakes:
        rc, out, err = _run(argv, capsys)
        assert rc == 1, (argv, out, err)
        assert "Traceback" not in out + err
        lines = [ln for ln in err.splitlines() if ln.strip() and "%|" not in ln]  # progress bars aside
        assert len(lines) == 1 and lines[0].startswith("error: "), (argv, err)

    from nnunet_ext.postprocessing.folder import read_probabilities
    with pytest.raises(ValueError, match="garbage.npz: not an .npz archive") as e:
        read_probabilities(str(tmp_path / "garbage.npz"))
    assert "allow_pickle" not in str(e.value)

    # a permission problem of the output folder (simulated: the tests may run as root)
    def denied(*a, **k):
        raise PermissionError(13, "Permission denied", str(root / "brats_out"))

    brats = _brats_pred(root / "brats_pred")
    monkeypatch.setattr("tempfile.mkdtemp", denied)
    rc, _, err = _run(["convert", "brats-back", brats, root / "brats_out", "--year", "2021"], capsys)
    assert rc == 1 and "Permission denied" in err and "Traceback" not in err
    monkeypatch.undo()

    # Ctrl-C during a conversion: one line, exit code 130
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("nnunet_ext.dataset_conversion.minivess.convert_minivess", interrupted)
    rc, _, err = _run(["convert", "minivess", tmp_path, "-d", "5", "--raw-root", tmp_path], capsys)
    assert rc == 130 and err == "error: interrupted (Ctrl-C)\n"


# ---------------------------------------------------------------------------------------------- item 11
def test_messages_say_what_is_wrong(folders, tmp_path, capsys):
    root = folders
    # --metrics must not swallow the folders given after it
    with pytest.raises(SystemExit):
        main(["evaluate", "-dj", str(root / "dataset.json"), "--metrics", "dice", str(root / "pred"),
              str(root / "ref")])
    assert "is not a metric" in capsys.readouterr().err
    assert _run(["evaluate", root / "pred", root / "ref", "-dj", root / "dataset.json", "--metrics", "dice,nsd",
                 "--bootstrap", "20", "-o", root / "e"], capsys)[0] == 0
    # -np 0 is refused by every command that takes it
    for argv in (["evaluate", "p", "r", "-dj", "d", "-np", "0"], ["convert", "minivess", "s", "-d", "1", "-np", "0"],
                 ["postprocess", "apply", "-i", "a", "-o", "b", "-pp", "c", "-np", "0"],
                 ["ensemble", "-i", "a", "-o", "b", "-np", "0"]):
        with pytest.raises(SystemExit):
            main(argv)
        assert "must be at least 1" in capsys.readouterr().err
    # ensemble of a folder that does not exist names the folder, not its dataset.json
    rc, _, err = _run(["ensemble", "-i", tmp_path / "nonexistent", "-o", tmp_path / "ens"], capsys)
    assert rc == 1 and "prediction folder does not exist" in err and "dataset.json" not in err
    # determine on a results folder without references names --gt-folder
    res = tmp_path / "Dataset001_X" / "Trainer__nnUNetPlans__3d_fullres"
    (res / "fold_0" / "validation").mkdir(parents=True)
    (res / "dataset.json").write_text(json.dumps(LABEL_DJ))
    rc, _, err = _run(["postprocess", "determine", res, "--gt-folder", tmp_path / "nogt"], capsys)
    assert rc == 1 and "--gt-folder" in err
    # a folder where an image should be is called a folder, a dangling link a dangling link
    from nnunet_ext.image_io import ImageReadError, check_image_file
    (tmp_path / "dir.nii.gz").mkdir()
    with pytest.raises(ImageReadError, match="is a folder, not a file"):
        check_image_file(str(tmp_path / "dir.nii.gz"))
    os.symlink(tmp_path / "gone.nii.gz", tmp_path / "link.nii.gz")
    with pytest.raises(ImageReadError, match="dangling symbolic link"):
        check_image_file(str(tmp_path / "link.nii.gz"))
