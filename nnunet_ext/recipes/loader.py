"""Finding recipes by name and loading them.

A recipe is a JSON file ``<name>.json``. The built-in recipes live in this package (``builtin/``); user
recipes in the folders listed in the environment variable ``nnunet_ext_recipes`` (separated by
``os.pathsep``, ``:`` on Linux/macOS). A name must be unique across all of them: a user file that has the
name of a built-in recipe, or two user files with one name, is an error when that name is used, because
one name is one trainer and one results folder.

``"extends": "<other recipe>"`` starts from another recipe: the file's keys replace the parent's, except
``terms`` and ``checkpoints.metrics``, which are merged by label (``null`` removes an inherited one).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from nnunet_ext.recipes.schema import RECIPE_NAME, RecipeError, resolve

__all__ = ["RECIPES_VARIABLE", "BUILTIN_FOLDER", "RecipeSource", "recipe_folders", "find_recipe", "list_recipes",
           "load_recipe", "load_recipe_file", "read_json"]

#: environment variable with the folders of user recipes
RECIPES_VARIABLE = "nnunet_ext_recipes"
BUILTIN_FOLDER = Path(__file__).resolve().parent / "builtin"


@dataclass(frozen=True)
class RecipeSource:
    """Where a recipe comes from: its name, file and whether it ships with the package."""

    name: str
    path: Path
    builtin: bool


def recipe_folders() -> list[tuple[Path, bool]]:
    """The folders searched for recipes, built-ins first: ``[(folder, is_builtin), ...]``."""
    folders = [(BUILTIN_FOLDER, True)]
    for entry in os.environ.get(RECIPES_VARIABLE, "").split(os.pathsep):
        if entry.strip():
            folders.append((Path(entry.strip()).expanduser(), False))
    return folders


def _all_sources() -> dict[str, list[RecipeSource]]:
    found: dict[str, list[RecipeSource]] = {}
    seen: set[Path] = set()
    for folder, builtin in recipe_folders():
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.json")):
            if path.resolve() in seen:  # the same folder listed twice is not a conflict
                continue
            seen.add(path.resolve())
            found.setdefault(path.stem, []).append(RecipeSource(path.stem, path, builtin))
    return found


def list_recipes() -> tuple[list[RecipeSource], dict[str, list[RecipeSource]], list[Path]]:
    """Every recipe found: ``(recipes, conflicts, misnamed)``.

    ``recipes``: one source per usable name; ``conflicts``: names with more than one file (unusable);
    ``misnamed``: JSON files whose name is not a recipe name (ignored).
    """
    recipes, conflicts, misnamed = [], {}, []
    for name, sources in sorted(_all_sources().items()):
        if not RECIPE_NAME.match(name):
            misnamed.extend(s.path for s in sources)
        elif len(sources) > 1:
            conflicts[name] = sources
        else:
            recipes.append(sources[0])
    return recipes, conflicts, misnamed


def find_recipe(name: str) -> RecipeSource | None:
    """The file of recipe ``name``; ``None`` if there is none.

    Raises
    ------
    RecipeError
        If several files define ``name``.
    """
    sources = _all_sources().get(name, [])
    if len(sources) > 1:
        files = ", ".join(f"{s.path}{' (built-in)' if s.builtin else ''}" for s in sources)
        raise RecipeError(name, "", f"defined by {len(sources)} files: {files}. One name is one trainer and one "
                                    f"results folder: rename the user recipe")
    return sources[0] if sources else None


_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe", "UTF-16"),
         (b"\xfe\xff", "UTF-16"))


def decode_utf8_json(data: bytes, path: str) -> str:
    """The text of a JSON file, which must be UTF-8 (a UTF-8 byte-order mark is accepted); UTF-16/32
    files (as some Windows editors save them) and other encodings are refused in one line."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            raise RecipeError(path, "", f"the file is {name} text; recipes are UTF-8 JSON: save it as UTF-8")
    if len(data) >= 2 and (data[0] == 0 or data[1] == 0):
        raise RecipeError(path, "", "the file is UTF-16/32 text (no byte-order mark); recipes are UTF-8 JSON: "
                                    "save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise RecipeError(path, "", f"not UTF-8 text (byte {error.start}: {error.reason}); recipes are UTF-8 "
                                    f"JSON: save it as UTF-8") from None


