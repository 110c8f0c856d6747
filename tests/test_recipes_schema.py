"""Recipe files: schedules, resolution with defaults, every validation error, discovery, built-ins."""
from __future__ import annotations

import json

import pytest

from nnunet_ext.recipes import (RecipeError, check_for_dataset, dataset_info, find_recipe, list_recipes, load_recipe,
                                load_recipe_file, resolve)
from nnunet_ext.recipes.loader import RECIPES_VARIABLE
from nnunet_ext.recipes.saved import differences
from nnunet_ext.schedules import Linear, ScheduleError, Step, check_schedule, schedule_from_spec

LABELS = {"labels": {"background": 0, "vessel": 1, "wall": 2}}
REGIONS = {"labels": {"background": 0, "vessel": [1, 2], "lumen": [2]}, "regions_class_order": [1, 2]}


def write(folder, name, content) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(content) if not isinstance(content, str) else content)
    return str(path)


# ------------------------------------------------------------------ schedules
def test_schedule_math_constant_linear_step_cosine():
    ramp = schedule_from_spec({"type": "linear", "start_epoch": 300, "end_epoch": 600, "end_value": 0.5})
    assert [ramp(e) for e in (0, 300, 450, 600, 999)] == [0.0, 0.0, 0.25, 0.5, 0.5]
    curriculum = schedule_from_spec({"type": "step", "epochs": [0, 50], "values": [0, 1]})
    assert [curriculum(e) for e in (0, 49, 50, 500)] == [0, 0, 1, 1]
    cosine = schedule_from_spec({"type": "cosine", "start_epoch": 10, "end_epoch": 20, "start_value": 1, "end_value": 0})
    assert cosine(0) == 1 and cosine(15) == pytest.approx(0.5) and cosine(20) == pytest.approx(0) and cosine(99) == 0
    assert schedule_from_spec(0.3)(7) == 0.3


def test_check_schedule_rejects_negative_weights_and_schedules_beyond_training():
    assert check_schedule(Linear(300, 600, 0, 0.5), "w", 601).end_epoch == 600
    with pytest.raises(ScheduleError, match="w: the schedule changes until epoch 600, but the training has 600"):
        check_schedule(Linear(300, 600, 0, 0.5), "w", 600)
    with pytest.raises(ScheduleError, match="w: negative weight -1"):
        check_schedule(Step((0, 5), (1.0, -1.0)), "w")


# ------------------------------------------------------------------ resolution
def test_minimal_recipe_resolves_to_nnunet_defaults(tmp_path):
    recipe = load_recipe_file(write(tmp_path, "plain", {}))
    assert recipe["epochs"] == 1000 and recipe["iterations_per_epoch"] == 250
    assert recipe["val_iterations_per_epoch"] == 50 and recipe["save_every"] == 50
    assert recipe["optimizer"] == {"type": "sgd", "lr": 0.01, "weight_decay": 3e-5, "momentum": 0.99, "nesterov": True}
    assert recipe["lr_schedule"] == {"type": "poly", "exponent": 0.9, "warmup_epochs": 0}
    assert recipe["base_loss"] == "dice_ce" and recipe["terms"] == {} and recipe["class_weights"] is None
    assert recipe["checkpoints"] == {"every": 1, "metrics": {}}
    assert recipe["early_stopping"] is None and recipe["swa"] is None


def test_resolution_fills_every_default_and_is_idempotent(tmp_path):
    raw = {"epochs": 20, "iterations_per_epoch": 10, "terms": {"cldice": 0.5, "focal": {"options": {"gamma": 1}}},
           "checkpoints": {"every": 2, "metrics": ["val_loss", "cldice"]}, "early_stopping": {"metric": "cldice",
                                                                                             "patience": 4},
           "swa": {"start_epoch": 15}, "lr_schedule": {"type": "plateau"}}
    recipe = load_recipe_file(write(tmp_path, "full", raw))
    assert recipe["val_iterations_per_epoch"] == 2
    assert recipe["terms"]["cldice"] == {"loss": "cldice", "weight": {"type": "constant", "value": 0.5},
                                         "options": {"iterations": "auto", "smooth": 1.0}}
    assert recipe["terms"]["focal"]["options"] == {"gamma": 1, "alpha": None}
    assert recipe["checkpoints"]["metrics"] == {"val_loss": {"expression": "val_loss", "mode": "min"},
                                                "cldice": {"expression": "cldice", "mode": "max"}}
    assert recipe["early_stopping"] == {"metric": "cldice", "patience": 4, "min_delta": 0.0}
    assert recipe["swa"] == {"start_epoch": 15, "every": 1, "lr": None, "bn_update_batches": 50}
    # reduce-on-plateau follows nnU-Net's own validation loss unless told otherwise (item 3 of issue 13)
    assert recipe["lr_schedule"]["metric"] == "val_base_loss" and recipe["lr_schedule"]["mode"] == "min"
    assert resolve(recipe, "full", "again") == recipe


