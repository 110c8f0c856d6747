"""Checks of a study against this machine, before anything runs or is submitted: nnU-Net's folders, the
dataset (preprocessed, or raw data to plan from), the configurations, trainers and recipes, the folds of the
splits, the test images. Every error names the study file and the key.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from nnunet_ext.study.schema import Study, StudyError

__all__ = ["nnunet_folders", "dataset_name", "needs_planning", "check_trainers", "check_folds_and_configurations",
           "test_cases", "file_ending"]


def nnunet_folders(env: dict, source: str) -> dict[str, str]:
    """``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results`` from ``env`` (all required)."""
    out = {}
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        value = env.get(name)
        if not value:
            raise StudyError(source, "dataset", f"the environment variable {name} is not set (nnunet-ext doctor "
                                                f"says how)")
        out[name] = value
    return out


def dataset_name(study: Study, folders: dict[str, str]) -> str:
    """``DatasetNNN_Name`` of the study's dataset, found in the raw, preprocessed or results folder."""
    ident = study.dataset
    if ident.startswith("Dataset"):
        return ident
    prefix = f"Dataset{int(ident):03d}_"
    for root in (folders["nnUNet_preprocessed"], folders["nnUNet_raw"], folders["nnUNet_results"]):
        if os.path.isdir(root):
            found = sorted(d for d in os.listdir(root) if d.startswith(prefix))
            if found:
                return found[0]
    raise StudyError(study.source, "dataset", f"no dataset with id {ident} in nnUNet_raw, nnUNet_preprocessed or "
                                              f"nnUNet_results ({folders['nnUNet_raw']})")


def needs_planning(study: Study, name: str, folders: dict[str, str]) -> bool:
    """Whether the dataset still has to be planned/preprocessed; raises if it cannot be."""
    pre = Path(folders["nnUNet_preprocessed"]) / name
    plans = pre / f"{study.plans}.json"
    if plans.is_file():
        configs = json.loads(plans.read_text()).get("configurations", {})
        missing = []
        for c in study.configurations:
            if c not in configs:
                raise StudyError(study.source, "configurations", f"{c!r} is not a configuration of {plans} "
                                                                 f"({sorted(configs)})")
            ident = configs[c].get("data_identifier")
            if ident and not (pre / ident).is_dir():
                missing.append(c)
        if not missing:
            return False
    raw = Path(folders["nnUNet_raw"]) / name
    if not (raw / "dataset.json").is_file():
        raise StudyError(study.source, "dataset", f"{name} is not preprocessed ({plans} or its data missing) and has "
                                                  f"no raw data in {raw} to plan from")
    if study.plans != "nnUNetPlans":
        raise StudyError(study.source, "plans", f"{study.plans!r} is not preprocessed in {pre}; a study plans only "
                                                f"nnU-Net's default nnUNetPlans itself: run your planner first")
    return True


def check_trainers(study: Study, env: dict) -> None:
    """Every trainer must be one nnU-Net finds: ours (with recipes and budget variants) or nnU-Net's own."""
    from nnunet_ext.recipes.schema import RecipeError

    old = os.environ.get("nnunet_ext_recipes")
    os.environ["nnunet_ext_recipes"] = env.get("nnunet_ext_recipes", "")
    try:
        for i, trainer in enumerate(study.trainers):
            if trainer.startswith("Recipe_"):
                from nnunet_ext.recipes.loader import load_recipe
                from nnunet_ext.trainers.recipe_trainer import parse_recipe_trainer_name

                recipe = parse_recipe_trainer_name(trainer)
                try:
                    if recipe is None:
                        raise RecipeError(trainer, "", "not a recipe trainer name")
                    load_recipe(recipe)
                except RecipeError as error:
                    raise StudyError(study.source, "recipes", f"{trainer}: {error}") from None
                continue
            if not _trainer_exists(trainer):
                raise StudyError(study.source, "trainers", f"unknown trainer {trainer!r}: neither one of nnunet-ext "
                                                           f"(nnunet-ext trainers) nor of nnU-Net")
    finally:
        if old is None:
            os.environ.pop("nnunet_ext_recipes", None)
        else:
            os.environ["nnunet_ext_recipes"] = old


def _trainer_exists(name: str) -> bool:
    from nnunet_ext.trainers import trainer_by_name

    try:
        trainer_by_name(name)
        return True
    except AttributeError:
        pass
    import nnunetv2
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    folder = os.path.join(nnunetv2.__path__[0], "training", "nnUNetTrainer")
    return recursive_find_python_class(folder, name, "nnunetv2.training.nnUNetTrainer") is not None


def check_folds_and_configurations(study: Study, name: str, folders: dict[str, str]) -> None:
    """The folds must exist in the dataset's ``splits_final.json`` (nnU-Net makes 5 when there is none)."""
    splits = Path(folders["nnUNet_preprocessed"]) / name / "splits_final.json"
    n = len(json.loads(splits.read_text())) if splits.is_file() else 5
    for i, fold in enumerate(study.folds):
        if fold >= n:
            raise StudyError(study.source, f"folds[{i}]", f"fold {fold} is outside the dataset's {n} splits "
                                                          f"({splits if splits.is_file() else 'nnU-Net default'})")


def file_ending(name: str, folders: dict[str, str]) -> str:
    for root in (folders["nnUNet_preprocessed"], folders["nnUNet_raw"]):
        dj = Path(root) / name / "dataset.json"
        if dj.is_file():
            return json.loads(dj.read_text())["file_ending"]
    raise FileNotFoundError(f"no dataset.json of {name} in nnUNet_preprocessed or nnUNet_raw")


def test_cases(study: Study, ending: str) -> tuple[str, ...]:
    """Case ids of the test images (``<case>_0000<ending>``); checks the test folders."""
    if study.test is None:
        return ()
    images = Path(study.test["images"])
    if not images.is_dir():
        raise StudyError(study.source, "test.images", f"{images} is not a folder")
    cases = sorted(p.name[:-len("_0000" + ending)] for p in images.iterdir() if p.name.endswith("_0000" + ending))
    if not cases:
        raise StudyError(study.source, "test.images", f"no <case>_0000{ending} file in {images}")
    labels = study.test["labels"]
    if labels is not None:
        absent = [c for c in cases if not (Path(labels) / f"{c}{ending}").is_file()]
        if absent:
            raise StudyError(study.source, "test.labels", f"no label for {len(absent)} test case(s) in {labels}, "
                                                          f"e.g. {absent[0]}{ending}")
    return tuple(cases)
