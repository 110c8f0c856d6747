"""What a recipe may contain, and its resolved form (every default filled in).

:func:`resolve` turns the parsed JSON of a recipe file into its resolved form: a plain dict with every key
present, schedules in their explicit ``{"type": ...}`` form and term options completed from the term
catalogue. The resolved form is what a run saves in its fold folder and compares on ``--c``; resolving a
resolved recipe gives it back unchanged.

Checks here need no dataset: unknown keys, wrong types, negative weights, schedules that outlast the
training, impossible LR/SWA/early-stopping settings. What depends on the dataset (number of classes,
softmax labels or sigmoid regions, class names in metric expressions) is checked by
:func:`nnunet_ext.recipes.dataset_check.check_for_dataset`.
"""
from __future__ import annotations

import math
import re
from typing import Any, Mapping

from nnunet_ext.lr_schedules import LRScheduleError, lr_schedule_from_spec
from nnunet_ext.schedules import ScheduleError, check_schedule, schedule_from_spec
from nnunet_ext.metric_expressions import SCHEDULE_DEPENDENT, MetricExpression, MetricExpressionError, infer_mode
from nnunet_ext.term_catalogue import CLASS_WEIGHTS_REFERENCE, OPTION_SPECS, TERM_OPTIONS, TermConfigError, check_option

__all__ = ["RecipeError", "resolve", "RECIPE_NAME", "CLASS_WEIGHT_OPTIONS", "CLASS_WEIGHTS_REFERENCE",
           "TOP_LEVEL_KEYS", "OPTIMIZER_DEFAULTS", "recipe_notes", "PLATEAU_DEFAULT_METRIC"]

#: a recipe name: letters and digits in groups joined by single underscores (no "__": nnU-Net splits its
#: results folder names ``<trainer>__<plans>__<configuration>`` on double underscores)
RECIPE_NAME = re.compile(r"^[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*$")
_LABEL = re.compile(r"^[A-Za-z0-9_]+$")

#: term options that may take the recipe's class weights by naming them
CLASS_WEIGHT_OPTIONS = {(term, option) for term, options in OPTION_SPECS.items() for option, spec in options.items()
                        if spec.class_weights}
#: what reduce-on-plateau follows unless the recipe says otherwise: nnU-Net's own validation loss, which
#: means the same at every epoch (``val_loss`` moves with the loss-weight schedules)
PLATEAU_DEFAULT_METRIC = "val_base_loss"

#: every optimizer with its fields and defaults (sgd: nnU-Net's own settings)
OPTIMIZER_DEFAULTS: dict[str, dict[str, Any]] = {
    "sgd": {"lr": 1e-2, "weight_decay": 3e-5, "momentum": 0.99, "nesterov": True},
    "adam": {"lr": 1e-3, "weight_decay": 0.0, "betas": [0.9, 0.999], "eps": 1e-8},
    "adamw": {"lr": 1e-3, "weight_decay": 1e-2, "betas": [0.9, 0.999], "eps": 1e-8},
}
_CLASS_WEIGHT_DEFAULTS = {"auto": {"power": 1.0, "max": 10.0}, "manual": {"values": None}}

TOP_LEVEL_KEYS = ("name", "description", "extends", "base_loss", "base_weight", "terms", "class_weights", "epochs",
                  "iterations_per_epoch", "val_iterations_per_epoch", "save_every", "optimizer", "lr_schedule",
                  "checkpoints", "early_stopping", "swa")


