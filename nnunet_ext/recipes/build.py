"""A resolved recipe meets a dataset: checks that need the dataset, and the objects a trainer uses.

:func:`check_for_dataset` is what makes a recipe fail before training when it cannot work on a dataset:
class-weight lists of the wrong length, α from class weights for sigmoid regions (α there balances
positives against negatives, a different quantity), term options the dataset's mode rejects, metric
expressions naming classes the dataset does not have. :func:`term_configs` gives the trainer its terms.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from nnunet_ext.lr_schedules import lr_schedule_from_spec
from nnunet_ext.metric_expressions import MetricExpression, MetricExpressionError, metric_variables
from nnunet_ext.recipes.schema import CLASS_WEIGHTS_REFERENCE, RecipeError
from nnunet_ext.schedules import schedule_from_spec
from nnunet_ext.term_catalogue import TermConfig, TermConfigError, TermContext, build_terms

__all__ = ["DatasetInfo", "dataset_info", "check_for_dataset", "term_configs", "class_weight_names"]


@dataclass(frozen=True)
class DatasetInfo:
    """What a recipe needs to know about a dataset.

    mode: ``"softmax"`` (labels) or ``"sigmoid"`` (regions); class_names: the foreground classes (label
    order) or regions (``regions_class_order`` order); classes: their label values / label tuples;
    ignore_label: or ``None``; batch_dice: nnU-Net's plans setting (Dice-type terms follow it).
    """

    mode: str
    class_names: tuple[str, ...]
    classes: tuple[Any, ...]
    ignore_label: int | None = None
    batch_dice: bool = False

    @property
    def n_foreground(self) -> int:
        return len(self.class_names)

    def context(self) -> TermContext:
        """A context for validating terms: ``iterations="auto"`` stands for a placeholder count (the run
        chooses the real one from its training labels)."""
        return TermContext(self.mode, self.batch_dice, self.n_foreground, skeleton_iterations=(1,))


def dataset_info(dataset_json: Mapping[str, Any], batch_dice: bool = False) -> DatasetInfo:
    """:class:`DatasetInfo` from a dataset.json, read with nnU-Net's own label handling."""
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    labels = dataset_json["labels"]
    manager = LabelManager(labels, dataset_json.get("regions_class_order"))
    if manager.has_regions:
        names = [k for k, v in labels.items() if k not in ("background", "ignore")
                 and not (isinstance(v, (list, tuple)) and set(v) == {0}) and v != 0]
        return DatasetInfo("sigmoid", tuple(names), tuple(manager.foreground_regions), manager.ignore_label, batch_dice)
    by_value = {int(v): k for k, v in labels.items() if k != "ignore" and not isinstance(v, (list, tuple))}
    foreground = manager.foreground_labels
    return DatasetInfo("softmax", tuple(by_value.get(int(v), str(v)) for v in foreground), tuple(foreground),
                       manager.ignore_label, batch_dice)


def class_weight_names(info: DatasetInfo) -> list[str]:
    """What the entries of a class-weight list stand for: background first for labels, regions otherwise."""
    return (["background"] if info.mode == "softmax" else []) + list(info.class_names)


def _expected_class_weights(info: DatasetInfo) -> int:
    return info.n_foreground + (1 if info.mode == "softmax" else 0)


def term_configs(recipe: Mapping[str, Any], info: DatasetInfo, class_weights: Sequence[float] | None) -> list[TermConfig]:
    """The recipe's terms as :class:`~nnunet_ext.term_catalogue.TermConfig`, with the recipe's class weights
    put where a term option names them (weighted Dice takes the foreground entries only)."""
    configs = []
    for label, term in recipe["terms"].items():
        options = dict(term["options"])
        for option, value in term["options"].items():
            if value == CLASS_WEIGHTS_REFERENCE:
                weights = None if class_weights is None else list(class_weights)
                if weights is not None and term["loss"] == "weighted_dice" and info.mode == "softmax":
                    weights = weights[1:]  # Dice ignores the background
                options[option] = weights
        configs.append(TermConfig(term["loss"], schedule_from_spec(term["weight"], f"terms.{label}.weight"), options,
                                  label if label != term["loss"] else None))
    return configs


def check_for_dataset(recipe: Mapping[str, Any], info: DatasetInfo, source: str) -> None:
    """Raise :class:`RecipeError` (naming ``source`` and the key) if the recipe cannot train on the dataset."""
    weights = recipe["class_weights"]
    expected = _expected_class_weights(info)
    what = ("background first, then " + ", ".join(info.class_names)) if info.mode == "softmax" else \
        "one per region: " + ", ".join(info.class_names)
    if weights is not None and weights["type"] == "manual" and len(weights["values"]) != expected:
        raise RecipeError(source, "class_weights", f"{len(weights['values'])} values for a dataset that needs "
                                                   f"{expected} ({what})")
    for label, term in recipe["terms"].items():
        if term["loss"] == "focal" and term["options"]["alpha"] == CLASS_WEIGHTS_REFERENCE and info.mode == "sigmoid":
            raise RecipeError(source, f"terms.{label}.options.alpha", "this dataset trains sigmoid regions, where "
                              "focal α balances positives against negatives within each region (values in [0, 1]); "
                              "class weights cannot serve as α. Give α per region, or use weighted_ce")
        alpha = term["options"].get("alpha") if term["loss"] == "focal" else None
        if isinstance(alpha, (list, tuple)) and len(alpha) != expected:
            raise RecipeError(source, f"terms.{label}.options.alpha",
                              f"{len(alpha)} values for a dataset that needs {expected} ({what})")
    dummy = None if weights is None else [1.0] * expected
    try:
        build_terms(term_configs(recipe, info, dummy), info.context())
    except (TermConfigError, TypeError, ValueError) as error:
        raise RecipeError(source, "terms", f"{error} (dataset: {info.mode} with {info.n_foreground} foreground "
                                           f"{'regions' if info.mode == 'sigmoid' else 'classes'})") from None
    per_epoch, patch = metric_variables(info.class_names)
    for name, metric in recipe["checkpoints"]["metrics"].items():
        try:
            MetricExpression.parse(metric["expression"], f"checkpoints.metrics.{name}.expression", per_epoch | patch)
        except MetricExpressionError as error:
            raise RecipeError(source, "", str(error)) from None
    schedule = lr_schedule_from_spec(recipe["lr_schedule"], "lr_schedule")
    if recipe["lr_schedule"]["type"] == "plateau":
        try:
            MetricExpression.parse(schedule.metric, "lr_schedule.metric", per_epoch)
        except MetricExpressionError as error:
            raise RecipeError(source, "", f"{error} (reduce-on-plateau reads per-epoch values only)") from None
