"""DataTailor's per-sample values: rows read per task, uniqueness, representativeness (the
association coefficients of the clusters) and the per-task normalisation."""

from __future__ import annotations

import math

import numpy as np

from ...features.rows import file_backing, nonfinite_rows, read_rows
from ...numerics import euclidean_distances, nonfinite_error

# Value given to tau_C when a task has a single cluster (the official code divides by K_t - 1 = 0).
# exp(1) is what the cluster's similarity with itself would give. Constant within the task, so it
# changes no ranking.
SINGLE_CLUSTER_TAU = math.e


# ======================================================================================
# Normalisation
# ======================================================================================


def rank_normalise(values: np.ndarray) -> np.ndarray:
    """0-based ascending rank / n; NaN ranks highest; ties keep position order (stable sort)."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    order = np.argsort(values, kind="stable")  # numpy sorts NaN last
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.arange(n, dtype=np.float64)
    return ranks / max(n, 1)


def minmax_normalise(values: np.ndarray) -> np.ndarray:
    """``(v - min) / (max - min)`` over finite values; 0 when constant; NaN -> 1 (highest, as in rank)."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    out = np.ones(len(values))
    if finite.any():
        lo, hi = values[finite].min(), values[finite].max()
        out[finite] = (values[finite] - lo) / (hi - lo) if hi > lo else 0.0
    return out


# ======================================================================================
# Reading rows
# ======================================================================================


class RowReader:
    """Reads rows of a 2-D array as float32, block by block, refusing NaN/inf.

    A ``.npy`` opened memory-mapped (as :meth:`FeatureSet.load` does) is read with ``pread``
    (:func:`~mmselect.features.rows.read_rows`) instead of through the mapping, so the pages read do
    not stay in this process's resident memory: a 665k x 4096 float16 ``last_token`` (5.4 GB) is
    streamed one task at a time.
    """

    def __init__(self, array: np.ndarray, keys: np.ndarray | None = None, block_rows: int = 4096):
        if array.ndim != 2:
            raise ValueError("expected a 2-D array")
        self.array = array
        self.keys = keys
        self.block_rows = max(1, int(block_rows))
        self.width = array.shape[1]
        self._file = file_backing(array)  # (path, offset) when rows are read with pread

    def read(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.width), dtype=np.float32)
        for start in range(0, len(rows), self.block_rows):
            part = rows[start : start + self.block_rows]
            out[start : start + len(part)] = read_rows(self.array, part)
        bad = rows[nonfinite_rows(out, self.block_rows)]
        if len(bad):
            raise nonfinite_error("last_token", bad, self.keys)
        return out


# ======================================================================================
# Uniqueness and representativeness
# ======================================================================================


def cluster_uniqueness(
    x: np.ndarray,
    labels: np.ndarray,
    informativeness: np.ndarray,
    *,
    mode: str = "official",
    max_refs: int = 2048,
    rng: np.random.Generator | None = None,
    block_rows: int = 4096,
    singleton: str = "nan",
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Uniqueness of every row of one task, and the float64 mean feature of every cluster.

    ``official``: ``U_i = sum_{j in C} D_ij I_j / ((1/n_C) sum_{a,b in C} D_ab)``;
    ``paper``: ``U_i = (sum_{j in C} D_ij I_j / sum_{j in C} I_j) / Dbar_C`` with
    ``Dbar_C = (1/n_C^2) sum_{a,b in C} D_ab`` the appendix's mean intra-cluster distance (this is
    the official value divided by the cluster's mean informativeness). Distances are computed in
    float32 with BLAS on the cluster-centred features (self-distances set to exactly 0). For a
    cluster larger than ``max_refs``, the sums over ``j`` run over a seeded random sample of
    ``max_refs`` members, scaled by ``n_C / max_refs``. A cluster whose mean distance is 0 (one
    member, or identical members) gets NaN (``singleton="nan"``, official 0/0) or 0 in either
    mode; so does a cluster whose informativeness sums to 0 in ``paper`` mode.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    labels = np.asarray(labels, dtype=np.int64)
    v = np.asarray(informativeness, dtype=np.float64)
    n, d = x.shape
    k = int(labels.max()) + 1 if n else 0
    order = np.argsort(labels, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(labels, minlength=k))])
    out = np.empty(n, dtype=np.float64)
    means = np.zeros((k, d), dtype=np.float64)
    stats = {"degenerate_clusters": 0, "sampled_clusters": 0}
    for c in range(k):
        members = order[bounds[c] : bounds[c + 1]]
        size = len(members)
        if size == 0:
            continue
        mean = np.zeros(d, dtype=np.float64)
        for a in range(0, size, block_rows):
            mean += x[members[a : a + block_rows]].sum(axis=0, dtype=np.float64)
        mean /= size
        means[c] = mean
        if size == 1:
            sums, total = np.zeros(1), 0.0
        else:
            if size > max_refs:
                refs = np.sort(rng.choice(size, size=max_refs, replace=False))
                stats["sampled_clusters"] += 1
            else:
                refs = np.arange(size)
            mean32 = mean.astype(np.float32)
            ref_x = x[members[refs]] - mean32
            ref_sq = np.einsum("ij,ij->i", ref_x, ref_x)
            ref_v = v[members[refs]].astype(np.float32)
            ref_pos = np.full(size, -1, dtype=np.int64)
            ref_pos[refs] = np.arange(len(refs))
            scale = size / len(refs)
            sums = np.empty(size, dtype=np.float64)
            total = 0.0
            for a in range(0, size, block_rows):
                b = min(size, a + block_rows)
                blk = x[members[a:b]] - mean32
                d2 = euclidean_distances(blk, ref_x, b_sq=ref_sq)
                self_rows = np.flatnonzero(ref_pos[a:b] >= 0)
                d2[self_rows, ref_pos[a:b][self_rows]] = 0.0
                sums[a:b] = scale * (d2 @ ref_v).astype(np.float64)
                total += scale * float(d2.sum(dtype=np.float64))
        if mode == "official":
            mean_distance = total / size
            if mean_distance > 0:
                out[members] = sums / mean_distance
            else:
                stats["degenerate_clusters"] += 1
                out[members] = np.nan if singleton == "nan" else 0.0
        else:
            # the paper's weights I_j / sum_C I, then the appendix's division by the cluster's
            # mean pairwise distance (all n_C^2 ordered pairs), which makes the value scale-free
            denominator = v[members].sum() * total / size**2
            if denominator > 0:
                out[members] = sums / denominator
            else:
                stats["degenerate_clusters"] += 1
                out[members] = np.nan if singleton == "nan" else 0.0
    return out, means, stats


def association_coefficients(means: np.ndarray, block_rows: int = 4096) -> np.ndarray:
    """``tau_C = 1/(K-1) sum_{C' != C} exp(cos(mean_C, mean_C'))`` for the clusters of one task.

    A task with a single cluster gets ``e`` (official code: division by zero; the value is
    constant within the task, so it changes no ranking). A zero mean vector has cosine 0.
    """
    k = len(means)
    if k <= 1:
        return np.full(k, SINGLE_CLUSTER_TAU)
    norms = np.linalg.norm(means, axis=1)
    unit = means / np.where(norms > 0, norms, 1.0)[:, None]
    tau = np.empty(k, dtype=np.float64)
    for a in range(0, k, block_rows):
        b = min(k, a + block_rows)
        sim = np.exp(unit[a:b] @ unit.T)
        self_sim = np.exp(np.einsum("ij,ij->i", unit[a:b], unit[a:b]))
        tau[a:b] = (sim.sum(axis=1) - self_sim) / (k - 1)
    return tau


