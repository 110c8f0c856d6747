"""The catalogue of loss terms a trainer (or a recipe) can add to nnU-Net's loss, by name.

It sits below both :mod:`nnunet_ext.recipes` and :mod:`nnunet_ext.trainers` (neither imports the other
for it); ``nnunet_ext.trainers.terms`` re-exports it.

A term is declared as :class:`TermConfig` ``(name, weight, options)``; :func:`build_terms` turns a list of
them into the :class:`~nnunet_ext.losses.LossTerm` objects of :class:`~nnunet_ext.losses.CompoundLoss`
and the :class:`~nnunet_ext.targets.AuxiliaryTarget` objects their ground truth needs (computed in
nnU-Net's augmentation workers; one target shared by every term that asks for the same one).

========================= ====================================== =========================================
name                      loss (``nnunet_ext.losses``)            options (defaults)
========================= ====================================== =========================================
``cldice``                SoftClDiceLoss                         iterations="auto", smooth=1.0
``skeleton_recall``       SkeletonRecallLoss + skeleton tubes    tube_radius=2.0, smooth=1.0, tube_shape="ball"
``cbdice``                CenterlineBoundaryDiceLoss + radii     iterations="auto", smooth=None, formulation="loader"
``boundary``              BoundaryLoss + signed distances        empty="zero"
``hausdorff``             HausdorffDTLoss + signed distances     alpha=2.0, empty="zero"
``focal``                 FocalLoss                              gamma=2.0, alpha=None
``weighted_ce``           WeightedCrossEntropyLoss               class_weights=None
``weighted_dice``         WeightedSoftDiceLoss                   class_weights=None, smooth=1e-5
``variance``              RegionVarianceLoss                     (none)
========================= ====================================== =========================================

``batch_dice`` (Dice-type terms) follows nnU-Net's plans; ``mode`` (softmax labels / sigmoid regions)
follows the dataset. ``iterations="auto"`` (soft-skeleton terms) takes the run's per-level counts chosen from
the training labels (:mod:`nnunet_ext.trainers.skeleton_iterations`); an int, or one int per
deep-supervision level, sets them explicitly.

Every option has a declared type and range (:data:`OPTION_SPECS`, :func:`check_option`), checked by
``nnunet-ext recipes check`` and before nnU-Net creates any folder; errors name
``terms.<term>.options.<option>``. The weight of a term is a number or a schedule of the epoch
(:mod:`nnunet_ext.schedules`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Mapping, Sequence

import numpy as np

from nnunet_ext.losses import (BoundaryLoss, CenterlineBoundaryDiceLoss, FocalLoss, HausdorffDTLoss, LossTerm,
                               RegionVarianceLoss, SkeletonRecallLoss, SoftClDiceLoss, WeightedCrossEntropyLoss,
                               WeightedSoftDiceLoss)
from nnunet_ext.schedules import Schedule, schedule_from_spec
from nnunet_ext.targets import AuxiliaryTarget, centerline_radius_target, signed_distance_target, skeleton_tube_target

__all__ = ["TermConfig", "TermContext", "TERM_OPTIONS", "OPTION_SPECS", "OptionSpec", "check_option", "build_terms",
           "weights_at", "TermConfigError", "uses_data_iterations", "needs_auxiliary_target", "AUTO",
           "CLASS_WEIGHTS_REFERENCE"]

#: option value of ``iterations`` that stands for the run's counts chosen from the training labels
AUTO = "auto"

#: an option value that stands for the recipe's class weights (recipes only)
CLASS_WEIGHTS_REFERENCE = "class_weights"


class TermConfigError(ValueError):
    """A term declaration is invalid; the message names the term and the option."""


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(float(value))


@dataclass(frozen=True)
class OptionSpec:
    """The declared type and range of one term option.

    kind: ``"number"`` (a finite number in the range), ``"choice"`` (one of ``choices``), ``"iterations"``
    (``"auto"``, an integer >= 0, or a non-empty list of them, one per deep-supervision level) or
    ``"weights"`` (a non-empty list of numbers >= 0, not all 0). ``low``/``high`` bound a number
    (``strict``: excluded); ``nullable``: ``null`` is allowed (meaning given in ``description``);
    ``scalar_range``: for ``"weights"``, a single number in this range is allowed too (focal α);
    ``class_weights``: the value ``"class_weights"`` (the recipe's class weights) is allowed.
    """

    default: Any
    kind: str
    description: str
    low: float | None = None
    high: float | None = None
    strict: bool = False
    choices: tuple = ()
    nullable: bool = False
    scalar_range: tuple[float, float] | None = None
    class_weights: bool = False

    def describe(self) -> str:
        """The accepted values, in words."""
        if self.kind == "number":
            low = "" if self.low is None else f"{'>' if self.strict else '>='} {self.low:g}"
            high = "" if self.high is None else f"<= {self.high:g}"
            text = "a number " + " and ".join(p for p in (low, high) if p) if (low or high) else "a number"
        elif self.kind == "choice":
            text = " or ".join(repr(c) for c in self.choices)
        elif self.kind == "iterations":
            text = "'auto', an integer >= 0, or a list of integers >= 0 (one per deep-supervision level)"
        else:
            text = "a list of numbers >= 0 (not all 0)"
            if self.scalar_range is not None:
                text = f"a number in [{self.scalar_range[0]:g}, {self.scalar_range[1]:g}] or " + text
        if self.class_weights:
            text += " or \"class_weights\" (the recipe's class weights)"
        if self.nullable:
            text += " or null"
        return text

    def check(self, value: Any, key: str) -> Any:
        """``value`` if it has this option's type and range, else :class:`TermConfigError` naming ``key``."""
        bad = TermConfigError(f"{key}: expected {self.describe()}, got {value!r}")
        if value is None:
            if self.nullable:
                return None
            raise bad
        if self.class_weights and value == CLASS_WEIGHTS_REFERENCE:
            return value
        if self.kind == "number":
            if not _is_number(value):
                raise bad
            v = float(value)
            if (self.low is not None and (v < self.low or (self.strict and v == self.low))) or \
                    (self.high is not None and v > self.high):
                raise bad
            return value
        if self.kind == "choice":
            if not isinstance(value, str) or value not in self.choices:
                raise bad
            return value
        if self.kind == "iterations":
            if value == AUTO:
                return value
            items = list(value) if isinstance(value, (list, tuple)) else [value]
            if not items or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0 for v in items):
                raise bad
            return value
        # weights
        if self.scalar_range is not None and _is_number(value):
            if not self.scalar_range[0] <= float(value) <= self.scalar_range[1]:
                raise bad
            return value
        if not isinstance(value, (list, tuple)) or not value or not all(_is_number(v) and v >= 0 for v in value) \
                or not any(value):
            raise bad
        return value