# ------------------------------------------------------------------ one error per case, each naming the key
ERRORS = [
    ({"epoch": 10}, "epoch: unknown key"),
    ({"epochs": "100"}, "epochs: expected an integer >= 1"),
    ({"epochs": 0}, "epochs: expected an integer >= 1"),
    ({"iterations_per_epoch": 2.5}, "iterations_per_epoch: expected an integer"),
    ({"base_loss": "ce"}, "base_loss: expected 'dice_ce'"),
    ({"terms": {"cldice": {"weight": -0.5}}}, "terms.cldice.weight: negative weight"),
    ({"terms": {"cldice": {"weight": "high"}}}, "terms.cldice.weight: expected a finite number"),
    ({"terms": {"cldice": {"weight": {"type": "linear", "start_epoch": 0, "end_epoch": 50}}}, "epochs": 10},
     "terms.cldice.weight: the schedule changes until epoch 50, but the training has 10 epochs"),
    ({"terms": {"cldice": {"weight": {"type": "ramp"}}}}, "terms.cldice.weight.type: expected one of"),
    ({"terms": {"cldice": {"weight": 1, "iterations": 3}}}, "terms.cldice.iterations: unknown key"),
    ({"terms": {"topology": 1}}, "terms.topology: unknown loss term 'topology'"),
    ({"terms": {"cldice": {"options": {"iters": 3}}}}, "terms.cldice.options.iters: unknown option of cldice"),
    ({"terms": {"cldice": {"options": {"iterations": -1}}}}, "terms.cldice.options.iterations: expected 'auto', an integer >= 0"),
    ({"terms": {"boundary": {"options": {"empty": "nan"}}}}, "terms.boundary.options.empty: expected 'zero' or 'diagonal'"),
    ({"terms": {"base": 1}}, "terms.base: a term label"),
    ({"base_weight": -1}, "base_weight: negative weight"),
    ({"class_weights": [1, -2]}, r"class_weights.values\[1\]: must be >= 0"),
    ({"class_weights": "inverse"}, "class_weights: expected null, \"auto\""),
    ({"class_weights": [1, 2]}, "class_weights: set, but no term uses them"),
    ({"terms": {"weighted_ce": {"options": {"class_weights": "class_weights"}}}},
     "terms.weighted_ce.options.class_weights: refers to the recipe's class_weights, but the recipe sets none"),
    ({"class_weights": "auto", "terms": {"cldice": {"options": {"smooth": "class_weights"}}}},
     "terms.cldice.options.smooth: only weighted_ce.class_weights"),
    ({"optimizer": {"type": "rmsprop"}}, "optimizer.type: expected one of"),
    ({"optimizer": {"type": "sgd", "lr": -0.1}}, "optimizer.lr: must be > 0"),
    ({"optimizer": {"type": "adamw", "momentum": 0.9}}, "optimizer.momentum: unknown key"),
    ({"lr_schedule": {"type": "cosine", "warmup_epochs": 10}, "epochs": 10}, "lr_schedule.warmup_epochs: 10 warm-up"),
    ({"lr_schedule": {"type": "cosine", "min": 0}}, r"lr_schedule: unknown field\(s\) \['min'\]"),
    ({"lr_schedule": {"type": "plateau", "factor": 2}}, "lr_schedule.factor: must be < 1"),
    ({"lr_schedule": {"type": "plateau", "metric": "val_loss +"}}, "lr_schedule.metric: cannot parse"),
    ({"checkpoints": {"every": 20}, "epochs": 10}, "checkpoints.every: metrics every 20 epochs never happen"),
    ({"checkpoints": {"metrics": {"mix": "__import__('os')"}}}, "checkpoints.metrics.mix.expression: only the functions"),
    ({"checkpoints": {"metrics": {"mix": {"expression": "dice", "mode": "best"}}}},
     "checkpoints.metrics.mix.mode: expected 'min' or 'max'"),
    ({"checkpoints": {"metrics": {"a/b": "dice"}}}, "checkpoints.metrics.a/b: a metric name"),
    ({"early_stopping": {"metric": "dice", "patience": 5}}, "early_stopping.metric: must name one of"),
    ({"checkpoints": {"metrics": ["dice"]}, "early_stopping": {"metric": "dice", "patience": 0}},
     "early_stopping.patience: expected an integer >= 1"),
    ({"swa": {"start_epoch": 10}, "epochs": 10}, "swa.start_epoch: epoch 10 is beyond the training"),
    ({"swa": {"start_epoch": 1, "lr": 0}}, "swa.lr: must be > 0"),
    ({"name": "other"}, "name: 'other' differs from the file name"),
]


