"""k-means for the methods: the backend choice (faiss when installed, else scikit-learn), spherical
k-means over (possibly memory-mapped) row matrices, and plain k-means labels of points in memory.

Shared by the clustering-based methods (COINCIDE, SemDeDup, DataTailor's approximate Ward, the
near-duplicate guard). The public entry points are :func:`spherical_kmeans` and
:func:`kmeans_labels`. Rows are streamed with the readers of :mod:`mmselect.features.rows`
(``pread`` on memory-mapped ``.npy`` files, so a 27 GB float16 embedding streamed block by block
does not grow the resident set).

Backends: faiss (``faiss.Kmeans(spherical=True)``, with ``max_points_per_centroid`` set so large
that faiss never subsamples behind the caller's back) when it is importable, scikit-learn
``KMeans`` on L2-normalised rows otherwise (its centroids are re-normalised afterwards). Both
are seeded; the backend and its version are reported in ``info``.

Two optional reductions make very large inputs tractable; both are off unless asked for and
both are reported in ``info``:

* ``reduce_dim``: rows are projected on the top right-singular vectors of a seeded sample of
  rows (an uncentred truncated SVD, so inner products are what is approximated), re-normalised,
  and k-means runs in that space. Centroids are then recomputed in the original space as the
  normalised mean of each cluster's members (one more streamed pass).
* ``max_points_per_centroid``: train on a seeded sample of ``max_points_per_centroid * K`` rows,
  then assign every row to its nearest centroid in blocks.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from ..errors import ConfigError
from ..features.rows import gather_rows, iter_row_blocks, release_memory
from .finite import NonFiniteRowsError  # noqa: F401 (raised by l2_normalize; public here too)
from .pca import randomized_pca
from .rows import l2_normalize

Transform = Callable[[np.ndarray, np.ndarray], np.ndarray]

# faiss.Kmeans subsamples to max_points_per_centroid * K training rows unless told otherwise.
_NO_SUBSAMPLING = 1 << 30


# --- k-means -----------------------------------------------------------------------------------
def available_backend(backend: str = "auto") -> str:
    """Resolve ``"auto"`` to ``"faiss"`` when faiss imports, ``"sklearn"`` otherwise."""
    if backend not in ("auto", "faiss", "sklearn"):
        raise ConfigError(f"k-means backend must be 'auto', 'faiss' or 'sklearn', got {backend!r}")
    if backend == "sklearn":
        return backend
    try:
        import faiss  # noqa: F401
    except ImportError:
        if backend == "faiss":
            raise ConfigError("the faiss k-means backend needs faiss-cpu (pip install 'mmselect[faiss]')") from None
        return "sklearn"
    return "faiss"


def _backend_label(backend: str) -> str:
    if backend == "faiss":
        import faiss

        return f"faiss {faiss.__version__}"
    import sklearn

    return f"sklearn {sklearn.__version__}"


def _train(z: np.ndarray, k: int, seed: int, niter: int, backend: str) -> np.ndarray:
    """Spherical centroids (k, d), unit norm, trained on the unit rows ``z``."""
    if backend == "faiss":
        import faiss

        km = faiss.Kmeans(
            z.shape[1],
            k,
            niter=int(niter),
            seed=int(seed) % (2**31),
            spherical=True,
            max_points_per_centroid=_NO_SUBSAMPLING,
            min_points_per_centroid=1,
            verbose=False,
        )
        km.train(np.ascontiguousarray(z, dtype=np.float32))
        centroids = np.asarray(km.centroids, dtype=np.float32)
    else:
        from sklearn.cluster import KMeans

        km = KMeans(n_clusters=k, init="k-means++", n_init=1, max_iter=int(niter), random_state=int(seed) % (2**32))
        km.fit(z)
        centroids = np.asarray(km.cluster_centers_, dtype=np.float32)
    return l2_normalize(centroids)


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    import torch

    return (torch.from_numpy(np.ascontiguousarray(a)) @ torch.from_numpy(np.ascontiguousarray(b))).numpy()


def assign(z: np.ndarray, centroids: np.ndarray, block_rows: int = 16384) -> np.ndarray:
    """Nearest centroid by inner product (ties: the lower centroid index)."""
    import torch

    labels = np.empty(len(z), dtype=np.int64)
    c = torch.from_numpy(np.ascontiguousarray(centroids, dtype=np.float32))
    for start in range(0, len(z), block_rows):
        block = torch.from_numpy(np.ascontiguousarray(z[start : start + block_rows], dtype=np.float32))
        labels[start : start + len(block)] = torch.argmax(block @ c.T, dim=1).numpy()
    return labels


def _fit_projection(x, rows, transform, dim, sample, seed, block_rows):
    """Top-``dim`` right-singular vectors (d, dim) of a seeded sample of the (transformed, unit) rows."""
    n = x.shape[0] if rows is None else len(rows)
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(n, size=min(n, sample), replace=False))
    src = take if rows is None else np.asarray(rows)[take]
    parts = []
    for start in range(0, len(src), block_rows):
        idx = src[start : start + block_rows]
        block = gather_rows(x, idx)
        if transform is not None:
            block = transform(block, idx)
        parts.append(l2_normalize(block, row_numbers=idx))
    sample_rows = np.concatenate(parts)
    dim = min(dim, sample_rows.shape[0], sample_rows.shape[1])
    basis = randomized_pca(sample_rows, dim, seed=seed, center=False, sample_size=len(sample_rows))
    return np.ascontiguousarray(basis.components.T.numpy(), dtype=np.float32), len(take), basis.explained


def spherical_kmeans(
    x,
    n_clusters: int,
    *,
    seed: int = 1234,
    niter: int = 50,
    backend: str = "auto",
    block_rows: int = 8192,
    rows: np.ndarray | None = None,
    transform: Transform | None = None,
    reduce_dim: int | None = None,
    reduce_sample: int = 10000,
    max_points_per_centroid: int | None = None,
    full_centroids: bool = True,
) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Spherical k-means of the rows of ``x`` (an ``(N, d)`` array, memory-mapped or not).

    Parameters
    ----------
    x : array (N, d)
        Any float dtype; read in blocks of ``block_rows`` rows, converted to float32 and
        L2-normalised. All-zero rows stay zero (inner product 0 with every centroid, so they
        join cluster 0); rows with NaN/inf raise :class:`NonFiniteRowsError`.
    n_clusters : int
        K. Must not exceed the number of rows clustered.
    seed, niter : int
        Seed of the initialisation (and of the samples below) and number of Lloyd iterations.
    backend : {"auto", "faiss", "sklearn"}
    rows : int array, optional
        Cluster only these rows of ``x``; the labels returned are aligned with ``rows``.
    transform : callable(block, row_numbers) -> block, optional
        Applied to every float32 block before normalisation (e.g. keep some columns).
    reduce_dim : int, optional
        Project on this many top singular directions of a ``reduce_sample``-row sample first.
    max_points_per_centroid : int, optional
        Train on at most ``max_points_per_centroid * K`` sampled rows, then assign all rows.
    full_centroids : bool
        With ``reduce_dim``, recompute the centroids in the original (transformed) space
        (normalised member means) with one more pass; otherwise return ``None`` for them.

    Returns
    -------
    labels : int64 (n,)
        Cluster of each row (nearest centroid by inner product, ties to the lower index).
    centroids : float32 (K, d) or None
        Unit-norm centroids in the space of the (transformed) rows.
    info : dict
        JSON-serialisable: backend and version, seed, niter, K, rows trained on, dimension
        used, reduction details, number of empty clusters, timings.
    """
    t_start = time.perf_counter()
    n = x.shape[0] if rows is None else len(rows)
    k = int(n_clusters)
    if not 1 <= k <= n:
        raise ValueError(f"n_clusters must be in [1, {n}] (the number of rows clustered), got {k}")
    backend = available_backend(backend)
    info: dict = {"backend": _backend_label(backend), "seed": int(seed), "niter": int(niter), "n_clusters": k, "n_rows": int(n)}
    row_numbers = (lambda pos: pos) if rows is None else (lambda pos: np.asarray(rows)[pos])

    # 1. rows -> unit float32 (optionally projected) matrix z, in memory
    projection = None
    if reduce_dim is not None:
        t0 = time.perf_counter()
        d_full = x.shape[1] if transform is None else None
        projection, n_sample, energy = _fit_projection(x, rows, transform, int(reduce_dim), int(reduce_sample), int(seed), block_rows)
        info["reduction"] = {
            "kind": "randomized SVD of a row sample (uncentred)",
            "dim": int(projection.shape[1]),
            "sample_rows": int(n_sample),
            "sample_energy_kept": round(energy, 6),
            "fit_s": round(time.perf_counter() - t0, 3),
        }
        if d_full is not None:
            info["reduction"]["from_dim"] = int(d_full)
    t0 = time.perf_counter()
    z = None
    for pos, block in iter_row_blocks(x, None if rows is None else np.asarray(rows), block_rows):
        numbers = row_numbers(pos)
        if transform is not None:
            block = transform(block, numbers)
        if projection is not None:
            # normalising before the projection only rescales the projected row, which is
            # normalised anyway; a row with NaN/inf still projects to a non-finite row
            block = l2_normalize(_matmul(block, projection), row_numbers=numbers)
        else:
            block = l2_normalize(block, row_numbers=numbers)
        if z is None:
            z = np.empty((n, block.shape[1]), dtype=np.float32)
        z[pos] = block
    info["dim"] = int(z.shape[1])
    info["read_s"] = round(time.perf_counter() - t0, 3)
    release_memory()

    # 2. train (on everything, or on a seeded sample)
    t0 = time.perf_counter()
    train = z
    if max_points_per_centroid is not None and int(max_points_per_centroid) * k < n:
        rng = np.random.default_rng(seed)
        take = np.sort(rng.choice(n, size=int(max_points_per_centroid) * k, replace=False))
        train = z[take]
    info["n_train"] = len(train)
    centroids = _train(train, k, seed, niter, backend)
    del train
    info["train_s"] = round(time.perf_counter() - t0, 3)

    # 3. assign every row
    t0 = time.perf_counter()
    labels = assign(z, centroids)
    info["assign_s"] = round(time.perf_counter() - t0, 3)
    counts = np.bincount(labels, minlength=k)
    info["n_empty"] = int((counts == 0).sum())
    info["largest_cluster"] = int(counts.max())
    del z

    # 4. centroids in the original space
    if projection is not None:
        if full_centroids:
            t0 = time.perf_counter()
            centroids = member_means(x, labels, k, rows=rows, transform=transform, block_rows=block_rows)
            info["centroid_pass_s"] = round(time.perf_counter() - t0, 3)
        else:
            centroids = None
    info["total_s"] = round(time.perf_counter() - t_start, 3)
    return labels, centroids, info