_SMOOTH = "additive smoothing of the ratios (keeps empty patches finite)"
_ITERATIONS = OptionSpec(AUTO, "iterations", "soft-skeleton iterations: 'auto' = chosen per deep-supervision level "
                                             "from the training labels")
_EMPTY = OptionSpec("zero", "choice", "distance map of a patch without the structure: 'zero' or the patch "
                                      "'diagonal'", choices=("zero", "diagonal"))
_CLASS_WEIGHTS = OptionSpec(None, "weights", "one weight per class (labels: background first) or region; null: "
                                             "unweighted", nullable=True, class_weights=True)

#: every term name with its options, their types, ranges and defaults
OPTION_SPECS: dict[str, dict[str, OptionSpec]] = {
    "cldice": {"iterations": _ITERATIONS, "smooth": OptionSpec(1.0, "number", _SMOOTH, low=0.0, strict=True)},
    "skeleton_recall": {
        "tube_radius": OptionSpec(2.0, "number", "radius of the tube around the skeleton, in voxels of the "
                                                 "finest spacing", low=0.0),
        "smooth": OptionSpec(1.0, "number", _SMOOTH, low=0.0, strict=True),
        "tube_shape": OptionSpec("ball", "choice", "'ball' (round in physical space) or 'authors' (the Skeleton "
                                                   "Recall authors' binary dilation)", choices=("ball", "authors"))},
    "cbdice": {"iterations": _ITERATIONS,
               "smooth": OptionSpec(None, "number", _SMOOTH + "; null: the formulation's default", low=0.0,
                                    strict=True, nullable=True),
               "formulation": OptionSpec("loader", "choice", "'loader' or 'shi2024' (Shi et al.'s published form)",
                                         choices=("loader", "shi2024"))},
    "boundary": {"empty": _EMPTY},
    "hausdorff": {"alpha": OptionSpec(2.0, "number", "exponent of the distances", low=0.0, strict=True),
                  "empty": _EMPTY},
    "focal": {"gamma": OptionSpec(2.0, "number", "focusing exponent (0: cross-entropy)", low=0.0),
              "alpha": OptionSpec(None, "weights", "class balance: one number in [0, 1], one weight per class or "
                                                   "region, or null (none)", nullable=True, scalar_range=(0.0, 1.0),
                                  class_weights=True)},
    "weighted_ce": {"class_weights": _CLASS_WEIGHTS},
    "weighted_dice": {"class_weights": OptionSpec(None, "weights", "one weight per foreground class or region; "
                                                                   "null: unweighted", nullable=True,
                                                  class_weights=True),
                      "smooth": OptionSpec(1e-5, "number", _SMOOTH, low=0.0, strict=True)},
    "variance": {},
}