@pytest.mark.parametrize("raw, message", ERRORS, ids=[m.split(":")[0] for _, m in ERRORS])
def test_every_invalid_recipe_gives_an_error_naming_file_and_key(tmp_path, raw, message):
    path = write(tmp_path, "bad", raw)
    with pytest.raises(RecipeError, match=message) as caught:
        load_recipe_file(path)
    assert str(caught.value).startswith(path)


def test_malformed_json_and_non_object_are_refused_with_the_file(tmp_path):
    with pytest.raises(RecipeError, match="bad.json: not valid JSON: .* line 1"):
        load_recipe_file(write(tmp_path, "bad", "{\"epochs\": 10,,}"))
    with pytest.raises(RecipeError, match="a recipe is a JSON object"):
        load_recipe_file(write(tmp_path, "bad", "[1, 2]"))


DATASET_ERRORS = [
    (LABELS, {"class_weights": [1, 2], "terms": {"weighted_ce": {"options": {"class_weights": "class_weights"}}}},
     "class_weights: 2 values for a dataset that needs 3 \\(background first, then vessel, wall\\)"),
    (REGIONS, {"class_weights": [1, 2], "terms": {"focal": {"options": {"alpha": "class_weights"}}}},
     "terms.focal.options.alpha: this dataset trains sigmoid regions"),
    (LABELS, {"terms": {"focal": {"options": {"alpha": [0.2, 0.8]}}}}, "terms.focal.options.alpha: 2 values"),
    (REGIONS, {"terms": {"focal": {"options": {"alpha": [0.2, 1.8]}}}}, "terms: .*alpha must lie in \\[0, 1\\]"),
    (LABELS, {"checkpoints": {"metrics": {"m": "dice_tumour"}}}, "checkpoints.metrics.m.expression: unknown variable"),
    (LABELS, {"lr_schedule": {"type": "plateau", "metric": "cldice"}}, "lr_schedule.metric: unknown variable.*per-epoch"),
]


@pytest.mark.parametrize("dataset, raw, message", DATASET_ERRORS, ids=[m[:30] for _, _, m in DATASET_ERRORS])
def test_dataset_dependent_errors_name_the_key(tmp_path, dataset, raw, message):
    path = write(tmp_path, "bad", raw)
    with pytest.raises(RecipeError, match=message):
        check_for_dataset(load_recipe_file(path), dataset_info(dataset), path)


def test_metric_variables_follow_the_dataset_classes(tmp_path):
    raw = {"checkpoints": {"metrics": {"m": "0.7 * dice_lumen + 0.3 * dice_2 + cldice_vessel - masd_1"}}}
    check_for_dataset(load_recipe_file(write(tmp_path, "ok", raw)), dataset_info(REGIONS), "ok")
    info = dataset_info({"labels": {"background": 0, "whole tumor": 1, "ignore": 2}})
    assert info.mode == "softmax" and info.class_names == ("whole tumor",) and info.ignore_label == 2
    raw = {"checkpoints": {"metrics": {"m": "dice_whole_tumor"}}}
    check_for_dataset(load_recipe_file(write(tmp_path, "ok2", raw)), info, "ok2")


