"""Per-term loss logging: each term's value and weight every epoch, as a log line, JSON and a PNG.

The history travels in the checkpoint, so a run continued with ``--c`` keeps one unbroken record
(``loss_terms.json`` and ``progress_terms.png`` beside nnU-Net's ``progress.png``).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

__all__ = ["TermHistory", "format_terms", "plot_term_history"]


def format_terms(values: Mapping[str, float], weights: Mapping[str, float]) -> str:
    """``"base 0.8123 ×1, cldice 0.4411 ×0.5"``: unweighted value and weight of every term.

    >>> format_terms({"base": 0.5, "cldice": 0.25}, {"base": 1.0, "cldice": 0.5})
    'base 0.5 ×1, cldice 0.25 ×0.5'
    """
    names = list(weights) + [n for n in values if n not in weights]
    parts = []
    for name in names:
        value = values.get(name)
        shown = "not computed" if value is None else f"{value:.4g}"
        parts.append(f"{name} {shown} ×{weights.get(name, 1.0):.4g}")
    return ", ".join(parts)


@dataclass
class TermHistory:
    """Per epoch: learning rate, weight and mean unweighted value of every term (NaN: not computed, e.g. a
    term at weight 0)."""

    epochs: list[int] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    weights: dict[str, list[float]] = field(default_factory=dict)
    values: dict[str, list[float]] = field(default_factory=dict)

    def record(self, epoch: int, lr: float, weights: Mapping[str, float], values: Mapping[str, float]) -> None:
        """Add (or, for an epoch already present, replace from there on) one epoch."""
        self.truncate(epoch)
        n = len(self.epochs)
        self.epochs.append(int(epoch))
        self.lr.append(float(lr))
        for table, current in ((self.weights, weights), (self.values, values)):
            for name in set(table) | set(current):
                column = table.setdefault(name, [math.nan] * n)
                column.append(float(current.get(name, math.nan)))

    def truncate(self, epoch: int) -> None:
        """Forget epochs ``>= epoch``."""
        keep = sum(1 for e in self.epochs if e < epoch)
        self.epochs, self.lr = self.epochs[:keep], self.lr[:keep]
        for table in (self.weights, self.values):
            for name in table:
                table[name] = table[name][:keep]

    def state_dict(self) -> dict:
        return {"epochs": list(self.epochs), "lr": list(self.lr), "weights": {k: list(v) for k, v in self.weights.items()},
                "values": {k: list(v) for k, v in self.values.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.epochs, self.lr = list(state["epochs"]), list(state["lr"])
        self.weights = {k: list(v) for k, v in state["weights"].items()}
        self.values = {k: list(v) for k, v in state["values"].items()}

    def write_json(self, path: str | os.PathLike) -> None:
        # NaN is not JSON: written as null
        clean = json.loads(json.dumps(self.state_dict()).replace("NaN", "null"))
        Path(path).write_text(json.dumps(clean, indent=1) + "\n")


def plot_term_history(history: TermHistory, path: str | os.PathLike) -> None:
    """Three panels against the epoch: unweighted term values, term weights, learning rate."""
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    # nnU-Net's progress plot switches seaborn's large fonts on globally; plot with matplotlib's defaults
    with plt.style.context("default"):
        _plot(plt, history, path)


def _plot(plt, history: TermHistory, path) -> None:
    fig, axes = plt.subplots(3, 1, figsize=(10, 11), sharex=True)
    for ax, table, title in ((axes[0], history.values, "unweighted term value (mean over the epoch's iterations)"),
                             (axes[1], history.weights, "term weight")):
        for name, column in sorted(table.items()):
            ax.plot(history.epochs, column, marker="o" if len(history.epochs) < 30 else None, label=name)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if table:
            ax.legend(loc="best")
    axes[2].plot(history.epochs, history.lr, color="k")
    axes[2].set_title("learning rate")
    axes[2].set_xlabel("epoch")
    axes[2].grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
