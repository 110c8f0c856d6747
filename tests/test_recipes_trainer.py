"""Recipe trainers built in-process from real nnU-Net plans: names, what a recipe puts into the trainer,
the saved recipe and its change detection, checkpoint contents, the `recipes` command."""
from __future__ import annotations

import argparse
import copy
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import nnunet_ext.ext_trainer_folder.nnunet_ext_trainers as ext_module
import nnunet_ext.trainers as trainers
from nnunet_ext.recipes import RecipeError, load_recipe
from nnunet_ext.recipes.loader import RECIPES_VARIABLE
from nnunet_ext.recipes.saved import ACCEPT_CHANGE_VARIABLE, RecipeChangedError, write_saved
from nnunet_ext.trainers.recipe_trainer import CHECKPOINT_KEY, RecipeTrainer

PLANS = json.loads((Path(__file__).parent / "data" / "plans_tubes.json").read_text())
LABELS = {"background": 0, "vessel": 1, "wall": 2}
REGIONS = {"background": 0, "vessel": [1, 2], "lumen": [2]}

USER_RECIPE = {
    "description": "a user recipe",
    "epochs": 40, "iterations_per_epoch": 12, "save_every": 1,
    "base_weight": {"type": "step", "epochs": [0, 10], "values": [1.0, 0.5]},
    "class_weights": [0.5, 2.0, 4.0],
    "terms": {
        "cldice": {"weight": {"type": "linear", "start_epoch": 10, "end_epoch": 30, "end_value": 0.5}},
        "ce_weighted": {"loss": "weighted_ce", "weight": 0.3, "options": {"class_weights": "class_weights"}},
        "dice_weighted": {"loss": "weighted_dice", "options": {"class_weights": "class_weights"}},
    },
    "optimizer": {"type": "adamw", "lr": 3e-4, "betas": [0.9, 0.99]},
    "lr_schedule": {"type": "cosine", "warmup_epochs": 5, "min_lr": 1e-6},
    "checkpoints": {"every": 2, "metrics": {"val_loss": "val_loss", "topo": "0.5 * (1 - min(masd, 50) / 50) + 0.5 * "
                                                                          "cldice"}},
    "early_stopping": {"metric": "topo", "patience": 10},
    "swa": {"start_epoch": 30, "lr": 1e-4},
}


@pytest.fixture
def env(tmp_path, monkeypatch):
    """nnUNet_results in tmp and a user recipe folder holding ``mine.json`` (USER_RECIPE)."""
    folder = tmp_path / "recipes"
    folder.mkdir()
    (folder / "mine.json").write_text(json.dumps(USER_RECIPE))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    monkeypatch.setenv(RECIPES_VARIABLE, str(folder))
    monkeypatch.delenv(ACCEPT_CHANGE_VARIABLE, raising=False)
    monkeypatch.setenv("nnunet_ext_skeleton_iterations", "3")  # no preprocessed data to choose them from
    return tmp_path


def make(name="Recipe_mine", labels=LABELS, fold=0, configuration="3d_fullres"):
    dataset_json = {"channel_names": {"0": "x"}, "numTraining": 5, "file_ending": ".nii.gz", "labels": labels}
    if any(isinstance(v, list) for v in labels.values()):
        dataset_json["regions_class_order"] = [1, 2]
    plans = copy.deepcopy(PLANS)
    plans["continue_training"] = False
    return trainers.trainer_by_name(name)(plans, configuration, fold, dataset_json, torch.device("cpu"))


# ------------------------------------------------------------------ names
def test_recipe_trainer_names_resolve_to_one_cached_picklable_class():
    cls = trainers.trainer_by_name("Recipe_cbdice_cldice")
    assert cls is trainers.Recipe_cbdice_cldice is ext_module.Recipe_cbdice_cldice
    assert issubclass(cls, RecipeTrainer) and cls.recipe_name == "cbdice_cldice"
    assert cls.__module__ == "nnunet_ext.trainers" and pickle.loads(pickle.dumps(cls)) is cls
    # a recipe name may end like a budget variant; it is still the recipe's name
    assert trainers.trainer_by_name("Recipe_short_5epochs").recipe_name == "short_5epochs"
    assert trainers.trainer_by_name("TopoTrainer_2epochs").__name__ == "TopoTrainer_2epochs"
    for bad in ("Recipe_a__b", "Recipe_", "Recipe__a", "Recipe_a_", "Recipe_a-b"):
        with pytest.raises(AttributeError):
            trainers.trainer_by_name(bad)