# ------------------------------------------------------------------ discovery and built-ins
def test_user_recipes_are_found_through_the_environment_variable(tmp_path, monkeypatch):
    first, second = tmp_path / "a", tmp_path / "b"
    write(first, "mine", {"epochs": 3})
    write(second, "other", {"epochs": 4})
    write(second, "Bad__name", {})
    import os
    monkeypatch.setenv(RECIPES_VARIABLE, f"{first}{os.pathsep}{second}")
    assert find_recipe("mine").path.parent == first and not find_recipe("mine").builtin
    assert load_recipe("other")[0]["epochs"] == 4
    recipes, conflicts, misnamed = list_recipes()
    assert {"mine", "other", "cbdice_cldice"} <= {r.name for r in recipes}
    assert misnamed == [second / "Bad__name.json"] and conflicts == {}
    with pytest.raises(RecipeError, match="no recipe of this name .*nnunet_ext_recipes="):
        load_recipe("missing")


def test_a_name_defined_twice_is_refused(tmp_path, monkeypatch):
    write(tmp_path, "cbdice_cldice", {"epochs": 3})
    monkeypatch.setenv(RECIPES_VARIABLE, str(tmp_path))
    with pytest.raises(RecipeError, match="cbdice_cldice: defined by 2 files: .*built-in"):
        load_recipe("cbdice_cldice")
    assert "cbdice_cldice" in list_recipes()[1]


def test_extends_merges_terms_and_metrics_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv(RECIPES_VARIABLE, str(tmp_path))
    write(tmp_path, "short", {"extends": "cbdice_cldice", "epochs": 12, "lr_schedule": {"type": "cosine",
                                                                                         "warmup_epochs": 2},
                              "terms": {"cbdice": None, "cldice": {"weight": 1.0}},
                              "checkpoints": {"every": 3, "metrics": {"topology": None}}})
    recipe, _ = load_recipe("short")
    assert recipe["epochs"] == 12 and list(recipe["terms"]) == ["cldice"]
    assert recipe["terms"]["cldice"]["weight"]["value"] == 1.0 and recipe["checkpoints"]["every"] == 3
    assert set(recipe["checkpoints"]["metrics"]) == {"val_loss", "dice", "cldice", "masd"}
    write(tmp_path, "loop_a", {"extends": "loop_b"})
    write(tmp_path, "loop_b", {"extends": "loop_a"})
    with pytest.raises(RecipeError, match="extends: circular"):
        load_recipe("loop_a")


def test_builtin_recipes_reproduce_the_seed_configurations():
    minivess = {"dice_ce": {}, "cbdice": {"cbdice": 1.0}, "dice_ce_cldice": {"cldice": 0.5},
                "cbdice_cldice": {"cbdice": 1.0, "cldice": 0.5}}
    for name, terms in minivess.items():
        recipe, source = load_recipe(name)
        assert source.builtin and recipe["epochs"] == 100 and recipe["base_loss"] == "dice_ce"
        assert recipe["lr_schedule"] == {"type": "cosine", "min_lr": 0.0, "warmup_epochs": 10}
        assert {k: t["weight"]["value"] for k, t in recipe["terms"].items()} == terms
        assert recipe["checkpoints"]["metrics"]["topology"]["expression"] == \
            "0.5 * (1 - min(masd, 50) / 50) + 0.5 * cldice"
    vesuvius, _ = load_recipe("vesuvius_focal_variance")
    assert vesuvius["base_loss"] == "dice" and vesuvius["class_weights"]["type"] == "auto"
    assert vesuvius["terms"]["focal"]["options"] == {"gamma": 2.0, "alpha": "class_weights"}
    assert vesuvius["terms"]["variance"]["weight"]["value"] == 0.1
    brats, _ = load_recipe("brats_boundary")
    ramp = schedule_from_spec(brats["terms"]["boundary"]["weight"])
    assert brats["epochs"] == 1000 and (ramp(300), ramp(450), ramp(600)) == (0.0, 0.25, 0.5)
    # every built-in fits the datasets it was made for
    vessels = {"labels": {"background": 0, "vessel": 1}}
    surface = {"labels": {"background": 0, "surface": 1, "ignore": 2}}
    tumour = {"labels": {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]},
              "regions_class_order": [1, 2, 3]}
    for name, dataset in [*((n, vessels) for n in minivess), ("vesuvius_focal_variance", surface),
                          ("brats_boundary", tumour)]:
        check_for_dataset(load_recipe(name)[0], dataset_info(dataset), name)


