"""One pass over a NIfTI file that validates everything its readers would not.

SimpleITK, which nnU-Net reads NIfTI with, accepts a truncated ``.nii.gz`` without an error (the
missing voxels come back as garbage or zeros) and returns NaN voxels of float images as 0. So every
NIfTI file is decompressed once, and that single pass checks

* the gzip stream: no corrupt deflate data, the CRC-32 and length trailer match, the stream reaches
  its end marker;
* the NIfTI-1/2 header (parsed by nibabel from the first bytes of the stream);
* the data section: as many bytes as the header's shape and data type need;
* floating-point data only: no NaN or infinite values (integer voxels cannot hold them, so int16
  images cost no more than the decompression itself).

Decompression is the whole cost, so the common case takes a fast path: when the gzip trailer's
length field equals the size the header declares, the file is decompressed in one call by libdeflate
(through ``imagecodecs``, which verifies the same CRC-32 and length), two to three times faster than
zlib. Anything else (multi-member or padded files, files over :data:`WHOLE_FILE_LIMIT`, damaged
files) is streamed through zlib in pieces of :data:`CHUNK` bytes, which also produces the precise
error message.
"""
from __future__ import annotations

import io
import os
import threading
import zlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from .errors import ConversionError

#: bytes read from disk and produced by the inflater per step of the streaming path
CHUNK = 1 << 18
#: largest decompressed file taken by the one-call fast path (its buffer is held in memory)
WHOLE_FILE_LIMIT = 1 << 30
_GZIP_MAGIC = b"\x1f\x8b"


def iter_gzip(path: str, what: str = "image", chunk: int = CHUNK) -> Iterator[bytes]:
    """Yield the decompressed content of a gzip file in pieces of at most ``chunk`` bytes.

    Every member of a multi-member file is decompressed; bytes after the last member that do not
    start another member are ignored (as zlib's ``gzread`` does). Raises :class:`ConversionError`
    for corrupt deflate data, a CRC-32 or length mismatch, and a stream that ends before its end
    marker (a truncated file).
    """
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    with open(path, "rb") as f:
        pending = b""
        while True:
            if not pending:
                pending = f.read(chunk)
                if not pending:
                    break
            try:
                out = d.decompress(pending, chunk)
            except zlib.error as e:  # corrupt data, CRC-32 or length mismatch
                raise ConversionError(path, f"corrupt gzip data in {what} ({e})") from None
            if out:
                yield out
            if d.eof:  # end of one member: another one may follow
                rest = d.unused_data
                if len(rest) < len(_GZIP_MAGIC):
                    rest += f.read(len(_GZIP_MAGIC) - len(rest))
                if not rest.startswith(_GZIP_MAGIC):
                    return
                pending = rest
                d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            else:
                pending = d.unconsumed_tail
    raise ConversionError(path, f"truncated {what}: the gzip stream ends before its end marker "
                                f"(the file was cut short or is corrupt)")


def iter_plain(path: str, chunk: int = CHUNK) -> Iterator[bytes]:
    """Yield an uncompressed file in pieces of at most ``chunk`` bytes."""
    with open(path, "rb") as f:
        while block := f.read(chunk):
            yield block


@dataclass(frozen=True)
class NiftiScan:
    """What one pass over a NIfTI file found.

    ``voxels`` is only set when asked for (``keep_voxels``), the one-call path decoded the file and
    SimpleITK would return the stored values unchanged (3D, plain numeric type, no intensity scaling;
    see :func:`sitk_reads_unchanged`): then it equals ``sitk.GetArrayFromImage(sitk.ReadImage(path))``,
    in numpy (z, y, x) order, and the file need not be decompressed a second time.
    """

    shape: tuple  # NIfTI order (x, y, z, ...)
    dtype: np.dtype
    data_offset: int
    data_bytes: int
    total_bytes: int  # decompressed size of the whole file
    voxels: np.ndarray | None = None


def parse_nifti_header(first_bytes: bytes, path: str, what: str = "image"):
    """Parse a NIfTI-1 or NIfTI-2 header from the first (decompressed) bytes of a file with nibabel."""
    import nibabel as nib

    if len(first_bytes) < 348:
        raise ConversionError(path, f"unreadable {what}: {len(first_bytes)} bytes are too few for a NIfTI header")
    sizes = {int.from_bytes(first_bytes[:4], "little"), int.from_bytes(first_bytes[:4], "big")}
    if 348 in sizes:
        klass = nib.Nifti1Header
    elif 540 in sizes and len(first_bytes) >= 540:
        klass = nib.Nifti2Header
    else:
        raise ConversionError(path, f"unreadable {what}: not a NIfTI-1/2 file (header size field {sorted(sizes)[0]})")
    try:
        return klass.from_fileobj(io.BytesIO(first_bytes))
    except Exception as e:  # nibabel's HeaderDataError / HeaderTypeError / ValueError
        raise ConversionError(path, f"unreadable {what}: invalid NIfTI header ({e})") from None


class _FiniteCounter:
    """Counts NaN and infinite values in a byte stream of ``dtype`` items, piece by piece."""

    def __init__(self, dtype: np.dtype):
        self.dtype = dtype
        self.carry = b""
        self.n_nan = 0
        self.n_inf = 0

    def feed(self, data: bytes | memoryview) -> None:
        if self.carry:
            data = self.carry + bytes(data)
        usable = len(data) - len(data) % self.dtype.itemsize
        self.carry = bytes(data[usable:])
        values = np.frombuffer(data, dtype=self.dtype, count=usable // self.dtype.itemsize)
        if values.size and not np.isfinite(values).all():
            self.n_nan += int(np.isnan(values).sum())
            self.n_inf += int(np.isinf(values).sum())


def _has_float_values(dtype: np.dtype) -> bool:
    return dtype.fields is None and (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.complexfloating))