def test_recipe_results_folders_never_contain_a_double_underscore(env):
    from nnunetv2.utilities.file_path_utilities import convert_identifier_to_trainer_plans_config

    trainer = make()
    folder = Path(trainer.output_folder_base).name
    assert folder == "Recipe_mine__nnUNetPlans__3d_fullres"
    assert list(convert_identifier_to_trainer_plans_config(folder)) == ["Recipe_mine", "nnUNetPlans", "3d_fullres"]


# ------------------------------------------------------------------ what a recipe puts into the trainer
def test_recipe_lands_in_the_trainer(env):
    trainer = make()
    assert (trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch) == (40, 12, 2)
    assert trainer.save_every == 1 and trainer.initial_lr == 3e-4 and trainer.base_loss == "dice_ce"
    trainer._determine_class_weights()  # no preprocessed data here: manual weights, frequencies unknown
    assert trainer.class_weights == [0.5, 2.0, 4.0] and trainer.class_fractions is None
    loss = trainer._build_loss().loss
    terms = {t.name: t for t in loss.term_specs}
    assert set(terms) == {"cldice", "ce_weighted", "dice_weighted"}
    assert terms["ce_weighted"].loss.class_weights == (0.5, 2.0, 4.0)
    assert terms["dice_weighted"].loss.class_weights == (2.0, 4.0)  # Dice: foreground entries only
    assert trainer.loss_weights_at(0) == {"base": 1.0, "cldice": 0.0, "ce_weighted": 0.3, "dice_weighted": 1.0}
    assert trainer.loss_weights_at(20) == {"base": 0.5, "cldice": 0.25, "ce_weighted": 0.3, "dice_weighted": 1.0}
    trainer.current_epoch = 20
    trainer.loss = trainer._build_loss()
    RecipeTrainer.on_epoch_start(trainer)
    assert trainer.compound_loss().weights == {"base": 0.5, "cldice": 0.25, "ce_weighted": 0.3, "dice_weighted": 1.0}
    trainer.network = torch.nn.Conv3d(1, 3, 1)
    optimizer, scheduler = trainer.configure_optimizers()
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["betas"] == (0.9, 0.99)
    assert scheduler.lr_at(0) == pytest.approx(3e-4 / 6) and scheduler.lr_at(5) == pytest.approx(3e-4)
    assert scheduler.lr_at(29) == pytest.approx(scheduler.schedule.lr(29, 3e-4, 40))
    assert scheduler.lr_at(30) == scheduler.lr_at(39) == 1e-4  # SWA's constant rate from its start epoch
    assert set(trainer.trackers) == {"val_loss", "topo"} and trainer.trackers["val_loss"].mode == "min"
    assert trainer._patch_metrics_wanted == ["cldice", "masd"] and trainer.early_stopping.patience == 10
    log = Path(trainer.log_file).read_text()
    assert "recipe 'mine' from" in log and "'wall' is up-weighted" in log


def test_builtin_recipe_trainer_matches_the_hand_written_trainer(env):
    trainer = make("Recipe_cbdice_cldice")
    from nnunet_ext.trainers import CbDiceClDiceTrainer

    hand_written = CbDiceClDiceTrainer.term_configs(CbDiceClDiceTrainer)  # reads class attributes only
    assert [(c.name, c.schedule()(50), dict(c.resolved_options())) for c in trainer.term_configs()] == \
           [(c.name, c.schedule()(50), dict(c.resolved_options())) for c in hand_written]


def test_deep_supervision_logs_term_values_that_add_up_to_the_loss(env):
    from test_topo_trainer_loss import make_batch

    trainer = make()
    trainer._determine_class_weights()
    trainer.loss = trainer._build_loss()
    trainer.loss.loss.set_weights(trainer.loss_weights_at(20))
    logits, targets = make_batch(trainer, empty=False)
    total = trainer.loss(logits, targets)
    values, weights = trainer.loss.last_values, trainer.compound_loss().weights
    assert set(values) == {"base", "cldice", "ce_weighted", "dice_weighted"}
    assert sum(trainer.loss.weights) == pytest.approx(1.0)
    assert float(total.detach()) == pytest.approx(sum(weights[n] * float(v) for n, v in values.items()), rel=1e-5)