def test_builtins_carry_the_studies_checkpoints_monusac_and_vesuvius_swa():
    """Issue 13, item 10."""
    for name in ("dice_ce", "cbdice", "dice_ce_cldice", "cbdice_cldice"):
        metrics = load_recipe(name)[0]["checkpoints"]["metrics"]
        # with checkpoint_final.pth: the six checkpoints of the MiniVess study
        assert {n: (m["expression"], m["mode"]) for n, m in metrics.items()} == {
            "val_loss": ("val_loss_ref", "min"), "dice": ("dice", "max"), "cldice": ("cldice", "max"),
            "masd": ("masd", "min"), "topology": ("0.5 * (1 - min(masd, 50) / 50) + 0.5 * cldice", "max")}
    monusac, _ = load_recipe("monusac_focal_dice")
    assert monusac["base_loss"] == "dice" and set(monusac["terms"]) == {"focal"}
    assert monusac["lr_schedule"] == {"type": "cosine", "min_lr": 0.0, "warmup_epochs": 10}
    assert monusac["checkpoints"]["metrics"]["boundary_aware"] == {
        "expression": "0.7 * dice_inside + 0.3 * dice_boundary", "mode": "max"}
    ternary = {"labels": {"background": 0, "inside": 1, "boundary": 2, "ignore": 3}}
    check_for_dataset(monusac, dataset_info(ternary), "monusac_focal_dice")
    vesuvius, _ = load_recipe("vesuvius_focal_variance")
    assert vesuvius["swa"] == {"start_epoch": 750, "every": 1, "lr": None, "bn_update_batches": 50}
    # no built-in selects by a variable whose meaning moves with the weight schedules
    from nnunet_ext.recipes import recipe_notes

    for source in list_recipes()[0]:
        assert recipe_notes(load_recipe(source.name)[0]) == [], source.name


# ------------------------------------------------------------------ issue 13: selection that cannot silently go wrong
@pytest.mark.parametrize("expression, mode", [("(masd_1 + masd_2) / 2", "min"), ("0.5 * masd", "min"),
                                              ("val_loss + 0.1 * masd", "min"), ("-val_loss", "max"),
                                              ("0.5 * (1 - min(masd, 50) / 50) + 0.5 * cldice", "max"),
                                              ("median_masd_vessel", "min"), ("dice - val_loss", "max")])
def test_direction_is_inferred_when_unambiguous(tmp_path, expression, mode):
    """Item 1: these resolved to "max" before, except -val_loss and the compound."""
    recipe = load_recipe_file(write(tmp_path, "m", {"checkpoints": {"metrics": {"m": expression}}}))
    assert recipe["checkpoints"]["metrics"]["m"]["mode"] == mode


@pytest.mark.parametrize("expression", ["dice + masd", "val_loss * dice", "abs(dice - 0.5)", "0 * dice"])
def test_an_ambiguous_direction_needs_a_mode(tmp_path, expression):
    """Item 1: no silent "max" for an expression whose direction cannot be told."""
    path = write(tmp_path, "m", {"checkpoints": {"metrics": {"m": expression}}})
    with pytest.raises(RecipeError, match=r"checkpoints.metrics.m.mode: the direction of .* is ambiguous"):
        load_recipe_file(path)
    given = load_recipe_file(write(tmp_path, "g", {"checkpoints": {"metrics": {"m": {"expression": expression,
                                                                                      "mode": "min"}}}}))
    assert given["checkpoints"]["metrics"]["m"]["mode"] == "min"


