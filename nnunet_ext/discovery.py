"""Where nnU-Net looks for our trainers, and a check that it finds them."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nnunet_ext.ext_trainer_folder as _ext_folder

#: nnU-Net's three data folders and what each one holds
DATA_FOLDERS = {
    "nnUNet_raw": "raw datasets (DatasetXXX_Name with imagesTr/labelsTr/dataset.json)",
    "nnUNet_preprocessed": "plans and preprocessed data",
    "nnUNet_results": "trained models",
}
EXT_TRAINER_VARIABLE = "nnUNet_extTrainer"


def trainer_folder() -> Path:
    """The folder to put into ``nnUNet_extTrainer``: nnU-Net imports the trainers from there."""
    return Path(_ext_folder.__file__).resolve().parent


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    message: str  # what was found, and when not ok how to fix it in plain words


def _folder_check(variable: str, purpose: str) -> Check:
    value = os.environ.get(variable)
    fix = f'export {variable}="/path/to/{variable}" (a folder you can write to)'
    if not value:
        return Check(variable, False, f"{variable} is not set. nnU-Net needs it for {purpose}. Fix: {fix}")
    path = Path(value)
    if not path.exists():
        return Check(variable, False, f"{variable}={value} does not exist. Fix: mkdir -p {value}")
    if not path.is_dir():
        return Check(variable, False, f"{variable}={value} is not a folder. Fix: {fix}")
    if not os.access(path, os.W_OK):
        return Check(variable, False, f"{variable}={value} is not writable by you. Fix: chmod u+w {value} or point "
                                      f"{variable} elsewhere")
    return Check(variable, True, f"{variable}={value}")


def _ext_trainer_check() -> Check:
    ours = trainer_folder()
    value = os.environ.get(EXT_TRAINER_VARIABLE)
    fix = f"export {EXT_TRAINER_VARIABLE}=$(nnunet-ext trainer-path)"
    if not value:
        return Check(EXT_TRAINER_VARIABLE, False,
                     f"{EXT_TRAINER_VARIABLE} is not set, so nnUNetv2_train/nnUNetv2_predict cannot find the "
                     f"trainers of nnunet-ext. Fix: {fix}")
    entries = [Path(p).resolve() for p in value.split(os.pathsep) if p.strip()]
    if ours not in entries:
        return Check(EXT_TRAINER_VARIABLE, False,
                     f"{EXT_TRAINER_VARIABLE}={value} does not contain {ours}. Fix: "
                     f"export {EXT_TRAINER_VARIABLE}=\"$(nnunet-ext trainer-path){os.pathsep}${EXT_TRAINER_VARIABLE}\"")
    return Check(EXT_TRAINER_VARIABLE, True, f"{EXT_TRAINER_VARIABLE} contains {ours}")


def _trainer_lookup_check(name: str, expected: type) -> Check:
    import contextlib
    import io

    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            found = recursive_find_trainer_class_by_name(name)
    except Exception as error:  # nnU-Net raises RuntimeError; an import error in a trainer module is just as fatal
        return Check(f"trainer {name}", False, f"nnU-Net cannot find {name}: {error}")
    if found is not expected:
        return Check(f"trainer {name}", False,
                     f"nnU-Net finds a different {name} ({found.__module__}) than nnunet_ext.trainers.{name}: another "
                     f"folder in {EXT_TRAINER_VARIABLE} or an old copy of the package shadows it. Fix: remove the "
                     f"other copy, or put $(nnunet-ext trainer-path) first in {EXT_TRAINER_VARIABLE}")
    return Check(f"trainer {name}", True, f"nnU-Net finds {name} (same class as nnunet_ext.trainers.{name})")


def run_checks() -> list[Check]:
    """Environment variables, then (only if nnU-Net can see our folder) the lookup of every trainer."""
    from nnunet_ext.trainers import SHIPPED_TRAINERS

    checks = [_folder_check(v, purpose) for v, purpose in DATA_FOLDERS.items()]
    ext = _ext_trainer_check()
    checks.append(ext)
    if ext.ok:
        checks += [_trainer_lookup_check(name, cls) for name, cls in SHIPPED_TRAINERS.items()]
    return checks
