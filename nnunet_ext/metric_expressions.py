"""Metric expressions for model selection: what a recipe's checkpoint metrics, early stopping and
reduce-on-plateau read.

A recipe names checkpoint metrics as expressions over the values of a validation epoch, e.g.
``"0.5 * (1 - min(masd, 50) / 50) + 0.5 * cldice"``. Expressions are parsed with :mod:`ast` and evaluated
by walking the tree (never ``eval``): numbers, variables, ``+ - * / **``, unary minus and the functions
``min``, ``max``, ``abs`` and ``clip(x, low, high)``. A function name is never a variable.

Variables (see :func:`metric_variables`, :data:`VARIABLE_DIRECTIONS`): per epoch ``val_loss``,
``train_loss`` (the losses at the epoch's term weights: they move when a weight schedule does),
``val_base_loss``, ``train_base_loss`` (nnU-Net's own loss alone), ``val_loss_ref`` (the full loss at fixed
reference weights, over the terms validation can compute), ``dice``, ``ema_dice``, ``dice_<class>``; on
validation patches (computed only on evaluation epochs) ``cldice``, ``masd`` (means over patches),
``median_cldice``, ``median_masd`` (medians over patches) and their per-class forms. ``<class>`` is the
class/region name from dataset.json (non-alphanumeric characters replaced by ``_``) or its 1-based index
among the foreground classes/regions.

Direction (:func:`infer_mode`): ``"max"`` or ``"min"`` is inferred only when the expression is monotone in
every variable and every variable pushes the same way (``(masd_1 + masd_2) / 2`` → min,
``0.5 * (1 - min(masd, 50) / 50) + 0.5 * cldice`` → max); otherwise (``dice + masd``, ``val_loss * dice``,
``abs(x)``) there is no default and the recipe must say ``mode``.

This module sits below both :mod:`nnunet_ext.recipes` and :mod:`nnunet_ext.trainers`.

Examples
--------
>>> expression = MetricExpression.parse("0.7 * dice_inside + 0.3 * dice_boundary", "checkpoints.metrics.mix")
>>> sorted(expression.variables)
['dice_boundary', 'dice_inside']
>>> round(expression({"dice_inside": 0.9, "dice_boundary": 0.5}), 4)
0.78
>>> infer_mode("val_loss + 0.1 * masd"), infer_mode("dice + masd")
('min', None)
"""
from __future__ import annotations

import ast
import math
import operator
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

__all__ = ["MetricExpressionError", "MetricExpression", "metric_variables", "default_mode", "infer_mode",
           "variable_direction", "PER_EPOCH_VARIABLES", "PATCH_METRICS", "PATCH_VARIABLES", "SCHEDULE_DEPENDENT",
           "sanitize_class_name", "patch_metric_values", "patch_variable", "class_variables", "FUNCTIONS"]

#: variables known every epoch without extra work
PER_EPOCH_VARIABLES = ("val_loss", "train_loss", "val_base_loss", "train_base_loss", "val_loss_ref", "dice",
                       "ema_dice")
#: per-epoch variables whose meaning changes when a term weight changes (loss-weight schedules)
SCHEDULE_DEPENDENT = ("val_loss", "train_loss")
#: metrics computed on validation patches
PATCH_METRICS = ("cldice", "masd")
#: patch variables: name -> (patch metric, aggregate over the patches)
PATCH_VARIABLES = {"cldice": ("cldice", "mean"), "masd": ("masd", "mean"), "median_cldice": ("cldice", "median"),
                   "median_masd": ("masd", "median")}
#: +1: higher is better, -1: lower is better (per-class forms ``<name>_<class>`` follow their family)
VARIABLE_DIRECTIONS = {"val_loss": -1, "train_loss": -1, "val_base_loss": -1, "train_base_loss": -1,
                       "val_loss_ref": -1, "dice": 1, "ema_dice": 1, "cldice": 1, "median_cldice": 1, "masd": -1,
                       "median_masd": -1}

