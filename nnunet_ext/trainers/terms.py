"""The catalogue of loss terms a trainer (or a recipe) can add to nnU-Net's loss, by name.

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
deep-supervision level, sets them explicitly. The weight of a term is a number or a schedule of the epoch
(:mod:`nnunet_ext.schedules`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Mapping, Sequence

from nnunet_ext.losses import (BoundaryLoss, CenterlineBoundaryDiceLoss, FocalLoss, HausdorffDTLoss, LossTerm,
                               RegionVarianceLoss, SkeletonRecallLoss, SoftClDiceLoss, WeightedCrossEntropyLoss,
                               WeightedSoftDiceLoss)
from nnunet_ext.schedules import Schedule, schedule_from_spec
from nnunet_ext.targets import AuxiliaryTarget, centerline_radius_target, signed_distance_target, skeleton_tube_target

__all__ = ["TermConfig", "TermContext", "TERM_OPTIONS", "build_terms", "weights_at", "TermConfigError",
           "uses_data_iterations", "AUTO"]

#: option value of ``iterations`` that stands for the run's counts chosen from the training labels
AUTO = "auto"

#: every term name with its options and their defaults
TERM_OPTIONS: dict[str, dict[str, Any]] = {
    "cldice": {"iterations": "auto", "smooth": 1.0},
    "skeleton_recall": {"tube_radius": 2.0, "smooth": 1.0, "tube_shape": "ball"},
    "cbdice": {"iterations": "auto", "smooth": None, "formulation": "loader"},
    "boundary": {"empty": "zero"},
    "hausdorff": {"alpha": 2.0, "empty": "zero"},
    "focal": {"gamma": 2.0, "alpha": None},
    "weighted_ce": {"class_weights": None},
    "weighted_dice": {"class_weights": None, "smooth": 1e-5},
    "variance": {},
}


class TermConfigError(ValueError):
    """A term declaration is invalid; the message names the term and the option."""


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
    from nnunet_ext.trainers.skeleton_iterations import parse_iterations

    try:
        value = parse_iterations(value, f"{key}.iterations")
    except ValueError as error:
        raise TermConfigError(str(error)) from None
    if value != AUTO:
        return value
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