def read_json(path: Path) -> Any:
    """The JSON content of ``path``, with a clear error for unreadable or malformed files."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise RecipeError(str(path), "", f"cannot read the file: {error.strerror or error}") from None
    text = decode_utf8_json(data, str(path))
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise RecipeError(str(path), "", f"not valid JSON: {error.msg} at line {error.lineno}, column "
                                         f"{error.colno}") from None


def _merge(parent: Mapping[str, Any], child: Mapping[str, Any]) -> dict:
    merged = dict(parent)
    for key, value in child.items():
        if key == "terms" and isinstance(value, Mapping) and isinstance(parent.get(key), Mapping):
            merged[key] = {k: v for k, v in {**parent[key], **value}.items() if v is not None}
        elif key == "checkpoints" and isinstance(value, Mapping) and isinstance(parent.get(key), Mapping):
            inner = {**parent[key], **value}
            if isinstance(value.get("metrics"), Mapping) and isinstance(parent[key].get("metrics"), Mapping):
                inner["metrics"] = {k: v for k, v in {**parent[key]["metrics"], **value["metrics"]}.items()
                                    if v is not None}
            merged[key] = inner
        else:
            merged[key] = value
    merged.pop("extends", None)
    return merged


def _raw_with_parents(path: Path, name: str, chain: tuple[str, ...]) -> dict:
    raw = read_json(path)
    if not isinstance(raw, Mapping):
        raise RecipeError(str(path), "", f"a recipe is a JSON object, got {type(raw).__name__}")
    parent_name = raw.get("extends")
    if parent_name is None:
        return {k: v for k, v in raw.items() if k != "extends"}
    if not isinstance(parent_name, str):
        raise RecipeError(str(path), "extends", f"expected a recipe name, got {parent_name!r}")
    if parent_name in chain + (name,):
        raise RecipeError(str(path), "extends", f"circular: {' → '.join(chain + (name, parent_name))}")
    parent = find_recipe(parent_name)
    if parent is None:
        raise RecipeError(str(path), "extends", f"no recipe named {parent_name!r} ({_where()})")
    parent_raw = _raw_with_parents(parent.path, parent_name, chain + (name,))
    parent_raw.pop("name", None)
    parent_raw.pop("description", None)
    return _merge(parent_raw, raw)


def _where() -> str:
    folders = [str(f) for f, builtin in recipe_folders() if not builtin]
    return (f"searched the built-in recipes and {RECIPES_VARIABLE}={os.pathsep.join(folders)}" if folders
            else f"searched the built-in recipes; user recipe folders go into the environment variable "
                 f"{RECIPES_VARIABLE}")


def load_recipe_file(path: str | os.PathLike, name: str | None = None) -> dict:
    """The resolved recipe of a file (name: the file name without ``.json`` unless given)."""
    path = Path(path)
    name = path.stem if name is None else name
    return resolve(_raw_with_parents(path, name, ()), name, str(path))


def load_recipe(name: str) -> tuple[dict, RecipeSource]:
    """The resolved recipe called ``name`` and where it was found.

    Raises
    ------
    RecipeError
        Unknown name (listing where it was searched), conflicting files, or an invalid recipe.
    """
    source = find_recipe(name)
    if source is None:
        known = [s.name for s in list_recipes()[0]]
        raise RecipeError(name, "", f"no recipe of this name ({_where()}); known recipes: {', '.join(known)}")
    return load_recipe_file(source.path, name), source
