"""COINCIDE (Lee, Li, Hwang; EMNLP 2024, arXiv 2406.10995): cluster transferability and density
decide how many samples each cluster gets; greedy MMD prototypes decide which.

Pipeline (official code github.com/G-JWLee/COINCIDE_code @ 629f776, selection stage):
spherical k-means of multi-layer reference-model embeddings -> per cluster a transferability
``S_i`` (mean cosine of the centroid's text halves to the non-near-duplicate centroids) and a
density ``D_i`` (mean Gaussian kernel inside the cluster) -> shares ``softmax(S/(tau*D))``
spent cluster by cluster with roll-over -> greedy MMD minimisation inside each cluster.
"""

from __future__ import annotations

import time
from typing import ClassVar

import numpy as np

from ...errors import ConfigError, DataFormatError
from ...features.store import FeatureSet
from ...numerics import NonFiniteRowsError, nonfinite_error
from ..base import (
    NONE,
    POSITIVE_INT,
    Choice,
    FeatureNeed,
    Interval,
    Param,
    SelectionMethod,
    SelectionResult,
)
from .allocation import allocate, transferability
from .clusters import given_clusters, kmeans_clusters
from .kernels import _cluster_pass, _Greedy
# No cluster may exceed this many rows (its float32 kernel alone would be 4 GiB).
MAX_CLUSTER_ROWS = 32768


