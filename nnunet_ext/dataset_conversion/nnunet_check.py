"""nnU-Net's own ``verify_dataset_integrity``, run inside this process.

nnU-Net runs its per-case checks (``verify_labels``, ``check_cases``: every image and label re-read
with the reader ``dataset.json`` selects) in a pool of *spawned* worker processes. Each of those
imports PyTorch before it reads a file, which costs 1-2 s per worker, more than re-reading a small
dataset. Here the very same function runs unchanged, with its pool replaced by an in-process one:
serial for one worker, threads otherwise (the readers spend their time in SimpleITK, tifffile and
NumPy code that releases Python's GIL). The same goes for the pool of 12 forked processes that
nnU-Net's ``create_lists_from_splitted_dataset_folder`` opens to match file names. The checks,
messages and exceptions are nnU-Net's.
"""
from __future__ import annotations

import contextlib
import io
import threading
from concurrent.futures import ThreadPoolExecutor

from .errors import ConversionError

_PATCH_LOCK = threading.Lock()


class InProcessPool:
    """The part of ``multiprocessing.Pool`` that ``verify_dataset_integrity`` uses, without processes."""

    def __init__(self, processes: int | None = None):
        self.workers = max(1, int(processes or 1))

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> bool:
        return False

    def starmap(self, func, iterable) -> list:
        """``[func(*args) for args in iterable]``, in order, on up to ``workers`` threads."""
        jobs = list(iterable)
        if self.workers == 1 or len(jobs) <= 1:
            return [func(*args) for args in jobs]
        with ThreadPoolExecutor(min(self.workers, len(jobs))) as ex:
            return list(ex.map(lambda args: func(*args), jobs))


class _InProcessMultiprocessing:
    """Stands in for the ``multiprocessing`` module inside nnU-Net's verification module."""

    class _Context:
        Pool = InProcessPool

    def get_context(self, method=None):
        return self._Context()


def verify_dataset_in_process(folder: str, num_workers: int = 1) -> str:
    """Run nnU-Net's ``verify_dataset_integrity(folder)`` with an in-process pool; return what it printed.

    Raises
    ------
    ConversionError
        Whatever nnU-Net's check raised (wrong case count, missing labels, unexpected label values,
        shape/spacing mismatch, NaN, ...), with the end of its printed explanation.
    """
    import nnunetv2.experiment_planning.verify_dataset_integrity as vdi
    import nnunetv2.utilities.utils as nnunet_utils

    buf = io.StringIO()
    with _PATCH_LOCK, _replaced(vdi, "multiprocessing", _InProcessMultiprocessing()), \
            _replaced(nnunet_utils, "Pool", InProcessPool):
        try:
            with contextlib.redirect_stdout(buf):
                vdi.verify_dataset_integrity(folder, max(1, int(num_workers)))
        except Exception as e:
            raise ConversionError(folder, f"nnU-Net's integrity check failed: {type(e).__name__}: {e}\n"
                                          f"{buf.getvalue()[-2000:]}") from None
    return buf.getvalue()


@contextlib.contextmanager
def _replaced(module, name: str, value):
    """Temporarily set ``module.name`` (left alone if the module has no such attribute)."""
    if not hasattr(module, name):
        yield
        return
    saved = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, saved)


def warnings_in(printed: str, folder: str = "") -> list[str]:
    """The warnings in what ``verify_dataset_integrity`` printed, one line each: the ``WARNING`` line
    with the file names printed after it, the temporary folder's path shortened to the dataset's."""
    import os
    import re

    out = []
    lines = printed.splitlines()
    for i, line in enumerate(lines):
        if not re.match(r"\s*warning\b", line, re.IGNORECASE):
            continue
        files = next((ln for ln in lines[i + 1: i + 8] if re.search(r"\.(nii\.gz|nii|tif|tiff|png|nrrd|mha)\b", ln)), "")
        text = line.strip() + (f" ({files.strip()})" if files and files not in line else "")
        if folder:
            text = text.replace(os.path.join(folder, ""), "")
        out.append(text[:500])
    return out
