"""Reading TIFF stacks and Aperio SVS whole-slide images with tifffile.

Compressed TIFFs (LZW, JPEG, JPEG 2000 tiles of SVS slides) are decoded by the ``imagecodecs``
package. tifffile only *logs* some damage (a broken page offset of a truncated file, after which it
returns fewer pages), so its warnings are collected while a file is read and turned into a
:class:`~nnunet_ext.dataset_conversion.errors.ConversionError` that names the file, like every
exception the decoders raise.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Iterator

import numpy as np

from .errors import ConversionError
from .io import require_file


@contextlib.contextmanager
def _tifffile_errors(path: str, what: str, kind: str) -> Iterator[None]:
    """Translate tifffile/imagecodecs exceptions and logged warnings of *this thread* into ConversionError."""
    problems: list[str] = []
    me = threading.get_ident()

    class _Collect(logging.Handler):
        def emit(self, record):
            if record.thread == me:  # other threads may be reading other files at the same time
                problems.append(record.getMessage())

    handler = _Collect(level=logging.WARNING)
    logger = logging.getLogger("tifffile")
    logger.addHandler(handler)
    try:
        yield
    except ValueError as e:
        if "imagecodecs" in str(e):
            raise ConversionError(path, f"this {kind} is compressed ({e}); install the 'imagecodecs' "
                                        f"package to read it") from None
        raise ConversionError(path, f"unreadable or truncated {what} ({e})") from None
    except ConversionError:
        raise
    except Exception as e:  # imagecodecs' JpegError, Jpeg2kError, ... ; struct errors of cut files
        raise ConversionError(path, f"unreadable or truncated {what}: cannot decode this {kind} "
                                    f"({type(e).__name__}: {e})") from None
    finally:
        logger.removeHandler(handler)
    if problems:
        raise ConversionError(path, f"unreadable or truncated {what} ({problems[0][:300]})")


def read_tiff(path: str | os.PathLike, what: str = "image") -> np.ndarray:
    """Read a (multi-page) TIFF with tifffile (its first series, full resolution).

    Raises :class:`ConversionError` for missing, empty, truncated or undecodable files; LZW needs
    the ``imagecodecs`` package.
    """
    import tifffile

    path = require_file(path, what)
    with _tifffile_errors(path, what, "TIFF"):
        return tifffile.imread(path)


def read_slide(path: str | os.PathLike, what: str = "image") -> np.ndarray:
    """Full-resolution pixels of an Aperio SVS slide: level 0 of its baseline (first) series.

    SVS files are tiled TIFFs (JPEG or JPEG 2000 tiles, decoded by ``imagecodecs``) whose first
    page is the full-resolution image, followed by a thumbnail, reduced levels and label/macro
    images; only level 0 is decoded.

    Raises
    ------
    ConversionError
        The file is missing, empty, not a TIFF, truncated, or a tile cannot be decoded (the
        message names the file and the decoder's error).
    """
    import tifffile

    path = require_file(path, what)
    with _tifffile_errors(path, what, "slide (SVS)"):
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise ConversionError(path, f"unreadable {what}: the slide holds no image series")
            return tif.series[0].levels[0].asarray()
