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
# Above this many micro-clusters, k-means runs in two levels (see _micro_cluster_labels).
KMEANS_FLAT_MAX = 1024

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
    ward_points: int | None = None,
    dim: int | None = 128,
    backend: str = "auto",
    seed: int = 0,
    block_rows: int = 4096,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Approximate Ward for large tasks: Ward on k-means micro-clusters, weighted by their sizes.

    1. k-means (faiss, else scikit-learn) splits the task into ``micro_clusters`` micro-clusters,
       in a ``dim``-dimensional PCA projection (fitted on a 10,000-row sample); 10 iterations,
       fitted on at most 8 rows per micro-cluster, then every row is assigned to its nearest centroid.
       Above 1,024 micro-clusters in two levels (:func:`_micro_cluster_labels`).
    2. Each micro-cluster's centroid is the exact mean of its members' full features.
    3. Ward on the centroids, each weighted by its size (:func:`weighted_ward_linkage`): exactly
       Ward started from the micro-clusters instead of from single samples.
       ``ward_points`` (an integer) instead rounds the weights to ``s r_c`` with
       ``r_c = max(1, round(w_c / s))`` and the smallest unit ``s`` that keeps ``sum r_c`` within
       ``ward_points``: the same tree as plain Ward on ``r_c`` copies of every centroid, which is
       how earlier versions computed it. Heights scale by ``sqrt(s)``, which the relative cut ignores.
    4. The dendrogram is cut like the exact one and each sample takes its micro-cluster's label.

    The approximation: samples of one micro-cluster always share a cluster (and, with an integer
    ``ward_points``, weights are rounded to multiples of ``s``).
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
    assign, used_backend = _micro_cluster_labels(work, m, backend=backend, seed=seed)
    del work
    _, assign = np.unique(assign, return_inverse=True)
    weights = np.bincount(assign).astype(np.float64)
    sums = _group_sums(x, assign, len(weights), block_rows)
    m = len(weights)
    if ward_points is None:  # exact weights
        scale, ward_weights = 1.0, weights
    else:
        scale = _replica_scale(weights, int(ward_points))
        ward_weights = np.maximum(1, np.rint(weights / scale))
    centroids = sums / weights[:, None]
    del sums
    if m == 1:
        return np.zeros(n, dtype=np.int64), {
            "micro_clusters": 1, "ward_points": 1, "weight_scale": float(scale),
            "weight_error_mean": 0.0, "kmeans_backend": used_backend, "pca_dim": dim,
            "root_height": 0.0, "threshold": 0.0,
        }
    z = weighted_ward_linkage(centroids, ward_weights, block_rows=block_rows)
    del centroids
    micro_labels, root, threshold = _cut(z, lam, space)
    _, micro_labels = np.unique(micro_labels, return_inverse=True)
    error = np.abs(ward_weights * scale - weights) / weights
    return micro_labels[assign].astype(np.int64), {
        "micro_clusters": int(m),
        "ward_points": int(ward_weights.sum()),
        "weight_scale": float(scale),
        "weight_error_mean": float(np.average(error, weights=weights)),
        "kmeans_backend": used_backend,
        "pca_dim": None if dim is None or dim >= d else int(dim),
        "root_height": root,
        "threshold": threshold,
    }


def weighted_ward_linkage(points: np.ndarray, weights: np.ndarray, block_rows: int = 2048) -> np.ndarray:
    """Ward linkage of ``points`` that start as clusters of the given (positive) ``weights``.

    The same tree as plain Ward on ``points[i]`` repeated ``weights[i]`` times (for integer
    weights), without the copies: no library takes starting weights, so this runs the
    nearest-neighbour chain on a dense ``m x m`` float64 matrix of squared Ward distances
    ``2 w_a w_b / (w_a + w_b) ||p_a - p_b||^2``, updated by the Lance-Williams formula
    ``d(k, a+b)^2 = ((w_k + w_a) d(k, a)^2 + (w_k + w_b) d(k, b)^2 - w_k d(a, b)^2) / (w_k + w_a + w_b)``.
    With unit weights the heights are those of ``scipy``/``fastcluster`` Ward (Euclidean
    distances between single points).

    Returns a scipy linkage matrix (merges in order of height; column 3 counts the points).
    Memory: the ``8 m^2``-byte matrix plus one row block; time: one ``m x m x d`` product and
    ``O(m^2)`` vector work.
    """
    m = len(points)
    w = np.asarray(weights, dtype=np.float64).copy()
    d2 = _ward_matrix(np.asarray(points, dtype=np.float64), w, block_rows)
    merges = np.empty((m - 1, 3), dtype=np.float64)
    chain: list[int] = []
    active = np.ones(m, dtype=bool)
    original = np.arange(m)  # the point (slot) each row of the shrinking matrix stands for
    for step in range(m - 1):
        alive = m - step
        if alive >= 1024 and 2 * alive <= len(d2):
            # Drop the merged rows and columns: every later step costs O(alive), not O(m).
            rows = np.flatnonzero(active)
            position = np.full(len(d2), -1)
            position[rows] = np.arange(len(rows))
            d2 = d2[np.ix_(rows, rows)]
            w, original, active = w[rows], original[rows], np.ones(len(rows), dtype=bool)
            chain = [int(position[c]) for c in chain]
        if not chain:
            chain.append(int(np.argmax(active)))
        while True:
            a = chain[-1]
            row = d2[a]
            b = int(np.argmin(row))
            # Prefer the previous link on a tie, so the chain cannot cycle.
            if len(chain) > 1 and row[chain[-2]] <= row[b]:
                b = chain[-2]
                break
            chain.append(b)
            if len(chain) > m:  # pragma: no cover - impossible for a symmetric matrix
                raise RuntimeError("nearest-neighbour chain did not close")
        chain.pop()
        chain.pop()
        h2 = row[b]
        wa, wb = w[a], w[b]
        # Inactive and merged entries hold inf, which the update keeps at inf.
        new = (w + wa) * d2[a]
        new += (w + wb) * d2[b]
        new -= w * h2
        new /= w + (wa + wb)
        keep, gone = min(a, b), max(a, b)
        d2[keep, :] = new  # new[keep] and new[gone] are inf already
        d2[:, keep] = new
        d2[:, gone] = np.inf  # row ``gone`` is never read again
        w[keep], w[gone] = wa + wb, 0.0
        active[gone] = False
        merges[step] = (original[keep], original[gone], math.sqrt(max(h2, 0.0)))
    return _linkage_matrix(merges, m)


