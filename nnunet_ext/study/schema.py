"""The study file: what a study may contain, its defaults, and validation that names the key.

A study file is a JSON object (docs/studies.md has the full table)::

    {
      "dataset": 501,
      "configurations": ["3d_fullres"],
      "recipes": ["dice_ce", "cbdice", "dice_ce_cldice", "cbdice_cldice"],
      "folds": [0, 1, 2],
      "checkpoints": ["final", "best_dice", "best_cldice"],
      "postprocessing": {"objective": "dice,cldice"},
      "report": {"baseline": "Recipe_dice_ce"},
      "resources": {"train": {"gpus": 1, "cpus": 8, "memory_gb": 32, "time": "24:00:00"}}
    }

:func:`load_study` reads and validates a file and returns a :class:`Study` with every default filled in;
:func:`resolve_study` does the same for an already parsed object. Nothing here looks at the machine
(whether the dataset is preprocessed, the trainers exist, the folds are in the splits): that is
:mod:`nnunet_ext.study.checks`.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

__all__ = ["StudyError", "Study", "load_study", "resolve_study", "checkpoint_file", "JOB_KINDS",
           "RESOURCE_FIELDS", "DEFAULT_METRICS", "parse_time_minutes", "STUDY_NAME", "TOP_LEVEL_KEYS"]

#: a study name: it names a folder and SLURM jobs (letters, digits, '_', '-', '.')
STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_CONFIGURATION = re.compile(r"^[A-Za-z0-9_]+$")
_TRAINER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CHECKPOINT = re.compile(r"^(final|latest|best|swa|best_[A-Za-z0-9_]+)$")

#: the kinds of job a study runs; resources are given per kind (``default`` for the others)
JOB_KINDS = ("plan", "train", "validate", "best", "ensemble", "postprocess", "predict", "evaluate", "report")
RESOURCE_FIELDS = ("gpus", "cpus", "memory_gb", "time")
#: what a job gets when the study says nothing: one GPU for the jobs that run a network, 4 CPUs, 16 GB, 1 day
_RESOURCE_DEFAULTS = {"gpus": 0, "cpus": 4, "memory_gb": 16.0, "time": 24 * 60}
_GPU_KINDS = ("train", "validate", "predict")
#: the report's metrics: the MiniVess table of the background material
DEFAULT_METRICS = ("dice", "cldice", "masd", "hd95", "betti_0_error", "betti_1_error")

TOP_LEVEL_KEYS = ("name", "description", "dataset", "plans", "configurations", "trainers", "recipes",
                  "recipes_folders", "folds", "checkpoints", "device", "postprocessing", "find_best_configuration",
                  "ensembles", "test", "report", "resources", "slurm", "workdir", "seed")


class StudyError(ValueError):
    """A study file is invalid. The message starts with the file and the key."""

    def __init__(self, source: str, key: str, problem: str):
        self.source, self.key, self.problem = source, key, problem
        super().__init__(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")


@dataclass(frozen=True)
class Study:
    """A validated study: every key present, paths absolute (relative ones are taken from the study file's
    folder). ``trainers`` holds trainer names (recipes as ``Recipe_<name>``), in the file's order."""

    name: str
    source: str
    description: str
    dataset: str
    plans: str
    configurations: tuple[str, ...]
    trainers: tuple[str, ...]
    recipes_folders: tuple[str, ...]
    folds: tuple[int, ...]
    checkpoints: tuple[str, ...]
    device: str
    postprocessing: dict | None
    find_best_configuration: bool
    ensembles: tuple[dict, ...]
    test: dict | None
    report: dict
    resources: dict
    slurm: dict
    workdir: str | None
    budget: tuple[int, int | None] | None = field(default=None)
    seed: int | None = field(default=None)

    def resources_of(self, kind: str) -> dict:
        """Resources of a job kind: its own entry over ``default`` over the built-in defaults."""
        return dict(self.resources[kind])

    @property
    def models(self) -> list[tuple[str, str]]:
        """Every (trainer, configuration) pair the study trains."""
        return [(t, c) for t in self.trainers for c in self.configurations]


