"""Weighted sums of loss terms, with deep supervision and a guard against non-finite values."""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from nnunet_ext.losses.segmentation_modes import SegmentationMode, split_prediction_and_target


class NonFiniteLossError(FloatingPointError):
    """Raised when a loss (or the network output feeding it) holds NaN or Inf."""


@dataclass(frozen=True)
class LossTerm:
    """A term added on top of the base loss.

    ``loss`` is called as ``loss(probabilities, target, valid)`` on the foreground view of the output
    (see :func:`~nnunet_ext.losses.segmentation_modes.split_prediction_and_target`), or as
    ``loss(probabilities, target, valid, auxiliary)`` when ``auxiliary`` names an auxiliary target
    packed into nnU-Net's target (see :mod:`nnunet_ext.targets`). A loss module whose attribute
    ``takes_logits`` is true (the cross-entropy-type terms) receives the raw logits of the output in place
    of the probabilities.
    """

    name: str
    weight: float
    loss: nn.Module
    auxiliary: str | None = None


class CompoundLoss(nn.Module):
    """``base(logits, target) + Σ_k weight_k · term_k(foreground view)`` for one network output.

    Parameters
    ----------
    base : nn.Module
        Called with nnU-Net's ``(logits, target)``, e.g. nnU-Net's own Dice+CE / Dice+BCE.
    terms : sequence of LossTerm
        Extra terms; a term with weight 0 is skipped (not computed).
    mode : "softmax" or "sigmoid"
        How to read logits and target (labels or regions).
    ignore_label : int or None
        The dataset's ignore label.
    target_layout : object with ``split(target) -> (segmentation, {name: auxiliary})``, optional
        For targets that carry auxiliary channels (:class:`nnunet_ext.targets.TargetLayout`). A term
        whose auxiliary target is absent from a batch (nnU-Net's validation batches carry none) is
        skipped for that batch.

    After each call, ``last_values`` maps ``"base"`` and every term name to its detached (unweighted)
    value, for logging. ``weights`` maps ``"base"`` (1 unless changed) and every term name to its current
    weight; :meth:`set_weights` changes them between steps (loss-weight schedules).
    """

    def __init__(self, base: nn.Module, terms: Sequence[LossTerm], mode: SegmentationMode | str,
                 ignore_label: int | None = None, target_layout=None):
        super().__init__()
        self.base = base
        self.term_specs = tuple(terms)
        self.term_modules = nn.ModuleList([t.loss for t in self.term_specs])
        self.mode = SegmentationMode(mode)
        self.ignore_label = ignore_label
        self.target_layout = target_layout
        self.weights: dict[str, float] = {"base": 1.0, **{t.name: float(t.weight) for t in self.term_specs}}
        if len(self.weights) != len(self.term_specs) + 1:
            raise ValueError(f"term names must be unique and differ from 'base', got {[t.name for t in self.term_specs]}")
        self.last_values: dict[str, torch.Tensor] = {}
        #: terms whose forward takes the deep-supervision level (e.g. per-level soft-skeleton iterations)
        self._level_terms = {t.name for t in self.term_specs if "level" in inspect.signature(t.loss.forward).parameters}

    def set_weights(self, weights: dict[str, float]) -> None:
        """Set the weights of ``"base"`` and/or terms by name (unknown names raise ``KeyError``)."""
        unknown = set(weights) - set(self.weights)
        if unknown:
            raise KeyError(f"no loss term named {sorted(unknown)}; terms: {sorted(self.weights)}")
        self.weights.update({name: float(w) for name, w in weights.items()})

    def forward(self, logits: torch.Tensor, target: torch.Tensor, level: int = 0) -> torch.Tensor:
        auxiliary = {}
        if self.target_layout is not None:
            target, auxiliary = self.target_layout.split(target)
        weights = self.weights
        base = self.base(logits, target)
        values = {"base": base.detach()}
        total = base if weights["base"] == 1 else weights["base"] * base
        active = [t for t in self.term_specs
                  if weights[t.name] != 0 and (t.auxiliary is None or t.auxiliary in auxiliary)]
        if active:
            view = split_prediction_and_target(logits, target, self.mode, self.ignore_label)
            for term in active:
                extra = () if term.auxiliary is None else (auxiliary[term.auxiliary].to(view.probabilities.dtype),)
                prediction = view.logits if getattr(term.loss, "takes_logits", False) else view.probabilities
                options = {"level": level} if term.name in self._level_terms else {}
                value = term.loss(prediction, view.target, view.valid, *extra, **options)
                values[term.name] = value.detach()
                total = total + weights[term.name] * value
        self.last_values = values
        return total


