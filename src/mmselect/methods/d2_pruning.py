"""D2-Pruning baseline: message passing on a kNN graph, then greedy selection with reverse
message passing (Maharana et al., arXiv 2310.07931), with the COINCIDE code's settings."""

from __future__ import annotations

import heapq
from typing import ClassVar

import numpy as np

from ..features.store import FeatureSet
from ..numerics import (
    Stopwatch,
    exact_knn,
    ivf_knn,
    pca_project,
    read_rows,
    rerank_exact,
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
)

EXACT_WORK_LIMIT = 4e12  # n * n * d below which knn="auto" searches exactly (about a minute on 2 cores)
_PRODUCERS = {"last_token": "last_token", "mean_embed": "mean_embed", "last_token_final": "last_token_final",
              "mean_embed_final": "mean_embed_final", "aum": "aum", "el2n": "el2n",
              "answer_nll": "answer_nll", "clip_score": "clip_score"}


# --- message passing ------------------------------------------------------------------------------
def forward_scores(scores: np.ndarray, neighbors: np.ndarray, dist: np.ndarray, *, forward_gamma: float,
                   floor: float) -> np.ndarray:
    """``g_i = max(s_i, floor) + sum_{j in kNN(i)} exp(-forward_gamma * d_ij) * max(s_j, floor)``."""
    s = np.maximum(np.asarray(scores, dtype=np.float64), floor)
    valid = neighbors >= 0
    weights = np.where(valid, np.exp(-forward_gamma * np.where(valid, dist, 0.0)), 0.0)
    return s + (weights * s[np.where(valid, neighbors, 0)]).sum(1)


