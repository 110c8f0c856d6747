"""`nnunet-ext demo`: argument checks, the refusal to overwrite, and one tiny real run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from nnunet_ext.cli import main
from nnunet_ext.demo import DEMO_MARKER, DemoSettings, run_demo


def test_refuses_a_folder_that_is_not_a_demo_and_leaves_it_alone(tmp_path, capsys):
    (tmp_path / "precious.txt").write_text("keep me")
    assert main(["demo", "--workdir", str(tmp_path)]) == 1
    assert "is not a demo folder" in capsys.readouterr().out
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_refuses_an_earlier_demo_without_overwrite(tmp_path, capsys):
    (tmp_path / DEMO_MARKER).write_text("")
    (tmp_path / "results.json").write_text("{}")
    assert main(["demo", "--workdir", str(tmp_path)]) == 1
    assert "--overwrite" in capsys.readouterr().out
    assert (tmp_path / "results.json").exists()


@pytest.mark.parametrize("args,message", [(["--budget", "0"], "--budget"), (["--cases", "3"], "at least 5")])
def test_rejects_impossible_settings(tmp_path, capsys, args, message):
    assert main(["demo", "--workdir", str(tmp_path / "d"), *args]) == 2
    assert message in capsys.readouterr().out


def test_trainer_names_follow_the_budget():
    settings = DemoSettings(workdir=Path("x"), epochs=3, iterations=7)
    assert settings.trainers == ("nnUNetTrainer_3epochs_7iters", "TopoTrainer_3epochs_7iters")
    assert DemoSettings(workdir=Path("x"), epochs=1, iterations=7).trainers[1] == "TopoTrainer_1epoch_7iters"


@pytest.mark.slow
def test_tiny_demo_runs_end_to_end_and_writes_the_table(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("nnUNet_n_proc_DA", "1")
    settings = DemoSettings(workdir=tmp_path / "demo", epochs=1, iterations=2, n_train=5, n_test=1,
                            shape=(16, 32, 32), dataset_id=951)
    results = run_demo(settings)
    out = capsys.readouterr().out
    flagship = settings.trainers[1] + "+pp"
    assert set(results) == {*settings.trainers, flagship}
    for trainer, metrics in results.items():
        assert 0.0 <= metrics["dice"]["mean"] <= 1.0 and 0.0 <= metrics["cldice"]["mean"] <= 1.0
        assert metrics["betti_0_error"]["mean"] >= 0
        assert trainer in out
        assert (tmp_path / "demo" / "predictions" / trainer / "tubes_005.nii.gz").is_file()
    results_folder = next((tmp_path / "demo" / "nnUNet_results").glob(f"*/{settings.trainers[1]}__*"))
    assert (results_folder / "postprocessing_ext" / "pipeline.json").is_file()  # chosen on fold 0's validation
    assert json.loads((tmp_path / "demo" / "results.json").read_text()) == json.loads(json.dumps(results))
    assert "[8/8]" in out and "Dice" in out and "clDice" in out and "Betti-0 error" in out
