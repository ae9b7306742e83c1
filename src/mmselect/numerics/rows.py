"""Row blocks as float32, unit-norm rows.

Built on the readers of :mod:`mmselect.features.rows` (``pread`` on memory-mapped ``.npy``
files, so a 27 GB float16 embedding streamed block by block does not grow the resident set).
"""

from __future__ import annotations

import numpy as np

from ..features.rows import gather_rows, release_pages
from .finite import NonFiniteRowsError

#: Rows processed at a time by the streaming routines (about 64 MiB of float32 at width 1,024).
BLOCK_ROWS = 16_384


def l2_normalize(block: np.ndarray, copy: bool = False, row_numbers: np.ndarray | None = None) -> np.ndarray:
    """Rows scaled to unit L2 norm; all-zero rows stay zero. A row with NaN/inf raises
    :class:`~mmselect.numerics.finite.NonFiniteRowsError` (its squared norm is not finite),
    naming ``row_numbers``."""
    out = np.array(block, copy=True) if copy else block
    norms = np.sqrt(np.einsum("ij,ij->i", out, out))
    finite = np.isfinite(norms)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise NonFiniteRowsError(bad if row_numbers is None else np.asarray(row_numbers)[bad])
    norms[norms == 0] = 1
    out /= norms[:, None].astype(out.dtype, copy=False)
    return out


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """L2-normalise the rows of a float array in place (zero rows stay zero)."""
    return l2_normalize(x)


def read_rows(array: np.ndarray, rows: "slice | np.ndarray", *, normalize: bool = False) -> np.ndarray:
    """Rows of ``array`` (a slice, or indices in any order) as a new float32 array; the mapped
    pages of a memory-mapped ``array`` are released afterwards."""
    if isinstance(rows, slice):
        block = np.array(array[rows], dtype=np.float32, copy=True)
        release_pages(array)
    else:
        block = gather_rows(array, rows, dtype=np.float32)
    return normalize_rows(block) if normalize else block
