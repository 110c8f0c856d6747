"""Loss-weight schedules: pure functions of the (0-based) epoch.

A schedule is a frozen dataclass that is called with the epoch and returns the weight of a loss term
for that epoch. Being pure functions of the epoch (no internal state), schedules resume exactly after
``nnUNetv2_train --c``: the weight of epoch ``e`` does not depend on how training got there.

Four shapes cover what nnU-Net users hand-code today:

=========== =====================================================================================
constant    ``w(e) = value``
linear      ``start_value`` before ``start_epoch``, ``end_value`` from ``end_epoch`` on, a straight
            line in between (e.g. a boundary term ramped from 0 to 0.5 over epochs 300–600)
step        piecewise constant: ``values[i]`` from ``epochs[i]`` on (a curriculum: "Dice only for N
            epochs, then add topology" is ``step(epochs=[0, N], values=[0, w])``)
cosine      half a cosine from ``start_value`` (at ``start_epoch``) to ``end_value`` (at ``end_epoch``),
            constant outside
=========== =====================================================================================

:func:`schedule_from_spec` builds one from its JSON/YAML form: a number (constant) or a mapping with a
``type`` key and the fields above; :meth:`to_spec` gives that form back (every default filled in).

Examples
--------
>>> ramp = schedule_from_spec({"type": "linear", "start_epoch": 300, "end_epoch": 600, "end_value": 0.5})
>>> ramp(0), ramp(450), ramp(999)
(0.0, 0.25, 0.5)
>>> schedule_from_spec(1.0)(123)
1.0
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence, Union

__all__ = ["Constant", "Linear", "Step", "Cosine", "Schedule", "ScheduleError", "schedule_from_spec", "check_schedule"]


class ScheduleError(ValueError):
    """A schedule specification is invalid; the message names the offending key."""


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ScheduleError(f"{key}: expected a finite number, got {value!r}")
    return float(value)


def _epoch(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ScheduleError(f"{key}: expected an epoch (integer >= 0), got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Constant:
    """``w(e) = value`` for every epoch."""

    value: float

    def __call__(self, epoch: int) -> float:
        return self.value

    @property
    def last_change_epoch(self) -> int:
        """The last epoch at which the weight still changes (0 for a constant)."""
        return 0

    def values(self) -> tuple[float, ...]:
        return (self.value,)

    def to_spec(self) -> dict:
        return {"type": "constant", "value": self.value}


@dataclass(frozen=True)
class _Transition:
    """From ``start_value`` (up to ``start_epoch``) to ``end_value`` (from ``end_epoch`` on); the
    subclass gives the shape in between as a function of ``f = (e - start_epoch)/(end_epoch - start_epoch)``."""

    start_epoch: int
    end_epoch: int
    start_value: float = 0.0
    end_value: float = 1.0

    def __post_init__(self):
        if self.end_epoch <= self.start_epoch:
            raise ScheduleError(f"end_epoch ({self.end_epoch}) must be greater than start_epoch ({self.start_epoch})")

    def __call__(self, epoch: int) -> float:
        if epoch <= self.start_epoch:
            return self.start_value
        if epoch >= self.end_epoch:
            return self.end_value
        return self._between((epoch - self.start_epoch) / (self.end_epoch - self.start_epoch))

    def _between(self, fraction: float) -> float:  # 0 < fraction < 1
        raise NotImplementedError

    @property
    def last_change_epoch(self) -> int:
        return self.end_epoch

    def values(self) -> tuple[float, ...]:
        return (self.start_value, self.end_value)

    def to_spec(self) -> dict:
        return {"type": self.spec_type, **asdict(self)}


@dataclass(frozen=True)
class Linear(_Transition):
    """Straight line from ``(start_epoch, start_value)`` to ``(end_epoch, end_value)``, constant outside."""

    spec_type = "linear"

    def _between(self, fraction: float) -> float:
        return self.start_value + fraction * (self.end_value - self.start_value)


@dataclass(frozen=True)
class Cosine(_Transition):
    """Half a cosine from ``start_value`` at ``start_epoch`` to ``end_value`` at ``end_epoch``:
    ``w(e) = end + (start - end) · (1 + cos(π·f)) / 2`` with ``f = (e - start_epoch)/(end_epoch - start_epoch)``
    clipped to [0, 1]."""

    spec_type = "cosine"

    def _between(self, fraction: float) -> float:
        return self.end_value + (self.start_value - self.end_value) * (1 + math.cos(math.pi * fraction)) / 2


@dataclass(frozen=True)
class Step:
    """Piecewise constant: ``values[i]`` from epoch ``epochs[i]`` on; ``epochs`` strictly increasing and
    starting at 0 (so every epoch has a value)."""

    epochs: tuple[int, ...]
    values_: tuple[float, ...]

    def __post_init__(self):
        if len(self.epochs) == 0 or len(self.epochs) != len(self.values_):
            raise ScheduleError(f"epochs and values must be non-empty and of equal length, got {len(self.epochs)} "
                                f"epochs and {len(self.values_)} values")
        if self.epochs[0] != 0:
            raise ScheduleError(f"epochs must start at 0 (the weight of the first epochs), got {list(self.epochs)}")
        if any(b <= a for a, b in zip(self.epochs, self.epochs[1:])):
            raise ScheduleError(f"epochs must be strictly increasing, got {list(self.epochs)}")

    def __call__(self, epoch: int) -> float:
        value = self.values_[0]
        for start, v in zip(self.epochs, self.values_):
            if epoch >= start:
                value = v
        return value

    @property
    def last_change_epoch(self) -> int:
        return self.epochs[-1]

    def values(self) -> tuple[float, ...]:
        return self.values_

    def to_spec(self) -> dict:
        return {"type": "step", "epochs": list(self.epochs), "values": list(self.values_)}


Schedule = Union[Constant, Linear, Step, Cosine]

_FIELDS = {
    "constant": {"value"},
    "linear": {"start_epoch", "end_epoch", "start_value", "end_value"},
    "cosine": {"start_epoch", "end_epoch", "start_value", "end_value"},
    "step": {"epochs", "values"},
}


def schedule_from_spec(spec: float | int | Mapping[str, Any], key: str = "schedule") -> Schedule:
    """Build a schedule from a number (constant) or a mapping ``{"type": ..., fields}``.

    Parameters
    ----------
    spec : number or mapping
        ``0.5``; ``{"type": "constant", "value": 0.5}``;
        ``{"type": "linear", "start_epoch": 300, "end_epoch": 600, "start_value": 0, "end_value": 0.5}``
        (``start_value`` defaults to 0, ``end_value`` to 1); the same fields for ``"cosine"``;
        ``{"type": "step", "epochs": [0, 50], "values": [0, 1]}``.
    key : str
        Where the spec sits in the recipe (e.g. ``"terms.cldice.weight"``), used in error messages.

    Raises
    ------
    ScheduleError
        Naming ``key`` and what is wrong (unknown type or field, wrong type, bad epochs).
    """
    if not isinstance(spec, Mapping):
        return Constant(_number(spec, key))
    kind = spec.get("type")
    if kind not in _FIELDS:
        raise ScheduleError(f"{key}.type: expected one of {sorted(_FIELDS)}, got {kind!r}")
    unknown = set(spec) - _FIELDS[kind] - {"type"}
    if unknown:
        raise ScheduleError(f"{key}: unknown field(s) {sorted(unknown)} for a {kind} schedule "
                            f"(allowed: {sorted(_FIELDS[kind])})")
    try:
        if kind == "constant":
            if "value" not in spec:
                raise ScheduleError(f"{key}.value: missing")
            return Constant(_number(spec["value"], f"{key}.value"))
        if kind == "step":
            for field in ("epochs", "values"):
                if not isinstance(spec.get(field), Sequence) or isinstance(spec.get(field), str):
                    raise ScheduleError(f"{key}.{field}: expected a list, got {spec.get(field)!r}")
            epochs = tuple(_epoch(e, f"{key}.epochs[{i}]") for i, e in enumerate(spec["epochs"]))
            values = tuple(_number(v, f"{key}.values[{i}]") for i, v in enumerate(spec["values"]))
            return Step(epochs, values)
        for field in ("start_epoch", "end_epoch"):
            if field not in spec:
                raise ScheduleError(f"{key}.{field}: missing")
        cls = Linear if kind == "linear" else Cosine
        return cls(_epoch(spec["start_epoch"], f"{key}.start_epoch"), _epoch(spec["end_epoch"], f"{key}.end_epoch"),
                   _number(spec.get("start_value", 0.0), f"{key}.start_value"),
                   _number(spec.get("end_value", 1.0), f"{key}.end_value"))
    except ScheduleError as error:
        if str(error).startswith(key):
            raise
        raise ScheduleError(f"{key}: {error}") from None


def check_schedule(schedule: Schedule, key: str, num_epochs: int | None = None, non_negative: bool = True) -> Schedule:
    """Check that a loss-weight schedule fits a training run; return it unchanged.

    Parameters
    ----------
    schedule : Schedule
        From :func:`schedule_from_spec`.
    key : str
        Where it sits in the recipe, for the error message.
    num_epochs : int, optional
        Training length; the schedule must stop changing by the last epoch (``num_epochs - 1``), otherwise
        its end is never reached (a ramp to 0.5 over 300–600 in a 500-epoch run stops at 0.33).
    non_negative : bool
        Weights must be ``>= 0`` (a negative weight turns a loss into a reward).

    Raises
    ------
    ScheduleError
        Naming ``key``.

    Examples
    --------
    >>> check_schedule(Linear(300, 600, 0.0, 0.5), "terms.boundary.weight", num_epochs=1000)
    Linear(start_epoch=300, end_epoch=600, start_value=0.0, end_value=0.5)
    """
    if non_negative and any(v < 0 for v in schedule.values()):
        raise ScheduleError(f"{key}: negative weight {min(schedule.values())!r} (weights must be >= 0)")
    if num_epochs is not None and schedule.last_change_epoch > num_epochs - 1:
        raise ScheduleError(f"{key}: the schedule changes until epoch {schedule.last_change_epoch}, but the training "
                            f"has {num_epochs} epochs (0–{num_epochs - 1}); shorten the schedule or train longer")
    return schedule
