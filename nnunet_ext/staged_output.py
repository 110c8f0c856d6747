"""Write a command's outputs all at once or not at all."""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Callable, Iterator

__all__ = ["staged_output"]


@contextmanager
def staged_output(output_folder: str, prefix: str,
                  on_create_error: Callable[[OSError], Exception] | None = None) -> Iterator[str]:
    """A temporary folder inside ``output_folder`` to write into; its files are moved into ``output_folder``
    when the block succeeds. On any error (Ctrl-C included) the temporary folder is removed, and so is
    ``output_folder`` if this call created it: a failed run leaves nothing half-made behind.

    ``on_create_error`` turns an ``OSError`` raised while creating the folders into the caller's own
    error (e.g. one that names the folder); by default it propagates as it is.
    """
    created = not os.path.isdir(output_folder)
    try:
        os.makedirs(output_folder, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=prefix, dir=output_folder)
    except OSError as error:
        if on_create_error is None:
            raise
        raise on_create_error(error) from None
    try:
        yield staging
        for name in sorted(os.listdir(staging)):
            os.replace(os.path.join(staging, name), os.path.join(output_folder, name))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            shutil.rmtree(output_folder, ignore_errors=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)