_BINARY: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[float], float]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}
FUNCTIONS: dict[str, tuple[Callable[..., float], int | None]] = {
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
    patch = set(PATCH_VARIABLES) | {f"{m}_{s}" for m in PATCH_VARIABLES for s in suffixes}
    return per_epoch, patch


def _family(name: str) -> str | None:
    """The variable family of ``name`` (``"masd_vessel"`` → ``"masd"``), longest family first."""
    for family in sorted(VARIABLE_DIRECTIONS, key=len, reverse=True):
        if name == family or (name.startswith(family + "_") and family not in ("val_loss", "train_loss")):
            return family
    return None


def variable_direction(name: str) -> int | None:
    """+1 if higher values of variable ``name`` are better, -1 if lower are, ``None`` if unknown."""
    family = _family(name)
    return None if family is None else VARIABLE_DIRECTIONS[family]


def patch_variable(name: str) -> tuple[str, str] | None:
    """``(patch metric, aggregate)`` of a patch variable (``"median_masd_2"`` → ``("masd", "median")``)."""
    family = _family(name)
    return PATCH_VARIABLES.get(family) if family is not None else None


class _Ambiguous(Exception):
    pass


def _effects(node: ast.AST) -> tuple[dict[str, int], float | None]:
    """How the value moves with each variable: ``({variable: +1 | -1}, constant value or None)``; raises
    :class:`_Ambiguous` where it moves both ways or the direction depends on other values."""
    if isinstance(node, ast.Expression):
        return _effects(node.body)
    if isinstance(node, ast.Constant):
        return {}, float(node.value)
    if isinstance(node, ast.Name):
        return {node.id: 1}, None
    if isinstance(node, ast.UnaryOp):
        effects, constant = _effects(node.operand)
        if isinstance(node.op, ast.USub):
            return {k: -v for k, v in effects.items()}, None if constant is None else -constant
        return effects, constant
    if isinstance(node, ast.BinOp):
        (left, lc), (right, rc) = _effects(node.left), _effects(node.right)
        if lc is not None and rc is not None:
            try:
                return {}, float(_BINARY[type(node.op)](lc, rc))
            except (ZeroDivisionError, OverflowError, ValueError):
                raise _Ambiguous from None
        if isinstance(node.op, (ast.Add, ast.Sub)):
            sign = 1 if isinstance(node.op, ast.Add) else -1
            return _merge(left, {k: sign * v for k, v in right.items()}), None
        if isinstance(node.op, ast.Mult) and (lc is not None or rc is not None):
            factor, effects = (lc, right) if lc is not None else (rc, left)
            return ({k: v if factor > 0 else -v for k, v in effects.items()} if factor != 0 else {}), None
        if isinstance(node.op, ast.Div) and rc is not None and rc != 0:
            return {k: v if rc > 0 else -v for k, v in left.items()}, None
        if isinstance(node.op, ast.Div) and lc is not None and lc != 0:  # c / x (x > 0: losses, distances)
            return {k: -v if lc > 0 else v for k, v in right.items()}, None
        if isinstance(node.op, ast.Pow) and rc is not None and rc > 0 and isinstance(node.left, ast.Name):
            return left, None  # x ** p, p > 0, for a non-negative variable
        raise _Ambiguous
    if isinstance(node, ast.Call):
        name = node.func.id
        if name == "abs":
            raise _Ambiguous
        args = node.args[:1] if name == "clip" else node.args  # min, max, clip: non-decreasing in each argument
        merged: dict[str, int] = {}
        constants = []
        for arg in args:
            effects, constant = _effects(arg)
            merged = _merge(merged, effects)
            constants.append(constant)
        if not merged and all(c is not None for c in constants):
            raise _Ambiguous  # a constant call: nothing to select by
        return merged, None
    raise _Ambiguous


def _merge(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    merged = dict(a)
    for key, value in b.items():
        if merged.get(key, value) != value:
            raise _Ambiguous
        merged[key] = value
    return merged


def infer_mode(expression: str) -> str | None:
    """``"max"`` or ``"min"`` when the direction of ``expression`` is unambiguous, else ``None``.

    Unambiguous: the expression is monotone in each variable (sums, differences, multiplication or division
    by constants, ``c / x``, ``x ** p``, ``min``, ``max``, ``clip``) and every variable, taken with the
    direction of its family (losses and distances lower-is-better, Dice and clDice higher-is-better),
    pushes the value the same way.

    >>> infer_mode("(masd_1 + masd_2) / 2"), infer_mode("0.5 * (1 - min(masd, 50) / 50) + 0.5 * cldice")
    ('min', 'max')
    >>> infer_mode("val_loss * dice") is None
    True
    """
    try:
        tree = ast.parse(expression.strip(), mode="eval")
        effects, _ = _effects(tree)
    except (_Ambiguous, SyntaxError, AttributeError, KeyError, TypeError):
        return None
    directions = set()
    for name, sign in effects.items():
        direction = variable_direction(name)
        if direction is None:
            return None
        directions.add(direction * sign)
    if len(directions) != 1:
        return None
    return "max" if directions == {1} else "min"


def default_mode(expression: str) -> str | None:
    """The mode a metric gets when the recipe does not set one: :func:`infer_mode` (``None``: the recipe
    must set it)."""
    return infer_mode(expression)


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
        called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                    raise MetricExpressionError(f"{key}: only the functions {sorted(FUNCTIONS)} are allowed in "
                                                f"{source!r}")
                if node.keywords:
                    raise MetricExpressionError(f"{key}: keyword arguments are not allowed in {source!r}")
                arity = FUNCTIONS[node.func.id][1]
                if (arity is not None and len(node.args) != arity) or (arity is None and len(node.args) < 2):
                    raise MetricExpressionError(f"{key}: {node.func.id}() takes {arity or 'at least 2'} arguments")
            elif isinstance(node, ast.Name):
                if node.id in FUNCTIONS:
                    if id(node) not in called:
                        raise MetricExpressionError(f"{key}: {node.id!r} is a function, not a variable, in "
                                                    f"{source!r} (write {node.id}(a, b, ...))")
                else:
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
            return FUNCTIONS[node.func.id][0](*args)
        raise TypeError(type(node).__name__)  # unreachable after parse()

    def uses_patch_metrics(self) -> bool:
        return any(patch_variable(v) is not None for v in self.variables)

    def patch_metrics(self) -> set[str]:
        """The patch metrics (``"cldice"``, ``"masd"``) the expression needs."""
        return {patch_variable(v)[0] for v in self.variables if patch_variable(v) is not None}


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
        about the class and are left out). Where exactly one mask is empty, MASD is the patch diagonal in
        spacing units (:func:`nnunet_ext.evaluation.masd`'s convention) and clDice is 0: one such patch
        can dominate the mean (235 vs 0.01 on a 64×160×160 patch), hence the median aggregates.
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