#: every term name with its options and their defaults
TERM_OPTIONS: dict[str, dict[str, Any]] = {name: {o: s.default for o, s in options.items()}
                                           for name, options in OPTION_SPECS.items()}
#: terms whose ground truth is an auxiliary target (made by the data loader; absent from validation batches)
_AUXILIARY_TERMS = {"skeleton_recall", "cbdice", "boundary", "hausdorff"}


def needs_auxiliary_target(name: str) -> bool:
    """Whether term ``name`` needs an auxiliary target (it is then left out of nnU-Net's validation loss)."""
    return name in _AUXILIARY_TERMS


def check_option(term: str, option: str, value: Any, key: str) -> Any:
    """Check one option value of catalogue term ``term`` against its declared type and range.

    Raises
    ------
    TermConfigError
        Naming ``key`` (e.g. ``terms.cldice.options.iterations``): unknown option, wrong type, out of range.
    """
    specs = OPTION_SPECS[term]
    if option not in specs:
        raise TermConfigError(f"{key}: unknown option of {term}; it takes {sorted(specs) or 'no options'}")
    return specs[option].check(value, key)


@dataclass(frozen=True)
class TermContext:
    """What a term needs to know about the training run.

    mode: ``"softmax"`` (labels) or ``"sigmoid"`` (regions); batch_dice: nnU-Net's plans setting;
    n_foreground: foreground classes (softmax) or regions (sigmoid); skeleton_iterations: the soft-skeleton
    iteration count of every deep-supervision level that ``iterations="auto"`` stands for (``None`` when the
    run has none: an ``"auto"`` term is then refused).
    """

    mode: str
    batch_dice: bool
    n_foreground: int
    skeleton_iterations: tuple[int, ...] | None = None


@dataclass(frozen=True)
class TermConfig:
    """A term by catalogue name, its weight (number or schedule) and options (defaults filled in by
    :meth:`resolved_options`). ``label`` names the term in logs and weight tables (default: ``name``),
    so one loss may appear twice with different options."""

    name: str
    weight: float | Schedule = 1.0
    options: Mapping[str, Any] = field(default_factory=dict)
    label: str | None = None

    @property
    def key(self) -> str:
        return self.label or self.name

    def schedule(self) -> Schedule:
        return self.weight if callable(self.weight) else schedule_from_spec(self.weight, f"{self.key}.weight")

    def resolved_options(self) -> dict[str, Any]:
        if self.name not in TERM_OPTIONS:
            raise TermConfigError(f"unknown loss term {self.name!r}; known terms: {sorted(TERM_OPTIONS)}")
        unknown = set(self.options) - set(TERM_OPTIONS[self.name])
        if unknown:
            raise TermConfigError(f"{self.key}: unknown option(s) {sorted(unknown)}; "
                                  f"{self.name} takes {sorted(TERM_OPTIONS[self.name]) or 'no options'}")
        for option, value in self.options.items():
            if value != CLASS_WEIGHTS_REFERENCE:  # resolved by the recipe before the term is built
                check_option(self.name, option, value, f"{self.key}.{option}")
        return {**TERM_OPTIONS[self.name], **self.options}


def _class_weights(weights: Sequence[float] | None, n: int, mode: str, key: str):
    if weights is None:
        return None
    expected = n + 1 if mode == "softmax" else n
    if len(weights) != expected:
        what = "background first, then every foreground class" if mode == "softmax" else "one per region"
        raise TermConfigError(f"{key}.class_weights: expected {expected} values ({what}), got {len(weights)}")
    return tuple(float(w) for w in weights)


def uses_data_iterations(configs: Sequence[TermConfig]) -> bool:
    """Whether any term asks for the soft-skeleton iteration counts chosen from the data."""
    return any(c.resolved_options().get("iterations") == AUTO for c in configs)


