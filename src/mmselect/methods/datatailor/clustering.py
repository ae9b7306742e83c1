"""DataTailor's clusters: exact Ward on a task, or Ward on size-weighted k-means micro-clusters."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...numerics import (
    euclidean_distances,
    kmeans_labels,
    pca_project,
    squared_distances,
)

# Approximate route: k-means iterations of the micro-clustering, rows sampled to fit the PCA.
KMEANS_ITERATIONS = 10
KMEANS_POINTS_PER_CENTROID = 8  # k-means is fitted on at most 8 x micro-clusters rows, then assigns all
PCA_SAMPLE = 10000

def _linkage_ward(condensed: np.ndarray) -> np.ndarray:
    try:
        import fastcluster
    except ImportError:  # pragma: no cover - fastcluster is a dependency
        from scipy.cluster.hierarchy import linkage

        return linkage(condensed, method="ward")
    return fastcluster.linkage(condensed, method="ward", preserve_input=False)


def _cut(z: np.ndarray, lam: float, space: str) -> tuple[np.ndarray, float, float]:
    from scipy.cluster.hierarchy import fcluster

    root = float(z[-1, 2])
    threshold = (lam if space == "height" else math.sqrt(lam)) * root
    labels = fcluster(z, t=threshold, criterion="distance")
    return labels.astype(np.int64) - 1, root, threshold


def condensed_distances(x: np.ndarray, block_rows: int = 2048) -> np.ndarray:
    """Condensed Euclidean distances (scipy order) of the rows of ``x`` in float64.

    Computed block by block with BLAS on the centred rows (``|a|^2 + |b|^2 - 2 a.b``), only for
    the upper triangle; memory: the ``n(n-1)/2`` output plus a ``block_rows x n`` work block.
    """
    n = len(x)
    xc = np.asarray(x, dtype=np.float64)
    xc = xc - xc.mean(axis=0)
    sq = np.einsum("ij,ij->i", xc, xc)
    out = np.empty(n * (n - 1) // 2, dtype=np.float64)
    for a in range(0, n, block_rows):
        b = min(n, a + block_rows)
        d2 = euclidean_distances(xc[a:b], xc[a:], a_sq=sq[a:b], b_sq=sq[a:])
        for i in range(a, b):
            start = i * n - i * (i + 1) // 2
            out[start : start + n - i - 1] = d2[i - a, i - a + 1 :]
    return out


def ward_labels_exact(
    x: np.ndarray, lam: float = 0.1, space: str = "height", block_rows: int = 2048
) -> tuple[np.ndarray, dict[str, Any]]:
    """Official clustering: Ward on all rows, cut at ``lam`` (or ``sqrt(lam)``) x root height."""
    n = len(x)
    if n <= 1:
        return np.zeros(n, dtype=np.int64), {"root_height": 0.0, "threshold": 0.0}
    z = _linkage_ward(condensed_distances(x, block_rows=min(block_rows, 2048)))
    labels, root, threshold = _cut(z, lam, space)
    return labels, {"root_height": root, "threshold": threshold}


def ward_labels_approx(
    x: np.ndarray,
    lam: float = 0.1,
    space: str = "height",
    *,
    micro_clusters: int = 4096,
    ward_points: int = 16384,
    dim: int | None = 128,
    backend: str = "auto",
    seed: int = 0,
    block_rows: int = 4096,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Approximate Ward for large tasks: Ward on k-means micro-clusters, weighted by their sizes.

    1. k-means (faiss, else scikit-learn) splits the task into ``micro_clusters`` micro-clusters,
       in a ``dim``-dimensional PCA projection (fitted on a 10,000-row sample); 10 iterations,
       fitted on at most 8 rows per micro-cluster, then every row is assigned to its nearest centroid.
    2. Each micro-cluster's centroid is the exact mean of its members' full features.
    3. Weighted Ward on the centroids. No library takes weights, so each centroid is repeated
       ``r_c = max(1, round(w_c / s))`` times, with the smallest unit ``s`` that keeps the total
       within ``ward_points`` points. Ward merges the copies first at height 0; from there on it runs
       exactly as Ward started from the micro-clusters with weights ``s r_c ~ w_c`` (all heights
       scaled by ``1/sqrt(s)``, which the relative cut ignores).
    4. The dendrogram is cut like the exact one and each sample takes its micro-cluster's label.

    The approximation: samples of one micro-cluster always share a cluster, and weights are
    rounded to multiples of ``s``.
    """
    n, d = x.shape
    m = int(min(micro_clusters, n))
    if dim is None or dim >= d:
        work = x
    else:  # centred PCA fitted on a row sample; only the micro-clustering uses it
        work, _ = pca_project(
            x, int(dim), seed=seed, center=True, normalize_input=False, normalize_output=False,
            sample_size=PCA_SAMPLE, block_rows=block_rows,
        )
    assign, used_backend = kmeans_labels(
        work, m, backend=backend, seed=seed, niter=KMEANS_ITERATIONS, max_points_per_centroid=KMEANS_POINTS_PER_CENTROID
    )
    del work
    _, assign = np.unique(assign, return_inverse=True)
    weights = np.bincount(assign).astype(np.float64)
    sums = _group_sums(x, assign, len(weights), block_rows)
    scale = _replica_scale(weights, ward_points)
    m = len(weights)
    centroids = sums / weights[:, None]
    del sums
    reps = np.maximum(1, np.rint(weights / scale)).astype(np.int64)
    if m == 1:
        return np.zeros(n, dtype=np.int64), {
            "micro_clusters": 1, "ward_points": 1, "weight_scale": float(scale),
            "weight_error_mean": 0.0, "kmeans_backend": used_backend, "pca_dim": dim,
            "root_height": 0.0, "threshold": 0.0,
        }
    # Distances between distinct centroids, then the condensed matrix of the repeated points.
    cdist = _square_distances(centroids)
    point_of = np.repeat(np.arange(m), reps)
    total = len(point_of)
    condensed = np.empty(total * (total - 1) // 2, dtype=np.float64)
    for i in range(total):
        start = i * total - i * (i + 1) // 2
        condensed[start : start + total - i - 1] = cdist[point_of[i], point_of[i + 1 :]]
    del cdist
    z = _linkage_ward(condensed)
    del condensed
    point_labels, root, threshold = _cut(z, lam, space)
    first_point = np.concatenate([[0], np.cumsum(reps)[:-1]])
    micro_labels = point_labels[first_point]
    _, micro_labels = np.unique(micro_labels, return_inverse=True)
    error = np.abs(reps * scale - weights) / weights
    return micro_labels[assign].astype(np.int64), {
        "micro_clusters": int(m),
        "ward_points": int(total),
        "weight_scale": float(scale),
        "weight_error_mean": float(np.average(error, weights=weights)),
        "kmeans_backend": used_backend,
        "pca_dim": None if dim is None or dim >= d else int(dim),
        "root_height": root,
        "threshold": threshold,
    }


def _group_sums(x: np.ndarray, assign: np.ndarray, m: int, block_rows: int) -> np.ndarray:
    """Per-group sums of the rows of ``x`` (float64): one-hot (m x b) @ block, block by block."""
    from scipy import sparse

    sums = np.zeros((m, x.shape[1]), dtype=np.float64)
    for a in range(0, len(x), block_rows):
        part = assign[a : a + block_rows]
        onehot = sparse.csr_matrix(
            (np.ones(len(part), dtype=np.float32), (part, np.arange(len(part)))), shape=(m, len(part))
        )
        sums += onehot @ x[a : a + block_rows]
    return sums


def _replica_scale(weights: np.ndarray, budget: int) -> float:
    """Smallest weight unit ``s`` (to 0.1 %) with ``sum(max(1, round(w / s))) <= budget``.

    Never below 1: with ``s = 1`` the copies are the exact (integer) sizes.
    """
    def count(s):
        return int(np.maximum(1, np.rint(weights / s)).sum())

    if count(1.0) <= budget:
        return 1.0

    hi = weights.sum() / max(budget - len(weights), 1)  # always feasible: sum <= n/hi + m = budget
    lo = hi / 64
    if count(lo) <= budget:
        return float(lo)
    for _ in range(60):
        if hi / lo < 1.001:
            break
        mid = (lo * hi) ** 0.5
        lo, hi = (lo, mid) if count(mid) <= budget else (mid, hi)
    return float(hi)


def _square_distances(points: np.ndarray) -> np.ndarray:
    """Full Euclidean distance matrix (float64) of a modest number of points."""
    pc = points - points.mean(axis=0)
    d2 = squared_distances(pc)
    np.fill_diagonal(d2, 0.0)
    return np.sqrt(d2, out=d2)