class Coincide(SelectionMethod):
    """COINCIDE selection from the ``coincide_embed`` array of a features directory.

    Parameters
    ----------
    n_clusters : int, optional
        K. Default ``round(N / 67)``: the official ratio (10,000 clusters for 665k samples;
        the Vision-Flan run used 2,500 for 186k).
    temperature : float
        tau of the share softmax ``P_i = softmax(S_i / (tau * D_i))``; official 0.1.
    sigma : float
        Width of the Gaussian kernel ``exp(-||a - b||^2 / (2 sigma^2))`` used for the density
        and the MMD; official 1.0 (the ``--gamma`` argument).
    transfer_threshold : float
        Centroid cosines above it (the diagonal included) are zeroed and left out of the mean;
        official 0.9.
    transfer_halves : {"text", "all"}
        Part of each centroid that the transferability compares. ``"text"`` (official) keeps the
        text half of every layer block; ``"all"`` uses the whole centroid.
    n_layers : int, optional
        Number of layer blocks ``[visual | text]`` in one embedding row (official 5: layers
        3, 7, 11, 15, 19). Default: the number of layers the features manifest records for
        the ``coincide`` extraction (``extraction.features.coincide.points``), else 5. The
        width must be divisible by ``2 * n_layers``.
    seed : int
        k-means seed (official 1234), also the seed of the k-means samples below.
    kmeans_iters : int
        Lloyd iterations (official 50).
    backend : {"auto", "faiss", "sklearn"}
        k-means implementation; ``auto`` is faiss when importable (official), sklearn otherwise.
    kmeans_dim : int, None or "auto"
        [reduction, not in the official code] Run k-means on a projection of the rows on their
        top singular directions (fitted on a 10,000-row sample). ``None``: full width
        (official). ``"auto"``: 128 when the embedding is wider than 1,024, else full width.
        Centroids, densities and MMD always use the full-width rows.
    kmeans_points_per_centroid : int, None or "auto"
        [reduction, not in the official code] Train k-means on a seeded sample of this many
        rows per centroid, then assign every row. ``None``: train on all rows (official: faiss's
        default cap of 256 per centroid never bites at the official K). ``"auto"``: 16 when
        there are more than 200,000 rows, else all rows.
    text_only : {"separate", "as_is"}
        Records with ``n_images == 0`` (if that column exists). ``"as_is"`` is the official
        behaviour: they are clustered and scored like every other row. ``"separate"``
        [interpretation, default] compares them by their text halves only: their visual halves
        are set to zero and the row re-normalised, they are clustered among themselves (with
        ``round(K * N_text / N)`` of the K clusters) and so never share a cluster with image
        records; their clusters take part in the same budget allocation.

    Behaviour follows the official code, including its budget loop: clusters are visited by
    descending share, cluster i gets ``round(R_left * P_i)`` (the whole cluster when that is
    more than its size), and the shares of the clusters not yet visited are re-normalised.
    The official loop can end short of the budget (only when the last clusters visited are too
    small for what rolls over to them); [interpretation] the remainder is then spent by further
    rounds of the same rule over the clusters that still have unselected samples, each
    continuing its greedy MMD sequence, so exactly ``k`` samples are selected. The official
    pass's count is reported as ``info["allocation"]["first_pass"]``.

    Clusters: if ``samples.parquet`` has a ``cluster`` column and the directory has
    ``cluster_centroids.npy``, they are used as given (no k-means). Ids are integers; if they all
    lie in ``[0, n_centroids)`` the id is the centroid row, otherwise there must be exactly one
    centroid per distinct id (in ascending id order). [interpretation] Clusters without members
    take no part in the allocation, but their centroids still count in everyone's
    transferability, as they would in the official transferability script. Without given
    centroids, the centroids are the normalised means of each cluster's (unit) rows.

    Other deviations from the official code, none of which changes its result: the density is
    accumulated exactly block by block and the greedy MMD keeps running sums (O(n) per pick
    instead of rebuilding a candidates x |S|^2 gather); kernels are float64 as in the official
    code for clusters of up to 8,192 rows and float32 beyond (clusters over 32,768 rows are
    refused: raise ``n_clusters``).

    Output: ``order`` lists the picks as made (clusters by descending share, greedy order
    inside; top-up rounds last). There is no per-sample score (``scores`` is NaN); ``values``
    holds ``cluster``, ``cluster_share``, ``cluster_transferability``, ``cluster_density`` and
    ``pick_rank`` (position in ``order``, -1 when not selected).
    """

    summary = "cluster transferability/density budget split, greedy MMD inside clusters"

    _parameter_constraints: ClassVar[dict[str, Param]] = {
        "n_clusters": Param("k-means clusters K (None: N / 67, the official ratio)", POSITIVE_INT, NONE),
        "temperature": Param("tau of the share softmax(S / (tau D))", Interval(float, 0, None, "neither")),
        "sigma": Param("width of the Gaussian kernel of the density and the MMD", Interval(float, 0, None, "neither")),
        "transfer_threshold": Param("centroid cosines above it are left out of the transferability",
                                    Interval(float, None, None)),
        "transfer_halves": Param("part of each centroid the transferability compares", Choice("text", "all")),
        "n_layers": Param("layer blocks [visual | text] per embedding row (None: from the manifest, else 5)",
                          POSITIVE_INT, NONE),
        "seed": Param("k-means seed, also of the k-means samples", Interval(int, 0, None)),
        "kmeans_iters": Param("Lloyd iterations", POSITIVE_INT),
        "backend": Param("k-means implementation", Choice("auto", "faiss", "sklearn")),
        "kmeans_dim": Param("k-means on a projection to this many directions ('auto': 128 above 1,024 wide)",
                            POSITIVE_INT, Choice(None, "auto", "none", "null")),
        "kmeans_points_per_centroid": Param("train k-means on this many sampled rows per centroid ('auto': 16 above 200k rows)",
                                            POSITIVE_INT, Choice(None, "auto", "none", "null")),
        "text_only": Param("text-only records clustered apart by their text halves, or as they are",
                           Choice("separate", "as_is")),
    }

    def __init__(
        self,
        *,
        n_clusters: int | None = None,
        temperature: float = 0.1,
        sigma: float = 1.0,
        transfer_threshold: float = 0.9,
        transfer_halves: str = "text",
        n_layers: int | None = None,
        seed: int = 1234,
        kmeans_iters: int = 50,
        backend: str = "auto",
        kmeans_dim: int | str | None = "auto",
        kmeans_points_per_centroid: int | str | None = "auto",
        text_only: str = "separate",
    ):
        self.n_clusters = n_clusters
        self.temperature = temperature
        self.sigma = sigma
        self.transfer_threshold = transfer_threshold
        self.transfer_halves = transfer_halves
        self.n_layers = n_layers
        self.seed = seed
        self.kmeans_iters = kmeans_iters
        self.backend = backend
        self.kmeans_dim = kmeans_dim
        self.kmeans_points_per_centroid = kmeans_points_per_centroid
        self.text_only = text_only

    def feature_needs(self):
        self.check_params()
        # NaN has no meaning here (the extraction gives text-only rows a zero visual half, not
        # NaN), but the check is left to the passes the method makes anyway, which refuse NaN/inf
        # with the keys: the k-means pass (l2_normalize) and the per-cluster pass (_kernel_of),
        # which reads every row whether the clusters are computed or given. finite=True would
        # read the whole array (27 GB at 665k) a second time. Both passes see the rows as the
        # method compares them: with text_only="separate", the visual half of a text-only row is
        # dropped first, so a NaN there (never used) is not refused.
        return [FeatureNeed("coincide_embed", "array", "coincide", finite=False)]

    # --- selection ----------------------------------------------------------------------------
    def _fit(self, features: FeatureSet) -> None:
        """Everything but the budget: clusters, the per-cluster pass (densities, kernel sums,
        cached kernels, centroids) and the transferabilities."""
        t_start = time.perf_counter()
        emb = features.array("coincide_embed")
        n, width = emb.shape
        layers = int(self.n_layers) if self.n_layers is not None else _manifest_layers(features.manifest) or 5
        if width % (2 * layers):
            raise DataFormatError(
                f"coincide_embed has width {width}, not divisible by 2 * n_layers = {2 * layers} "
                "(rows are n_layers blocks of [visual | text] halves)"
            )
        half = width // (2 * layers)
        text_cols = (np.arange(layers)[:, None] * 2 * half + half + np.arange(half)[None, :]).ravel()
        visual_cols = text_cols - half
        text_only = np.zeros(n, dtype=bool)
        if features.has_column("n_images"):
            text_only = np.asarray(features.column("n_images"), dtype=float) == 0
        separate = self.text_only == "separate" and text_only.any()
        keys = features.keys
        timings: dict[str, float] = {}

        def view(block: np.ndarray, rows: np.ndarray) -> np.ndarray:
            """Rows as the method compares them (text-only rows: text halves, unit norm)."""
            if separate:
                t_rows = text_only[rows]
                if t_rows.any():
                    sub = block[t_rows]
                    sub[:, visual_cols] = 0
                    norms = np.linalg.norm(sub, axis=1, keepdims=True)
                    norms[norms == 0] = 1
                    block[t_rows] = sub / norms
            return block

        info: dict = {
            "n_layers": layers,
            "width": int(width),
            "text_only_rows": int(text_only.sum()),
            "text_only": self.text_only,
            "temperature": float(self.temperature),
            "sigma": float(self.sigma),
            "transfer_threshold": float(self.transfer_threshold),
            "transfer_halves": self.transfer_halves,
        }

        # 1. clusters ------------------------------------------------------------------------
        t0 = time.perf_counter()
        given_centroids = None
        if features.has_column("cluster") and features.has_aux("cluster_centroids"):
            labels, cluster_ids, given_centroids = given_clusters(
                features.column("cluster"), features.aux("cluster_centroids"), width
            )
            info["clusters"] = {"source": "given (cluster column + cluster_centroids.npy)", "n_clusters": len(cluster_ids)}
        else:
            try:
                labels, kinfo = kmeans_clusters(
                    emb, view, text_only if separate else None, n_clusters=self.n_clusters, seed=self.seed,
                    kmeans_iters=self.kmeans_iters, backend=self.backend, kmeans_dim=self.kmeans_dim,
                    kmeans_points_per_centroid=self.kmeans_points_per_centroid,
                )
            except NonFiniteRowsError as error:
                raise nonfinite_error("coincide_embed", error.rows, keys) from None
            cluster_ids = np.arange(int(labels.max()) + 1 if n else 0)
            info["clusters"] = kinfo
        timings["clusters_s"] = time.perf_counter() - t0
        n_ids = len(cluster_ids)
        sizes = np.bincount(labels, minlength=n_ids)
        if sizes.max(initial=0) > MAX_CLUSTER_ROWS:
            raise ConfigError(
                f"a cluster has {int(sizes.max())} samples; COINCIDE needs the within-cluster kernel "
                f"and refuses clusters over {MAX_CLUSTER_ROWS} samples: raise n_clusters"
            )

        # 2. per-cluster pass: density, kernel sums, centroid sums ----------------------------
        t0 = time.perf_counter()
        halves_cols = text_cols if self.transfer_halves == "text" else np.arange(width)
        if self.transfer_halves == "text":  # a strided view: [:, layer, text, :]
            centroid_part = lambda x: x.reshape(len(x), layers, 2, half)[:, :, 1, :]
        else:
            centroid_part = lambda x: x
        stats = _cluster_pass(
            emb, labels, sizes, view, float(self.sigma), centroid_part if given_centroids is None else None, keys=keys
        )
        timings["density_s"] = time.perf_counter() - t0

        # 3. transferability ------------------------------------------------------------------
        t0 = time.perf_counter()
        if given_centroids is not None:
            centroid_part = given_centroids[:, halves_cols]
            transfer_all = transferability(centroid_part, float(self.transfer_threshold))
        else:
            nonempty = np.flatnonzero(sizes > 0)
            transfer_all = np.full(n_ids, np.nan)
            transfer_all[nonempty] = transferability(stats.centroid_sums[nonempty], float(self.transfer_threshold))
        timings["transfer_s"] = time.perf_counter() - t0

        timings["fit_s"] = time.perf_counter() - t_start
        present = np.flatnonzero(sizes > 0)
        self.embedding_, self.view_ = emb, view
        self.labels_, self.cluster_ids_, self.cluster_sizes_ = labels, cluster_ids, sizes
        self.stats_ = stats
        self.present_ = present
        self.density_ = stats.density[present]
        self.transferability_ = transfer_all
        self.scores_ = transfer_all[present] / self.density_  # S / D of every non-empty cluster
        self.fit_info_ = info
        self.fit_timings_ = timings

    def _select_budget(self, k: int) -> SelectionResult:
        """Cluster shares and the roll-over allocation of ``k``, then greedy MMD in each cluster
        (the kernels left out of the fit's cache are recomputed)."""
        t_start = time.perf_counter()
        timings = dict(self.fit_timings_)
        info = dict(self.fit_info_)
        emb, view, stats = self.embedding_, self.view_, self.stats_
        labels, cluster_ids, sizes = self.labels_, self.cluster_ids_, self.cluster_sizes_
        present, density, transfer_all = self.present_, self.density_, self.transferability_
        n, n_ids = len(labels), len(cluster_ids)
        transfer = transfer_all[present]

        # 4. allocation + greedy MMD ----------------------------------------------------------
        t0 = time.perf_counter()
        alloc = allocate(self.scores_, sizes[present], k, float(self.temperature))
        picks_first: list[np.ndarray] = []
        picks_topup: dict[int, np.ndarray] = {}
        for j in alloc.visit:
            c = int(present[j])
            members = stats.members[c]
            if alloc.whole[j]:  # official: the whole cluster, in index order
                picks_first.append(members)
                continue
            if alloc.first[j] == 0 and alloc.extra[j] == 0:
                continue
            state = _Greedy(stats.kernel(c, emb, view, float(self.sigma)), stats.colsum[c])
            picks_first.append(members[state.advance(int(alloc.first[j]))])
            if alloc.extra[j]:  # the top-up continues the same greedy sequence
                picks_topup[j] = members[state.advance(int(alloc.extra[j]))]
        order_parts = picks_first + [picks_topup[j] for j in alloc.topup_visit]
        order = np.concatenate(order_parts) if order_parts else np.empty(0, dtype=np.int64)
        timings["select_s"] = time.perf_counter() - t0
        if len(order) != k or len(np.unique(order)) != k:  # pragma: no cover - internal invariant
            raise RuntimeError(f"COINCIDE selected {len(order)} samples ({len(np.unique(order))} distinct), budget {k}")

        selected = np.zeros(n, dtype=bool)
        selected[order] = True
        pick_rank = np.full(n, -1, dtype=np.int64)
        pick_rank[order] = np.arange(len(order))
        share_of = np.full(n_ids, np.nan)
        share_of[present] = alloc.shares
        density_of = np.full(n_ids, np.nan)
        density_of[present] = density
        values = {
            "cluster": np.asarray(cluster_ids)[labels],
            "cluster_share": share_of[labels],
            "cluster_transferability": transfer_all[labels],
            "cluster_density": density_of[labels],
            "pick_rank": pick_rank,
        }
        info["allocation"] = {
            "budget": int(k),
            "clusters_nonempty": len(present),
            "clusters_with_picks": int(((alloc.first + alloc.extra) > 0).sum()),
            "clusters_taken_whole": int(alloc.whole.sum()),
            "first_pass": int(alloc.first.sum()),
            "topup": int(alloc.extra.sum()),
            "topup_rounds": int(alloc.rounds),
            "share_max": float(alloc.shares.max()) if len(present) else None,
            "share_min": float(alloc.shares.min()) if len(present) else None,
            "largest_cluster": int(sizes.max(initial=0)),
            "transferability_range": _range(transfer),
            "density_range": _range(density),
        }
        timings["total_s"] = timings["fit_s"] + time.perf_counter() - t_start
        info["timings"] = {key: round(value, 3) for key, value in timings.items()}
        return SelectionResult(selected=selected, scores=np.full(n, np.nan), values=values, order=order, info=info)


# --- pieces (module level so that tests can reach them) -----------------------------------------
def _manifest_layers(manifest) -> int | None:
    """Number of layers of the ``coincide`` extraction recorded in a features manifest."""
    try:
        points = manifest["extraction"]["features"]["coincide"]["points"]
        return len(points) or None
    except (KeyError, TypeError):
        return None


def _range(values: np.ndarray):
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return [float(values.min()), float(values.max())] if len(values) else None