def member_means(x, labels, k, *, rows=None, transform=None, block_rows=8192, normalize=True) -> np.ndarray:
    """Per-cluster mean of the (transformed, unit) rows, L2-normalised: the spherical centroids
    of a given assignment. Empty clusters get a zero row."""
    sums = None
    row_numbers = (lambda pos: pos) if rows is None else (lambda pos: np.asarray(rows)[pos])
    for pos, block in iter_row_blocks(x, None if rows is None else np.asarray(rows), block_rows):
        numbers = row_numbers(pos)
        if transform is not None:
            block = transform(block, numbers)
        block = l2_normalize(block, row_numbers=numbers)
        if sums is None:
            sums = np.zeros((k, block.shape[1]), dtype=np.float64)
        lab = labels[pos]
        order = np.argsort(lab, kind="stable")
        lab_sorted = lab[order]
        starts = np.flatnonzero(np.r_[True, lab_sorted[1:] != lab_sorted[:-1]])
        sums[lab_sorted[starts]] += np.add.reduceat(block[order], starts, axis=0, dtype=np.float64)
    if sums is None:
        return np.zeros((k, x.shape[1]), dtype=np.float32)
    sums = sums.astype(np.float32)
    return l2_normalize(sums) if normalize else sums


def kmeans_labels(
    points: np.ndarray,
    k: int,
    *,
    backend: str = "auto",
    seed: int = 0,
    niter: int = 10,
    max_points_per_centroid: int = 8,
) -> tuple[np.ndarray, str]:
    """Euclidean k-means labels of the rows of ``points`` (in memory), and the backend used.

    faiss: ``niter`` iterations trained on at most ``max_points_per_centroid * k`` rows (faiss's
    own sampling), then every row assigned to its nearest centroid. scikit-learn:
    ``MiniBatchKMeans`` with ``5 * niter`` iterations. Both seeded."""
    backend = available_backend(backend)
    points = np.ascontiguousarray(points, dtype=np.float32)
    if backend == "faiss":
        import faiss

        km = faiss.Kmeans(
            points.shape[1], k, niter=niter, seed=seed, verbose=False,
            min_points_per_centroid=1, max_points_per_centroid=max_points_per_centroid,
        )
        km.train(points)
        _, assigned = km.index.search(points, 1)
        return assigned[:, 0].astype(np.int64), "faiss"
    from sklearn.cluster import MiniBatchKMeans

    km = MiniBatchKMeans(n_clusters=k, random_state=seed, batch_size=max(4096, 2 * k), n_init=1, max_iter=5 * niter)
    return km.fit_predict(points).astype(np.int64), "sklearn"
