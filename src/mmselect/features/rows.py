"""Reading rows of (possibly memory-mapped) 2-D arrays without keeping their pages resident.

A features directory holds ``.npy`` arrays opened memory-mapped (see
:class:`~mmselect.features.store.FeatureSet`); touching a mapping leaves its pages in the
process's resident set, so a 27 GB float16 embedding read through the mapping ends up counted
in full. The readers here read rows of a memory-mapped ``.npy`` with ``pread`` instead: the data
pass through the kernel's page cache but are never mapped into the process, so streaming an
array block by block keeps the resident set at a block or two.

* :func:`read_rows`: sorted rows in the stored dtype; :func:`gather_rows`: rows in any order,
  cast; :func:`iter_row_blocks`: consecutive blocks of (a selection of) the rows, the next block
  read in the background.
* :func:`cast`: a fast float16 -> float32/float64 conversion.
* :func:`release_pages` drops the mapped pages of arrays that were read through the mapping;
  :func:`release_memory` hands freed heap memory back to the operating system.

Arrays that are not memory-mapped ``.npy`` files are indexed directly.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator

import numpy as np


def _find_mmap(array) -> mmap.mmap | None:
    obj = array
    for _ in range(8):  # walk the .base chain of views
        if obj is None:
            return None
        if isinstance(obj, mmap.mmap):
            return obj
        mm = getattr(obj, "_mmap", None)
        if isinstance(mm, mmap.mmap):
            return mm
        obj = getattr(obj, "base", None)
    return None


def release_pages(array) -> None:
    """Drop the pages of a memory-mapped array from this process's resident set.

    The data stay in the kernel's page cache (a re-read is cheap), but they no longer count
    towards the process's RSS. A no-op for arrays that are not memory-mapped.
    """
    mm = _find_mmap(array)
    if mm is None or not hasattr(mm, "madvise"):
        return
    try:
        mm.madvise(mmap.MADV_DONTNEED)
    except (OSError, ValueError, AttributeError):  # pragma: no cover - platform dependent
        pass


_LIBC = None


def release_memory() -> None:
    """Hand freed heap memory back to the operating system (glibc ``malloc_trim``; a no-op
    elsewhere). Long-lived small arrays interleaved with large short-lived ones otherwise keep
    gigabytes of freed-but-resident heap pages."""
    global _LIBC
    if _LIBC is None:
        try:
            import ctypes

            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


def file_backing(x) -> tuple[str, int] | None:
    """(file name, byte offset of row 0) when ``x`` is a whole, C-ordered ``np.memmap`` (as
    ``np.load(mmap_mode="r")`` returns), else None."""
    if not isinstance(x, np.memmap) or not isinstance(x.base, mmap.mmap) or not x.flags.c_contiguous:
        return None
    if x.ndim != 2 or getattr(x, "filename", None) is None:
        return None
    return x.filename, int(x.offset)


def read_rows(x, rows: np.ndarray) -> np.ndarray:
    """``x[rows]`` for sorted ``rows``, in the stored dtype, as a fresh array.

    For a memory-mapped ``.npy`` the rows are read with ``pread`` (runs of consecutive rows in
    one call): the data pass through the page cache but are never mapped into this process,
    so they do not add to its resident set. Other arrays are indexed directly."""
    rows = np.asarray(rows, dtype=np.int64)
    backing = file_backing(x)
    if backing is None or len(rows) == 0:
        out = np.asarray(x[rows])
        release_pages(x)
        return out if out.flags.owndata else out.copy()
    filename, offset = backing
    row_bytes = x.shape[1] * x.dtype.itemsize
    out = np.empty((len(rows), x.shape[1]), dtype=x.dtype)
    view = memoryview(out.reshape(-1).view(np.uint8))
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts, stops = np.r_[0, breaks], np.r_[breaks, len(rows)]
    fd = os.open(filename, os.O_RDONLY)
    try:
        for a, b in zip(starts.tolist(), stops.tolist()):
            target = view[a * row_bytes : b * row_bytes]
            position = offset + int(rows[a]) * row_bytes
            while len(target):
                got = os.preadv(fd, [target], position)
                if got <= 0:
                    raise OSError(f"short read from {filename}")
                target, position = target[got:], position + got
    finally:
        os.close(fd)
    return out


def cast(a: np.ndarray, dtype) -> np.ndarray:
    """``a.astype(dtype)`` (a fresh array unless it already has ``dtype``). float16 sources are
    converted by torch, several times faster than numpy's float16 cast on CPUs."""
    dtype = np.dtype(dtype)
    if a.dtype == dtype:
        return a
    if a.dtype == np.float16 and dtype in (np.float32, np.float64) and a.size:
        import torch

        source = torch.from_numpy(np.ascontiguousarray(a))
        return source.to(torch.float32 if dtype == np.float32 else torch.float64).numpy()
    return a.astype(dtype)