# ------------------------------------------------------------------ errors before any folder exists
def test_unknown_recipe_and_mode_errors_come_before_nnunet_creates_folders(env, tmp_path):
    with pytest.raises(RecipeError, match="nope: no recipe of this name"):
        make("Recipe_nope")
    (tmp_path / "recipes" / "sigmoid_alpha.json").write_text(json.dumps(
        {"class_weights": [1, 2], "terms": {"focal": {"options": {"alpha": "class_weights"}}}}))
    with pytest.raises(RecipeError, match="sigmoid_alpha.json: terms.focal.options.alpha: this dataset trains sigmoid"):
        make("Recipe_sigmoid_alpha", labels=REGIONS)
    assert not (tmp_path / "results").exists()
    with pytest.raises(TypeError, match="Recipe_<recipe name>"):
        RecipeTrainer(copy.deepcopy(PLANS), "3d_fullres", 0, {"labels": LABELS}, torch.device("cpu"))


# ------------------------------------------------------------------ the saved recipe
def test_a_changed_recipe_under_an_existing_run_is_refused_unless_accepted(env, tmp_path, monkeypatch):
    trainer = make()
    write_saved(trainer.output_folder, trainer.recipe, {"class_weights": [0.5, 2.0, 4.0]}, trainer.recipe_source)
    assert make().recipe == trainer.recipe  # unchanged: fine
    changed = dict(USER_RECIPE, epochs=80, description="longer")
    (tmp_path / "recipes" / "mine.json").write_text(json.dumps(changed))
    with pytest.raises(RecipeChangedError, match=r"fold_0/recipe.json: the recipe 'mine' has changed since .*"
                                                 r"epochs: 40 → 80.*nnunet_ext_accept_recipe_change=1"):
        make()
    with pytest.raises(RecipeChangedError):  # another fold of the same results folder is refused as well
        make(fold=1)
    monkeypatch.setenv(ACCEPT_CHANGE_VARIABLE, "1")
    accepted = make()
    assert accepted.num_epochs == 80 and "CHANGED under an existing run" in Path(accepted.log_file).read_text()


def test_a_run_whose_recipe_file_is_gone_uses_the_saved_recipe(env, tmp_path):
    trainer = make()
    write_saved(trainer.output_folder, trainer.recipe, {"class_weights": [0.5, 2.0, 4.0]}, trainer.recipe_source)
    (tmp_path / "recipes" / "mine.json").unlink()
    again = make()
    assert again.recipe == trainer.recipe and again.recipe_source.endswith("fold_0/recipe.json")
    again._determine_class_weights()
    assert again.class_weights == [0.5, 2.0, 4.0]
    with pytest.raises(RecipeError, match="no recipe of this name"):
        make(fold=1)  # no saved recipe in fold 1 and no file: nothing to train


# ------------------------------------------------------------------ checkpoints
def test_checkpoints_keep_nnunets_keys_and_add_the_recipe_state(env, monkeypatch):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    trainer = make()
    trainer.network = torch.nn.Conv3d(1, 3, 1)
    trainer.optimizer, trainer.lr_scheduler = trainer.configure_optimizers()
    saved = []
    monkeypatch.setattr(torch, "save", lambda obj, path: saved.append(obj))
    nnUNetTrainer.save_checkpoint(trainer, "stock.pth")
    trainer.save_checkpoint("ours.pth")
    stock, ours = saved
    assert set(ours) - set(stock) == {CHECKPOINT_KEY} and set(stock) <= set(ours)
    assert ours["trainer_name"] == "Recipe_mine" and ours[CHECKPOINT_KEY]["recipe"] == trainer.recipe
    # the state comes back into a fresh trainer
    trainer.trackers["topo"].update(0.7, 3)
    trainer.lr_scheduler.state = trainer.lr_scheduler.state.__class__(scale=0.25)
    trainer.term_history.record(0, 1e-4, {"base": 1.0}, {"base": 0.5})
    trainer.term_history.record(1, 1e-4, {"base": 1.0}, {"base": 0.4})
    state = trainer._recipe_state()
    fresh = make()
    fresh.network = torch.nn.Conv3d(1, 3, 1)
    fresh.optimizer, fresh.lr_scheduler = fresh.configure_optimizers()
    fresh.current_epoch = 1
    fresh.restore_recipe_state(state)
    assert fresh.trackers["topo"].best == 0.7 and fresh.lr_scheduler.state.scale == 0.25
    assert fresh.term_history.epochs == [0]  # epoch 1 is trained again after the checkpoint of epoch 0


# ------------------------------------------------------------------ the recipes command
def run_command(*argv):
    from nnunet_ext.commands import recipes

    parser = argparse.ArgumentParser()
    recipes.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["recipes", *argv])
    return args.func(args)


def test_recipes_command_lists_shows_and_checks(env, tmp_path, capsys):
    assert run_command("list") == 0
    out = capsys.readouterr().out
    assert "Recipe_mine" in out and "Recipe_cbdice_cldice" in out and "built-in" in out
    assert run_command("show", "mine") == 0
    assert json.loads(capsys.readouterr().out) == load_recipe("mine")[0]
    dataset_json = tmp_path / "dataset.json"
    dataset_json.write_text(json.dumps({"labels": {"background": 0, "vessel": 1}}))
    assert run_command("check", str(tmp_path / "recipes" / "mine.json"), "-dj", str(dataset_json)) == 1
    assert "class_weights: 3 values for a dataset that needs 2" in capsys.readouterr().err
    assert run_command("check", "cbdice_cldice", "-dj", str(dataset_json)) == 0
    assert "train it with -tr Recipe_cbdice_cldice" in capsys.readouterr().out


# ------------------------------------------------------------------ selection through the trainer's own epoch end
STREAM = [  # (val_loss, pseudo-Dice of vessel and wall) of epochs 0–4
    (1.0, [0.2, 0.1]), (0.8, [0.4, 0.3]), (0.9, [0.5, 0.2]), (0.95, [0.3, 0.5]), (0.97, [0.3, 0.4])]


def test_checkpoint_selection_plateau_swa_and_early_stopping_on_a_synthetic_stream(env, tmp_path):
    (tmp_path / "recipes" / "select.json").write_text(json.dumps({
        "epochs": 10, "save_every": 1,
        "checkpoints": {"every": 1, "metrics": {"val_loss": "val_loss", "dice_wall": "dice_wall",
                                                "mix": "0.7 * dice_vessel + 0.3 * dice_2"}},
        "early_stopping": {"metric": "mix", "patience": 2},
        "lr_schedule": {"type": "plateau", "metric": "val_loss", "factor": 0.5, "patience": 1, "threshold": 0.0},
        "swa": {"start_epoch": 1}}))
    trainer = make("Recipe_select")
    trainer.network = torch.nn.Conv3d(1, 3, 1)
    trainer.optimizer, trainer.lr_scheduler = trainer.configure_optimizers()
    rates = []
    for epoch, (val_loss, dice) in enumerate(STREAM):
        trainer.lr_scheduler.step(epoch)
        rates.append(trainer.optimizer.param_groups[0]["lr"])
        for key, value in (("epoch_start_timestamps", 0.0), ("lrs", rates[-1]), ("train_losses", 1.0),
                           ("val_losses", val_loss), ("dice_per_class_or_region", dice),
                           ("mean_fg_dice", float(np.mean(dice)))):
            trainer.logger.log(key, value, epoch)
        trainer.on_epoch_end()
    folder = Path(trainer.output_folder)

    def saved_epoch(name):
        return torch.load(folder / f"checkpoint_best_{name}.pth", map_location="cpu", weights_only=False)["current_epoch"] - 1

    assert (saved_epoch("val_loss"), saved_epoch("dice_wall"), saved_epoch("mix")) == (1, 3, 2)
    assert trainer.trackers["mix"].best == pytest.approx(0.7 * 0.5 + 0.3 * 0.2)
    assert trainer.early_stopping.stopped_epoch == 4  # mix last improved at epoch 2, patience 2
    # val_loss stalls at epochs 2 and 3: the plateau halves the rate from epoch 4 on
    assert rates[:4] == [0.01] * 4 and rates[4] == pytest.approx(0.005)
    assert trainer.swa.n_averaged == 4
    latest = torch.load(folder / "checkpoint_latest.pth", map_location="cpu", weights_only=False)
    assert latest[CHECKPOINT_KEY]["early_stopping"] == {"reference": pytest.approx(0.41), "reference_epoch": 2,
                                                        "stopped_epoch": 4}
    assert latest[CHECKPOINT_KEY]["lr_scheduler"]["plateau"]["scale"] == 0.5


