"""The shared writer: turns a list of cases into ``$nnUNet_raw/DatasetNNN_Name``, atomically.

Every converter module finds its cases (:class:`CaseSpec`) and provides a function that converts one
case into ``imagesTr``/``labelsTr`` (or ``imagesTs``). :func:`write_dataset` does the rest, the same
way for all datasets:

1. refuses to start when the dataset id is taken (unless ``overwrite`` and the name is the same);
2. converts every case into a temporary folder *in the same parent* as the target (so the final
   move is one atomic ``rename``), optionally in parallel with a progress bar;
3. collects the errors of *all* cases; any error removes the temporary folder and raises one
   :class:`ConversionError` listing them, so nothing half-written is left behind;
4. writes ``dataset.json`` (through nnU-Net's ``generate_dataset_json``), ``splits_final.json`` and
   ``conversion_report.json``;
5. runs nnU-Net's own ``verify_dataset_integrity`` on the temporary folder (in this process);
6. moves the folder into place; an existing dataset (``overwrite``) is removed only after that.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from .errors import ConversionError
from .report import CaseResult, ConversionReport, build_report
from .splits import make_splits


@dataclass(frozen=True)
class CaseSpec:
    """One raw case.

    Parameters
    ----------
    case_id : str
        nnU-Net case identifier (file name stem in ``imagesTr``/``labelsTr``).
    images : tuple of str
        Raw image files, in output channel order.
    label : str or None
        Raw label file; ``None`` makes the case a test case (``imagesTs``).
    group : str or None
        Cases with the same group are kept in the same fold (e.g. one patient).
    meta : dict
        Converter-specific extras (e.g. a metadata file to keep).
    """

    case_id: str
    images: tuple
    label: str | None
    group: str | None = None
    meta: Mapping = field(default_factory=dict)


ConvertCase = Callable[[CaseSpec, str, str], CaseResult]


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """``DatasetNNN_Name`` as nnU-Net expects it.

    >>> dataset_folder_name(7, "MiniVess")
    'Dataset007_MiniVess'
    """
    if not isinstance(dataset_id, int) or not 1 <= dataset_id <= 999:
        raise ConversionError(None, f"dataset id must be an integer in 1..999, got {dataset_id!r}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", name or ""):
        raise ConversionError(None, f"dataset name {name!r} must be letters, digits, '_', '-' or '.'")
    return f"Dataset{dataset_id:03d}_{name}"


def resolve_raw_root(raw_root: str | os.PathLike | None) -> str:
    """The explicit ``raw_root`` (``--raw-root``) or ``$nnUNet_raw``.

    A root that does not exist yet is created (and said so on stderr), as nnU-Net's own conversion
    scripts do, provided its parent folder exists; a missing parent, a file in its place or a root
    that cannot be written is an error naming where the path came from.
    """
    explicit = raw_root is not None
    root = os.fspath(raw_root) if explicit else os.environ.get("nnUNet_raw")
    origin = "--raw-root" if explicit else "$nnUNet_raw"
    if not root:
        raise ConversionError(None, "no output location: set the nnUNet_raw environment variable or pass --raw-root")
    if os.path.exists(root) and not os.path.isdir(root):
        raise ConversionError(root, f"{origin} is a file, not a folder")
    if not os.path.isdir(root):
        parent = os.path.dirname(os.path.abspath(root))
        if not os.path.isdir(parent):
            raise ConversionError(root, f"{origin} folder does not exist, nor does its parent {parent}; "
                                        f"create it or fix the path")
        try:
            os.mkdir(root)
        except OSError as e:
            raise ConversionError(root, f"cannot create the {origin} folder ({e.strerror or e})") from None
        import sys
        print(f"created the {origin} folder {root}", file=sys.stderr)
    if not os.access(root, os.W_OK | os.X_OK):
        raise ConversionError(root, f"{origin} folder is not writable (permission denied)")
    return root


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_private_tmp_public(folder: str) -> None:
    """Give a ``tempfile.mkdtemp`` folder (always mode 0700) the mode a plain ``mkdir`` would have
    (0777 minus the umask), so that a dataset moved into place is readable as any other folder."""
    os.chmod(folder, 0o777 & ~_umask())


def check_target_free(raw_root: str, dataset_id: int, folder_name: str, overwrite: bool) -> str:
    """Return the target path; raise if it (or another dataset with the same id) exists."""
    target = os.path.join(raw_root, folder_name)
    prefix = f"Dataset{dataset_id:03d}_"
    for other in sorted(os.listdir(raw_root)):
        if other.startswith(prefix) and other != folder_name and os.path.isdir(os.path.join(raw_root, other)):
            raise ConversionError(os.path.join(raw_root, other),
                                  f"dataset id {dataset_id} is already used by this dataset; choose another id")
    if os.path.exists(target) and not overwrite:
        raise ConversionError(target, "target dataset already exists; use --overwrite (Python: overwrite=True) "
                                      "to replace it")
    return target


def _run_one(job):
    convert_case, case, images_dir, labels_dir = job
    try:
        return case.case_id, convert_case(case, images_dir, labels_dir), None
    except ConversionError as e:
        return case.case_id, None, str(e)
    except Exception as e:  # an unexpected failure still names the case and its files
        files = ", ".join(list(case.images) + ([case.label] if case.label else []))
        return case.case_id, None, f"case {case.case_id} ({files}): {type(e).__name__}: {e}"


def _convert_all(cases, convert_case, images_tr, labels_tr, images_ts, num_workers, progress, workers):
    from tqdm import tqdm

    jobs = [(convert_case, c, images_tr if c.label is not None else images_ts, labels_tr) for c in cases]
    bar = dict(total=len(jobs), desc="converting", unit="case", disable=not progress)
    if num_workers <= 1 or len(jobs) <= 1:
        return [_run_one(j) for j in tqdm(jobs, **bar)]
    n = min(num_workers, len(jobs))
    if workers == "threads":
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(n) as ex:
            return list(tqdm(ex.map(_run_one, jobs), **bar))
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(n) as pool:
        return list(tqdm(pool.imap_unordered(_run_one, jobs), **bar))


def verify_with_nnunet(folder: str, num_workers: int = 1) -> list[str]:
    """Run nnU-Net's ``verify_dataset_integrity`` (in this process, see :mod:`.nnunet_check`).

    Its failures become a :class:`ConversionError`; its warnings (origin/direction mismatches, a
    label map with only background, ...) are returned, one line each, for the report.
    """
    from .nnunet_check import verify_dataset_in_process, warnings_in

    return warnings_in(verify_dataset_in_process(folder, num_workers), folder)


def write_dataset_json(folder: str, dataset_json: Mapping, num_training: int) -> None:
    """Write ``dataset.json`` with nnU-Net's ``generate_dataset_json``.

    ``citation`` is passed through ``**kwargs``: the named argument of nnU-Net 2.8's function stores
    the ``release`` string instead of the citation.
    """
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    kwargs = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in dataset_json.items()}
    citation = kwargs.pop("citation", None)
    if citation is not None:
        kwargs["citation"] = citation  # lands in **kwargs of generate_dataset_json
    channel_names = kwargs.pop("channel_names")
    labels = kwargs.pop("labels")
    file_ending = kwargs.pop("file_ending")
    generate_dataset_json(folder, channel_names, labels, num_training, file_ending, **kwargs)


def write_dataset(cases: Sequence[CaseSpec], convert_case: ConvertCase, *, dataset_id: int, dataset_name: str,
                  dataset_json: Mapping, raw_root: str | os.PathLike | None = None, overwrite: bool = False,
                  num_processes: int = 1, verify: bool = True, n_folds: int | None = None, seed: int = 12345,
                  group_folds: bool = False, group_name: str = "patient", spacing_axes: str = "z, y, x", skipped: Sequence[str] = (),
                  extra_files: Mapping[str, str] | None = None, source: str | None = None,
                  label_names: Mapping[int, str] | None = None, progress: bool = True,
                  workers: str = "processes") -> ConversionReport:
    """Convert ``cases`` into ``raw_root/DatasetNNN_<dataset_name>`` (see the module docstring).

    Parameters
    ----------
    cases : sequence of CaseSpec
        The cases; those with ``label=None`` go to ``imagesTs``.
    convert_case : callable
        ``convert_case(case, images_dir, labels_dir) -> CaseResult``; must be picklable (a module-level
        function or a ``functools.partial`` of one) when ``num_processes > 1``.
    dataset_id, dataset_name : int, str
        Target ``DatasetNNN_Name``.
    dataset_json : mapping
        Keyword arguments of nnU-Net's ``generate_dataset_json`` except the folder and case count
        (``channel_names``, ``labels``, ``file_ending`` required).
    raw_root : path, optional
        Defaults to ``$nnUNet_raw``.
    overwrite : bool
        Replace an existing dataset of the same name (only after the new one is complete).
    num_processes : int
        Parallel workers for the conversion and for nnU-Net's integrity check.
    verify : bool
        Run nnU-Net's ``verify_dataset_integrity`` before moving the dataset into place (default).
        It re-reads every written file with the reader nnU-Net will use; skipping it keeps all of
        this package's own checks of the raw files (see ``docs/converters.md`` for what is lost).
    n_folds, seed, group_folds : optional
        Write ``splits_final.json`` with ``n_folds`` folds; ``group_folds`` keeps cases that share
        ``CaseSpec.group`` in one fold; ``group_name`` says what a group is (report).
    spacing_axes : str
        Axis order of the spacings the converter reports.
    skipped : sequence of str
        Descriptions of raw entries deliberately not converted (shown in the report).
    extra_files : mapping, optional
        ``{relative output path: source file}`` copied into the dataset folder (metadata).
    source : str, optional
        Raw folder, for error messages.
    label_names : mapping, optional
        ``{label value in labelsTr: name}`` for the report (default: the plain labels of ``dataset_json``).
    progress : bool
        Show a tqdm progress bar.
    workers : {"processes", "threads"}
        How cases run in parallel when ``num_processes > 1``: spawned processes (for Python-heavy
        work) or threads, which start instantly and suit cases whose time goes to decompression,
        SimpleITK, tifffile and NumPy, all of which release Python's GIL.
    """
    if workers not in ("processes", "threads"):
        raise ValueError(f"workers must be 'processes' or 'threads', got {workers!r}")
    t0 = time.perf_counter()
    raw_root = resolve_raw_root(raw_root)
    folder_name = dataset_folder_name(dataset_id, dataset_name)
    target = check_target_free(raw_root, dataset_id, folder_name, overwrite)
    if not cases:
        raise ConversionError(source, "no cases found to convert")
    ids = [c.case_id for c in cases]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ConversionError(source, f"duplicate case ids {dupes[:5]}")
    n_train = sum(c.label is not None for c in cases)
    if n_train == 0:
        raise ConversionError(source, "no training cases (with labels) found")

    try:
        tmp = tempfile.mkdtemp(prefix=f".{folder_name}.tmp-", dir=raw_root)
    except OSError as e:
        raise ConversionError(raw_root, f"cannot write into the output folder ({e.strerror or e})") from None
    make_private_tmp_public(tmp)
    moved = False
    try:
        images_tr, labels_tr = os.path.join(tmp, "imagesTr"), os.path.join(tmp, "labelsTr")
        images_ts = os.path.join(tmp, "imagesTs")
        os.makedirs(images_tr)
        os.makedirs(labels_tr)
        if n_train < len(cases):
            os.makedirs(images_ts)
        outcomes = _convert_all(cases, convert_case, images_tr, labels_tr, images_ts, num_processes, progress,
                                workers)
        errors = sorted(err for _, _, err in outcomes if err is not None)
        if errors:
            shown = "\n  ".join(errors[:20]) + (f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else "")
            raise ConversionError(source, f"{len(errors)} of {len(cases)} cases could not be converted; "
                                          f"nothing was written:\n  {shown}")
        results = sorted((res for _, res, _ in outcomes), key=lambda r: r.case_id)

        write_dataset_json(tmp, dataset_json, n_train)
        splits_note = None
        if n_folds:
            train_cases = [c for c in cases if c.label is not None]
            groups = {c.case_id: (c.group or c.case_id) if group_folds else c.case_id for c in train_cases}
            try:
                splits = make_splits([c.case_id for c in train_cases], n_folds, seed, groups)
            except ValueError as e:
                raise ConversionError(source, f"cannot write splits_final.json: {e}") from None
            with open(os.path.join(tmp, "splits_final.json"), "w") as f:
                json.dump(splits, f, indent=2)
            splits_note = (f"splits_final.json with {n_folds} folds, seed {seed}"
                           + (f", grouped by {group_name}" if group_folds else ""))
        for rel, src in (extra_files or {}).items():
            dst = os.path.join(tmp, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(src, dst)

        report = build_report(results, dataset_name=folder_name, dataset_folder=target,
                              spacing_axes=spacing_axes, label_names=dict(label_names) if label_names else _label_names(dataset_json["labels"]),
                              skipped=skipped, seconds=0.0, splits=splits_note)
        if verify:
            report.warnings.extend(verify_with_nnunet(tmp, num_processes))
        report.seconds = round(time.perf_counter() - t0, 3)
        with open(os.path.join(tmp, "conversion_report.json"), "w") as f:
            json.dump(report.to_dict(), f, indent=2)

        old = None
        if os.path.exists(target):  # only reachable with overwrite=True
            old = tempfile.mkdtemp(prefix=f".{folder_name}.old-", dir=raw_root)
            try:
                os.rename(target, os.path.join(old, folder_name))
            except OSError as e:
                os.rmdir(old)
                raise ConversionError(target, f"cannot move the existing dataset aside to replace it "
                                              f"({e.strerror or e}); it is unchanged, and nothing new "
                                              f"was written") from None
        try:
            os.rename(tmp, target)
        except OSError as e:
            if old is not None:  # put the old dataset back
                os.rename(os.path.join(old, folder_name), target)
                os.rmdir(old)
            raise ConversionError(target, f"cannot move the converted dataset into place ({e.strerror or e}); "
                                          f"nothing was changed") from None
        moved = True
        if old is not None:
            _remove_old_copy(old, report)
        return report
    finally:
        if not moved:
            shutil.rmtree(tmp, ignore_errors=True)


def _remove_old_copy(old: str, report: ConversionReport) -> None:
    """Delete the replaced dataset; what cannot be deleted is said on stderr and in the report,
    never left behind silently."""
    import sys

    failures = []
    shutil.rmtree(old, onerror=lambda fn, path, exc: failures.append(f"{path}: {exc[1]}"))
    if failures or os.path.exists(old):
        note = (f"the replaced dataset could not be fully deleted; remove {old} by hand "
                f"({failures[0] if failures else 'still present'})")
        print(f"warning: {note}", file=sys.stderr)
        report.warnings.append(note)
        report_file = os.path.join(report.dataset_folder, "conversion_report.json")
        try:
            with open(report_file, "w") as f:
                json.dump(report.to_dict(), f, indent=2)
        except OSError:
            pass


def _label_names(labels: Mapping) -> dict:
    """``{label value: name}`` for plain labels; region entries are named by their region."""
    out = {}
    for name, value in labels.items():
        if isinstance(value, (list, tuple)):
            continue
        out[int(value)] = name
    return out
