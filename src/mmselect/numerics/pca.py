"""Randomized PCA (or uncentred SVD) of the rows of a large, possibly memory-mapped matrix.

:func:`randomized_pca` finds the directions from a seeded sample of rows; :func:`pca_project`
also projects every row, block by block, so the full matrix is never held in float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .rows import BLOCK_ROWS, normalize_rows, read_rows
from .runtime import single_threaded


@dataclass
class PCABasis:
    """``components`` (dim, d), float32 torch tensor, rows unit norm (zero rows beyond ``rank``);
    ``mean`` (d,), the centre subtracted before projecting (zeros when uncentred)."""

    components: "object"
    mean: "object"
    rank: int
    sample: int
    explained: float


def _symmetric_eigh(matrix):
    import torch

    with single_threaded():
        return torch.linalg.eigh(matrix.double())


def _orthonormal_columns(y):
    """An orthonormal basis of the column span of ``y`` (float64 Gram eigendecomposition;
    directions with negligible energy are dropped)."""
    eigenvalues, vectors = _symmetric_eigh(y.T @ y)
    keep = eigenvalues > eigenvalues.max() * 1e-12
    return (y.double() @ (vectors[:, keep] / eigenvalues[keep].sqrt())).float()


def randomized_pca(
    array: np.ndarray,
    dim: int,
    *,
    seed: int,
    center: bool,
    normalize_input: bool = False,
    sample_size: int = 32_768,
    power_iters: int = 2,
    oversample: int = 16,
) -> PCABasis:
    """Top ``dim`` principal directions of the rows of ``array``.

    A randomized SVD (range finder with ``power_iters`` re-orthonormalised power iterations) of
    at most ``sample_size`` rows drawn with ``seed``, using only matrix products and small
    single-threaded float64 eigendecompositions. ``center=False`` gives the uncentred SVD (the
    subspace that best preserves inner products, for cosine geometry); ``center=True`` the usual
    PCA (preserves Euclidean distances). ``normalize_input``: rows are L2-normalised first.
    Signs are deterministic: the largest-magnitude coordinate of each direction is positive.
    ``explained``: share of the sample's (centred) energy kept.
    """
    import torch

    n, d = array.shape
    rng = np.random.default_rng(seed)
    m = min(n, sample_size)
    sample = np.sort(rng.choice(n, m, replace=False)) if m < n else np.arange(n)
    a = torch.from_numpy(read_rows(array, sample, normalize=normalize_input))
    mean = a.mean(0) if center else torch.zeros(d)
    a -= mean
    q = min(dim + oversample, m, d)
    y = a @ torch.from_numpy(rng.standard_normal((d, q)).astype(np.float32))
    for _ in range(power_iters):
        y = a @ (a.T @ _orthonormal_columns(y))
    b = _orthonormal_columns(y).T @ a  # (q', d): a restricted to the found range
    eigenvalues, u = _symmetric_eigh(b @ b.T)  # squared singular values of b
    top = torch.argsort(eigenvalues, descending=True)[:dim]
    s = eigenvalues[top].clamp(min=0).sqrt()
    top, s = top[s > 0], s[s > 0]
    rank = int(len(top))
    components = torch.zeros(dim, d)  # rank-deficient data: the missing directions stay zero
    components[:rank] = ((b.double().T @ u[:, top]) / s).T.float()
    pivot = components[:rank].abs().argmax(1)
    components[:rank] *= torch.sign(components[torch.arange(rank), pivot]).unsqueeze(1)
    energy = float((a * a).sum())
    explained = float((s**2).sum()) / energy if energy > 0 else 1.0
    return PCABasis(components=components, mean=mean, rank=rank, sample=int(m), explained=explained)


def project(
    array: np.ndarray,
    basis: PCABasis,
    *,
    normalize_input: bool = False,
    normalize_output: bool = False,
    block_rows: int = BLOCK_ROWS,
) -> np.ndarray:
    """``(row - mean) @ components.T`` for every row of ``array``, block by block, as float32."""
    import torch

    n = array.shape[0]
    dim = basis.components.shape[0]
    out = np.empty((n, dim), dtype=np.float32)
    proj = basis.components.T.contiguous()
    for start in range(0, n, block_rows):
        stop = min(n, start + block_rows)
        block = torch.from_numpy(read_rows(array, slice(start, stop), normalize=normalize_input))
        out[start:stop] = ((block - basis.mean) @ proj).numpy()
    if normalize_output:
        normalize_rows(out)
    return out


def pca_project(
    array: np.ndarray,
    dim: int,
    *,
    seed: int,
    center: bool,
    normalize_input: bool,
    normalize_output: bool,
    sample_size: int = 32_768,
    power_iters: int = 2,
    oversample: int = 16,
    block_rows: int = BLOCK_ROWS,
) -> tuple[np.ndarray, dict]:
    """Project the rows of ``array`` onto their top ``dim`` principal directions
    (:func:`randomized_pca`, then :func:`project`). Returns the ``(n, dim)`` float32 projection
    and diagnostics (``explained_variance``: share of the sample's (centred) energy kept)."""
    basis = randomized_pca(
        array, dim, seed=seed, center=center, normalize_input=normalize_input,
        sample_size=sample_size, power_iters=power_iters, oversample=oversample,
    )
    out = project(array, basis, normalize_input=normalize_input, normalize_output=normalize_output, block_rows=block_rows)
    info = {"dim": int(dim), "rank": basis.rank, "sample": basis.sample, "centered": bool(center),
            "explained_variance": round(basis.explained, 6)}
    return out, info