def test_training_loop_stops_early_and_a_stopped_run_stays_stopped(env, monkeypatch):
    trainer = make()
    calls = []
    for hook in ("on_train_start", "on_epoch_start", "on_train_epoch_start", "on_validation_epoch_start",
                 "on_train_end"):
        monkeypatch.setattr(trainer, hook, lambda hook=hook: calls.append(hook))
    monkeypatch.setattr(trainer, "on_train_epoch_end", lambda outputs: None)
    monkeypatch.setattr(trainer, "on_validation_epoch_end", lambda outputs: None)
    trainer.num_iterations_per_epoch = trainer.num_val_iterations_per_epoch = 0

    def epoch_end():
        if trainer.current_epoch == 2:
            trainer.early_stopping.stopped_epoch = 2
        trainer.current_epoch += 1

    monkeypatch.setattr(trainer, "on_epoch_end", epoch_end)
    trainer.run_training()
    assert calls.count("on_epoch_start") == 3 and calls[-1] == "on_train_end"
    calls.clear()
    trainer.run_training()  # continuing a stopped run trains nothing and only writes the final checkpoint
    assert calls == ["on_train_start", "on_train_end"]


@pytest.mark.parametrize("labels", [LABELS, {**REGIONS, "ignore": 3}], ids=["labels", "regions+ignore"])
def test_validation_patch_metrics_read_nnunets_targets_in_every_mode(env, labels):
    from test_topo_trainer_loss import make_batch

    trainer = make("Recipe_dice_ce", labels=labels)
    logits, targets = make_batch(trainer, empty=False)
    trainer._patch_values = {m: [[] for _ in trainer.dataset_info.class_names] for m in ("cldice", "masd")}
    trainer._patch_metrics_wanted = ["cldice", "masd"]
    trainer._add_patch_metrics(logits[0].detach(), targets[0])
    for metric, per_class in trainer._patch_values.items():
        assert len(per_class) == 2 and all(len(values) == 2 for values in per_class)  # 2 patches, 2 classes
        assert all(np.isfinite(v) for values in per_class for v in values)
    # a perfect prediction scores clDice 1 and MASD 0
    lm = trainer.label_manager
    if lm.has_regions:
        perfect = (targets[0][:, :2].float() * 20 - 10)
    else:
        perfect = torch.nn.functional.one_hot(targets[0][:, 0].long().clamp(max=2), 3).movedim(-1, 1).float() * 10
    trainer._patch_values = {m: [[] for _ in range(2)] for m in ("cldice", "masd")}
    trainer._add_patch_metrics(perfect, targets[0])
    assert all(v == 1.0 for values in trainer._patch_values["cldice"] for v in values)
    assert all(v == 0.0 for values in trainer._patch_values["masd"] for v in values)


# ------------------------------------------------------------------ issue 13: selection that cannot silently go wrong
def feed(trainer, epoch, val_loss, dice, network_value=None):
    """One epoch of the trainer's own epoch end, from logged values (and network weights set to a value)."""
    trainer.lr_scheduler.step(epoch)
    if network_value is not None:
        with torch.no_grad():
            for p in trainer.network.parameters():
                p.fill_(float(network_value))
    for key, value in (("epoch_start_timestamps", 0.0), ("lrs", trainer.optimizer.param_groups[0]["lr"]),
                       ("train_losses", 1.0), ("val_losses", val_loss), ("dice_per_class_or_region", dice),
                       ("mean_fg_dice", float(np.mean(dice)))):
        trainer.logger.log(key, value, epoch)
    trainer.on_epoch_end()


def ready(trainer):
    trainer.network = torch.nn.Conv3d(1, 3, 1)
    trainer.optimizer, trainer.lr_scheduler = trainer.configure_optimizers()
    return trainer


