"""Model selection during training: best-value trackers (one ``checkpoint_best_<metric>.pth`` each) and
early stopping, kept apart.

:class:`BestTracker` follows "best so far": any improvement, however small, moves the checkpoint.
:class:`EarlyStopping` follows "improved enough to reset patience": only a gain of more than ``min_delta``
over the value that last reset it. So ``min_delta`` decides when training stops, never which epoch a
checkpoint holds (dice 0.50, 0.54, 0.53, 0.52 with ``min_delta`` 0.05: the checkpoint holds epoch 1, and
patience counts from epoch 0).

The metric expressions themselves live in :mod:`nnunet_ext.metric_expressions` (re-exported here).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

from nnunet_ext.metric_expressions import (PATCH_METRICS, PER_EPOCH_VARIABLES, MetricExpression,  # noqa: F401
                                           MetricExpressionError, class_variables, default_mode, infer_mode,
                                           metric_variables, patch_metric_values, sanitize_class_name)

__all__ = ["MetricExpressionError", "MetricExpression", "metric_variables", "default_mode", "infer_mode",
           "BestTracker", "EarlyStopping", "PER_EPOCH_VARIABLES", "PATCH_METRICS", "sanitize_class_name",
           "patch_metric_values", "class_variables"]


def _better(value: float, reference: float, mode: str, margin: float = 0.0) -> bool:
    return value > reference + margin if mode == "max" else value < reference - margin


@dataclass
class BestTracker:
    """The best value of one metric so far (``mode`` ``"max"`` or ``"min"``): any improvement counts; NaN
    never does."""

    mode: str = "max"
    best: float | None = None
    best_epoch: int | None = None

    def update(self, value: float, epoch: int) -> bool:
        """Record ``value`` of ``epoch``; True if it is a new best."""
        if value != value:
            return False
        if self.best is not None and not _better(value, self.best, self.mode):
            return False
        self.best, self.best_epoch = float(value), int(epoch)
        return True

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]


@dataclass
class EarlyStopping:
    """Stop when a metric has not improved by more than ``min_delta`` for ``patience`` epochs.

    Call :meth:`update` with the metric's value in every evaluation epoch; it returns True once
    ``epoch - reference_epoch >= patience``, ``reference_epoch`` being the last epoch whose value beat the
    reference by more than ``min_delta`` (the first finite value sets it). Epochs without evaluation count
    as epochs without improvement; NaN never improves.
    """

    patience: int
    mode: str = "max"
    min_delta: float = 0.0
    reference: float | None = None
    reference_epoch: int | None = None
    stopped_epoch: int | None = None

    def update(self, value: float, epoch: int) -> bool:
        if self.stopped_epoch is not None:
            return True
        if value == value and (self.reference is None or _better(value, self.reference, self.mode, self.min_delta)):
            self.reference, self.reference_epoch = float(value), int(epoch)
        last = self.reference_epoch if self.reference_epoch is not None else -1
        if epoch - last >= self.patience:
            self.stopped_epoch = int(epoch)
            return True
        return False

    def state_dict(self) -> dict:
        return {"reference": self.reference, "reference_epoch": self.reference_epoch,
                "stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.reference, self.reference_epoch = state.get("reference"), state.get("reference_epoch")
        self.stopped_epoch = state["stopped_epoch"]
