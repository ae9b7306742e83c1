"""COINCIDE's within-cluster work: the Gaussian kernels, the streamed per-cluster pass (densities,
kernel column sums, centroid sums) and the greedy MMD prototypes."""

from __future__ import annotations

import numpy as np

from ...features.rows import cast, gather_rows, read_rows, release_memory
from ...numerics import nonfinite_error, squared_distances_torch, torch_threads

# Clusters up to this many rows keep an exact float64 kernel; larger ones a float32 one.
_F64_KERNEL_ROWS = 8192
# Rows read at once in the per-cluster pass (bytes in the stored dtype), and the kernels the fit
# keeps for the greedy MMD of every budget (the others are recomputed when a budget needs them).
_BUFFER_BYTES = 512 << 20
_CACHE_BYTES = 2 << 30


class _Greedy:
    """Greedy MMD prototypes with running sums: O(n) per pick.

    MMD^2(X, S') = mean K_XX + mean K_S'S' - 2 mean K_XS' for S' = S + {c}. With the column sums
    ``colsum[c] = sum_a K[a, c]``, ``ks[c] = sum_{s in S} K[c, s]``, ``sum_ss`` and ``sum_xs``,
    each candidate's value is ``kxx + (sum_ss + 2 ks[c] + K[c, c]) / m^2 - 2 (sum_xs + colsum[c]) / (n m)``.
    Ties go to the lowest index (as ``torch.argmin``).
    """

    def __init__(self, kernel: np.ndarray, colsum: np.ndarray):
        self.kernel = kernel
        self.n = len(kernel)
        self.colsum = np.asarray(colsum, dtype=np.float64)
        self.kxx = self.colsum.sum() / (self.n * self.n)
        self.diag = np.asarray(np.diagonal(kernel), dtype=np.float64)
        self.ks = np.zeros(self.n)
        self.sum_ss = 0.0
        self.sum_xs = 0.0
        self.taken = np.zeros(self.n, dtype=bool)
        self.count = 0

    def advance(self, m: int) -> np.ndarray:
        picks = np.empty(m, dtype=np.int64)
        for t in range(m):
            size = self.count + 1
            mmd = self.kxx + (self.sum_ss + 2.0 * self.ks + self.diag) / (size * size) - 2.0 * (
                self.sum_xs + self.colsum
            ) / (self.n * size)
            mmd[self.taken] = np.inf
            c = int(np.argmin(mmd))
            picks[t] = c
            self.sum_ss += 2.0 * self.ks[c] + self.diag[c]
            self.sum_xs += self.colsum[c]
            self.ks += self.kernel[:, c]
            self.taken[c] = True
            self.count = size
        return picks


def greedy_mmd(kernel: np.ndarray, m: int) -> np.ndarray:
    """Greedy MMD prototype indices (incremental version) for a full kernel matrix."""
    kernel = np.asarray(kernel, dtype=np.float64)
    return _Greedy(kernel, kernel.sum(axis=0)).advance(int(m))


def gaussian_kernel(x, sigma: float):
    """exp(-||a - b||^2 / (2 sigma^2)) for the rows of ``x`` (a float64 torch tensor), computed as the
    official code does: ``|a|^2 + |b|^2 - 2 a.b``."""
    import torch

    return torch.exp(-squared_distances_torch(x) / (2.0 * sigma * sigma))


class _ClusterStats:
    def __init__(self, n_ids):
        self.density = np.full(n_ids, np.nan)
        self.colsum: dict[int, np.ndarray] = {}
        self.kernels: dict[int, np.ndarray] = {}
        self.members: dict[int, np.ndarray] | None = None
        self.centroid_sums = None

    def kernel(self, c, emb, view, sigma) -> np.ndarray:
        if c in self.kernels:
            return self.kernels[c]
        rows = self.members[c]
        return _kernel_of(view(gather_rows(emb, rows, dtype=np.float64), rows), sigma, rows=rows)


