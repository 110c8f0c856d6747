"""Learning-rate schedules as functions of the (0-based) epoch, resumable after ``nnUNetv2_train --c``.

nnU-Net sets the learning rate once per epoch (``lr_scheduler.step(current_epoch)`` at the start of every
epoch), so every schedule here is ``lr(epoch)``: the learning rate of an epoch does not depend on how
training got there, and a continued run gets exactly the rates of an uninterrupted one. The one schedule
that reacts to the training, reduce-on-plateau, keeps a small explicit state (:class:`PlateauState`) that
is updated by a pure function after every epoch and saved in the checkpoint.

============================ ===============================================================================
``poly`` (nnU-Net's default) ``lr₀ · (1 − f)^exponent``
``cosine``                   ``min_lr + (lr₀ − min_lr) · (1 + cos πf) / 2``
``cosine_restarts``          the cosine restarted every ``period`` epochs (SGDR, Loshchilov & Hutter, ICLR
                             2017); period i lasts ``period · period_mult^i`` epochs and peaks at
                             ``lr₀ · restart_decay^i``
``plateau``                  ``lr₀ · factor^k`` after k reductions; a reduction happens when ``metric`` has not
                             improved for ``patience`` epochs (PyTorch's ``ReduceLROnPlateau`` rules,
                             relative threshold), never below ``min_lr``
``constant``                 ``lr₀``
============================ ===============================================================================

Every schedule takes ``warmup_epochs`` W (default 0): a linear warm-up ``lr₀ · (e + 1) / (W + 1)`` for the
epochs ``e < W``, then the schedule runs over the remaining epochs with ``f = (e − W) / (E − W)`` (E the
number of epochs). With W = 0, ``poly`` is exactly nnU-Net's ``PolyLRScheduler``.

Examples
--------
>>> schedule = lr_schedule_from_spec({"type": "cosine", "warmup_epochs": 10})
>>> [round(schedule.lr(e, 0.01, 100), 6) for e in (0, 9, 10, 55, 99)]
[0.000909, 0.009091, 0.01, 0.005, 3e-06]
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping, Union

__all__ = ["Poly", "Cosine", "CosineRestarts", "Plateau", "ConstantLR", "LRSchedule", "PlateauState",
           "LRScheduleError", "lr_schedule_from_spec", "EpochLRScheduler", "LR_SCHEDULE_FIELDS"]


class LRScheduleError(ValueError):
    """An LR schedule specification is invalid; the message names the offending key."""


def _warmup(epoch: int, warmup_epochs: int) -> float | None:
    """The warm-up factor of ``epoch``, or ``None`` once warm-up is over."""
    return (epoch + 1) / (warmup_epochs + 1) if epoch < warmup_epochs else None


def _progress(epoch: int, warmup_epochs: int, num_epochs: int) -> float:
    """Fraction ``f`` of the post-warm-up training done at the start of ``epoch``, in [0, 1]."""
    span = max(num_epochs - warmup_epochs, 1)
    return min(max((epoch - warmup_epochs) / span, 0.0), 1.0)


def _half_cosine(fraction: float, high: float, low: float) -> float:
    return low + (high - low) * (1 + math.cos(math.pi * fraction)) / 2


class _WarmUpThen:
    """Linear warm-up over ``warmup_epochs`` (a field of every schedule), then :meth:`_after_warmup`."""

    spec_type = ""

    def lr(self, epoch: int, initial_lr: float, num_epochs: int, scale: float = 1.0) -> float:
        """The learning rate of ``epoch`` (``scale``: reduce-on-plateau's current factor)."""
        w = _warmup(epoch, self.warmup_epochs)
        if w is not None:
            return initial_lr * w
        return self._after_warmup(epoch, initial_lr, num_epochs, scale)

    def _after_warmup(self, epoch: int, initial_lr: float, num_epochs: int, scale: float) -> float:
        raise NotImplementedError

    def to_spec(self) -> dict:
        return {"type": self.spec_type, **asdict(self)}


@dataclass(frozen=True)
class Poly(_WarmUpThen):
    """nnU-Net's polynomial decay ``lr₀ · (1 − f)^exponent``."""

    spec_type = "poly"

    exponent: float = 0.9
    warmup_epochs: int = 0

    def _after_warmup(self, epoch: int, initial_lr: float, num_epochs: int, scale: float) -> float:
        return initial_lr * (1 - _progress(epoch, self.warmup_epochs, num_epochs)) ** self.exponent


@dataclass(frozen=True)
class Cosine(_WarmUpThen):
    """Half a cosine from ``lr₀`` to ``min_lr`` over the (post-warm-up) training."""

    spec_type = "cosine"

    min_lr: float = 0.0
    warmup_epochs: int = 0

    def _after_warmup(self, epoch: int, initial_lr: float, num_epochs: int, scale: float) -> float:
        return _half_cosine(_progress(epoch, self.warmup_epochs, num_epochs), initial_lr, self.min_lr)


@dataclass(frozen=True)
class CosineRestarts(_WarmUpThen):
    """Cosine annealing with warm restarts: period i lasts ``period · period_mult^i`` epochs and anneals
    from ``lr₀ · restart_decay^i`` to ``min_lr``."""

    spec_type = "cosine_restarts"

    period: int = 50
    period_mult: int = 1
    restart_decay: float = 1.0
    min_lr: float = 0.0
    warmup_epochs: int = 0

    def _after_warmup(self, epoch: int, initial_lr: float, num_epochs: int, scale: float) -> float:
        t, length, cycle = epoch - self.warmup_epochs, self.period, 0
        while t >= length:  # at most log(E) iterations for period_mult > 1, E / period otherwise
            t, length, cycle = t - length, length * self.period_mult, cycle + 1
        return _half_cosine(t / length, initial_lr * self.restart_decay ** cycle, self.min_lr)


@dataclass(frozen=True)
class ConstantLR(_WarmUpThen):
    """``lr₀`` throughout (after the warm-up)."""

    spec_type = "constant"

    warmup_epochs: int = 0

    def _after_warmup(self, epoch: int, initial_lr: float, num_epochs: int, scale: float) -> float:
        return initial_lr


@dataclass(frozen=True)
class PlateauState:
    """What reduce-on-plateau remembers between epochs (saved in the checkpoint).

    scale: the current factor on ``lr₀`` (``factor^k``); best: best metric value seen (``None`` before the
    first); bad_epochs: epochs since the last improvement; cooldown: epochs left without counting.
    """

    scale: float = 1.0
    best: float | None = None
    bad_epochs: int = 0
    cooldown: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PlateauState":
        return cls(**dict(data))


@dataclass(frozen=True)
class Plateau(_WarmUpThen):
    """Reduce the learning rate by ``factor`` when ``metric`` stalls for ``patience`` epochs.

    ``metric`` is a metric expression over per-epoch values (``val_loss`` by default, see
    :mod:`nnunet_ext.metric_expressions`), ``mode`` ``"min"`` or ``"max"``. An improvement is a value
    better than ``best · (1 ∓ threshold)`` (PyTorch's relative threshold); after a reduction ``cooldown``
    epochs pass before stalls are counted again. Warm-up epochs are never counted.
    """

    spec_type = "plateau"

    factor: float = 0.5
    patience: int = 10
    threshold: float = 1e-4
    cooldown: int = 0
    min_lr: float = 0.0
    metric: str = "val_loss"
    mode: str = "min"
    warmup_epochs: int = 0

    def _after_warmup(self, epoch: int, initial_lr: float, num_epochs: int, scale: float) -> float:
        return max(initial_lr * scale, self.min_lr)

    def improved(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        if self.mode == "min":
            return value < best - abs(best) * self.threshold
        return value > best + abs(best) * self.threshold

    def update(self, state: PlateauState, value: float, epoch: int) -> PlateauState:
        """The state after ``epoch`` ended with ``value`` of the metric (pure; NaN counts as a stall)."""
        if epoch < self.warmup_epochs:
            return state
        if value == value and self.improved(value, state.best):  # value == value: not NaN
            return replace(state, best=float(value), bad_epochs=0, cooldown=max(state.cooldown - 1, 0))
        if state.cooldown > 0:
            return replace(state, cooldown=state.cooldown - 1)
        if state.bad_epochs + 1 > self.patience:
            return replace(state, scale=state.scale * self.factor, bad_epochs=0, cooldown=self.cooldown)
        return replace(state, bad_epochs=state.bad_epochs + 1)


LRSchedule = Union[Poly, Cosine, CosineRestarts, Plateau, ConstantLR]

_TYPES = {"poly": Poly, "cosine": Cosine, "cosine_restarts": CosineRestarts, "plateau": Plateau,
          "constant": ConstantLR}
#: every schedule type with its fields and their defaults
LR_SCHEDULE_FIELDS: dict[str, dict[str, Any]] = {name: cls().to_spec() for name, cls in _TYPES.items()}


def _number(value: Any, key: str, low: float | None = None, high: float | None = None, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise LRScheduleError(f"{key}: expected a finite number, got {value!r}")
    if low is not None and (value < low or (strict and value == low)):
        raise LRScheduleError(f"{key}: must be {'>' if strict else '>='} {low}, got {value!r}")
    if high is not None and (value > high or (strict and value == high)):
        raise LRScheduleError(f"{key}: must be {'<' if strict else '<='} {high}, got {value!r}")
    return float(value)


def _integer(value: Any, key: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise LRScheduleError(f"{key}: expected an integer >= {low}, got {value!r}")
    return int(value)


def lr_schedule_from_spec(spec: Mapping[str, Any] | None, key: str = "lr_schedule",
                          num_epochs: int | None = None) -> LRSchedule:
    """Build an LR schedule from ``{"type": ..., fields}`` (``None``: nnU-Net's poly).

    Parameters
    ----------
    spec : mapping or None
        ``{"type": "poly"|"cosine"|"cosine_restarts"|"plateau"|"constant", ...}``; fields and defaults in
        :data:`LR_SCHEDULE_FIELDS`.
    key : str
        Where the spec sits in the recipe, for error messages.
    num_epochs : int, optional
        Training length: the warm-up must end before it.

    Raises
    ------
    LRScheduleError
        Naming ``key`` and the field.
    """
    if spec is None:
        return Poly()
    if not isinstance(spec, Mapping):
        raise LRScheduleError(f"{key}: expected a mapping with a 'type', got {spec!r}")
    kind = spec.get("type")
    if kind not in _TYPES:
        raise LRScheduleError(f"{key}.type: expected one of {sorted(_TYPES)}, got {kind!r}")
    allowed = LR_SCHEDULE_FIELDS[kind]
    unknown = set(spec) - set(allowed)
    if unknown:
        raise LRScheduleError(f"{key}: unknown field(s) {sorted(unknown)} for a {kind} schedule "
                              f"(allowed: {sorted(set(allowed) - {'type'})})")
    values = {**allowed, **spec}
    values.pop("type")
    checked: dict[str, Any] = {}
    for name, value in values.items():
        k = f"{key}.{name}"
        if name in ("warmup_epochs", "patience", "cooldown"):
            checked[name] = _integer(value, k, 0)
        elif name in ("period", "period_mult"):
            checked[name] = _integer(value, k, 1)
        elif name == "exponent":
            checked[name] = _number(value, k, 0.0, strict=True)
        elif name == "factor":
            checked[name] = _number(value, k, 0.0, 1.0, strict=True)
        elif name == "restart_decay":
            checked[name] = _number(value, k, 0.0, 1.0)
        elif name in ("min_lr", "threshold"):
            checked[name] = _number(value, k, 0.0)
        elif name == "mode":
            if value not in ("min", "max"):
                raise LRScheduleError(f"{k}: expected 'min' or 'max', got {value!r}")
            checked[name] = value
        elif name == "metric":
            if not isinstance(value, str) or not value.strip():
                raise LRScheduleError(f"{k}: expected a metric expression (e.g. 'val_loss'), got {value!r}")
            checked[name] = value
    if num_epochs is not None and checked["warmup_epochs"] >= num_epochs:
        raise LRScheduleError(f"{key}.warmup_epochs: {checked['warmup_epochs']} warm-up epochs do not fit into "
                              f"{num_epochs} training epochs")
    return _TYPES[kind](**checked)


@dataclass
class EpochLRScheduler:
    """The object nnU-Net calls ``step(epoch)`` on at the start of every epoch.

    Sets every parameter group's learning rate to ``schedule.lr(epoch, initial_lr, num_epochs)`` (or
    ``override_lr`` from ``override_from`` on, e.g. SWA's constant rate). For :class:`Plateau`,
    :meth:`observe` feeds the epoch's metric value at its end; :meth:`state_dict` /
    :meth:`load_state_dict` carry the plateau state through checkpoints.
    """

    optimizer: Any
    schedule: LRSchedule
    initial_lr: float
    num_epochs: int
    override_from: int | None = None
    override_lr: float | None = None
    state: PlateauState = field(default_factory=PlateauState)

    def lr_at(self, epoch: int) -> float:
        if self.override_from is not None and epoch >= self.override_from:
            return float(self.override_lr)
        return float(self.schedule.lr(epoch, self.initial_lr, self.num_epochs, self.state.scale))

    def step(self, epoch: int | None = None) -> None:
        lr = self.lr_at(int(epoch or 0))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._last_lr = [lr] * len(self.optimizer.param_groups)

    def get_last_lr(self) -> list[float]:
        return list(getattr(self, "_last_lr", [g["lr"] for g in self.optimizer.param_groups]))

    def observe(self, value: float, epoch: int) -> bool:
        """Feed the metric of the finished ``epoch``; returns True if the learning rate was reduced."""
        if not isinstance(self.schedule, Plateau):
            return False
        before = self.state.scale
        self.state = self.schedule.update(self.state, value, epoch)
        return self.state.scale != before

    def state_dict(self) -> dict:
        return {"plateau": self.state.to_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.state = PlateauState.from_dict(state["plateau"])
