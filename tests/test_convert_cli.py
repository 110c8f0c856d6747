"""The `convert` command's argument parsing and exit codes (the heavy lifting is tested elsewhere)."""
from __future__ import annotations

import argparse
import json

import pytest

from _conversion_fixtures import make_brats, make_minivess


def _parser():
    from nnunet_ext.commands import convert

    parser = argparse.ArgumentParser(prog="nnunet-ext")
    convert.register(parser.add_subparsers(dest="command"))
    return parser


def test_cli_minivess_defaults_to_three_folds_seed_42(tmp_path, capsys):
    src = make_minivess(tmp_path / "mv")
    raw = tmp_path / "raw"
    raw.mkdir()
    args = _parser().parse_args(["convert", "minivess", str(src), "--dataset-id", "7", "--raw-root", str(raw),
                                 "--no-verify", "--no-progress"])
    assert args.folds == 3 and args.seed == 42
    assert args.func(args) == 0
    assert len(json.loads((raw / "Dataset007_MiniVess" / "splits_final.json").read_text())) == 3
    assert "mv02" in capsys.readouterr().out  # the spacing outlier is reported


def test_cli_bad_input_returns_1_and_names_the_file(tmp_path, capsys):
    src = make_brats(tmp_path / "b", 2021, n_patients=1)
    (src / "BraTS2021_00000" / "BraTS2021_00000_flair.nii.gz").unlink()
    raw = tmp_path / "raw"
    raw.mkdir()
    args = _parser().parse_args(["convert", "brats", str(src), "-d", "137", "--year", "2021",
                                 "--raw-root", str(raw), "-np", "2"])
    assert args.func(args) == 1
    err = capsys.readouterr().err
    assert "BraTS2021_00000_flair.nii.gz" in err and "missing modality 'flair'" in err


def test_cli_rejects_unknown_year_and_missing_id():
    with pytest.raises(SystemExit):
        _parser().parse_args(["convert", "brats", "x", "-d", "1", "--year", "2022"])
    with pytest.raises(SystemExit):
        _parser().parse_args(["convert", "monusac", "x", "--ternary"])
    args = _parser().parse_args(["convert", "monusac", "x", "-d", "3", "--ternary", "--boundary-width", "3"])
    assert args.ternary and args.boundary_width == 3
