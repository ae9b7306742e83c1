"""COINCIDE's clusters: spherical k-means of the reference-model embedding (text-only records apart
when asked), or the clusters a features directory gives (a ``cluster`` column and its centroids)."""

from __future__ import annotations

import numpy as np

from ...errors import DataFormatError
from ...numerics import available_backend, spherical_kmeans

# Official ratio: K = 10,000 clusters for LLaVA-665K, about 67 samples per cluster.
SAMPLES_PER_CLUSTER = 67


def kmeans_clusters(
    emb,
    view,
    text_only: np.ndarray | None,
    *,
    n_clusters: int | None,
    seed: int,
    kmeans_iters: int,
    backend: str,
    kmeans_dim,
    kmeans_points_per_centroid,
) -> tuple[np.ndarray, dict]:
    """Spherical k-means labels of the rows of ``emb`` as ``view`` shows them, and what was run.

    With ``text_only`` (a mask), text-only rows are clustered among themselves with
    ``round(K * N_text / N)`` of the K clusters, the image rows with the rest; labels of the second
    group follow those of the first."""
    n, width = emb.shape
    k_total = int(n_clusters) if n_clusters is not None else max(1, int(round(n / SAMPLES_PER_CLUSTER)))
    k_total = min(k_total, n)
    dim = none_spelled(kmeans_dim)
    if dim == "auto":
        dim = 128 if width > 1024 else None
    per_centroid = none_spelled(kmeans_points_per_centroid)
    if per_centroid == "auto":
        per_centroid = 16 if n > 200_000 else None
    kmeans_backend = available_backend(backend)
    groups: list[tuple[str, np.ndarray, int]] = []
    if text_only is None:
        groups.append(("all", np.arange(n), k_total))
    else:
        t_rows, i_rows = np.flatnonzero(text_only), np.flatnonzero(~text_only)
        k_text = min(len(t_rows), max(1, int(round(k_total * len(t_rows) / n))))
        k_image = min(len(i_rows), max(1, k_total - k_text)) if len(i_rows) else 0
        if k_image:
            groups.append(("image", i_rows, k_image))
        groups.append(("text_only", t_rows, k_text))
    labels = np.empty(n, dtype=np.int64)
    offset = 0
    runs = []
    for name, rows, k in groups:
        lab, _, run_info = spherical_kmeans(
            emb,
            k,
            seed=int(seed),
            niter=int(kmeans_iters),
            backend=kmeans_backend,
            rows=rows,
            transform=view,
            reduce_dim=None if dim is None or dim >= width else int(dim),
            max_points_per_centroid=None if per_centroid is None else int(per_centroid),
            full_centroids=False,
        )
        labels[rows] = lab + offset
        offset += k
        runs.append({"group": name, **run_info})
    kinfo = {
        "source": "spherical k-means",
        "n_clusters": int(offset),
        "seed": int(seed),
        "niter": int(kmeans_iters),
        "backend": runs[0]["backend"],
        "kmeans_dim": dim,
        "kmeans_points_per_centroid": per_centroid,
        "runs": runs,
    }
    return labels, kinfo


def given_clusters(column, centroids, width):
    """Map a user-given ``cluster`` column onto the rows of ``cluster_centroids``."""
    raw = np.asarray(column)
    if raw.dtype.kind == "f":
        if not np.isfinite(raw).all() or not np.array_equal(raw, np.round(raw)):
            raise DataFormatError("the cluster column must hold integer cluster ids (no NaN)")
        raw = raw.astype(np.int64)
    elif raw.dtype.kind not in "iu":
        raise DataFormatError(f"the cluster column must hold integer cluster ids, got dtype {raw.dtype}")
    raw = raw.astype(np.int64)
    centroids = np.asarray(centroids, dtype=np.float64)
    if centroids.ndim != 2 or centroids.shape[1] != width:
        raise DataFormatError(f"cluster_centroids.npy has shape {centroids.shape}, expected (n_clusters, {width})")
    n_centroids = len(centroids)
    if len(raw) and raw.min() >= 0 and raw.max() < n_centroids:
        return raw, np.arange(n_centroids), centroids
    ids = np.unique(raw)
    if len(ids) != n_centroids:
        raise DataFormatError(
            f"cluster ids are not centroid rows (range [{raw.min()}, {raw.max()}], {n_centroids} centroids) "
            f"and there are {len(ids)} distinct ids, not one per centroid"
        )
    return np.searchsorted(ids, raw), ids, centroids


def none_spelled(value):
    """``None`` also spelled as a string (``--param kmeans_dim=none``)."""
    return None if isinstance(value, str) and value.lower() in ("none", "null") else value