def _iterations(value, context: TermContext, key: str):
    OPTION_SPECS["cldice"]["iterations"].check(value, f"{key}.iterations")
    if value != AUTO:
        return tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else int(value)
    if context.skeleton_iterations is None:
        raise TermConfigError(f"{key}.iterations: 'auto' needs the iteration counts chosen from the training "
                              f"labels, which this context does not have")
    return tuple(context.skeleton_iterations)


def _loss_and_auxiliary(config: TermConfig, context: TermContext):
    options = config.resolved_options()
    key, mode, batch_dice = config.key, context.mode, context.batch_dice
    try:
        if config.name == "cldice":
            return SoftClDiceLoss(_iterations(options["iterations"], context, key), options["smooth"], batch_dice), None
        if config.name == "skeleton_recall":
            radius, shape = float(options["tube_radius"]), options["tube_shape"]
            if shape not in ("ball", "authors"):
                raise TermConfigError(f"{key}.tube_shape: expected 'ball' or 'authors', got {shape!r}")
            name = "skeleton_tube" if (radius, shape) == (2.0, "ball") else f"skeleton_tube(r={radius:g},{shape})"
            aux = AuxiliaryTarget(name, 1, partial(skeleton_tube_target, tube_radius=radius, shape=shape))
            return SkeletonRecallLoss(options["smooth"], batch_dice), aux
        if config.name == "cbdice":
            aux = AuxiliaryTarget("centerline_radius", 2, centerline_radius_target)
            return CenterlineBoundaryDiceLoss(_iterations(options["iterations"], context, key), options["smooth"],
                                              batch_dice, formulation=options["formulation"]), aux
        if config.name in ("boundary", "hausdorff"):
            empty = options["empty"]
            if empty not in ("zero", "diagonal"):
                raise TermConfigError(f"{key}.empty: expected 'zero' or 'diagonal', got {empty!r}")
            aux = AuxiliaryTarget("signed_distance" if empty == "zero" else f"signed_distance(empty={empty})", 1,
                                  partial(signed_distance_target, empty=empty))
            loss = BoundaryLoss() if config.name == "boundary" else HausdorffDTLoss(options["alpha"])
            return loss, aux
        if config.name == "focal":
            alpha = options["alpha"]
            if isinstance(alpha, (list, tuple)):
                alpha = _class_weights(alpha, context.n_foreground, mode, key)
            return FocalLoss(mode, options["gamma"], alpha), None
        if config.name == "weighted_ce":
            return WeightedCrossEntropyLoss(mode, _class_weights(options["class_weights"], context.n_foreground,
                                                                 mode, key)), None
        if config.name == "weighted_dice":
            weights = options["class_weights"]
            if weights is not None and len(weights) != context.n_foreground:
                raise TermConfigError(f"{key}.class_weights: expected {context.n_foreground} values (one per "
                                      f"foreground class/region; Dice ignores the background), got {len(weights)}")
            return WeightedSoftDiceLoss(weights, options["smooth"], batch_dice), None
        return RegionVarianceLoss(), None
    except TermConfigError:
        raise
    except (TypeError, ValueError) as error:
        raise TermConfigError(f"{key}: {error}") from None


def build_terms(configs: Sequence[TermConfig], context: TermContext) -> tuple[list[LossTerm], tuple[AuxiliaryTarget, ...]]:
    """Loss terms (initial weight = the schedule's value at epoch 0) and the auxiliary targets they need
    (deduplicated by name, in order of first use).

    Raises
    ------
    TermConfigError
        Unknown term or option, bad option value, or two terms with the same label.
    """
    terms, auxiliary = [], {}
    seen = set()
    for config in configs:
        if config.key in seen or config.key == "base":
            raise TermConfigError(f"two terms are labelled {config.key!r} (or a term is labelled 'base'); "
                                  f"give them distinct labels")
        seen.add(config.key)
        loss, aux = _loss_and_auxiliary(config, context)
        if aux is not None:
            auxiliary.setdefault(aux.name, aux)
        terms.append(LossTerm(config.key, config.schedule()(0), loss, None if aux is None else aux.name))
    return terms, tuple(auxiliary.values())


def weights_at(configs: Sequence[TermConfig], epoch: int) -> dict[str, float]:
    """The weight of every term at ``epoch`` (0-based), by label."""
    return {c.key: c.schedule()(epoch) for c in configs}