def greedy_reverse(graph_scores: np.ndarray, neighbors: np.ndarray, dist: np.ndarray, k: int, *,
                   gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """Pick the current maximum ``k`` times; after picking ``i``, every unpicked ``j`` in kNN(i)
    gets ``g_j -= exp(-gamma * d_ij) * g_i``. Ties go to the smaller index. A lazy max-heap
    (stale entries skipped) makes it O((n + k * n_neighbors) log n).
    Returns the pick order and the scores at the end (for picked samples: at pick time).
    """
    g = np.array(graph_scores, dtype=np.float64)
    n = len(g)
    heap = list(zip((-g).tolist(), range(n)))
    heapq.heapify(heap)
    picked = np.zeros(n, dtype=bool)
    order = np.empty(k, dtype=np.int64)
    decay = np.exp(-gamma * np.where(neighbors >= 0, dist, 0.0))
    neighbor_lists = neighbors.tolist()
    decay_lists = decay.tolist()
    g_list = g.tolist()
    count = 0
    while count < k:
        neg, i = heapq.heappop(heap)
        if picked[i] or -neg != g_list[i]:
            continue  # already picked, or an outdated entry
        picked[i] = True
        order[count] = i
        count += 1
        gi = g_list[i]
        for j, w in zip(neighbor_lists[i], decay_lists[i]):
            if j >= 0 and not picked[j]:
                g_list[j] -= w * gi
                heapq.heappush(heap, (-g_list[j], j))
    return order, np.asarray(g_list)


class D2Pruning(SelectionMethod):
    """D2-Pruning: difficulty scores smoothed over a kNN graph, then a greedy pick that lowers the
    scores of each pick's neighbours, so the selection is both high-scoring and spread out.

    1. kNN graph: for every sample its ``n_neighbors`` nearest other samples and their distances.
    2. Forward message passing [code]: ``g_i = max(s_i, eps) + sum_{j in kNN(i)} exp(-forward_gamma
       * d_ij) * max(s_j, eps)`` with ``eps = score_floor``.
    3. Greedy selection [code]: take the unpicked sample with the largest ``g`` (ties: smaller
       index); for each ``j`` in its kNN list, ``g_j -= exp(-gamma * d_ij) * g_i``. The COINCIDE
       code approximates the argmax with a sorted list plus a "standby" cache; here the argmax is
       exact (lazy heap).

    Steps 1-2 do not depend on the budget and are :meth:`fit`; the greedy selection of step 3
    stops at the budget and runs in :meth:`select_budget`.

    Parameters
    ----------
    embedding : str, default ``"mean_embed_final"``
        Array for the graph. The default is the mean over tokens of the hidden states after the
        final norm (``--features mean_embed_final``), what the reference reads as the last
        layer's output (``hidden_states[-1]`` of transformers) [code: mean-pooled last-layer
        embedding of TinyLLaVA]. ``"mean_embed"`` is the same mean before the final norm.
    score : str, default ``"aum"``
        Column with the node scores (higher = preferred) [code: AUM margin, "higher = easier,
        like CLIP-score"]; e.g. ``"el2n"`` to favour hard samples.
    n_neighbors : int, default 5  [code: ``--n-neighbors 5``].
    gamma : float, default 0.4
        Reverse-message-passing decay [code: ``--gamma 0.4``].
    forward_gamma : float, default 1.0
        Forward decay [code: hard-coded ``gamma = 1.`` in ``initialize_graph``].
    distance : {"sqeuclidean", "euclidean", "cosine"}, default ``"sqeuclidean"``
        ``d_ij``. The code uses faiss L2 search, which returns *squared* Euclidean distances
        [code]. ``cosine`` is ``1 - cos`` on unit rows.
    normalize : bool, default False
        L2-normalise the rows first (for the Euclidean distances) [code: raw embeddings].
        With raw 4,096-d hidden states the squared distances are in the hundreds or more, so
        ``exp(-d)`` underflows to 0 and D2-Pruning reduces to ranking by ``score``;
        ``info["mean_forward_weight"]`` shows whether this happens. ``normalize=True`` (or
        ``distance="cosine"``) keeps distances in [0, 4] [interpretation: a usable variant].
    score_floor : float, default 1e-7  [code: ``epsilon = 0.0000001``].
    knn : {"auto", "exact", "ivf"}, default ``"auto"``
        ``exact``: block-wise torch matmul + topk on the full embedding (loads it in float32).
        ``ivf``: rows projected to ``pca_dim`` (centred PCA; uncentred + renormalised for
        cosine), a faiss ``IndexIVFFlat`` search there, then the candidates re-ranked in the
        full embedding (``rerank``).
        ``auto``: exact when ``n * n * d <= 4e12``, else ivf. [The code uses a faiss IVF-PQ
        index (nlist 100, 16 x 8-bit codes, nprobe 1) on the full embedding: coarser than both.]
    pca_dim : int or None, default 128
        Projection width for ``ivf`` (``None``: no projection). [Scale reduction, not in the
        reference; effect measured in docs/methods/baselines.md.]
    nprobe : int, default 16
        Inverted lists searched per query for ``ivf``.
    rerank : int or None, default 32
        When the search ran on the projection, take this many candidates there and keep the
        ``n_neighbors`` nearest in the full embedding (exact distances from the full rows).
        ``None``: neighbours and distances of the projection. [Scale reduction repair; at
        20,000 x 4,096 the 32 nearest in 128-d PCA space held 96% of the true 5 nearest.]
    seed : int, default 0
        PCA sample and IVF training seed.

    Features: array ``embedding`` (``--features mean_embed_final``) and column ``score``
    (``--features aum``).
    """

    summary = "kNN graph message passing + greedy reverse passing"

    _parameter_constraints: ClassVar[dict[str, Param]] = {
        "embedding": Param("array the kNN graph is built on", OfType(str, label="an array name")),
        "score": Param("column of per-sample difficulty scores", OfType(str, label="a column name")),
        "n_neighbors": Param("neighbours per sample in the kNN graph", POSITIVE_INT),
        "gamma": Param("decay of the reverse message passing exp(-gamma d)", Interval(float, 0, None)),
        "forward_gamma": Param("decay of the forward message passing exp(-forward_gamma d)", Interval(float, 0, None)),
        "distance": Param("graph distance", Choice("sqeuclidean", "euclidean", "cosine")),
        "normalize": Param("L2-normalise the rows before the distances", Choice(True, False)),
        "score_floor": Param("scores below it count as it in the message passing", Interval(float, None, None)),
        "knn": Param("neighbour search: exact, faiss IVF, or by size", Choice("auto", "exact", "ivf")),
        "pca_dim": Param("IVF search on a projection to this many directions (None: full width)", POSITIVE_INT, NONE),
        "nprobe": Param("IVF lists probed per query", POSITIVE_INT),
        "rerank": Param("candidates re-ranked in the full embedding after a projected search (None: none)",
                        POSITIVE_INT, NONE),
        "seed": Param("seed of the projection and of the IVF training", Interval(int, 0, None)),
    }

    def __init__(
        self,
        *,
        embedding: str = "mean_embed_final",
        score: str = "aum",
        n_neighbors: int = 5,
        gamma: float = 0.4,
        forward_gamma: float = 1.0,
        distance: str = "sqeuclidean",
        normalize: bool = False,
        score_floor: float = 1e-7,
        knn: str = "auto",
        pca_dim: int | None = 128,
        nprobe: int = 16,
        rerank: int | None = 32,
        seed: int = 0,
    ):
        self.embedding = embedding
        self.score = score
        self.n_neighbors = n_neighbors
        self.gamma = gamma
        self.forward_gamma = forward_gamma
        self.distance = distance
        self.normalize = normalize
        self.score_floor = score_floor
        self.knn = knn
        self.pca_dim = pca_dim
        self.nprobe = nprobe
        self.rerank = rerank
        self.seed = seed

    def feature_needs(self):
        return [
            FeatureNeed(self.embedding, "array", _PRODUCERS.get(self.embedding)),
            FeatureNeed(self.score, "column", _PRODUCERS.get(self.score)),
        ]

    def _fit(self, features: FeatureSet) -> None:
        """Steps 1-2, which do not depend on the budget: the kNN graph and the forward scores.
        The greedy selection (step 3) stops at the budget and is :meth:`_select_budget`."""
        clock = Stopwatch()
        array = features.array(self.embedding)
        scores = np.asarray(features.column(self.score), dtype=np.float64)
        n, d = array.shape
        unit = self.normalize or self.distance == "cosine"
        method = self.knn
        if method == "auto":
            method = "exact" if float(n) * n * d <= EXACT_WORK_LIMIT else "ivf"
        info: dict = {"knn": method, "pca": None}
        if method == "ivf":
            try:
                import faiss  # noqa: F401
            except ImportError:
                method = info["knn"] = "exact"
                info["knn_note"] = "faiss not installed: exact search on the projected rows"
            if self.pca_dim is not None and self.pca_dim < d and self.pca_dim < n:
                with clock.stage("pca"):
                    x, info["pca"] = pca_project(
                        array, self.pca_dim, seed=self.seed, center=self.distance != "cosine",
                        normalize_input=unit, normalize_output=self.distance == "cosine",
                    )
            else:
                with clock.stage("load"):
                    x = read_rows(array, slice(0, n), normalize=unit)
        else:
            with clock.stage("load"):
                x = read_rows(array, slice(0, n), normalize=unit)
        projected = info["pca"] is not None
        search_k = max(self.n_neighbors, self.rerank) if projected and self.rerank else self.n_neighbors
        with clock.stage("knn"):
            if method == "ivf":
                sqdist, neighbors, info["ivf"] = ivf_knn(x, search_k, nprobe=self.nprobe, seed=self.seed)
                lists = info["ivf"].pop("lists")
            else:
                sqdist, neighbors = exact_knn(x, search_k)
                lists = None
            del x
        if projected and self.rerank:
            with clock.stage("rerank"):
                sqdist, neighbors = rerank_exact(array, neighbors, self.n_neighbors, normalize=unit, group=lists)
            info["rerank"] = {"candidates": int(search_k), "space": "full embedding"}
        sqdist = np.maximum(sqdist, 0.0)
        if self.distance == "sqeuclidean":
            dist = sqdist
        elif self.distance == "euclidean":
            dist = np.sqrt(sqdist)
        else:
            dist = sqdist / 2.0  # unit rows: |a - b|^2 = 2 - 2 cos
        dist = np.where(neighbors >= 0, dist, np.inf)
        with clock.stage("forward"):
            graph = forward_scores(scores, neighbors, dist, forward_gamma=self.forward_gamma, floor=self.score_floor)
        self.neighbors_, self.distances_, self.graph_scores_ = neighbors, dist, graph
        self.clock_, self.fit_info_ = clock, info

    def _select_budget(self, k: int) -> SelectionResult:
        neighbors, dist, graph = self.neighbors_, self.distances_, self.graph_scores_
        n = len(graph)
        info = dict(self.fit_info_)
        clock = Stopwatch()
        clock.timings.update(self.clock_.timings)
        with clock.stage("greedy"):
            order, final = greedy_reverse(graph, neighbors, dist, k, gamma=self.gamma)
        selected = np.zeros(n, dtype=bool)
        selected[order] = True
        # scores: picks by pick order above everything else, the rest by their final graph score
        preference = np.empty(n, dtype=float)
        rest = np.flatnonzero(~selected)
        rest_order = rest[np.lexsort((rest, -final[rest]))]
        preference[rest_order] = np.arange(len(rest), 0, -1, dtype=float)
        preference[order] = len(rest) + np.arange(k, 0, -1, dtype=float)
        weights = np.exp(-self.forward_gamma * dist[neighbors >= 0])
        info.update(
            {
                "distance": self.distance,
                "normalize": self.normalize,
                "n_neighbors": int(neighbors.shape[1]),
                "mean_forward_weight": float(weights.mean()) if weights.size else 0.0,
                "share_forward_weight_below_1e-6": float((weights < 1e-6).mean()) if weights.size else 1.0,
                "timings_s": clock.rounded(),
            }
        )
        return SelectionResult(
            selected=selected,
            scores=preference,
            values={"d2_graph_score": graph, "d2_final_score": final},
            order=order,
            info=info,
        )