def _kernel_of(x: np.ndarray, sigma: float, block_rows: int = 2048, rows=None, keys=None) -> np.ndarray:
    """Within-cluster kernel: float64 up to 8,192 rows, float32 storage (blocks computed in
    float64) above. Rows with NaN/inf are refused (their squared norm is not finite)."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    sq = (t * t).sum(1)
    bad = ~torch.isfinite(sq).numpy()
    if bad.any():
        raise nonfinite_error("coincide_embed", np.flatnonzero(bad) if rows is None else np.asarray(rows)[bad], keys)
    if len(t) <= _F64_KERNEL_ROWS:
        return torch.exp(-squared_distances_torch(t, a_sq=sq) / (2.0 * sigma * sigma)).numpy()
    out = np.empty((len(t), len(t)), dtype=np.float32)
    for start in range(0, len(t), block_rows):
        blk = t[start : start + block_rows]
        d2 = squared_distances_torch(blk, t, a_sq=sq[start : start + block_rows], b_sq=sq)
        out[start : start + len(blk)] = torch.exp(-d2 / (2.0 * sigma * sigma)).numpy()
    return out


# Clusters smaller than this are computed one per thread, several at once (a 67 x 20,480 Gram
# gains little from two BLAS threads and loses a lot to their synchronisation on busy cores);
# larger ones one at a time with all of torch's threads.
_SMALL_CLUSTER = 256


def _cluster_pass(emb, labels, sizes, view, sigma, centroid_part, keys=None):
    """One streamed pass over the clusters: density, kernel column sums, cached kernels and
    (when centroids are not given) the sums of ``centroid_part`` of the unit rows.

    Clusters are visited from the smallest up; their rows are read in groups of at most
    ``_BUFFER_BYTES`` (in the stored dtype, rows in file order; the next group is read while
    the current one is computed), each cluster is cast to float64 on its own. The results do
    not depend on the number of threads."""
    from concurrent.futures import ThreadPoolExecutor
    from itertools import repeat

    import torch

    buffer_bytes, cache_bytes = _BUFFER_BYTES, _CACHE_BYTES
    n_ids = len(sizes)
    stats = _ClusterStats(n_ids)
    order = np.argsort(labels, kind="stable")
    bounds = np.r_[0, np.cumsum(sizes)]
    stats.members = {int(c): order[bounds[c] : bounds[c + 1]] for c in np.flatnonzero(sizes)}
    if centroid_part is not None:
        width = int(np.prod(centroid_part(np.zeros((1, emb.shape[1]))).shape[1:]))
        stats.centroid_sums = np.zeros((n_ids, width), dtype=np.float64)
    row_bytes = emb.shape[1] * emb.dtype.itemsize
    nonempty = np.flatnonzero(sizes)
    nonempty = nonempty[np.argsort(sizes[nonempty], kind="stable")]
    all_threads = max(1, torch.get_num_threads())
    cached = 0

    def one(c, raw, sorted_rows):
        members = stats.members[c]
        x = view(cast(raw[np.searchsorted(sorted_rows, members)], np.float64), members)
        kern = _kernel_of(x, sigma, rows=members, keys=keys)
        colsum = kern.sum(axis=0, dtype=np.float64)
        centroid = None
        if centroid_part is not None:
            inv_norm = 1.0 / np.maximum(np.sqrt(np.einsum("ij,ij->i", x, x)), 1e-300)
            centroid = np.einsum("i,i...->...", inv_norm, centroid_part(x)).ravel()
        return c, kern, colsum, centroid

    # groups of clusters whose rows fit in the buffer (at least one cluster each)
    groups, start = [], 0
    while start < len(nonempty):
        stop, rows_in = start, 0
        while stop < len(nonempty) and (stop == start or (rows_in + sizes[nonempty[stop]]) * row_bytes <= buffer_bytes):
            rows_in += sizes[nonempty[stop]]
            stop += 1
        groups.append([int(c) for c in nonempty[start:stop]])
        start = stop

    def read_group(group):
        sorted_rows = np.sort(np.concatenate([stats.members[c] for c in group]))
        return sorted_rows, read_rows(emb, sorted_rows)  # stored dtype, front to back, not mapped

    with ThreadPoolExecutor(all_threads) as pool, ThreadPoolExecutor(1) as reader:
        pending = reader.submit(read_group, groups[0]) if groups else None
        for i, group in enumerate(groups):
            sorted_rows, raw = pending.result()
            if i + 1 < len(groups):  # read the next group while this one is computed
                pending = reader.submit(read_group, groups[i + 1])
            small = [c for c in group if sizes[c] < _SMALL_CLUSTER]
            large = [c for c in group if sizes[c] >= _SMALL_CLUSTER]
            with torch_threads(1):
                results = list(pool.map(one, small, repeat(raw), repeat(sorted_rows)))
            results += [one(c, raw, sorted_rows) for c in large]
            for c, kern, colsum, centroid in results:  # in visit order: deterministic caching
                stats.colsum[c] = colsum
                stats.density[c] = colsum.sum() / (sizes[c] * sizes[c])
                if cached + kern.nbytes <= cache_bytes:
                    stats.kernels[c] = kern
                    cached += kern.nbytes
                if centroid is not None:
                    stats.centroid_sums[c] = centroid
            del raw, results
            release_memory()
    return stats