@pytest.mark.parametrize("term, option, value, message", [
    ("cldice", "iterations", 2.5, "expected 'auto', an integer >= 0"),
    ("cldice", "iterations", True, "expected 'auto', an integer >= 0"),
    ("cbdice", "iterations", [3, -1], "expected 'auto', an integer >= 0"),
    ("cbdice", "iterations", "3", "expected 'auto', an integer >= 0"),
    ("cldice", "smooth", "3", "expected a number > 0"),
    ("skeleton_recall", "tube_radius", -1, "expected a number >= 0"),
    ("skeleton_recall", "tube_radius", "2", "expected a number >= 0"),
    ("skeleton_recall", "tube_shape", "cube", "expected 'ball' or 'authors'"),
    ("cbdice", "formulation", "shi", "expected 'loader' or 'shi2024'"),
    ("cbdice", "smooth", 0, "expected a number > 0 .*or null"),
    ("hausdorff", "alpha", float("inf"), "expected a number > 0"),
    ("focal", "gamma", -1, "expected a number >= 0"),
    ("focal", "alpha", 1.5, r"expected a number in \[0, 1\] or a list"),
    ("weighted_ce", "class_weights", [0, 0], r"expected a list of numbers >= 0 \(not all 0\)"),
    ("weighted_dice", "smooth", None, "expected a number > 0"),
])
def test_every_term_option_has_a_type_and_range(tmp_path, term, option, value, message):
    """Item 4: checked when the recipe is read (recipes check, and the trainer before any folder exists)."""
    path = write(tmp_path, "bad", {"terms": {"t": {"loss": term, "options": {option: value}}}})
    with pytest.raises(RecipeError, match=f"bad.json: terms.t.options.{option}: {message}"):
        load_recipe_file(path)


def test_every_catalogue_option_is_declared_and_its_default_passes():
    from nnunet_ext.term_catalogue import OPTION_SPECS, TERM_OPTIONS, TermConfig, TermConfigError, check_option

    for term, options in TERM_OPTIONS.items():
        assert set(OPTION_SPECS[term]) == set(options)
        for option, default in options.items():
            assert check_option(term, option, default, "k") == default
    with pytest.raises(TermConfigError, match="cldice.iterations: expected"):  # hand-written trainers too
        TermConfig("cldice", 1.0, {"iterations": 2.5}).resolved_options()


def test_a_function_name_is_not_a_variable(tmp_path):
    """Item 5: "max" passed and then never wrote a checkpoint."""
    with pytest.raises(RecipeError, match="checkpoints.metrics.m.expression: 'max' is a function, not a variable"):
        load_recipe_file(write(tmp_path, "m", {"checkpoints": {"metrics": {"m": "max"}}}))
    with pytest.raises(RecipeError, match="lr_schedule.metric: 'min' is a function"):
        load_recipe_file(write(tmp_path, "p", {"lr_schedule": {"type": "plateau", "metric": "min + val_loss",
                                                               "mode": "min"}}))


def test_check_warns_about_schedule_dependent_selection_and_swa_after_early_stopping(tmp_path):
    """Items 3 and 6: said by `recipes check` (and written to the training log)."""
    from nnunet_ext.recipes import recipe_notes

    recipe = load_recipe_file(write(tmp_path, "n", {
        "epochs": 100, "terms": {"cldice": {"weight": {"type": "step", "epochs": [0, 50], "values": [0, 0.5]}},
                                 "boundary": 0.1},
        "checkpoints": {"metrics": {"val_loss": "val_loss", "dice": "dice"}},
        "early_stopping": {"metric": "dice", "patience": 10}, "swa": {"start_epoch": 60}}))
    notes = recipe_notes(recipe)
    assert any(n.startswith("checkpoints.metrics.val_loss: val_loss is the loss at the epoch's weights, and the "
                            "weights of cldice change") for n in notes)
    assert any("val_loss leaves out boundary" in n for n in notes)
    assert any(n.startswith("swa.start_epoch: early stopping (patience 10) can end the training before SWA") for n in notes)


def test_differences_name_the_changed_keys():
    old = load_recipe("cbdice_cldice")[0]
    new = json.loads(json.dumps(old))
    new["terms"]["cldice"]["weight"]["value"] = 1.0
    new["description"] = "edited"
    new["swa"] = {"start_epoch": 5}
    assert differences(old, new) == ["terms.cldice.weight.value: 0.5 → 1.0", "swa: null → {\"start_epoch\": 5}"]
