"""The resolved recipe saved in a run's fold folder, and the check that a run keeps its recipe.

Every fold folder of a recipe run holds ``recipe.json``: the resolved recipe (every default filled in),
what was derived from the data (class weights, label frequencies) and where the recipe came from. A run
that is continued, validated or restarted in that results folder must use the same recipe; a changed
recipe file is refused (:class:`RecipeChangedError`) unless the environment variable
``nnunet_ext_accept_recipe_change=1`` says otherwise, in which case the old file is kept as
``recipe.replaced_<time>.json``.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Mapping

from nnunet_ext.recipes.schema import RecipeError

__all__ = ["SAVED_NAME", "ACCEPT_CHANGE_VARIABLE", "RecipeChangedError", "read_saved", "write_saved", "differences",
           "check_unchanged", "accept_change_requested", "keep_replaced"]

SAVED_NAME = "recipe.json"
ACCEPT_CHANGE_VARIABLE = "nnunet_ext_accept_recipe_change"
#: keys that do not change what is trained
_IGNORED = {"description"}


class RecipeChangedError(RecipeError):
    """The recipe differs from the one an existing run of the same name was started with."""


def read_saved(folder: str | os.PathLike) -> dict | None:
    """The saved recipe record of a fold folder (``None`` if there is none)."""
    path = Path(folder) / SAVED_NAME
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise RecipeError(str(path), "", f"the saved recipe cannot be read ({error}); restore or delete it") from None
    if not isinstance(record, Mapping) or not isinstance(record.get("recipe"), Mapping):
        raise RecipeError(str(path), "", "not a saved recipe (no 'recipe' object); restore or delete it")
    return dict(record)


def write_saved(folder: str | os.PathLike, recipe: Mapping[str, Any], derived: Mapping[str, Any],
                source: str) -> Path:
    """Write ``recipe.json`` (atomically: a crash never leaves half a file)."""
    path = Path(folder) / SAVED_NAME
    record = {"recipe": recipe, "derived": dict(derived), "source": source}
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(temporary, path)
    return path


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ, as ``"key: old → new"`` (``description`` ignored).

    >>> differences({"epochs": 100, "terms": {"a": {"w": 1}}}, {"epochs": 200, "terms": {"a": {"w": 1}}})
    ['epochs: 100 → 200']
    """
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        found = []
        for key in list(old) + [k for k in new if k not in old]:
            if not prefix and key in _IGNORED:
                continue
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in old:
                found.append(f"{path}: added ({json.dumps(new[key])})")
            elif key not in new:
                found.append(f"{path}: removed (was {json.dumps(old[key])})")
            else:
                found.extend(differences(old[key], new[key], path))
        return found
    return [] if old == new else [f"{prefix}: {json.dumps(old)} → {json.dumps(new)}"]


def accept_change_requested() -> bool:
    return os.environ.get(ACCEPT_CHANGE_VARIABLE, "").strip().lower() in ("1", "true", "yes")


def check_unchanged(saved: Mapping[str, Any], recipe: Mapping[str, Any], saved_path: str, trainer: str) -> list[str]:
    """The differences between a saved and a current recipe; raises :class:`RecipeChangedError` if there are
    any and no change was accepted through ``nnunet_ext_accept_recipe_change``."""
    changed = differences(saved["recipe"], recipe)
    if changed and not accept_change_requested():
        listing = "; ".join(changed[:8]) + (f"; and {len(changed) - 8} more" if len(changed) > 8 else "")
        raise RecipeChangedError(
            saved_path, "", f"the recipe {recipe['name']!r} has changed since this results folder was started "
            f"({listing}). One trainer name must mean one configuration: give the changed recipe a new name (a new "
            f"trainer {trainer.split('_', 1)[0]}_<new name> and results folder), or restore the file, or set "
            f"{ACCEPT_CHANGE_VARIABLE}=1 to go on with the changed recipe in this folder (the old one is kept "
            f"as recipe.replaced_<time>.json)")
    return changed


def keep_replaced(folder: str | os.PathLike) -> Path | None:
    """Rename an existing ``recipe.json`` to ``recipe.replaced_<time>.json``; returns the new path."""
    path = Path(folder) / SAVED_NAME
    if not path.is_file():
        return None
    target = path.with_name(f"recipe.replaced_{time.strftime('%Y%m%d_%H%M%S')}.json")
    os.replace(path, target)
    return target
