"""Model selection by any metric: safe metric expressions, best-value trackers and early stopping.

A recipe names checkpoint metrics as expressions over the values of a validation epoch, e.g.
``"0.5 * (1 - min(masd, 50) / 50) + 0.5 * cldice"``. Expressions are parsed with :mod:`ast` and evaluated
by walking the tree (never ``eval``): numbers, variables, ``+ - * / **``, unary minus and the functions
``min``, ``max``, ``abs`` and ``clip(x, low, high)``.

Variables (see :func:`metric_variables`): per epoch ``val_loss``, ``train_loss``, ``dice`` (nnU-Net's mean
pseudo-Dice of the epoch), ``ema_dice`` (its moving average, what ``checkpoint_best.pth`` follows) and
``dice_<class>``; on validation patches (computed only on evaluation epochs) ``cldice``, ``masd`` and
their per-class forms. ``<class>`` is the class/region name from dataset.json (non-alphanumeric
characters replaced by ``_``) or its 1-based index among the foreground classes/regions.

Examples
--------
>>> expression = MetricExpression.parse("0.7 * dice_inside + 0.3 * dice_boundary", "checkpoints.metrics.mix")
>>> sorted(expression.variables)
['dice_boundary', 'dice_inside']
>>> round(expression({"dice_inside": 0.9, "dice_boundary": 0.5}), 4)
0.78
"""
from __future__ import annotations

import ast
import math
import operator
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

__all__ = ["MetricExpressionError", "MetricExpression", "metric_variables", "default_mode", "BestTracker",
           "EarlyStopping", "PER_EPOCH_VARIABLES", "PATCH_METRICS", "sanitize_class_name", "patch_metric_values",
           "class_variables"]

#: variables known every epoch without extra work
PER_EPOCH_VARIABLES = ("val_loss", "train_loss", "dice", "ema_dice")
#: metrics computed on validation patches (mean over patches whose masks are not both empty)
PATCH_METRICS = ("cldice", "masd")
#: single variables for which lower is better (every other expression defaults to "max")
_LOWER_IS_BETTER = re.compile(r"^(val_loss|train_loss|masd(_\w+)?)$")

_BINARY: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[float], float]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_FUNCTIONS: dict[str, tuple[Callable[..., float], int | None]] = {
    "min": (min, None), "max": (max, None), "abs": (abs, 1),
    "clip": (lambda x, low, high: min(max(x, low), high), 3),
}


class MetricExpressionError(ValueError):
    """A metric expression is malformed or uses an unknown variable; the message names the key."""


def sanitize_class_name(name: str) -> str:
    """``"whole tumor"`` → ``"whole_tumor"``: a class name as it appears in variable names."""
    return re.sub(r"\W", "_", str(name))


def metric_variables(class_names: Sequence[str]) -> tuple[set[str], set[str]]:
    """The variable names an expression may use for a dataset with these foreground classes/regions.

    Returns
    -------
    per_epoch, patch : set of str
        Variables available every epoch, and those computed on validation patches.
    """
    suffixes = [str(i + 1) for i in range(len(class_names))] + [sanitize_class_name(n) for n in class_names]
    per_epoch = set(PER_EPOCH_VARIABLES) | {f"dice_{s}" for s in suffixes}
    patch = set(PATCH_METRICS) | {f"{m}_{s}" for m in PATCH_METRICS for s in suffixes}
    return per_epoch, patch


def default_mode(expression: str) -> str:
    """``"min"`` for an expression that is exactly a loss or a distance, ``"max"`` otherwise."""
    return "min" if _LOWER_IS_BETTER.match(expression.strip()) else "max"


@dataclass(frozen=True)
class MetricExpression:
    """A parsed, checked metric expression; call it with a mapping of variable values."""

    source: str
    tree: ast.Expression = field(repr=False, compare=False)
    variables: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, source: str, key: str = "expression", known: Iterable[str] | None = None) -> "MetricExpression":
        """Parse ``source``; with ``known``, every variable must be one of them.

        Raises
        ------
        MetricExpressionError
            Naming ``key``: syntax errors, disallowed constructs, unknown functions or variables.
        """
        if not isinstance(source, str) or not source.strip():
            raise MetricExpressionError(f"{key}: expected an expression string, got {source!r}")
        try:
            tree = ast.parse(source.strip(), mode="eval")
        except SyntaxError as error:
            raise MetricExpressionError(f"{key}: cannot parse {source!r}: {error.msg}") from None
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
                    raise MetricExpressionError(f"{key}: only the functions {sorted(_FUNCTIONS)} are allowed in "
                                                f"{source!r}")
                if node.keywords:
                    raise MetricExpressionError(f"{key}: keyword arguments are not allowed in {source!r}")
                arity = _FUNCTIONS[node.func.id][1]
                if (arity is not None and len(node.args) != arity) or (arity is None and len(node.args) < 2):
                    raise MetricExpressionError(f"{key}: {node.func.id}() takes {arity or 'at least 2'} arguments")
            elif isinstance(node, ast.Name):
                if node.id not in _FUNCTIONS:
                    names.add(node.id)
            elif isinstance(node, ast.Constant):
                if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                    raise MetricExpressionError(f"{key}: only numbers are allowed as constants, got {node.value!r}")
            elif isinstance(node, ast.BinOp):
                if type(node.op) not in _BINARY:
                    raise MetricExpressionError(f"{key}: operator {type(node.op).__name__} is not allowed "
                                                f"(use + - * / **)")
            elif isinstance(node, ast.UnaryOp):
                if type(node.op) not in _UNARY:
                    raise MetricExpressionError(f"{key}: operator {type(node.op).__name__} is not allowed")
            elif not isinstance(node, (ast.Expression, ast.Load) + tuple(_BINARY) + tuple(_UNARY)):
                raise MetricExpressionError(f"{key}: {type(node).__name__} is not allowed in {source!r} (numbers, "
                                            f"variables, + - * / **, min, max, abs, clip)")
        if known is not None:
            unknown = names - set(known)
            if unknown:
                raise MetricExpressionError(f"{key}: unknown variable(s) {sorted(unknown)} in {source!r}; "
                                            f"available: {sorted(known)}")
        return cls(source.strip(), tree, frozenset(names))

    def __call__(self, values: Mapping[str, float]) -> float:
        """The value (NaN if a variable is NaN or missing, or on division by zero)."""
        try:
            return float(self._evaluate(self.tree.body, values))
        except (ZeroDivisionError, OverflowError, KeyError, ValueError, TypeError):
            return math.nan

    def _evaluate(self, node: ast.AST, values: Mapping[str, float]) -> float:
        if isinstance(node, ast.Constant):
            return float(node.value)
        if isinstance(node, ast.Name):
            return float(values[node.id])
        if isinstance(node, ast.BinOp):
            return _BINARY[type(node.op)](self._evaluate(node.left, values), self._evaluate(node.right, values))
        if isinstance(node, ast.UnaryOp):
            return _UNARY[type(node.op)](self._evaluate(node.operand, values))
        if isinstance(node, ast.Call):
            args = [self._evaluate(a, values) for a in node.args]
            if any(a != a for a in args):  # min/max would silently drop a NaN argument
                return math.nan
            return _FUNCTIONS[node.func.id][0](*args)
        raise TypeError(type(node).__name__)  # unreachable after parse()

    def uses_patch_metrics(self) -> bool:
        return any(v.split("_")[0] in PATCH_METRICS for v in self.variables)


