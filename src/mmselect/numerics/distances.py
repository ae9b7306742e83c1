"""Pairwise squared Euclidean distances, computed as ``|a|^2 + |b|^2 - 2 a.b`` with BLAS.

Two forms of the same expansion: :func:`squared_distances` for numpy blocks (in place, the
matrix product first, so a block costs one ``len(a) x len(b)`` buffer) and
:func:`squared_distances_torch` for torch tensors, in the order of the official COINCIDE code
(``sq_a + sq_b - 2 a.b``). Negative values from cancellation are clamped to 0 by the numpy form
(``clamp=True``) and left to the caller by the torch form, whose kernels exponentiate them.
"""

from __future__ import annotations

import numpy as np


def row_norms_squared(x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, x)


def squared_distances(a: np.ndarray, b: np.ndarray | None = None, *, a_sq=None, b_sq=None, clamp: bool = True) -> np.ndarray:
    """``D[i, j] = ||a_i - b_j||^2`` (``b`` defaults to ``a``), in the dtype of ``a @ b.T``.
    ``a_sq``/``b_sq``: the rows' squared norms when already known."""
    b = a if b is None else b
    a_sq = row_norms_squared(a) if a_sq is None else a_sq
    b_sq = (a_sq if b is a else row_norms_squared(b)) if b_sq is None else b_sq
    d2 = a @ b.T
    d2 *= -2.0
    d2 += a_sq[:, None]
    d2 += b_sq[None, :]
    if clamp:
        np.maximum(d2, 0.0, out=d2)
    return d2


def euclidean_distances(a: np.ndarray, b: np.ndarray | None = None, *, a_sq=None, b_sq=None) -> np.ndarray:
    """``||a_i - b_j||`` (the square root of :func:`squared_distances`, in place)."""
    d2 = squared_distances(a, b, a_sq=a_sq, b_sq=b_sq)
    return np.sqrt(d2, out=d2)


def squared_distances_torch(a, b=None, *, a_sq=None, b_sq=None):
    """:func:`squared_distances` for torch tensors: ``sq_a[:, None] + sq_b[None, :] - 2 a @ b.T``."""
    b = a if b is None else b
    a_sq = (a * a).sum(1) if a_sq is None else a_sq
    b_sq = (a_sq if b is a else (b * b).sum(1)) if b_sq is None else b_sq
    return a_sq[:, None] + b_sq[None, :] - 2.0 * (a @ b.T)