def checkpoint_file(name: str) -> str:
    """``"final"`` → ``"checkpoint_final.pth"``, ``"best_dice"`` → ``"checkpoint_best_dice.pth"``."""
    return f"checkpoint_{name}.pth"


def parse_time_minutes(value: Any, key: str, source: str) -> int:
    """A time limit as minutes: an integer (minutes) or SLURM's ``"[D-]HH:MM[:SS]"`` / ``"MM"``."""
    if isinstance(value, bool):
        raise StudyError(source, key, f"expected minutes or \"[D-]HH:MM:SS\", got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise StudyError(source, key, f"expected at least 1 minute, got {value!r}")
        return value
    if isinstance(value, str):
        match = re.match(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$", value.strip())
        if match:
            days, first, second, third = match.groups()
            if second is None and days is None:  # "MM"
                minutes = int(first)
            elif third is None and days is None:  # "HH:MM" would be SLURM's MM:SS; accept only with seconds
                minutes = int(first) + math.ceil(int(second) / 60)
            else:
                hours, mins, secs = int(first), int(second or 0), int(third or 0)
                minutes = int(days or 0) * 24 * 60 + hours * 60 + mins + math.ceil(secs / 60)
            if minutes >= 1:
                return minutes
    raise StudyError(source, key, f"expected minutes or \"[D-]HH:MM:SS\", got {value!r}")


# --- small checks ----------------------------------------------------------------------------------

def _keys(value: Any, key: str, allowed, source: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise StudyError(source, key, f"expected a mapping, got {value!r}")
    unknown = [k for k in value if k not in allowed]
    if unknown:
        where = f"{key}.{unknown[0]}" if key else str(unknown[0])
        raise StudyError(source, where, f"unknown key; allowed here: {sorted(allowed)}")
    return value


def _int(value: Any, key: str, source: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise StudyError(source, key, f"expected an integer >= {low}, got {value!r}")
    return int(value)


def _number(value: Any, key: str, source: str, low: float, strict: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < low or (strict and value == low):
        raise StudyError(source, key, f"expected a number {'>' if strict else '>='} {low:g}, got {value!r}")
    return float(value)


def _string_list(value: Any, key: str, source: str, pattern: re.Pattern | None = None, what: str = "name",
                 allow_empty: bool = False) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or (not value and not allow_empty):
        raise StudyError(source, key, f"expected a non-empty list of {what}s, got {value!r}")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or (pattern is not None and not pattern.match(item)):
            raise StudyError(source, f"{key}[{i}]", f"{item!r} is not a valid {what}")
        if item in out:
            raise StudyError(source, f"{key}[{i}]", f"{item!r} appears twice")
        out.append(item)
    return out


def _path(value: Any, key: str, source: str, base: Path) -> str:
    if not isinstance(value, str) or not value.strip():
        raise StudyError(source, key, f"expected a path, got {value!r}")
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


# --- sections --------------------------------------------------------------------------------------

def _dataset(value: Any, source: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 1000:
        return str(value)
    if isinstance(value, str) and (re.match(r"^\d{1,3}$", value) or re.match(r"^Dataset\d{3}_[A-Za-z0-9_.-]+$", value)):
        return value
    raise StudyError(source, "dataset", f"expected a dataset id (1–999) or name DatasetNNN_Name, got {value!r}")


def _trainers(raw: Mapping[str, Any], source: str) -> list[str]:
    from nnunet_ext.recipes.schema import RECIPE_NAME

    trainers = _string_list(raw["trainers"], "trainers", source, _TRAINER, "trainer name",
                            allow_empty=True) if "trainers" in raw else []
    recipes = _string_list(raw["recipes"], "recipes", source, RECIPE_NAME, "recipe name",
                           allow_empty=True) if "recipes" in raw else []
    for i, recipe in enumerate(recipes):
        if f"Recipe_{recipe}" in trainers:
            raise StudyError(source, f"recipes[{i}]", f"{recipe!r} is also listed as trainer Recipe_{recipe}")
    for i, trainer in enumerate(trainers):
        if "__" in trainer:
            raise StudyError(source, f"trainers[{i}]", f"{trainer!r} contains '__', which nnU-Net's results folder "
                                                       f"names <trainer>__<plans>__<configuration> cannot hold")
    names = trainers + [f"Recipe_{r}" for r in recipes]
    if not names:
        raise StudyError(source, "trainers", "the study trains nothing: give \"trainers\" and/or \"recipes\"")
    return names


def _folds(value: Any, source: str) -> list[int]:
    if not isinstance(value, (list, tuple)) or not value:
        raise StudyError(source, "folds", f"expected a non-empty list of fold numbers, got {value!r}")
    folds = []
    for i, fold in enumerate(value):
        if isinstance(fold, str) and fold.isdigit():
            fold = int(fold)
        fold = _int(fold, f"folds[{i}]", source, 0)
        if fold in folds:
            raise StudyError(source, f"folds[{i}]", f"fold {fold} appears twice")
        folds.append(fold)
    return folds


def _checkpoints(value: Any, source: str) -> list[str]:
    names = _string_list(value, "checkpoints", source, None, "checkpoint")
    out = []
    for i, name in enumerate(names):
        short = name[len("checkpoint_"):] if name.startswith("checkpoint_") else name
        short = short[:-len(".pth")] if short.endswith(".pth") else short
        if not _CHECKPOINT.match(short):
            raise StudyError(source, f"checkpoints[{i}]", f"{name!r} is not a checkpoint; expected final, latest, "
                                                          f"best, swa or best_<metric> (checkpoint_<name>.pth)")
        if short in out:
            raise StudyError(source, f"checkpoints[{i}]", f"{name!r} appears twice")
        out.append(short)
    return out


def _postprocessing(value: Any, source: str) -> dict | None:
    if value is None or value is False:
        return None
    if value is True:
        value = {}
    _keys(value, "postprocessing", {"objective"}, source)
    objective = value.get("objective", "dice")
    if not isinstance(objective, str) or not objective.strip():
        raise StudyError(source, "postprocessing.objective", f"expected a metric expression such as "
                                                             f"\"dice\" or \"dice=0.7,betti_0_error=0.05\", got {objective!r}")
    from nnunet_ext.postprocessing.determine import parse_objective

    try:
        parse_objective(objective)
    except ValueError as error:
        raise StudyError(source, "postprocessing.objective", str(error)) from None
    return {"objective": objective.strip()}


def _ensembles(value: Any, source: str, trainers: list[str], configurations: list[str]) -> list[dict]:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise StudyError(source, "ensembles", f"expected a list of ensembles, got {value!r}")
    out, names = [], set()
    for i, entry in enumerate(value):
        key = f"ensembles[{i}]"
        _keys(entry, key, {"name", "members", "weights"}, source)
        name = entry.get("name")
        if not isinstance(name, str) or not STUDY_NAME.match(name):
            raise StudyError(source, f"{key}.name", f"expected a name (letters, digits, '_', '-', '.'), got {name!r}")
        if name in names:
            raise StudyError(source, f"{key}.name", f"ensemble {name!r} appears twice")
        names.add(name)
        members = entry.get("members")
        if not isinstance(members, (list, tuple)) or len(members) < 2:
            raise StudyError(source, f"{key}.members", f"expected at least two \"<trainer>/<configuration>\" members, "
                                                       f"got {members!r}")
        parsed = []
        for j, member in enumerate(members):
            if not isinstance(member, str) or member.count("/") != 1:
                raise StudyError(source, f"{key}.members[{j}]", f"expected \"<trainer>/<configuration>\", got {member!r}")
            trainer, configuration = member.split("/")
            if trainer not in trainers:
                raise StudyError(source, f"{key}.members[{j}]", f"trainer {trainer!r} is not one of the study's "
                                                                f"trainers {trainers}")
            if configuration not in configurations:
                raise StudyError(source, f"{key}.members[{j}]", f"configuration {configuration!r} is not one of the "
                                                                f"study's configurations {configurations}")
            if (trainer, configuration) in parsed:
                raise StudyError(source, f"{key}.members[{j}]", f"{member!r} appears twice")
            parsed.append((trainer, configuration))
        weights = entry.get("weights", "fit")
        if isinstance(weights, (list, tuple)):
            if len(weights) != len(parsed):
                raise StudyError(source, f"{key}.weights", f"{len(weights)} weight(s) for {len(parsed)} members")
            weights = [_number(w, f"{key}.weights[{j}]", source, 0.0, strict=False) for j, w in enumerate(weights)]
            if not any(weights):
                raise StudyError(source, f"{key}.weights", "all weights are 0")
        elif weights not in ("fit", "equal"):
            raise StudyError(source, f"{key}.weights", f"expected \"fit\", \"equal\" or one number per member, "
                                                       f"got {weights!r}")
        out.append({"name": name, "members": [list(m) for m in parsed], "weights": weights})
    return out


def _test(value: Any, source: str, base: Path) -> dict | None:
    if value is None:
        return None
    _keys(value, "test", {"images", "labels", "uncertainty", "tta"}, source)
    if "images" not in value:
        raise StudyError(source, "test.images", "required: the folder of test images (<case>_<XXXX><ending>)")
    uncertainty = value.get("uncertainty", [])
    known = ("variance", "entropy", "mutual_information")
    uncertainty = _string_list(uncertainty, "test.uncertainty", source, None, "uncertainty kind", allow_empty=True)
    for i, kind in enumerate(uncertainty):
        if kind not in known:
            raise StudyError(source, f"test.uncertainty[{i}]", f"{kind!r} is not one of {list(known)}")
    tta = value.get("tta", True)
    if not isinstance(tta, bool):
        raise StudyError(source, "test.tta", f"expected true or false, got {tta!r}")
    labels = value.get("labels")
    return {"images": _path(value["images"], "test.images", source, base),
            "labels": None if labels is None else _path(labels, "test.labels", source, base),
            "uncertainty": uncertainty, "tta": tta}


def _report(value: Any, source: str, trainers: list[str]) -> dict:
    from nnunet_ext.evaluation.case import METRICS

    value = {} if value is None else value
    _keys(value, "report", {"baseline", "metrics", "bootstrap", "confidence", "plots", "seed"}, source)
    baseline = value.get("baseline", trainers[0])
    if baseline not in trainers:
        recipe = f"Recipe_{baseline}" if isinstance(baseline, str) else None
        if recipe in trainers:
            baseline = recipe
        else:
            raise StudyError(source, "report.baseline", f"{baseline!r} is not one of the study's trainers {trainers}")
    metrics = _string_list(value.get("metrics", list(DEFAULT_METRICS)), "report.metrics", source, None, "metric")
    for i, metric in enumerate(metrics):
        if metric not in METRICS:
            raise StudyError(source, f"report.metrics[{i}]", f"{metric!r} is not a metric; known: {sorted(METRICS)}")
    confidence = _number(value.get("confidence", 0.95), "report.confidence", source, 0.0)
    if confidence >= 1:
        raise StudyError(source, "report.confidence", f"expected a number in (0, 1), got {confidence!r}")
    plots = value.get("plots", True)
    if not isinstance(plots, bool):
        raise StudyError(source, "report.plots", f"expected true or false, got {plots!r}")
    return {"baseline": baseline, "metrics": metrics, "confidence": confidence, "plots": plots,
            "bootstrap": _int(value.get("bootstrap", 10000), "report.bootstrap", source, 100),
            "seed": _int(value.get("seed", 0), "report.seed", source, 0)}


def _one_resource(value: Any, key: str, source: str) -> dict:
    _keys(value, key, set(RESOURCE_FIELDS), source)
    out = {}
    if "gpus" in value:
        out["gpus"] = _int(value["gpus"], f"{key}.gpus", source, 0)
    if "cpus" in value:
        out["cpus"] = _int(value["cpus"], f"{key}.cpus", source, 1)
    if "memory_gb" in value:
        out["memory_gb"] = _number(value["memory_gb"], f"{key}.memory_gb", source, 0.0)
    if "time" in value:
        out["time"] = parse_time_minutes(value["time"], f"{key}.time", source)
    return out


def _resources(value: Any, source: str, device: str) -> dict:
    value = {} if value is None else value
    _keys(value, "resources", {"default", *JOB_KINDS}, source)
    default = {**_RESOURCE_DEFAULTS, **_one_resource(value.get("default", {}), "resources.default", source)}
    out = {}
    for kind in JOB_KINDS:
        own = _one_resource(value.get(kind, {}), f"resources.{kind}", source)
        gpus = 1 if kind in _GPU_KINDS and device == "cuda" and "gpus" not in value.get("default", {}) else default["gpus"]
        out[kind] = {**default, "gpus": gpus, **own}
        if device != "cuda" and out[kind]["gpus"] > 0:
            where = f"resources.{kind}.gpus" if "gpus" in own else "resources.default.gpus"
            raise StudyError(source, where, f"{out[kind]['gpus']} GPU(s) asked for, but the study's device is "
                                            f"{device!r} (set \"device\": \"cuda\")")
        if kind not in _GPU_KINDS and "gpus" in own and own["gpus"] > 0:
            raise StudyError(source, f"resources.{kind}.gpus", f"{kind} jobs run on the CPU; give GPUs to train, "
                                                               f"validate and predict")
    return out


def _slurm(value: Any, source: str) -> dict:
    value = {} if value is None else value
    allowed = {"partition", "account", "qos", "constraint", "stagger_minutes", "max_requeues", "setup",
               "additional_parameters"}
    _keys(value, "slurm", allowed, source)
    out: dict[str, Any] = {}
    for key in ("partition", "account", "qos", "constraint"):
        if value.get(key) is not None:
            if not isinstance(value[key], str) or not value[key].strip():
                raise StudyError(source, f"slurm.{key}", f"expected a string, got {value[key]!r}")
            out[key] = value[key]
    out["stagger_minutes"] = _int(value.get("stagger_minutes", 5), "slurm.stagger_minutes", source, 0)
    out["max_requeues"] = _int(value.get("max_requeues", 3), "slurm.max_requeues", source, 0)
    setup = value.get("setup", [])
    out["setup"] = _string_list(setup, "slurm.setup", source, None, "shell line", allow_empty=True)
    extra = value.get("additional_parameters", {})
    if not isinstance(extra, Mapping) or not all(isinstance(k, str) for k in extra):
        raise StudyError(source, "slurm.additional_parameters", f"expected a mapping of sbatch options, got {extra!r}")
    for reserved in ("dependency", "cpus_per_task", "gpus_per_node", "mem", "time"):
        if reserved in extra:
            raise StudyError(source, f"slurm.additional_parameters.{reserved}",
                             "set by the study itself (dependencies from the graph, sizes from \"resources\")")
    out["additional_parameters"] = dict(extra)
    return out


def resolve_study(raw: Any, source: str, base: Path | None = None, default_name: str | None = None) -> Study:
    """The validated :class:`Study` of a parsed study file.

    Parameters
    ----------
    raw : the JSON object
    source : the file (for error messages)
    base : folder that relative paths are taken from (default: the current folder)
    default_name : the study's name when the file has no ``name`` (the file name without ``.json``)

    Raises
    ------
    StudyError
        Naming ``source`` and the key: unknown keys, wrong types, duplicates, ensemble members outside the
        study, a baseline that is not trained, impossible resources.
    """
    base = Path.cwd() if base is None else Path(base)
    if not isinstance(raw, Mapping):
        raise StudyError(source, "", f"a study is a JSON object, got {type(raw).__name__}")
    _keys(raw, "", set(TOP_LEVEL_KEYS), source)
    name = raw.get("name", default_name)
    if not isinstance(name, str) or not STUDY_NAME.match(name):
        raise StudyError(source, "name", f"expected a name (letters, digits, '_', '-', '.'), got {name!r}")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise StudyError(source, "description", f"expected a string, got {description!r}")
    if "dataset" not in raw:
        raise StudyError(source, "dataset", "required: the dataset id or name")
    dataset = _dataset(raw["dataset"], source)
    plans = raw.get("plans", "nnUNetPlans")
    if not isinstance(plans, str) or not _TRAINER.match(plans) or "__" in plans:
        raise StudyError(source, "plans", f"expected a plans identifier such as nnUNetPlans, got {plans!r}")
    configurations = _string_list(raw.get("configurations", ["3d_fullres"]), "configurations", source,
                                  _CONFIGURATION, "configuration")
    trainers = _trainers(raw, source)
    folds = _folds(raw.get("folds", [0, 1, 2, 3, 4]), source)
    checkpoints = _checkpoints(raw.get("checkpoints", ["final"]), source)
    device = raw.get("device", "cuda")
    if device not in ("cuda", "cpu", "mps"):
        raise StudyError(source, "device", f"expected \"cuda\", \"cpu\" or \"mps\", got {device!r}")
    find_best = raw.get("find_best_configuration", True)
    if not isinstance(find_best, bool):
        raise StudyError(source, "find_best_configuration", f"expected true or false, got {find_best!r}")
    folders = raw.get("recipes_folders", [])
    folders = [_path(f, f"recipes_folders[{i}]", source, base)
               for i, f in enumerate(_string_list(folders, "recipes_folders", source, None, "folder", allow_empty=True))]
    workdir = raw.get("workdir")
    seed = raw.get("seed")
    if seed is not None:
        seed = _int(seed, "seed", source, 0)
    return Study(
        name=name, source=source, description=description, dataset=dataset, plans=plans,
        configurations=tuple(configurations), trainers=tuple(trainers), recipes_folders=tuple(folders),
        folds=tuple(folds), checkpoints=tuple(checkpoints), device=device,
        postprocessing=_postprocessing(raw.get("postprocessing", {"objective": "dice"}), source),
        find_best_configuration=find_best,
        ensembles=tuple(_ensembles(raw.get("ensembles"), source, trainers, configurations)),
        test=_test(raw.get("test"), source, base),
        report=_report(raw.get("report"), source, trainers),
        resources=_resources(raw.get("resources"), source, device),
        slurm=_slurm(raw.get("slurm"), source),
        workdir=None if workdir is None else _path(workdir, "workdir", source, base),
        seed=seed,
    )


def load_study(path: str | Path) -> Study:
    """Read and validate a study file (UTF-8 JSON); errors name the file and the key."""
    from nnunet_ext.recipes.loader import decode_utf8_json
    from nnunet_ext.recipes.schema import RecipeError

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise StudyError(str(path), "", f"cannot read the file: {error.strerror or error}") from None
    try:
        text = decode_utf8_json(data, str(path))
    except RecipeError as error:
        raise StudyError(str(path), "", error.problem.replace("recipes are", "studies are")) from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise StudyError(str(path), "", f"not valid JSON: {error.msg} at line {error.lineno}, column "
                                        f"{error.colno}") from None
    return resolve_study(raw, str(path), base=path.resolve().parent, default_name=path.stem)