@dataclass
class BestTracker:
    """The best value of one metric so far. NaN never counts as an improvement.

    ``mode`` ``"max"`` or ``"min"``; ``min_delta``: the margin a value must beat the best by.
    """

    mode: str = "max"
    min_delta: float = 0.0
    best: float | None = None
    best_epoch: int | None = None

    def update(self, value: float, epoch: int) -> bool:
        """Record ``value`` of ``epoch``; True if it is a new best."""
        if value != value:
            return False
        if self.best is not None:
            better = value > self.best + self.min_delta if self.mode == "max" else value < self.best - self.min_delta
            if not better:
                return False
        self.best, self.best_epoch = float(value), int(epoch)
        return True

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]


@dataclass
class EarlyStopping:
    """Stop when ``tracker``'s metric has not improved for ``patience`` epochs.

    Call :meth:`check` after the tracker was updated in an evaluation epoch; it returns True once
    ``epoch - best_epoch >= patience``. Epochs without evaluation count as epochs without improvement.
    """

    patience: int
    stopped_epoch: int | None = None

    def check(self, tracker: BestTracker, epoch: int) -> bool:
        if self.stopped_epoch is not None:
            return True
        reference = tracker.best_epoch if tracker.best_epoch is not None else -1
        if epoch - reference >= self.patience:
            self.stopped_epoch = int(epoch)
            return True
        return False

    def state_dict(self) -> dict:
        return {"stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.stopped_epoch = state["stopped_epoch"]


def class_variables(prefix: str, per_class: Sequence[float], class_names: Sequence[str]) -> dict[str, float]:
    """``{prefix: nanmean, prefix_1: …, prefix_<name>: …}`` for one metric given per class/region.

    >>> class_variables("dice", [0.5, 1.0], ["vessel", "lumen"])["dice_lumen"]
    1.0
    """
    values = [float(v) for v in per_class]
    finite = [v for v in values if v == v]
    result = {prefix: float(np.mean(finite)) if finite else math.nan}
    for i, (value, name) in enumerate(zip(values, class_names)):
        result[f"{prefix}_{i + 1}"] = value
        result[f"{prefix}_{sanitize_class_name(name)}"] = value
    return result


def patch_metric_values(prediction: np.ndarray, reference: np.ndarray, valid: np.ndarray | None,
                        spacing: Sequence[float], metrics: Iterable[str]) -> dict[str, list[list[float]]]:
    """clDice and/or MASD of every patch and class, with :mod:`nnunet_ext.evaluation`'s definitions.

    Parameters
    ----------
    prediction, reference : bool arrays ``(B, C, *S)``
        One mask per foreground class/region; S has 2 or 3 axes.
    valid : bool array ``(B, 1, *S)`` or None
        Voxels that are not ignored; both masks are restricted to them.
    spacing : sequence of float
        Voxel size of S (MASD in those units).
    metrics : iterable of {"cldice", "masd"}

    Returns
    -------
    dict
        ``{metric: [values of class 1, values of class 2, ...]}``, one value per patch in which the class
        is present in the prediction or the reference (patches where both are empty carry no information
        about the class and are left out).
    """
    from nnunet_ext.evaluation import cldice_score, masd

    functions = {"cldice": lambda p, r: cldice_score(p, r), "masd": lambda p, r: masd(p, r, spacing=tuple(spacing))}
    wanted = [m for m in metrics if m in functions]
    result = {m: [[] for _ in range(prediction.shape[1])] for m in wanted}
    for b in range(prediction.shape[0]):
        for c in range(prediction.shape[1]):
            p, r = prediction[b, c], reference[b, c]
            if valid is not None:
                p, r = p & valid[b, 0], r & valid[b, 0]
            if not (p.any() or r.any()):
                continue
            for m in wanted:
                result[m][c].append(float(functions[m](p, r)))
    return result