def saved_epoch(folder, name):
    return torch.load(Path(folder) / f"checkpoint_best_{name}.pth", map_location="cpu",
                      weights_only=False)["current_epoch"] - 1


def test_min_delta_only_decides_when_to_stop_not_which_epoch_is_kept(env, tmp_path):
    """Item 2: dice 0.50, 0.54, 0.53, 0.52 with min_delta 0.05 kept epoch 0."""
    (tmp_path / "recipes" / "delta.json").write_text(json.dumps({
        "epochs": 10, "save_every": 1, "checkpoints": {"metrics": {"dice": "dice"}},
        "early_stopping": {"metric": "dice", "patience": 3, "min_delta": 0.05}}))
    trainer = ready(make("Recipe_delta"))
    for epoch, dice in enumerate([0.50, 0.54, 0.53, 0.52]):
        feed(trainer, epoch, 1.0, [dice, dice])
    assert saved_epoch(trainer.output_folder, "dice") == 1 and trainer.trackers["dice"].best == pytest.approx(0.54)
    assert trainer.early_stopping.stopped_epoch == 3  # no gain of more than 0.05 since epoch 0


def test_stable_selection_variables_do_not_move_with_the_weight_schedule(env, tmp_path):
    """Item 3: the same network on the same batch at epochs 49 and 50 of a clDice curriculum; and item 7's
    robust MASD aggregate."""
    from test_topo_trainer_loss import make_batch

    (tmp_path / "recipes" / "curriculum.json").write_text(json.dumps({
        "epochs": 100, "terms": {"cldice": {"weight": {"type": "step", "epochs": [0, 50], "values": [0, 0.5]}}},
        "checkpoints": {"metrics": {"robust": "median_masd", "mean": "masd"}}}))
    trainer = make("Recipe_curriculum")
    trainer.loss = trainer._build_loss()
    logits, targets = make_batch(trainer, empty=False)

    class Fixed(torch.nn.Module):
        def forward(self, data):
            return [x.clone() for x in logits]

    trainer.network = Fixed()
    assert trainer.reference_weights() == {"base": 1.0, "cldice": 0.5}
    values = {}
    for step, epoch in enumerate((49, 50)):
        trainer.current_epoch = epoch
        trainer.compound_loss().set_weights(trainer.loss_weights_at(epoch))
        trainer.on_validation_epoch_start()
        result = trainer.validation_step({"data": torch.zeros(2, 1, 1, 1, 1), "target": [t.clone() for t in targets]})
        trainer._patch_values = {"masd": [[0.01, 0.02, 235.0], [1.0]]}  # one patch with an empty mask
        for key, value in (("val_losses", float(result["loss"])), ("train_losses", 1.0), ("mean_fg_dice", 0.5),
                           ("dice_per_class_or_region", [0.5, 0.5])):
            trainer.logger.log(key, value, step)
        values[epoch] = trainer.epoch_variables()
    before, after = values[49], values[50]
    assert before["val_loss"] == pytest.approx(before["val_base_loss"], rel=1e-5)  # cldice at weight 0 …
    assert after["val_loss"] > before["val_loss"] + 0.1  # … then 0.5: nnU-Net's val_loss jumps
    assert after["val_base_loss"] == pytest.approx(before["val_base_loss"], rel=1e-6)
    assert after["val_loss_ref"] == pytest.approx(before["val_loss_ref"], rel=1e-6)
    assert after["val_loss_ref"] == pytest.approx(after["val_loss"], rel=1e-5)  # at the final weights
    assert before["masd_vessel"] == pytest.approx(235.03 / 3) and before["median_masd_vessel"] == 0.02
    assert before["median_masd"] == pytest.approx((0.02 + 1.0) / 2)


def test_bad_term_options_fail_before_nnunet_creates_a_folder(env, tmp_path):
    """Item 4: tube_radius -1 used to fail inside the augmentation workers."""
    (tmp_path / "recipes" / "tube.json").write_text(json.dumps({"terms": {"skeleton_recall": {
        "options": {"tube_radius": -1}}}}))
    with pytest.raises(RecipeError, match="tube.json: terms.skeleton_recall.options.tube_radius: expected a number"):
        make("Recipe_tube")
    assert not (tmp_path / "results").exists()