def scan_nifti(path: str | os.PathLike, what: str = "image", keep_voxels: bool = False) -> NiftiScan:
    """Validate a ``.nii`` or ``.nii.gz`` file in one pass (see the module docstring).

    With ``keep_voxels``, the decoded voxels are returned where that is possible (see :class:`NiftiScan`).

    Raises
    ------
    ConversionError
        Corrupt or truncated gzip stream, invalid header, a data section shorter than the header
        declares, or NaN/infinite values in floating-point data; the message names the file.
    """
    path = os.fspath(path)
    if path.endswith(".gz"):
        fast = _scan_gzip_in_one_call(path, what, keep_voxels)
        if fast is not None:
            return fast
    pieces = iter_gzip(path, what) if path.endswith(".gz") else iter_plain(path)
    head = b""
    for piece in pieces:
        head += piece
        if len(head) >= 540:
            break
    header = parse_nifti_header(head, path, what)
    shape = tuple(int(s) for s in header.get_data_shape())
    dtype = header.get_data_dtype()
    offset = int(header.get_data_offset())
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    end = offset + nbytes
    counter = _FiniteCounter(dtype) if _has_float_values(dtype) else None

    total = 0
    for piece in _chain(head, pieces):
        lo, hi = total, total + len(piece)
        total = hi
        if counter is not None and hi > offset and lo < end:
            counter.feed(memoryview(piece)[max(offset - lo, 0): min(end, hi) - lo])
    if total < end:
        raise ConversionError(path, f"truncated {what}: the data section holds {max(total - offset, 0)} of the "
                                    f"{nbytes} bytes its header declares (shape {shape}, {dtype.name})")
    if counter is not None and (counter.n_nan or counter.n_inf):
        raise ConversionError(path, f"{what} contains {counter.n_nan} NaN and {counter.n_inf} infinite intensities")
    return NiftiScan(shape, dtype, offset, nbytes, total)


_SCRATCH = threading.local()
#: largest scratch buffer kept between files (per thread); larger ones are freed after use
_SCRATCH_KEEP = 1 << 27


def _scratch(nbytes: int) -> np.ndarray:
    """A ``nbytes`` uint8 buffer, reused by the next file of this thread (saves the page faults of a
    fresh allocation, about a sixth of the decompression time of a BraTS volume)."""
    buf = getattr(_SCRATCH, "buf", None)
    if buf is None or buf.size < nbytes:
        buf = np.empty(nbytes, dtype=np.uint8)
        _SCRATCH.buf = buf if nbytes <= _SCRATCH_KEEP else None
    return buf[:nbytes]


def _scan_gzip_in_one_call(path: str, what: str, keep_voxels: bool = False) -> NiftiScan | None:
    """The fast path of :func:`scan_nifti`, or ``None`` where it does not apply or the file looks damaged
    (the streaming path then finds and names the problem)."""
    try:
        import imagecodecs
        if not imagecodecs.GZIP.available:
            return None
    except ImportError:
        return None
    if os.path.getsize(path) > WHOLE_FILE_LIMIT:
        return None
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 18 or not data.startswith(_GZIP_MAGIC):
        return None
    try:
        head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[:CHUNK], 540)
        header = parse_nifti_header(head, path, what)
    except (zlib.error, ConversionError):
        return None
    shape = tuple(int(s) for s in header.get_data_shape())
    dtype = header.get_data_dtype()
    offset = int(header.get_data_offset())
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    total = offset + nbytes
    if total > WHOLE_FILE_LIMIT or total != int.from_bytes(data[-4:], "little"):  # trailer: length mod 2**32
        return None
    keep = keep_voxels and sitk_reads_unchanged(header)
    out = np.empty(total, dtype=np.uint8) if keep else _scratch(total)
    try:  # libdeflate checks the deflate data, the CRC-32 and the length
        decoded = imagecodecs.gzip_decode(data, out=out)
    except Exception:
        return None
    if len(decoded) != total:  # only the first member of a multi-member file was decoded
        return None
    if _has_float_values(dtype):
        counter = _FiniteCounter(dtype)
        counter.feed(memoryview(out)[offset:total])
        if counter.n_nan or counter.n_inf:
            raise ConversionError(path, f"{what} contains {counter.n_nan} NaN and {counter.n_inf} infinite "
                                        f"intensities")
    voxels = None
    if keep:  # NIfTI stores x fastest: read in C order, the axes come out as (z, y, x)
        voxels = np.frombuffer(out, dtype=dtype, count=nbytes // dtype.itemsize, offset=offset).reshape(shape[::-1])
        if not dtype.isnative:
            voxels = voxels.astype(dtype.newbyteorder("="))
    return NiftiScan(shape, dtype, offset, nbytes, total, voxels)


#: NIfTI data types that SimpleITK returns as the same NumPy type
_SITK_PLAIN_TYPES = {"u1", "i1", "u2", "i2", "u4", "i4", "f4", "f8"}


def sitk_reads_unchanged(header) -> bool:
    """Whether SimpleITK returns this file's stored values as they are: a 3D image of a plain numeric
    type without intensity scaling (ITK's NIfTI reader applies ``scl_slope``/``scl_inter`` unless
    the slope is 0 or non-finite, or the pair is 1/0, and then returns floats)."""
    dtype = header.get_data_dtype()
    if len(header.get_data_shape()) != 3 or dtype.fields is not None or dtype.str[1:] not in _SITK_PLAIN_TYPES:
        return False
    slope, inter = (float(header["scl_slope"]), float(header["scl_inter"]))
    slope = slope if np.isfinite(slope) else 0.0
    inter = inter if np.isfinite(inter) else 0.0
    return slope == 0.0 or (slope == 1.0 and inter == 0.0)


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest
