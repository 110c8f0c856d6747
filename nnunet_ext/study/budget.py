"""``--budget`` overrides: a whole study at a short training length, for a smoke run.

A budget ``E`` or ``ExI`` (E epochs of I iterations) renames every trainer of the study the nnU-Net way,
so that a smoke run never writes into the folders of the real study (one trainer name = one results
folder):

* a trainer ``T`` (shipped or stock) becomes its budget variant ``T_<E>epochs[_<I>iters]``
  (:mod:`nnunet_ext.trainers.budget`);
* a recipe trainer ``Recipe_<r>`` becomes ``Recipe_<r>_<E>epochs[_<I>iters]``, a recipe written into the
  study's own recipe folder: recipe ``r`` resolved, then compressed in time by :func:`scale_recipe`
  (every epoch-valued setting — weight schedules, LR warm-up and periods, metric/checkpoint intervals,
  early-stopping patience, SWA start — scaled by ``E / epochs``), so the short run keeps the recipe's
  shape instead of failing on a warm-up longer than the training.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

__all__ = ["parse_budget", "budget_suffix", "budget_trainer_name", "scale_recipe", "write_budget_recipes"]

_BUDGET = re.compile(r"^(?P<epochs>[1-9]\d*)(?:x(?P<iters>[1-9]\d*))?$")


def parse_budget(text: str) -> tuple[int, int | None]:
    """``"2x10"`` → ``(2, 10)`` (2 epochs of 10 iterations), ``"5"`` → ``(5, None)``."""
    match = _BUDGET.match(str(text).strip())
    if match is None:
        raise ValueError(f"--budget: expected EPOCHS or EPOCHSxITERATIONS (e.g. 2x10), got {text!r}")
    return int(match["epochs"]), int(match["iters"]) if match["iters"] else None


def budget_suffix(budget: tuple[int, int | None]) -> str:
    """``(2, 10)`` → ``"2epochs_10iters"``, ``(1, None)`` → ``"1epoch"`` (nnU-Net's spelling)."""
    epochs, iterations = budget
    return f"{epochs}epoch{'' if epochs == 1 else 's'}" + (f"_{iterations}iters" if iterations else "")


def budget_trainer_name(trainer: str, budget: tuple[int, int | None] | None) -> str:
    """The trainer a study trains under ``budget`` instead of ``trainer``."""
    return trainer if budget is None else f"{trainer}_{budget_suffix(budget)}"


def _scaled_epoch(epoch: int, factor: float, last: int) -> int:
    return min(last, max(0, int(math.floor(epoch * factor))))


def _scaled_span(epochs: int, factor: float) -> int:
    return max(1, int(round(epochs * factor)))


def _scale_weight(spec: dict, factor: float, last: int) -> dict:
    kind = spec["type"]
    if kind == "constant":
        return dict(spec)
    if kind in ("linear", "cosine"):
        start = _scaled_epoch(spec["start_epoch"], factor, last)
        end = max(start + 1, _scaled_epoch(spec["end_epoch"], factor, last + 1))
        return {**spec, "start_epoch": start, "end_epoch": end}
    if kind == "step":
        merged: dict[int, Any] = {}
        for epoch, value in zip(spec["epochs"], spec["values"]):
            merged[_scaled_epoch(epoch, factor, last)] = value  # steps that collapse onto one epoch: the later wins
        return {"type": "step", "epochs": sorted(merged), "values": [merged[e] for e in sorted(merged)]}
    raise ValueError(f"unknown weight schedule type {kind!r}")


def scale_recipe(resolved: dict, epochs: int, iterations: int | None) -> dict:
    """A resolved recipe compressed in time to ``epochs`` epochs (of ``iterations`` iterations).

    Every epoch-valued setting is multiplied by ``epochs / resolved["epochs"]`` (positions rounded down,
    durations to at least 1, everything kept inside the new training), so that a 2-epoch smoke run of a
    100-epoch recipe with a 10-epoch warm-up is still valid. Returns the raw recipe (without ``name``) to
    write as a file; resolving it gives a valid recipe.

    Examples
    --------
    >>> from nnunet_ext.recipes import load_recipe
    >>> short = scale_recipe(load_recipe("dice_ce")[0], 2, 10)
    >>> short["epochs"], short["iterations_per_epoch"], short["lr_schedule"]["warmup_epochs"]
    (2, 10, 0)
    """
    factor = epochs / resolved["epochs"]
    last = epochs - 1
    out = {k: v for k, v in resolved.items() if k != "name"}
    out["description"] = (f"{resolved.get('description', '')} [study budget: {epochs} epochs"
                          + (f" × {iterations} iterations" if iterations else "") + f", scaled from "
                          f"{resolved['epochs']} epochs]").strip()
    out["epochs"] = epochs
    if iterations is not None:
        out["iterations_per_epoch"] = iterations
        out["val_iterations_per_epoch"] = max(1, iterations // 5)
    out["base_weight"] = _scale_weight(resolved["base_weight"], factor, last)
    out["terms"] = {label: {**term, "weight": _scale_weight(term["weight"], factor, last)}
                    for label, term in resolved["terms"].items()}
    out["save_every"] = min(epochs, _scaled_span(resolved["save_every"], factor))
    lr = dict(resolved["lr_schedule"])
    lr["warmup_epochs"] = min(last, _scaled_epoch(lr.get("warmup_epochs", 0), factor, last))
    for key in ("period", "patience", "cooldown"):
        if key in lr and lr[key]:
            lr[key] = _scaled_span(lr[key], factor)
    out["lr_schedule"] = lr
    out["checkpoints"] = {**resolved["checkpoints"],
                          "every": min(epochs, _scaled_span(resolved["checkpoints"]["every"], factor))}
    if resolved.get("early_stopping"):
        out["early_stopping"] = {**resolved["early_stopping"],
                                 "patience": _scaled_span(resolved["early_stopping"]["patience"], factor)}
    if resolved.get("swa"):
        out["swa"] = {**resolved["swa"], "start_epoch": _scaled_epoch(resolved["swa"]["start_epoch"], factor, last)}
    return out


def write_budget_recipes(recipes: list[str], budget: tuple[int, int | None], folder: Path) -> dict[str, Path]:
    """Write the time-compressed recipe ``<r>_<suffix>.json`` of every recipe ``r`` into ``folder`` and
    return their files. An existing file with the same content is kept (a resumed study sees the very
    recipe its runs saved); one with other content is an error, never overwritten."""
    from nnunet_ext.recipes.loader import load_recipe
    from nnunet_ext.recipes.schema import RecipeError, resolve

    folder = Path(folder)
    written = {}
    epochs, iterations = budget
    for recipe in recipes:
        name = f"{recipe}_{budget_suffix(budget)}"
        resolved, _ = load_recipe(recipe)
        raw = scale_recipe(resolved, epochs, iterations)
        try:
            resolve(raw, name, f"{recipe} at budget {budget_suffix(budget)}")
        except RecipeError as error:
            raise ValueError(f"--budget: recipe {recipe!r} cannot be shortened to {budget_suffix(budget)}: "
                             f"{error.problem} ({error.key})") from None
        text = json.dumps(raw, indent=2, sort_keys=True) + "\n"
        path = folder / f"{name}.json"
        if path.exists():
            if path.read_text() != text:
                raise FileExistsError(f"{path} exists with other content (recipe {recipe!r} changed since the "
                                      f"last smoke run?); remove it or use another --workdir")
        else:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(text)
            tmp.replace(path)
        written[recipe] = path
    return written