def test_resume_restores_plateau_trackers_early_stopping_and_swa(env, tmp_path):
    """Item 8: an interrupted and continued run equals the uninterrupted one in every piece of selection
    state (the end-to-end test compares only pure functions of the epoch)."""
    (tmp_path / "recipes" / "resume.json").write_text(json.dumps({
        "epochs": 12, "save_every": 1,
        "checkpoints": {"metrics": {"val_loss": "val_loss", "dice_wall": "dice_wall", "mix": "0.7 * dice_1 + 0.3 * dice_2"}},
        "early_stopping": {"metric": "mix", "patience": 4, "min_delta": 0.05},
        "lr_schedule": {"type": "plateau", "metric": "val_loss", "factor": 0.5, "patience": 1, "threshold": 0.0},
        "swa": {"start_epoch": 1}}))
    # every best and the early-stopping reference lie before the interruption, and later epochs would be new
    # bests for state that was not restored
    stream = [(1.0, [0.2, 0.1]), (0.6, [0.6, 0.5]), (0.8, [0.5, 0.3]), (0.9, [0.55, 0.4]), (0.95, [0.4, 0.45]),
              (0.97, [0.58, 0.45])]
    uninterrupted = ready(make("Recipe_resume", fold=0))
    for epoch, (val_loss, dice) in enumerate(stream):
        feed(uninterrupted, epoch, val_loss, dice, network_value=epoch)
    interrupted = ready(make("Recipe_resume", fold=1))
    for epoch, (val_loss, dice) in enumerate(stream[:3]):
        feed(interrupted, epoch, val_loss, dice, network_value=epoch)
    folder = Path(interrupted.output_folder)
    best = torch.load(folder / "checkpoint_best_val_loss.pth", map_location="cpu", weights_only=False)
    assert best[CHECKPOINT_KEY]["swa"]["average"] is None  # the SWA average is stored in latest/final only
    continued = ready(make("Recipe_resume", fold=1))
    continued.was_initialized = True
    continued.load_checkpoint(str(folder / "checkpoint_latest.pth"))
    assert continued.current_epoch == 3
    for epoch, (val_loss, dice) in enumerate(stream[3:], start=3):
        feed(continued, epoch, val_loss, dice, network_value=epoch)
    a, b = uninterrupted, continued
    assert {n: t.state_dict() for n, t in a.trackers.items()} == {n: t.state_dict() for n, t in b.trackers.items()}
    assert a.early_stopping.state_dict() == b.early_stopping.state_dict()
    assert a.lr_scheduler.state_dict() == b.lr_scheduler.state_dict()
    assert a.lr_scheduler.state.scale < 1  # the plateau did act, across the interruption
    assert a.early_stopping.stopped_epoch == 5 and a.trackers["mix"].best_epoch == 1
    assert a.swa.n_averaged == b.swa.n_averaged == 5
    assert all(torch.equal(a.swa.average[k], b.swa.average[k]) for k in a.swa.average)
    for name in a.trackers:
        assert saved_epoch(a.output_folder, name) == saved_epoch(b.output_folder, name), name


def test_swa_that_never_started_is_said_in_the_log(env, tmp_path, monkeypatch):
    """Item 6: early stopping before SWA's start leaves no checkpoint_swa.pth, and says so."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    monkeypatch.setattr(nnUNetTrainer, "on_train_end", lambda self: None)
    trainer = ready(make())
    trainer.early_stopping.stopped_epoch, trainer.current_epoch = 12, 13
    trainer.on_train_end()
    log = Path(trainer.log_file).read_text()
    assert "SWA: no checkpoint_swa.pth: early stopping ended the training at epoch 12, before SWA's start epoch 30" in log
    assert not (Path(trainer.output_folder) / "checkpoint_swa.pth").exists()


def test_recipes_no_longer_import_the_trainers():
    """Item 11: the term catalogue and metric expressions sit below recipes/ and trainers/."""
    import subprocess
    import sys

    code = ("import sys, nnunet_ext.recipes, nnunet_ext.term_catalogue, nnunet_ext.metric_expressions; "
            "print(sorted(m for m in sys.modules if m.startswith(('nnunet_ext.trainers', 'nnunetv2.training'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    from nnunet_ext.term_catalogue import TermConfig
    from nnunet_ext.trainers.terms import TermConfig as ReExported
    assert ReExported is TermConfig