class DeepSupervisedLoss(nn.Module):
    """``Σ_i w_i · loss(output_i, target_i, level=i)`` over deep-supervision outputs, checked for NaN/Inf.

    After each call, ``last_values`` maps every name in the per-output loss's ``last_values`` (the base
    loss and each term, unweighted) to its deep-supervision-weighted mean ``Σ_i w_i v_i / Σ_i w_i`` over the
    outputs that computed it; with nnU-Net's weights (summing to 1) and every term active,
    ``total = Σ_name weight_name · last_values[name]`` exactly.

    Outputs whose weight is exactly 0 are not computed (as in nnU-Net). A single tensor (no deep
    supervision) is accepted too. The per-output loss receives the output's index as ``level`` when its
    ``forward`` takes that keyword (:class:`CompoundLoss` does: terms may depend on the resolution).

    If the total is not finite, ``last_non_finite`` describes it — the outputs whose logits hold NaN/Inf, or
    the terms that went non-finite at which output — and a :class:`NonFiniteLossError` carrying that text is
    raised when ``raise_on_non_finite`` (the trainers instead skip the optimizer step, as nnU-Net's
    GradScaler does for non-finite gradients, see :meth:`~nnunet_ext.trainers.composite.
    CompositeLossTrainer.train_step`). ``last_non_finite`` is ``None`` after a finite call.

    Parameters
    ----------
    loss : nn.Module
        Loss for one output, called as ``loss(output, target)`` (or ``loss(output, target, level=i)``).
    weights : sequence of float or None
        One weight per output (highest resolution first); ``None`` for a single output.
    raise_on_non_finite : bool
        Raise :class:`NonFiniteLossError` on a non-finite total (default) or only describe it.
    """

    def __init__(self, loss: nn.Module, weights: Sequence[float] | None = None, raise_on_non_finite: bool = True):
        super().__init__()
        if weights is not None and not any(w != 0 for w in weights):
            raise ValueError("at least one deep-supervision weight must be non-zero")
        self.loss = loss
        self.weights = None if weights is None else tuple(float(w) for w in weights)
        self.raise_on_non_finite = raise_on_non_finite
        self._passes_level = "level" in inspect.signature(loss.forward).parameters
        self.last_values: dict[str, torch.Tensor] = {}
        self.last_non_finite: str | None = None

    def forward(self, outputs, targets) -> torch.Tensor:
        single = torch.is_tensor(outputs)
        if single:
            outputs, targets = [outputs], [targets]
        weights = (1.0,) * len(outputs) if self.weights is None else self.weights
        if len(outputs) != len(weights) or len(targets) != len(outputs):
            raise ValueError(f"got {len(outputs)} outputs and {len(targets)} targets for {len(weights)} weights")
        total, sums, norms, per_output = 0, {}, {}, {}
        for level, (w, o, t) in enumerate(zip(weights, outputs, targets)):
            if w == 0:
                continue
            value = self.loss(o, t, level=level) if self._passes_level else self.loss(o, t)
            total = total + w * value
            per_output[level] = dict(getattr(self.loss, "last_values", {})) or {"loss": value.detach()}
            for name, term_value in getattr(self.loss, "last_values", {}).items():
                sums[name] = sums.get(name, 0) + w * term_value
                norms[name] = norms.get(name, 0) + w
        self.last_values = {name: sums[name] / norms[name] for name in sums}
        self.last_non_finite = None
        if not torch.isfinite(total.detach()).all():
            self.last_non_finite = _describe_non_finite(outputs, total, per_output)
            if self.raise_on_non_finite:
                raise NonFiniteLossError(self.last_non_finite)
        return total


def _describe_non_finite(outputs, total: torch.Tensor, per_output: dict[int, dict[str, torch.Tensor]]) -> str:
    """Which outputs hold NaN/Inf logits, else which terms went non-finite at which output."""
    bad_logits = []
    for i, output in enumerate(outputs):
        finite = torch.isfinite(output.detach())
        if not finite.all():
            bad_logits.append(f"output {i} (shape {tuple(output.shape)}) holds {int((~finite).sum())} NaN/Inf logits")
    if bad_logits:
        return (f"loss is {total.item()} because deep-supervision " + "; ".join(bad_logits) +
                ": the network diverged (lower the learning rate, check the input intensities for NaN/Inf, or "
                "disable mixed precision)")
    bad_terms = [f"{name} = {float(value)} at output {level}" for level, values in per_output.items()
                 for name, value in values.items() if not torch.isfinite(value).all()]
    where = ", ".join(bad_terms) if bad_terms else "the weighted sum overflowed"
    return (f"loss is {total.item()} although every network output is finite: {where} "
            f"(check the term weights and the target values)")
