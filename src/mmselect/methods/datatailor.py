"""DataTailor: informativeness, uniqueness and representativeness under task-adaptive budgets.

Method of *Mastering Collaborative Multi-modal Data Selection: A Focus on Informativeness,
Uniqueness, and Representativeness* (arXiv 2412.06293). The defaults reproduce the behaviour of
the authors' released code; the paper's variants and this package's own decisions are options,
labelled as such in :class:`DataTailor` and in ``docs/methods/datatailor.md``.

Per task ``t`` (a source dataset):

1. **Informativeness** ``I_i``: the singular-value entropy of the sample's token matrix (feature
   column ``sve``, see :mod:`mmselect.features.spectrum`).
2. **Clusters**: Ward agglomerative clustering of the last-token features, cut at
   ``lam x`` the task's root merge height. Exact up to ``exact_ward_max`` samples, above that
   Ward on k-means micro-clusters (see :func:`ward_labels_approx`).
3. **Uniqueness** ``U_i = sum_{j in C} ||p_i - p_j|| I_j / mean_{a,b in C} ||p_a - p_b||``.
4. **Representativeness** ``R_i = tau_C I_i`` with
   ``tau_C = 1/(K_t - 1) sum_{C' != C} exp(cos(mean_C, mean_C'))`` over the task's clusters.
5. **Combination** ``V_i = (r_i q(I)_i + q(U)_i + q(R)_i) / (r_i + 2)`` with ``q`` the per-task
   rank divided by ``n_t`` and ``r_i`` the number of dialogue rounds.
6. **Budget** ``k_t = floor(k n_t xbar_t^2 / sum_u n_u xbar_u^2)`` with ``xbar_t`` the task mean of
   ``sigma_1 / sum sigma`` (column ``sv_top_ratio``); the top ``k_t`` of ``V`` per task are kept.
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from typing import Any, ClassVar

import numpy as np

from ..budget import apportion_detail
from ..errors import BudgetError, ConfigError
from ..features.rows import file_backing, nonfinite_rows, read_rows
from ..features.store import FeatureSet
from ..numerics import (
    euclidean_distances,
    kmeans_labels,
    nonfinite_error,
    pca_project,
    squared_distances,
)
from .base import (
    NONE,
    POSITIVE_INT,
    Choice,
    FeatureNeed,
    Interval,
    Param,
    Satisfies,
    SelectionMethod,
    SelectionResult,
    top_k_mask,
)

log = logging.getLogger(__name__)

#: Sizes of the 12 contiguous index blocks the official code hard-codes for llava_v1_5_mix665k.json.
LLAVA665K_BLOCK_SIZES = (
    57669, 23240, 76803, 82783, 8998, 66160, 48447, 86417, 72140, 80000, 21953, 40688,
)
LLAVA665K_N = sum(LLAVA665K_BLOCK_SIZES)  # 665,298

# Value given to tau_C when a task has a single cluster (the official code divides by K_t - 1 = 0).
# exp(1) is what the cluster's similarity with itself would give. Constant within the task, so it
# changes no ranking.
SINGLE_CLUSTER_TAU = math.e

# Approximate route: k-means iterations of the micro-clustering, rows sampled to fit the PCA.
KMEANS_ITERATIONS = 10
KMEANS_POINTS_PER_CENTROID = 8  # k-means is fitted on at most 8 x micro-clusters rows, then assigns all
PCA_SAMPLE = 10000


class DataTailor(SelectionMethod):
    """DataTailor selection (informativeness + uniqueness + representativeness, task budgets).

    Features: columns ``sve`` and ``sv_top_ratio`` (``mmselect extract --features spectrum``),
    array ``last_token`` (``--features last_token``), column ``rounds`` (dialogue rounds, from the
    data) and the ``task`` column (or ``task_preset``).

    Parameters (defaults = the official code unless labelled)
    ----------------------------------------------------------
    lam : float
        Dendrogram cut: clusters are the subtrees below ``lam x`` the root merge height (0.1).
    threshold_space : {"height", "dsse"}
        ``"height"`` (official): cut the Ward merge height ``sqrt(2 dSSE)`` at ``lam x`` its root
        value, i.e. dSSE <= lam^2 dSSE_max. ``"dsse"`` (paper-literal): stop merging when
        dSSE > lam dSSE_max, i.e. a height cut at ``sqrt(lam) x`` the root height.
    uniqueness : {"official", "paper"}
        ``"official"``: ``sum_j D_ij I_j`` divided by the cluster's mean pairwise distance
        (diagonal zeros counted). ``"paper"`` (paper-literal): ``sum_{j != i} D_ij I_j / sum_{k in C} I_k``.
    representativeness : {"official", "paper"}
        ``"official"``: ``tau_C I_i``. ``"paper"`` (paper-literal): ``tau_C I_i / sum_{k in C} I_k``.
    normalize : {"rank", "minmax"}
        ``"rank"`` (official): per-task 0-based ascending rank / n_t. ``"minmax"`` (the paper's
        reported wording): ``(v - min) / (max - min)`` per task (0 when constant).
    fill : {"remainder", "official"}
        How task budgets are made integers. ``"official"``: ``floor`` of each share, so the total
        may fall short of ``k`` (``info["budget_shortfall"]`` says by how much). ``"remainder"``
        (default, interpretation): the floors, then one more sample to the tasks with the largest
        fractional parts (ties: earlier task) until exactly ``k`` are selected. With a budget
        equal to the official total the two give the official subset.
    rate_clamp : (lo, hi) or None
        Interpretation of the paper's appendix clamp (range unknown): per-task rates
        ``k_t / n_t`` are kept within ``[lo, hi]`` and the rest of the budget is re-split over
        the other tasks by the same formula. ``None`` (official): no clamp. ``k_t <= n_t`` is
        always enforced the same way (the official code would crash).
    task_preset : None or "llava665k-blocks"
        ``None``: tasks from the ``task`` column. ``"llava665k-blocks"``: the official code's 12
        contiguous index blocks of llava_v1_5_mix665k.json, by row position (requires exactly
        665,298 rows in the original order).
    singleton_uniqueness : {"nan", "zero"}
        Uniqueness of a sample alone in its cluster (or in a cluster of identical features),
        where the official formula is 0/0. ``"nan"`` (official): NaN, which the rank
        normalisation puts above every other value. ``"zero"`` (interpretation): 0, lowest.
    exact_ward_max : int
        Tasks with at most this many samples get exact Ward (fastcluster on float64 condensed
        distances, O(n^2) memory). Larger tasks use :func:`ward_labels_approx` (interpretation,
        an approximation needed for scale; its agreement is measured in the docs).
    approx_micro_clusters : int
        Number of k-means micro-clusters per task in the approximate route.
    approx_ward_points : int
        Size of the weighted Ward problem in the approximate route (micro-cluster centroids,
        each repeated in proportion to its size).
    approx_dim : int or None
        PCA dimension the k-means of the approximate route runs in (None: full dimension).
        Centroids, distances and all values are computed on the full features.
    kmeans_backend : {"auto", "faiss", "sklearn"}
        ``"auto"``: faiss when installed, else scikit-learn MiniBatchKMeans.
    uniqueness_max_refs : int
        Clusters with more members use a seeded random sample of this many reference members
        for the distance sums of the uniqueness (an unbiased estimate, interpretation for scale);
        smaller clusters are exact.
    block_rows : int
        Rows read and processed at a time (memory bound; ``last_token`` is never loaded whole).
    seed : int
        Seed of the approximate route and of the reference sampling.

    Ties in the rank normalisation and in the per-task top-``k_t`` go to the earlier sample
    (stable sort); the official code uses a non-stable sort, so its ties are arbitrary.
    """

    summary = "informativeness (singular-value entropy) + uniqueness + representativeness, task budgets"

    _parameter_constraints: ClassVar[dict[str, Param]] = {
        "lam": Param("dendrogram cut, as a fraction of the root merge height", Interval(float, 0, 1, "right")),
        "threshold_space": Param("cut the Ward height (official) or the merge cost dSSE (paper)", Choice("height", "dsse")),
        "uniqueness": Param("uniqueness formula: the official code's or the paper's", Choice("official", "paper")),
        "representativeness": Param("representativeness formula: the official code's or the paper's",
                                    Choice("official", "paper")),
        "normalize": Param("per-task normalisation of the three values", Choice("rank", "minmax")),
        "fill": Param("task budgets: floors plus largest remainders (exact k), or floors only (official)",
                      Choice("remainder", "official")),
        "rate_clamp": Param("(lo, hi) bounds on every task's selection rate (None: none)", NONE,
                            Satisfies(lambda v: len(v) == 2 and all(0 <= float(x) <= 1 for x in v)
                                      and float(v[0]) <= float(v[1]), "a pair (lo, hi) with 0 <= lo <= hi <= 1")),
        "task_preset": Param("tasks from the task column (None) or the official 665k index blocks",
                             Choice(None, "llava665k-blocks")),
        "singleton_uniqueness": Param("uniqueness of a sample alone in its cluster (official 0/0)", Choice("nan", "zero")),
        "exact_ward_max": Param("tasks up to this size get exact Ward, larger ones the approximation",
                                Interval(int, 0, None)),
        "approx_micro_clusters": Param("k-means micro-clusters per task in the approximate Ward", Interval(int, 2, None)),
        "approx_ward_points": Param("size of the weighted Ward problem in the approximate route", POSITIVE_INT),
        "approx_dim": Param("PCA dimension of the micro-clustering (None: full width)", POSITIVE_INT, NONE),
        "kmeans_backend": Param("k-means implementation of the approximate route", Choice("auto", "faiss", "sklearn")),
        "uniqueness_max_refs": Param("larger clusters sample this many reference members for the uniqueness",
                                     POSITIVE_INT),
        "block_rows": Param("rows read and processed at a time (memory bound)", POSITIVE_INT),
        "seed": Param("seed of the approximate route and of the reference sampling", Interval(int, 0, None)),
    }

    def __init__(
        self,
        *,
        lam: float = 0.1,
        threshold_space: str = "height",
        uniqueness: str = "official",
        representativeness: str = "official",
        normalize: str = "rank",
        fill: str = "remainder",
        rate_clamp: tuple[float, float] | None = None,
        task_preset: str | None = None,
        singleton_uniqueness: str = "nan",
        exact_ward_max: int = 20000,
        approx_micro_clusters: int = 4096,
        approx_ward_points: int = 16384,
        approx_dim: int | None = 128,
        kmeans_backend: str = "auto",
        uniqueness_max_refs: int = 2048,
        block_rows: int = 4096,
        seed: int = 0,
    ):
        self.lam = lam
        self.threshold_space = threshold_space
        self.uniqueness = uniqueness
        self.representativeness = representativeness
        self.normalize = normalize
        self.fill = fill
        self.rate_clamp = rate_clamp
        self.task_preset = task_preset
        self.singleton_uniqueness = singleton_uniqueness
        self.exact_ward_max = exact_ward_max
        self.approx_micro_clusters = approx_micro_clusters
        self.approx_ward_points = approx_ward_points
        self.approx_dim = approx_dim
        self.kmeans_backend = kmeans_backend
        self.uniqueness_max_refs = uniqueness_max_refs
        self.block_rows = block_rows
        self.seed = seed

    # --- parameters and features --------------------------------------------------------------
    def _check_params(self) -> None:
        if int(self.approx_ward_points) < int(self.approx_micro_clusters):
            raise ConfigError("approx_ward_points must be >= approx_micro_clusters")
        if self.approx_dim is not None and int(self.approx_dim) < 1:
            raise ConfigError("approx_dim must be a positive integer or None")

    def feature_needs(self) -> list[FeatureNeed]:
        self.check_params()
        return [
            FeatureNeed("sve", "column", "spectrum"),
            FeatureNeed("sv_top_ratio", "column", "spectrum"),
            # NaN has no meaning here, but the check is left to RowReader: every row belongs to
            # exactly one task and is read once, into memory, and refused there if not finite.
            # finite=True would read the whole array (5.4 GB at 665k) a second time.
            FeatureNeed("last_token", "array", "last_token", finite=False),
            FeatureNeed("rounds", "column", None),
        ]

    # --- tasks --------------------------------------------------------------------------------
    def _task_rows(self, features: FeatureSet) -> list[tuple[str, np.ndarray]]:
        n = features.n
        if self.task_preset == "llava665k-blocks":
            if n != LLAVA665K_N:
                raise ConfigError(
                    f"task_preset='llava665k-blocks' applies the official index blocks of "
                    f"llava_v1_5_mix665k.json and needs exactly {LLAVA665K_N} samples in that file's "
                    f"order; these features have {n}. Use the 'task' column instead (task_preset=None)."
                )
            bounds = np.concatenate([[0], np.cumsum(LLAVA665K_BLOCK_SIZES)])
            return [(f"block{b:02d}", np.arange(bounds[b], bounds[b + 1])) for b in range(len(LLAVA665K_BLOCK_SIZES))]
        tasks = np.asarray(features.tasks).astype(str)
        names, first, inverse = np.unique(tasks, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")  # tasks in order of first appearance
        return [(str(names[t]), np.flatnonzero(inverse == t)) for t in order]

    # --- selection ----------------------------------------------------------------------------
    def _fit(self, features: FeatureSet) -> None:
        """Everything but the budget: per task the Ward clusters, the three values and the
        combined value ``V``; the task weights ``n_t xbar_t^2`` of the budget split."""
        n = features.n
        sve = np.asarray(features.column("sve"), dtype=np.float64)
        top = np.asarray(features.column("sv_top_ratio"), dtype=np.float64)
        rounds = np.asarray(features.column("rounds"), dtype=np.float64)
        if (rounds < 0).any():
            bad = features.keys[np.flatnonzero(rounds < 0)[:5]]
            raise ConfigError(f"column 'rounds' must be >= 0 (e.g. samples {', '.join(map(str, bad))})")
        tasks = self._task_rows(features)
        sizes = np.array([len(rows) for _, rows in tasks], dtype=np.int64)
        xbar = np.array([top[rows].mean() for _, rows in tasks], dtype=np.float64)
        weights = sizes * xbar**2

        reader = RowReader(features.array("last_token"), keys=features.keys, block_rows=int(self.block_rows))
        labels = np.zeros(n, dtype=np.int64)
        uniq = np.full(n, np.nan)
        rep = np.full(n, np.nan)
        tau_c = np.full(n, np.nan)
        scores = np.full(n, np.nan)
        task_info: list[dict[str, Any]] = []
        next_label = 1
        for t, (name, rows) in enumerate(tasks):
            # Random streams per task, keyed by its name: one for the approximate route, one for
            # the reference sampling of the uniqueness (so each is independent of the other).
            key = zlib.crc32(name.encode())
            started = time.perf_counter()
            x = reader.read(rows)
            _log_stage(name, "read", started, n=len(rows))
            started = time.perf_counter()
            local, route = self.cluster(x, rng=np.random.default_rng([int(self.seed), key, 0]))
            _log_stage(name, "cluster", started, n=len(rows), route=route["route"])
            n_clusters = int(local.max()) + 1 if len(local) else 0
            labels[rows] = local + next_label
            next_label += n_clusters
            v = sve[rows]
            started = time.perf_counter()
            u, means, stats = cluster_uniqueness(
                x, local, v, mode=self.uniqueness, max_refs=int(self.uniqueness_max_refs),
                rng=np.random.default_rng([int(self.seed), key, 1]), block_rows=int(self.block_rows), singleton=self.singleton_uniqueness,
            )
            _log_stage(name, "uniqueness", started, n=len(rows))
            started = time.perf_counter()
            tc = association_coefficients(means, block_rows=int(self.block_rows))
            r = tc[local] * v
            if self.representativeness == "paper":
                r = r / np.bincount(local, weights=v, minlength=n_clusters)[local]
            _log_stage(name, "representativeness", started, n=len(rows))
            del x
            qi, qu, qr = (self._normalise(values) for values in (v, u, r))
            rr = rounds[rows]
            value = (rr * qi + qu + qr) / (rr + 2.0)
            uniq[rows], rep[rows], tau_c[rows], scores[rows] = u, r, tc[local], value
            sizes_c = np.bincount(local, minlength=n_clusters)
            task_info.append(
                {
                    "task": name,
                    "n": int(len(rows)),
                    "mean_top_ratio": float(xbar[t]),
                    "clusters": n_clusters,
                    "singleton_clusters": int((sizes_c == 1).sum()),
                    "largest_cluster": int(sizes_c.max()) if n_clusters else 0,
                    "degenerate_clusters": stats["degenerate_clusters"],
                    "uniqueness_sampled_clusters": stats["sampled_clusters"],
                    "nan_uniqueness": int(np.isnan(u).sum()),
                    **route,
                }
            )
        self.tasks_ = tasks
        self.task_sizes_ = sizes
        self.task_weights_ = weights
        self.task_info_ = task_info
        self.scores_ = scores
        self.values_ = {
            "informativeness": sve,
            "uniqueness": uniq,
            "representativeness": rep,
            "association": tau_c,
            "cluster": labels,
        }

    def _select_budget(self, k: int) -> SelectionResult:
        """Task budgets from the fitted weights, then the top ``k_t`` values of every task."""
        tasks, scores = self.tasks_, self.scores_
        lo_hi = None if self.rate_clamp is None else tuple(float(x) for x in self.rate_clamp)
        budgets, budget_info = split_budget(k, self.task_sizes_, self.task_weights_, fill=self.fill, rate_clamp=lo_hi)
        selected = np.zeros(len(scores), dtype=bool)
        for t, (_, rows) in enumerate(tasks):
            selected[rows[top_k_mask(scores[rows], int(budgets[t]))]] = True
        task_info = [
            {**{key: ti[key] for key in ("task", "n", "mean_top_ratio")}, **budget_info["tasks"][t],
             **{key: value for key, value in ti.items() if key not in ("task", "n", "mean_top_ratio")}}
            for t, ti in enumerate(self.task_info_)
        ]
        uniq = self.values_["uniqueness"]
        info: dict[str, Any] = {
            "tasks": task_info,
            "task_source": self.task_preset or "column:task",
            "fill": self.fill,
            "budget_requested": int(k),
            "budget_selected": int(selected.sum()),
            "capped_tasks": [tasks[t][0] for t in budget_info["capped_tasks"]],
            "raised_tasks": [tasks[t][0] for t in budget_info["raised_tasks"]],
            "redistributed": budget_info["redistributed"],
            "single_cluster_tasks": [ti["task"] for ti in task_info if ti["clusters"] == 1],
            "singleton_clusters": int(sum(ti["singleton_clusters"] for ti in task_info)),
            "nan_uniqueness": int(np.isnan(uniq).sum()),
            "ward_routes": {ti["task"]: ti["route"] for ti in task_info},
            "tie_break": "stable (earlier sample first)",
        }
        if budget_info["shortfall"]:
            info["budget_shortfall"] = int(budget_info["shortfall"])
        return SelectionResult(
            selected=selected,
            scores=scores.copy(),
            values={name: values.copy() for name, values in self.values_.items()},
            info=info,
        )

    def _normalise(self, values: np.ndarray) -> np.ndarray:
        return rank_normalise(values) if self.normalize == "rank" else minmax_normalise(values)

    # --- clustering ---------------------------------------------------------------------------
    def cluster(self, x: np.ndarray, rng: np.random.Generator | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """0-based cluster labels of the rows of ``x`` (one task) and a description of the route."""
        rng = np.random.default_rng(self.seed) if rng is None else rng
        if len(x) <= int(self.exact_ward_max) or len(x) <= 2:
            labels, info = ward_labels_exact(x, self.lam, self.threshold_space, block_rows=int(self.block_rows))
            return labels, {"route": "exact", **info}
        labels, info = ward_labels_approx(
            x, self.lam, self.threshold_space,
            micro_clusters=int(self.approx_micro_clusters), ward_points=int(self.approx_ward_points),
            dim=self.approx_dim, backend=self.kmeans_backend, seed=int(rng.integers(2**31 - 1)),
            block_rows=int(self.block_rows),
        )
        return labels, {"route": "approximate", **info}


# ======================================================================================
# Budgets
# ======================================================================================


def split_budget(
    k: int,
    sizes: np.ndarray,
    weights: np.ndarray,
    *,
    fill: str = "remainder",
    rate_clamp: tuple[float, float] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Integer task budgets ``k_t`` from shares ``k w_t / sum w`` (official formula).

    Each task's budget is bounded by ``[lo n_t, min(n_t, floor(hi n_t))]`` (``[0, n_t]`` without
    ``rate_clamp``); a task whose share leaves its bounds is fixed at the bound and the rest of the
    budget is re-split over the other tasks in proportion to ``w``, until nothing changes. Then
    ``fill="official"`` floors every share; ``fill="remainder"`` also gives the floor remainder,
    one sample each, to the tasks with the largest fractional parts (earlier task on ties), so the
    budgets sum to exactly ``k``.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.float64)
    n_tasks = len(sizes)
    if not np.all(np.isfinite(weights)) or (weights < 0).any():
        raise BudgetError("task weights n_t * xbar_t^2 must be finite and >= 0")
    if weights.sum() <= 0:
        weights = sizes.astype(np.float64)
    upper = sizes.astype(np.float64)
    lower = np.zeros(n_tasks)
    if rate_clamp is not None:
        lo, hi = rate_clamp
        upper = np.minimum(upper, np.floor(hi * sizes + 1e-9))
        lower = np.minimum(lo * sizes, upper)
    if k > upper.sum() + 1e-9:
        raise BudgetError(f"budget {k} exceeds what the tasks can give under their caps ({int(upper.sum())})")
    if k < lower.sum() - 1e-9:
        raise BudgetError(f"budget {k} is below the sum of the tasks' minimum rates ({lower.sum():.1f})")
    detail = apportion_detail(k, weights, caps=upper, floors=lower, fill=fill == "remainder")
    budgets, raw, share, fixed, shortfall = detail.budgets, detail.raw, detail.share, detail.fixed, detail.shortfall
    at_upper = fixed & (share >= upper - 1e-9)
    capped = [int(t) for t in np.flatnonzero(at_upper)]
    raised = [int(t) for t in np.flatnonzero(fixed & ~at_upper & (share <= lower + 1e-9))]
    info = {
        "tasks": [
            {
                "raw_budget": float(raw[t]),
                "budget": int(budgets[t]),
                "rate": float(budgets[t] / sizes[t]) if sizes[t] else 0.0,
                "capped": bool(t in capped),
                "raised": bool(t in raised),
            }
            for t in range(n_tasks)
        ],
        "capped_tasks": capped,
        "raised_tasks": raised,
        "redistributed": float(np.abs(raw - share)[fixed].sum()),
        "shortfall": shortfall,
    }
    return budgets, info


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
# Ward clustering
# ======================================================================================


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
    ``paper``: ``U_i = sum_{j in C} D_ij I_j / sum_{j in C} I_j``. Distances are computed in
    float32 with BLAS on the cluster-centred features (self-distances set to exactly 0). For a
    cluster larger than ``max_refs``, the sums over ``j`` run over a seeded random sample of
    ``max_refs`` members, scaled by ``n_C / max_refs``. A cluster whose mean distance is 0 (one
    member, or identical members) gets NaN (``singleton="nan"``, official 0/0) or 0 in
    ``official`` mode.
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
            denominator = v[members].sum()
            out[members] = sums / denominator if denominator != 0 else 0.0
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


def _log_stage(task: str, stage: str, started: float, **extra: Any) -> None:
    seconds = time.perf_counter() - started
    log.info(
        "datatailor task %s: %s %.2fs %s", task, stage, seconds,
        " ".join(f"{key}={value}" for key, value in extra.items()),
        extra={"dt_task": task, "dt_stage": stage, "dt_seconds": seconds},
    )
