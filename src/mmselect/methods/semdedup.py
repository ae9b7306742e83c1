"""SemDeDup baseline: spherical k-means, then drop near-duplicates inside each cluster
(Abbas et al., arXiv 2303.09540), with the threshold eps found from the budget.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch

from ..features.store import FeatureSet
from ..numerics import (
    BLOCK_ROWS,
    Stopwatch,
    l2_normalize,
    pca_project,
    read_rows,
    spherical_kmeans,
)
from .base import (
    NONE,
    POSITIVE_INT,
    Choice,
    FeatureNeed,
    Interval,
    OfType,
    Param,
    SelectionMethod,
    SelectionResult,
    top_k_mask,
)

LLAVA_665K = 665_298  # samples in LLaVA-1.5's llava_v1_5_mix665k.json
COINCIDE_CLUSTERS = 10_000  # SemDeDup k-means clusters in the COINCIDE code for LLaVA-665K


# --- the dedup rule ------------------------------------------------------------------------------
def max_similarity_to_earlier(x: np.ndarray, block_rows: int = 2048) -> np.ndarray:
    """For unit rows ``x`` in cluster order: ``M_j = max_{i<j} x_i . x_j`` (``-1`` for ``j = 0``)."""
    m = len(x)
    out = np.full(m, -1.0, dtype=np.float64)
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    for start in range(0, m, block_rows):
        stop = min(m, start + block_rows)
        sims = t[start:stop] @ t[:stop].T
        later = torch.arange(stop).unsqueeze(0) >= torch.arange(start, stop).unsqueeze(1)
        sims.masked_fill_(later, -torch.inf)
        best = sims.max(1).values.double().numpy()
        out[start:stop] = np.where(np.isfinite(best), np.minimum(best, 1.0), -1.0)
    return out


def padded_max_similarity_to_earlier(x: np.ndarray, sizes: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
    """:func:`max_similarity_to_earlier` for several clusters at once.

    The clusters' unit rows are ``x[order]`` (default: ``x``), one cluster after the other,
    ``sizes`` rows each, every cluster in its own order. The clusters are padded to the largest
    and multiplied in one batched matmul. Returns ``M`` aligned with ``x[order]``.
    """
    sizes = np.asarray(sizes)
    order = np.arange(len(x)) if order is None else np.asarray(order)
    groups, width, dim = len(sizes), int(sizes.max()), x.shape[1]
    cluster = np.repeat(np.arange(groups), sizes)
    row = np.arange(len(x)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    slots = torch.from_numpy(cluster * width + row)
    padded = torch.empty(groups * width, dim)
    used = torch.zeros(groups * width, dtype=torch.bool)
    used[slots] = True
    padded[~used] = 0.0
    padded[slots] = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[torch.from_numpy(order)]
    padded = padded.view(groups, width, dim)
    sims = torch.bmm(padded, padded.transpose(1, 2))
    sims.masked_fill_(torch.ones(width, width, dtype=torch.bool).triu(), -torch.inf)  # keep column < row
    best = sims.max(2).values.view(-1)[slots].double().numpy()
    return np.where(np.isfinite(best), np.minimum(best, 1.0), -1.0)


class SemDeDup(SelectionMethod):
    """SemDeDup with the budget deciding the threshold.

    1. Rows of ``embedding`` are L2-normalised and clustered by spherical k-means into
       ``n_clusters`` clusters (:func:`mmselect.numerics.spherical_kmeans`; each sample
       belongs to its nearest k-means centroid by cosine).
    2. Inside each cluster the samples are ordered by cosine distance to the cluster's centroid,
       taken as the normalised mean of its members' unit rows in the full embedding:
       ``keep="hard"`` puts the farthest first (COINCIDE runs ``--keep_hard``) [code]; ties by
       position.
    3. For every sample, ``M_j`` = its largest cosine (full embedding) to any sample *earlier*
       in its cluster's order, whether or not that earlier sample is itself dropped (the rule of
       the SemDeDup and COINCIDE code: column max over the upper triangle of the cluster's
       similarity matrix). The first sample of a cluster has ``M = -1``.
    4. With a threshold eps, a sample is dropped iff ``M_j > 1 - eps``. The number kept falls
       as eps grows and ``M`` does not depend on eps, so the search is exact (no bisection
       needed): the largest eps keeping at least ``k`` samples is ``eps* = 1 - M_(k)``, with
       ``M_(k)`` the k-th smallest M. COINCIDE instead tries a hand-written ``eps_list``
       (0.266, 0.26665, 0.267 for 20% of LLaVA-665K) and keeps the closest count >= k [code].
    5. At eps*, samples tied at ``M = M_(k)`` can push the count above ``k``; the excess is
       trimmed by position (earlier kept). The selection is therefore the ``k`` smallest ``M``,
       ties to the earlier position, and ``scores = -M``. (COINCIDE trims by truncating its
       list of kept samples, which is ordered by cluster id.)

    Steps 1-3 do not depend on the budget and are :meth:`fit`; the eps search of steps 4-5 is
    the budget's and runs in :meth:`select_budget` (cheap: a top-``k`` of ``-M``).

    ``M`` is not clipped at 0 (the reference fills the lower triangle with zeros, so negative
    cosines count as 0): no keep set changes for eps < 1, only the trim order among samples that
    no eps < 1 would drop.

    Parameters
    ----------
    embedding : str, default ``"last_token_final"``
        Array to use. The default is the last token's hidden state after the final norm
        (``--features last_token_final``), what the reference reads as the last layer's
        embedding (``hidden_states[-1]`` of transformers) [code: TinyLLaVA last-layer last-token
        embedding]. ``"last_token"`` is the last block's output before the final norm (the
        DataTailor feature).
    n_clusters : int or None, default None
        ``None`` scales COINCIDE's K=10,000 for LLaVA-665K with the data:
        ``max(1, round(n * 10000 / 665298))``, about 66 samples per cluster [code, scaled].
    niter : int, default 50
        k-means iterations [code: ``--niter 50``].
    seed : int, default 1234
        k-means and sampling seed [code: ``--seed 1234``].
    keep : {"hard", "easy", "random"}, default ``"hard"``
        Cluster order: farthest from the centroid first, closest first, or seeded random.
    pca_dim : int or None, default 128
        Run k-means on the unit rows projected on their top ``pca_dim`` uncentred singular
        directions (randomized SVD of a seeded 32,768-row sample) and renormalised; only when
        the embedding is wider. Steps 2-3 use the full embedding. ``None``: k-means in full
        dimension.
        [Scale reduction, not in the reference; its effect is measured in docs/methods/baselines.md.]
    kmeans_max_points : int or None, default 100_000
        Train k-means on a seeded sample of about this many rows (``ceil(max / K)`` per
        centroid), then assign every row to its nearest centroid. ``None``: train on all rows.
        [Scale reduction, not in the reference.]
    kmeans_backend : {"auto", "faiss", "sklearn"}, default ``"auto"``
        k-means implementation (faiss when installed).

    Feature: array ``embedding`` (``mmselect extract --features last_token_final`` for the default).
    """

    summary = "k-means + within-cluster cosine dedup, eps searched for the budget"

    _parameter_constraints: ClassVar[dict[str, Param]] = {
        "embedding": Param("array whose rows are clustered and compared", OfType(str, label="an array name")),
        "n_clusters": Param("k-means clusters K (None: COINCIDE's K=10,000 for 665k, scaled)", POSITIVE_INT, NONE),
        "niter": Param("k-means iterations", POSITIVE_INT),
        "seed": Param("seed of the k-means and of the samples", Interval(int, 0, None)),
        "keep": Param("order inside a cluster: farthest from the centroid first, closest first, or random",
                      Choice("hard", "easy", "random")),
        "pca_dim": Param("k-means on a projection to this many directions (None: full width)", POSITIVE_INT, NONE),
        "kmeans_max_points": Param("train k-means on about this many sampled rows (None: all)", POSITIVE_INT, NONE),
        "kmeans_backend": Param("k-means implementation", Choice("auto", "faiss", "sklearn")),
    }

    def __init__(
        self,
        *,
        embedding: str = "last_token_final",
        n_clusters: int | None = None,
        niter: int = 50,
        seed: int = 1234,
        keep: str = "hard",
        pca_dim: int | None = 128,
        kmeans_max_points: int | None = 100_000,
        kmeans_backend: str = "auto",
    ):
        self.embedding = embedding
        self.n_clusters = n_clusters
        self.niter = niter
        self.seed = seed
        self.keep = keep
        self.pca_dim = pca_dim
        self.kmeans_max_points = kmeans_max_points
        self.kmeans_backend = kmeans_backend

    def feature_needs(self):
        produced = ("last_token", "mean_embed", "last_token_final", "mean_embed_final")
        produced_by = self.embedding if self.embedding in produced else None
        return [FeatureNeed(self.embedding, "array", produced_by)]

    def resolve_clusters(self, n: int) -> int:
        """K for ``n`` samples."""
        if self.n_clusters is not None:
            return int(max(1, min(self.n_clusters, n)))
        return int(min(n, max(1, round(n * COINCIDE_CLUSTERS / LLAVA_665K))))

    def _fit(self, features: FeatureSet) -> None:
        """Steps 1-3, which do not depend on the budget: clusters and ``M`` for every sample.
        The threshold search of steps 4-5 depends on the budget and is :meth:`_select_budget`."""
        clock = Stopwatch()
        array = features.array(self.embedding)
        n, d = array.shape
        n_clusters = self.resolve_clusters(n)
        info: dict = {"n_clusters": n_clusters, "pca": None}
        per_centroid = None
        if self.kmeans_max_points is not None and n > self.kmeans_max_points:
            per_centroid = max(1, math.ceil(self.kmeans_max_points / n_clusters))
        source = array
        if self.pca_dim is not None and self.pca_dim < d and self.pca_dim < n:
            with clock.stage("pca"):
                source, info["pca"] = pca_project(
                    array, self.pca_dim, seed=self.seed, center=False, normalize_input=True, normalize_output=True
                )
        with clock.stage("kmeans"):
            labels, _, info["kmeans"] = spherical_kmeans(
                source, n_clusters, seed=self.seed, niter=self.niter, backend=self.kmeans_backend,
                max_points_per_centroid=per_centroid,
            )
            del source
        with clock.stage("dedup"):
            max_sim, cos_to_centroid = self._dedup_pass(array, labels)
        sizes = np.bincount(labels, minlength=n_clusters)
        info["cluster_sizes"] = {
            "min": int(sizes.min()), "median": float(np.median(sizes)), "max": int(sizes.max()),
            "empty": int((sizes == 0).sum()),
        }
        info["timings_s"] = clock.rounded()
        self.labels_, self.max_sim_, self.cos_to_centroid_, self.fit_info_ = labels, max_sim, cos_to_centroid, info

    def _select_budget(self, k: int) -> SelectionResult:
        """Steps 4-5: the largest eps that keeps at least ``k`` samples, ties trimmed by position."""
        max_sim, info = self.max_sim_, dict(self.fit_info_)
        selected = top_k_mask(-max_sim, k)
        if k > 0:
            threshold = float(max_sim[selected].max())
            info["eps"] = float(1.0 - threshold)
            info["kept_at_eps"] = int((max_sim <= threshold).sum())
            info["trimmed_ties"] = info["kept_at_eps"] - k
        return SelectionResult(
            selected=selected,
            scores=-max_sim,
            values={"cluster": self.labels_, "cos_to_centroid": self.cos_to_centroid_, "max_sim_earlier": max_sim},
            info=info,
        )

    def _dedup_pass(self, array: np.ndarray, labels: np.ndarray, chunk_rows: int = BLOCK_ROWS) -> tuple[np.ndarray, np.ndarray]:
        """Steps 2-3 for every cluster. Clusters are visited from the smallest up and read in
        groups of about ``chunk_rows`` (padded) rows; a group's similarity matrices come from one
        batched matmul. A cluster larger than ``chunk_rows`` is done alone, block by block.
        The centroid of a cluster is the normalised mean of its unit rows (full embedding).
        Returns ``M`` and the cosine of every sample to its cluster's centroid."""
        n = len(labels)
        max_sim = np.full(n, -1.0)
        cos_to_centroid = np.empty(n)
        members = np.argsort(labels, kind="stable")  # by cluster, then position
        starts = np.concatenate([[0], np.flatnonzero(np.diff(labels[members])) + 1])
        sizes = np.diff(np.concatenate([starts, [n]]))
        by_size = np.argsort(sizes, kind="stable")
        tie_key = np.random.default_rng(self.seed).permutation(n) if self.keep == "random" else None
        i = 0
        while i < len(by_size):
            j = i + 1
            if sizes[by_size[i]] <= chunk_rows:  # sizes grow along by_size: the last one is the widest
                while j < len(by_size) and (j + 1 - i) * sizes[by_size[j]] <= chunk_rows:
                    j += 1
            group = by_size[i:j]
            group_sizes = sizes[group]
            idx = np.concatenate([members[starts[c]:starts[c] + sizes[c]] for c in group])
            rows = read_rows(array, idx, normalize=True)
            cluster = np.repeat(np.arange(len(group)), group_sizes)
            sums = torch.zeros(len(group), rows.shape[1]).index_add_(0, torch.from_numpy(cluster), torch.from_numpy(rows))
            centroids = l2_normalize(sums.numpy())
            cos = np.einsum("ij,ij->i", rows, centroids[cluster])
            cos_to_centroid[idx] = cos
            if self.keep == "hard":
                key = cos.astype(np.float64)  # least similar = farthest from the centroid comes first
            elif self.keep == "easy":
                key = -cos.astype(np.float64)
            else:
                key = tie_key[idx].astype(np.float64)
            order = np.lexsort((idx, key, cluster))
            if len(group) == 1:
                max_sim[idx[order]] = max_similarity_to_earlier(rows[order])
            else:
                max_sim[idx[order]] = padded_max_similarity_to_earlier(rows, group_sizes, order)
            i = j
        return max_sim, cos_to_centroid
