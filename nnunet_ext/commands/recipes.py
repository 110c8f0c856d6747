"""`nnunet-ext recipes list | show NAME | check FILE [-d DATASET]`: the recipes nnU-Net can train as
``-tr Recipe_<name>``."""
from __future__ import annotations

import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "recipes",
        help="list, show and check training recipes (trained as nnUNetv2_train ... -tr Recipe_<name>)",
        description="Recipes are JSON files: loss terms with weight schedules, class weights, optimizer and LR "
        "schedule, epochs, checkpoint metrics, early stopping, SWA. Built-in recipes ship with nnunet-ext; user "
        "recipes are found in the folders of the environment variable nnunet_ext_recipes. See docs/recipes.md.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    listing = actions.add_parser("list", help="every recipe found, with its trainer name and file")
    listing.set_defaults(func=_list)
    show = actions.add_parser("show", help="the resolved recipe (every default filled in) as JSON")
    show.add_argument("recipe", help="recipe name, or a recipe file")
    show.set_defaults(func=_show)
    check = actions.add_parser("check", help="validate a recipe (file or name), optionally against a dataset")
    check.add_argument("recipe", help="recipe file, or recipe name")
    check.add_argument("-d", "--dataset", default=None,
                       help="dataset name or id: also check against its dataset.json in nnUNet_preprocessed "
                            "(or nnUNet_raw)")
    check.add_argument("-dj", "--dataset-json", default=None, help="check against this dataset.json instead")
    check.add_argument("-c", "--configuration", default="3d_fullres",
                       help="configuration whose batch_dice setting the terms follow (default 3d_fullres)")
    check.set_defaults(func=_check)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _load(recipe: str):
    from pathlib import Path

    from nnunet_ext.recipes import load_recipe, load_recipe_file

    if recipe.endswith(".json") or Path(recipe).is_file():
        return load_recipe_file(recipe), str(recipe)
    resolved, source = load_recipe(recipe)
    return resolved, str(source.path)


def _list(args) -> int:
    from nnunet_ext.recipes import list_recipes
    from nnunet_ext.recipes.loader import RECIPES_VARIABLE, read_json, recipe_folders

    recipes, conflicts, misnamed = list_recipes()
    for source in recipes:
        try:
            raw = read_json(source.path)
            description = raw.get("description", "") if isinstance(raw, dict) else ""
        except ValueError as error:
            description = f"(unreadable: {error})"
        kind = "built-in" if source.builtin else "user"
        print(f"Recipe_{source.name:<28} {kind:<8} {description}")
        print(f"  {source.path}")
    for name, sources in conflicts.items():
        print(f"CONFLICT {name}: defined by {', '.join(str(s.path) for s in sources)} (unusable until renamed)")
    for path in misnamed:
        print(f"ignored {path}: not a recipe name (letters and digits, groups joined by single '_')")
    user_folders = [str(f) for f, builtin in recipe_folders() if not builtin]
    print(f"user recipe folders ({RECIPES_VARIABLE}): {', '.join(user_folders) if user_folders else 'none set'}")
    return 0


def _show(args) -> int:
    import json

    from nnunet_ext.recipes import RecipeError

    try:
        resolved, _ = _load(args.recipe)
    except RecipeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(resolved, indent=2))
    return 0


def _read_json_file(path: str, flag: str):
    """A JSON file given on the command line, with a one-line error naming it."""
    import json
    from pathlib import Path

    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise FileNotFoundError(f"{flag} {path}: file not found") from None
    except IsADirectoryError:
        raise ValueError(f"{flag} {path}: is a folder; give the dataset.json file") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{flag} {path}: not UTF-8 text ({error.reason})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{flag} {path}: not valid JSON: {error.msg} at line {error.lineno}, "
                         f"column {error.colno}") from None


def _dataset_json(args):
    import json
    from pathlib import Path

    if args.dataset_json:
        return _read_json_file(args.dataset_json, "-dj"), None
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    try:
        name = maybe_convert_to_dataset_name(args.dataset)
    except (ValueError, RuntimeError):
        raise ValueError(f"-d {args.dataset}: not a dataset id or DatasetNNN_Name known to nnU-Net "
                         f"(nnUNet_raw / nnUNet_preprocessed)") from None
    for root in (nnUNet_preprocessed, nnUNet_raw):
        if root.is_set() and (Path(root.get()) / name / "dataset.json").is_file():
            folder = Path(root.get()) / name
            plans = folder / "nnUNetPlans.json"
            return json.loads((folder / "dataset.json").read_text()), (json.loads(plans.read_text())
                                                                       if plans.is_file() else None)
    raise FileNotFoundError(f"no dataset.json for {name} in nnUNet_preprocessed or nnUNet_raw")


def _check(args) -> int:
    from pathlib import Path

    from nnunet_ext.recipes import RecipeError, check_for_dataset, dataset_info, find_recipe
    from nnunet_ext.recipes.loader import RECIPES_VARIABLE

    try:
        resolved, origin = _load(args.recipe)
        if args.dataset or args.dataset_json:
            dataset_json, plans = _dataset_json(args)
            batch_dice = False
            if plans is not None and args.configuration in plans.get("configurations", {}):
                batch_dice = bool(plans["configurations"][args.configuration].get("batch_dice", False))
            info = dataset_info(dataset_json, batch_dice)
            check_for_dataset(resolved, info, origin)
            print(f"dataset: {info.mode} with {info.n_foreground} foreground "
                  f"{'regions' if info.mode == 'sigmoid' else 'classes'} ({', '.join(info.class_names)})")
        found = find_recipe(resolved["name"])
    except (RecipeError, OSError, RuntimeError, ValueError, KeyError) as error:
        print(f"error: {error.args[0] if isinstance(error, KeyError) and error.args else error}", file=sys.stderr)
        return 1
    from nnunet_ext.recipes import recipe_notes

    print(f"OK: {origin} is a valid recipe; train it with -tr Recipe_{resolved['name']}")
    for note in recipe_notes(resolved):
        print(f"note: {note}")
    if found is None or Path(found.path).resolve() != Path(origin).resolve():
        print(f"note: nnUNetv2_train does not find this file under the name {resolved['name']!r}"
              + (f" (that name is {found.path})" if found is not None else "")
              + f"; put its folder into {RECIPES_VARIABLE}", file=sys.stderr)
    return 0