def gather_rows(x, rows: np.ndarray, dtype=np.float32, release: bool = True) -> np.ndarray:
    """``x[rows]`` as a fresh in-memory array of ``dtype`` (``rows`` need not be sorted).

    The rows are read in ascending order (front to back through the file) in the stored dtype,
    put in the requested order, then cast in one contiguous pass."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return np.empty((0, x.shape[1]), dtype=dtype)
    order = np.argsort(rows, kind="stable")
    raw = read_rows(x, rows[order])
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return cast(raw[inverse], dtype)


def _read_block(x, rows, start, stop, is_sorted):
    """Rows ``start:stop`` of the selection ``rows`` (all rows when None), stored dtype."""
    if rows is None:
        return read_rows(x, np.arange(start, stop))
    want = np.asarray(rows[start:stop], dtype=np.int64)
    lo, hi = int(want[0]), int(want[-1]) + 1
    if is_sorted and hi - lo <= 2 * len(want):
        return read_rows(x, np.arange(lo, hi))[want - lo]
    order = np.argsort(want, kind="stable")
    raw = read_rows(x, want[order])
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return raw[inverse]


def iter_row_blocks(
    x, rows: np.ndarray | None = None, block_rows: int = 8192, dtype=np.float32
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(positions, block)``: consecutive groups of the rows ``rows`` (default: all rows),
    ``positions`` being indices into ``rows`` (or row numbers when ``rows`` is None) and ``block``
    the rows converted to ``dtype`` (always a fresh array). Sorted ``rows`` that cover most of
    their span are read as one contiguous range. Memory-mapped files are read with ``pread``
    (see :func:`read_rows`), so the resident set holds two blocks at a time: the next block is
    read in a background thread while the caller works on the current one."""
    from concurrent.futures import ThreadPoolExecutor

    n = x.shape[0] if rows is None else len(rows)
    block_rows = max(1, int(block_rows))
    is_sorted = rows is None or bool(np.all(np.diff(rows) > 0))
    starts = list(range(0, n, block_rows))
    if not starts:
        return
    with ThreadPoolExecutor(1) as reader:
        pending = reader.submit(_read_block, x, rows, 0, min(n, block_rows), is_sorted)
        for i, start in enumerate(starts):
            stop = min(n, start + block_rows)
            raw = pending.result()
            if i + 1 < len(starts):
                nxt = starts[i + 1]
                pending = reader.submit(_read_block, x, rows, nxt, min(n, nxt + block_rows), is_sorted)
            block = cast(raw, dtype)
            if block is raw and not block.flags.owndata:
                block = block.copy()
            yield np.arange(start, stop), block


# Rows read at once by :func:`nonfinite_rows` when not told (bytes in the stored dtype).
_SCAN_BLOCK_BYTES = 64 << 20


def _nonfinite_in_block(block: np.ndarray) -> np.ndarray:
    """Boolean per row of a C-contiguous 2-D block: the row holds NaN or inf."""
    if block.dtype == np.float16:
        # all exponent bits set <=> NaN or inf; about 3x faster than np.isfinite on float16
        return np.bitwise_and(block.view(np.uint16), 0x7C00).max(axis=1, initial=0) == 0x7C00
    return ~np.isfinite(block).all(axis=1)


def nonfinite_rows(x, block_rows: int | None = None) -> np.ndarray:
    """Row numbers (ascending, int64) of the rows of the 2-D array ``x`` that hold NaN or inf.

    ``x`` is scanned in blocks of ``block_rows`` rows (default: about 64 MiB of stored data per
    block) in its stored dtype. A memory-mapped ``.npy`` is read with :func:`iter_row_blocks`
    (``pread``, never through the mapping), so the resident set stays at two blocks however
    large the file. Arrays of integers or booleans have no such rows."""
    if x.dtype.kind not in "fc":
        return np.empty(0, dtype=np.int64)
    n = x.shape[0]
    if block_rows is None:
        row_bytes = max(1, int(np.prod(x.shape[1:])) * x.dtype.itemsize)
        block_rows = max(1, _SCAN_BLOCK_BYTES // row_bytes)
    block_rows = max(1, int(block_rows))
    if isinstance(x, np.ndarray) and not isinstance(x, np.memmap):  # in memory: plain slices
        blocks = ((np.arange(s, min(n, s + block_rows)), x[s : s + block_rows]) for s in range(0, n, block_rows))
    else:
        blocks = iter_row_blocks(x, None, block_rows, dtype=x.dtype)
    bad = [positions[_nonfinite_in_block(np.ascontiguousarray(block))] for positions, block in blocks]
    bad = [part for part in bad if len(part)]
    return np.concatenate(bad).astype(np.int64, copy=False) if bad else np.empty(0, dtype=np.int64)