def _ward_matrix(points: np.ndarray, w: np.ndarray, block_rows: int) -> np.ndarray:
    """Symmetric ``m x m`` squared Ward distances of weighted points (inf on the diagonal).

    Only the upper triangle is multiplied (one row block at a time) and mirrored, so the
    matrix is exactly symmetric, which the nearest-neighbour chain relies on."""
    m = len(points)
    pc = points - points.mean(axis=0)
    sq = np.einsum("ij,ij->i", pc, pc)
    d2 = np.empty((m, m), dtype=np.float64)
    for a in range(0, m, block_rows):
        b = min(m, a + block_rows)
        block = squared_distances(pc[a:b], pc[a:], a_sq=sq[a:b], b_sq=sq[a:])
        diagonal = block[:, : b - a]
        diagonal += diagonal.T.copy()
        diagonal *= 0.5
        # 2 w_a w_b / (w_a + w_b), in place (the block is the largest temporary)
        block *= w[None, a:]
        block /= w[a:b, None] + w[None, a:]
        block *= 2.0 * w[a:b, None]
        d2[a:b, a:] = block
        d2[a:, a:b] = block.T
    np.fill_diagonal(d2, np.inf)
    return d2


def _linkage_matrix(merges: np.ndarray, m: int) -> np.ndarray:
    """Scipy linkage matrix from ``(slot, slot, height)`` merges found in any order.

    A merge joins the clusters currently held by its two slots; sorted by height (stably) the
    merges are relabelled as scipy numbers clusters: points ``0..m-1``, merge ``i`` is ``m + i``."""
    order = np.argsort(merges[:, 2], kind="stable")
    cluster_of = np.arange(m)  # scipy id of the cluster a slot's root holds
    parent = np.arange(m)
    size = np.ones(m, dtype=np.int64)

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    z = np.empty((m - 1, 4), dtype=np.float64)
    for step, index in enumerate(order):
        ra, rb = root(int(merges[index, 0])), root(int(merges[index, 1]))
        ia, ib = sorted((cluster_of[ra], cluster_of[rb]))
        parent[rb] = ra
        size[ra] += size[rb]
        cluster_of[ra] = m + step
        z[step] = (ia, ib, merges[index, 2], size[ra])
    return z


def _micro_cluster_labels(work: np.ndarray, m: int, *, backend: str, seed: int) -> tuple[np.ndarray, str]:
    """About ``m`` k-means micro-clusters of the rows of ``work``, and the backend used.

    Up to ``KMEANS_FLAT_MAX`` micro-clusters: one k-means. Above, k-means costs
    ``n x m`` distances per iteration (hours at ``m = n / 5`` for 86k rows on 2 cores), so it runs
    in two levels: ``ceil(sqrt(m))`` coarse k-means cells, then each cell split by its own
    k-means into micro-clusters in proportion to its size (``round(m n_g / n)``, at least one;
    a cell with no more rows than its share keeps every row apart). Cost ``~ n (sqrt(m) + m / sqrt(m))``
    distances per iteration; a micro-cluster cannot straddle two cells.
    """
    options = {"backend": backend, "niter": KMEANS_ITERATIONS, "max_points_per_centroid": KMEANS_POINTS_PER_CENTROID}
    n = len(work)
    if m <= KMEANS_FLAT_MAX:
        return kmeans_labels(work, m, seed=seed, **options)
    cells, used_backend = kmeans_labels(work, math.ceil(math.sqrt(m)), seed=seed, **options)
    sizes = np.bincount(cells)
    shares = np.minimum(sizes, np.maximum(1, np.rint(m * sizes / n))).astype(np.int64)
    order = np.argsort(cells, kind="stable")
    labels = np.empty(n, dtype=np.int64)
    first = 0
    for cell, rows in enumerate(np.split(order, np.cumsum(sizes)[:-1])):
        share = int(shares[cell])
        if len(rows) == 0:
            continue
        if share >= len(rows):
            labels[rows] = first + np.arange(len(rows))
        elif share == 1:
            labels[rows] = first
        else:
            sub, _ = kmeans_labels(work[rows], share, seed=seed + 1 + cell, **options)
            labels[rows] = first + sub
        first += share
    return labels, used_backend


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