class RecipeError(ValueError):
    """A recipe is invalid. The message starts with the recipe file (or name) and the key."""

    def __init__(self, source: str, key: str, problem: str):
        self.source, self.key, self.problem = source, key, problem
        super().__init__(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")


def _keys(value: Any, key: str, allowed, source: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise RecipeError(source, key, f"expected a mapping, got {value!r}")
    unknown = [k for k in value if k not in allowed]
    if unknown:
        raise RecipeError(source, f"{key}.{unknown[0]}" if key else unknown[0],
                          f"unknown key; allowed here: {sorted(allowed)}")
    return value


def _int(value: Any, key: str, source: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise RecipeError(source, key, f"expected an integer >= {low}, got {value!r}")
    return int(value)


def _float(value: Any, key: str, source: str, low: float | None = None, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RecipeError(source, key, f"expected a finite number, got {value!r}")
    if low is not None and (value < low or (strict and value == low)):
        raise RecipeError(source, key, f"must be {'>' if strict else '>='} {low:g}, got {value!r}")
    return float(value)


def _weight(spec: Any, key: str, source: str, epochs: int) -> dict:
    try:
        return check_schedule(schedule_from_spec(spec, key), key, epochs).to_spec()
    except ScheduleError as error:
        raise RecipeError(source, "", str(error)) from None


def _class_weights(spec: Any, source: str) -> dict | None:
    key = "class_weights"
    if spec is None:
        return None
    if spec == "auto":
        spec = {"type": "auto"}
    elif isinstance(spec, (list, tuple)):
        spec = {"type": "manual", "values": list(spec)}
    if not isinstance(spec, Mapping) or spec.get("type") not in _CLASS_WEIGHT_DEFAULTS:
        raise RecipeError(source, key, f"expected null, \"auto\", a list of weights or {{\"type\": \"auto\"|\"manual\", "
                                       f"...}}, got {spec!r}")
    kind = spec["type"]
    _keys(spec, key, {"type", *_CLASS_WEIGHT_DEFAULTS[kind]}, source)
    if kind == "auto":
        power = _float(spec.get("power", 1.0), f"{key}.power", source, 0.0, strict=True)
        cap = _float(spec.get("max", 10.0), f"{key}.max", source, 1.0)
        return {"type": "auto", "power": power, "max": cap}
    values = spec.get("values")
    if not isinstance(values, (list, tuple)) or len(values) == 0:
        raise RecipeError(source, f"{key}.values", f"expected a non-empty list of weights, got {values!r}")
    checked = [_float(v, f"{key}.values[{i}]", source, 0.0) for i, v in enumerate(values)]
    if not any(checked):
        raise RecipeError(source, f"{key}.values", "all weights are 0")
    return {"type": "manual", "values": checked}


def _terms(spec: Any, source: str, epochs: int, has_class_weights: bool) -> dict:
    spec = {} if spec is None else spec
    if not isinstance(spec, Mapping):
        raise RecipeError(source, "terms", f"expected a mapping from term label to term, got {spec!r}")
    terms = {}
    for label, term in spec.items():
        key = f"terms.{label}"
        if not isinstance(label, str) or not _LABEL.match(label) or label == "base":
            raise RecipeError(source, key, "a term label is letters, digits and '_', and not 'base'")
        if isinstance(term, (int, float)) and not isinstance(term, bool):
            term = {"weight": term}
        _keys(term, key, {"loss", "weight", "options"}, source)
        loss = term.get("loss", label)
        if loss not in TERM_OPTIONS:
            raise RecipeError(source, f"{key}.loss" if "loss" in term else key,
                              f"unknown loss term {loss!r}; the catalogue has {sorted(TERM_OPTIONS)}")
        options = term.get("options", {}) or {}
        if not isinstance(options, Mapping):
            raise RecipeError(source, f"{key}.options", f"expected a mapping, got {options!r}")
        for option, value in options.items():
            if option not in TERM_OPTIONS[loss]:
                raise RecipeError(source, f"{key}.options.{option}",
                                  f"unknown option of {loss}; it takes {sorted(TERM_OPTIONS[loss]) or 'no options'}")
            if value != CLASS_WEIGHTS_REFERENCE:
                try:
                    check_option(loss, option, value, f"{key}.options.{option}")
                except TermConfigError as error:
                    raise RecipeError(source, "", str(error)) from None
            else:
                if (loss, option) not in CLASS_WEIGHT_OPTIONS:
                    raise RecipeError(source, f"{key}.options.{option}", "only weighted_ce.class_weights, "
                                      "weighted_dice.class_weights and focal.alpha can take the recipe's class weights")
                if not has_class_weights:
                    raise RecipeError(source, f"{key}.options.{option}",
                                      "refers to the recipe's class_weights, but the recipe sets none")
        terms[label] = {"loss": loss, "weight": _weight(term.get("weight", 1.0), f"terms.{label}.weight", source, epochs),
                        "options": {**TERM_OPTIONS[loss], **options}}
        _probe_term(label, terms[label], source)
    if has_class_weights and not any(v == CLASS_WEIGHTS_REFERENCE for t in terms.values() for v in t["options"].values()):
        raise RecipeError(source, "class_weights", "set, but no term uses them; give weighted_ce/weighted_dice the "
                          "option \"class_weights\": \"class_weights\" (or focal \"alpha\": \"class_weights\")")
    return terms


def _probe_term(label: str, term: Mapping[str, Any], source: str) -> None:
    """Build the term once, for a dataset shaped to fit its own class-weight lists, to check what the
    declared option types and ranges cannot (combinations) without knowing the dataset."""
    from nnunet_ext.term_catalogue import TermConfig, TermContext, build_terms

    options = {k: (None if v == CLASS_WEIGHTS_REFERENCE else v) for k, v in term["options"].items()}
    n_foreground = 1
    for option in ("class_weights", "alpha"):
        value = options.get(option)
        if isinstance(value, (list, tuple)):
            n_foreground = max(len(value) - (0 if term["loss"] == "weighted_dice" else 1), 1)
    try:
        build_terms([TermConfig(term["loss"], 1.0, options, label)],
                    TermContext("softmax", False, n_foreground, skeleton_iterations=(1,)))
    except (TermConfigError, TypeError, ValueError) as error:
        raise RecipeError(source, f"terms.{label}.options", str(error)) from None


def _optimizer(spec: Any, source: str) -> dict:
    spec = {"type": "sgd"} if spec is None else spec
    if not isinstance(spec, Mapping) or spec.get("type") not in OPTIMIZER_DEFAULTS:
        raise RecipeError(source, "optimizer.type" if isinstance(spec, Mapping) else "optimizer",
                          f"expected one of {sorted(OPTIMIZER_DEFAULTS)}, got {spec!r}")
    kind = spec["type"]
    defaults = OPTIMIZER_DEFAULTS[kind]
    _keys(spec, "optimizer", {"type", *defaults}, source)
    resolved: dict[str, Any] = {"type": kind}
    for name, default in defaults.items():
        value, key = spec.get(name, default), f"optimizer.{name}"
        if name == "nesterov":
            if not isinstance(value, bool):
                raise RecipeError(source, key, f"expected true or false, got {value!r}")
            resolved[name] = value
        elif name == "betas":
            if not isinstance(value, (list, tuple)) or len(value) != 2:
                raise RecipeError(source, key, f"expected two numbers in [0, 1), got {value!r}")
            resolved[name] = [_float(b, f"{key}[{i}]", source, 0.0) for i, b in enumerate(value)]
            if any(b >= 1 for b in resolved[name]):
                raise RecipeError(source, key, f"betas must be < 1, got {value!r}")
        elif name == "lr":
            resolved[name] = _float(value, key, source, 0.0, strict=True)
        else:
            resolved[name] = _float(value, key, source, 0.0)
    if kind == "sgd" and resolved["momentum"] >= 1:
        raise RecipeError(source, "optimizer.momentum", f"must be < 1, got {resolved['momentum']}")
    return resolved


def _checkpoints(spec: Any, source: str, epochs: int) -> dict:
    spec = {} if spec is None else spec
    _keys(spec, "checkpoints", {"every", "metrics"}, source)
    every = _int(spec.get("every", 1), "checkpoints.every", source, 1)
    if every > epochs:
        raise RecipeError(source, "checkpoints.every", f"metrics every {every} epochs never happen in {epochs} epochs")
    metrics = spec.get("metrics", {}) or {}
    if isinstance(metrics, (list, tuple)):
        metrics = {m: m for m in metrics}
    if not isinstance(metrics, Mapping):
        raise RecipeError(source, "checkpoints.metrics", f"expected a mapping from name to expression, got {metrics!r}")
    resolved = {}
    for name, metric in metrics.items():
        key = f"checkpoints.metrics.{name}"
        if not isinstance(name, str) or not _LABEL.match(name):
            raise RecipeError(source, key, "a metric name is letters, digits and '_' (it becomes the file name "
                                           "checkpoint_best_<name>.pth)")
        if isinstance(metric, str):
            metric = {"expression": metric}
        _keys(metric, key, {"expression", "mode"}, source)
        expression = metric.get("expression", name)
        try:
            MetricExpression.parse(expression, f"{key}.expression")
        except MetricExpressionError as error:
            raise RecipeError(source, "", str(error)) from None
        mode = metric.get("mode", infer_mode(expression))
        if mode is None:
            raise RecipeError(source, f"{key}.mode", f"the direction of {expression!r} is ambiguous (its variables "
                              f"do not all push it one way, or it is not monotone in them): set \"mode\": \"max\" "
                              f"(higher is better) or \"min\"")
        if mode not in ("min", "max"):
            raise RecipeError(source, f"{key}.mode", f"expected 'min' or 'max', got {mode!r}")
        resolved[name] = {"expression": expression.strip(), "mode": mode}
    return {"every": every, "metrics": resolved}


def _early_stopping(spec: Any, source: str, metrics: Mapping[str, Any], epochs: int) -> dict | None:
    if spec is None:
        return None
    _keys(spec, "early_stopping", {"metric", "patience", "min_delta"}, source)
    if not isinstance(metrics, Mapping):
        metrics = {}
    metric = spec.get("metric")
    if metric not in metrics:
        raise RecipeError(source, "early_stopping.metric", f"must name one of checkpoints.metrics "
                                                           f"({sorted(metrics) or 'none defined'}), got {metric!r}")
    patience = _int(spec.get("patience"), "early_stopping.patience", source, 1)
    return {"metric": metric, "patience": patience,
            "min_delta": _float(spec.get("min_delta", 0.0), "early_stopping.min_delta", source, 0.0)}


def _swa(spec: Any, source: str, epochs: int) -> dict | None:
    if spec is None:
        return None
    _keys(spec, "swa", {"start_epoch", "every", "lr", "bn_update_batches"}, source)
    start = _int(spec.get("start_epoch"), "swa.start_epoch", source, 0)
    if start > epochs - 1:
        raise RecipeError(source, "swa.start_epoch", f"epoch {start} is beyond the training (epochs 0–{epochs - 1})")
    lr = spec.get("lr")
    return {"start_epoch": start, "every": _int(spec.get("every", 1), "swa.every", source, 1),
            "lr": None if lr is None else _float(lr, "swa.lr", source, 0.0, strict=True),
            "bn_update_batches": _int(spec.get("bn_update_batches", 50), "swa.bn_update_batches", source, 0)}


def resolve(raw: Mapping[str, Any], name: str, source: str) -> dict:
    """The resolved form of a recipe (``extends`` already merged, see :mod:`nnunet_ext.recipes.loader`).

    Parameters
    ----------
    raw : mapping
        The recipe's JSON object.
    name : str
        The recipe's name (its file name without ``.json``).
    source : str
        The file (or a description of it) for error messages.

    Raises
    ------
    RecipeError
        Naming ``source`` and the key: unknown keys, wrong types, negative weights, schedules beyond the
        training length, invalid LR schedule/optimizer/metrics/early stopping/SWA.
    """
    _keys(raw, "", set(TOP_LEVEL_KEYS), source)
    if not RECIPE_NAME.match(name):
        raise RecipeError(source, "name", f"{name!r} is not a recipe name (letters and digits, groups joined by "
                                          f"single '_')")
    if raw.get("name", name) != name:
        raise RecipeError(source, "name", f"{raw['name']!r} differs from the file name {name!r}.json")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise RecipeError(source, "description", f"expected a string, got {description!r}")
    epochs = _int(raw.get("epochs", 1000), "epochs", source, 1)
    iterations = _int(raw.get("iterations_per_epoch", 250), "iterations_per_epoch", source, 1)
    val_iterations = _int(raw.get("val_iterations_per_epoch", max(1, iterations // 5)), "val_iterations_per_epoch",
                          source, 1)
    base_loss = raw.get("base_loss", "dice_ce")
    if base_loss not in ("dice_ce", "dice"):
        raise RecipeError(source, "base_loss", f"expected 'dice_ce' (nnU-Net's Dice+CE/BCE) or 'dice' (its soft "
                                               f"Dice alone), got {base_loss!r}")
    class_weights = _class_weights(raw.get("class_weights"), source)
    checkpoints = _checkpoints(raw.get("checkpoints"), source, epochs)
    try:
        raw_schedule = raw.get("lr_schedule")
        if isinstance(raw_schedule, Mapping) and raw_schedule.get("type") == "plateau" and "metric" not in raw_schedule:
            raw_schedule = {**raw_schedule, "metric": PLATEAU_DEFAULT_METRIC}
        lr_schedule = lr_schedule_from_spec(raw_schedule, "lr_schedule", epochs).to_spec()
        if lr_schedule["type"] == "plateau":
            key = "lr_schedule.metric"
            MetricExpression.parse(lr_schedule["metric"], key)
            if "mode" not in (raw_schedule or {}):
                mode = infer_mode(lr_schedule["metric"])
                if mode is None:
                    raise RecipeError(source, "lr_schedule.mode", f"the direction of {lr_schedule['metric']!r} is "
                                      f"ambiguous: set \"mode\": \"min\" or \"max\"")
                lr_schedule["mode"] = mode
    except (LRScheduleError, MetricExpressionError) as error:
        raise RecipeError(source, "", str(error)) from None
    return {
        "name": name,
        "description": description,
        "base_loss": base_loss,
        "base_weight": _weight(raw.get("base_weight", 1.0), "base_weight", source, epochs),
        "terms": _terms(raw.get("terms"), source, epochs, class_weights is not None),
        "class_weights": class_weights,
        "epochs": epochs,
        "iterations_per_epoch": iterations,
        "val_iterations_per_epoch": val_iterations,
        "save_every": _int(raw.get("save_every", 50), "save_every", source, 1),
        "optimizer": _optimizer(raw.get("optimizer"), source),
        "lr_schedule": lr_schedule,
        "checkpoints": checkpoints,
        "early_stopping": _early_stopping(raw.get("early_stopping"), source, checkpoints["metrics"], epochs),
        "swa": _swa(raw.get("swa"), source, epochs),
    }


def _weights_change(recipe: Mapping[str, Any]) -> list[str]:
    """Labels of the weights (``base`` and terms) that change during the training."""
    changing = []
    for label, spec in [("base", recipe["base_weight"])] + [(k, t["weight"]) for k, t in recipe["terms"].items()]:
        schedule = schedule_from_spec(spec, label)
        if len({schedule(e) for e in range(recipe["epochs"])}) > 1:
            changing.append(label)
    return changing


def recipe_notes(recipe: Mapping[str, Any]) -> list[str]:
    """Warnings about a valid resolved recipe: selection that may not mean what it seems (printed by
    ``recipes check`` and written to the training log)."""
    from nnunet_ext.term_catalogue import needs_auxiliary_target

    notes = []
    changing = _weights_change(recipe)
    followed = [(f"checkpoints.metrics.{n}", m["expression"]) for n, m in recipe["checkpoints"]["metrics"].items()]
    if recipe["lr_schedule"]["type"] == "plateau":
        followed.append(("lr_schedule.metric", recipe["lr_schedule"]["metric"]))
    for key, expression in followed:
        variables = MetricExpression.parse(expression, key).variables
        moving = sorted(v for v in variables if v in SCHEDULE_DEPENDENT)
        if moving and changing:
            notes.append(f"{key}: {', '.join(moving)} is the loss at the epoch's weights, and the weights of "
                         f"{', '.join(changing)} change during training, so its values are not comparable across "
                         f"epochs; val_base_loss (nnU-Net's loss alone) and val_loss_ref (the loss at the final "
                         f"weights) mean the same at every epoch")
        auxiliary = [k for k, t in recipe["terms"].items() if needs_auxiliary_target(t["loss"])]
        if "val_loss" in variables and auxiliary:
            notes.append(f"{key}: val_loss leaves out {', '.join(auxiliary)} (their auxiliary targets exist for "
                         f"training batches only), train_loss includes them")
    for name, metric in recipe["checkpoints"]["metrics"].items():
        inferred = infer_mode(metric["expression"])
        if inferred is not None and inferred != metric["mode"]:
            notes.append(f"checkpoints.metrics.{name}.mode: {metric['mode']!r} keeps the epoch where "
                         f"{metric['expression']!r} is {'lowest' if metric['mode'] == 'min' else 'highest'}, the "
                         f"opposite of what its variables suggest ({inferred!r})")
    swa, stopping = recipe["swa"], recipe["early_stopping"]
    if swa is not None and stopping is not None and stopping["patience"] <= swa["start_epoch"]:
        notes.append(f"swa.start_epoch: early stopping (patience {stopping['patience']}) can end the training "
                     f"before SWA starts at epoch {swa['start_epoch']}; checkpoint_swa.pth is then not written "
                     f"(the training log says so)")
    return notes
