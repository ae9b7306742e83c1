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

from ...errors import ConfigError
from ...features.store import FeatureSet
from ..base import (
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
from .budgets import split_budget
from .clustering import ward_labels_approx, ward_labels_exact
from .values import (
    RowReader,
    association_coefficients,
    cluster_uniqueness,
    minmax_normalise,
    rank_normalise,
)

log = logging.getLogger("mmselect.methods.datatailor")

#: Sizes of the 12 contiguous index blocks the official code hard-codes for llava_v1_5_mix665k.json.
LLAVA665K_BLOCK_SIZES = (
    57669, 23240, 76803, 82783, 8998, 66160, 48447, 86417, 72140, 80000, 21953, 40688,
)
LLAVA665K_N = sum(LLAVA665K_BLOCK_SIZES)  # 665,298

#: The paper's ablations (Table 3): each name removes one principle or one adaptive rule.
ABLATIONS = ("informativeness", "uniqueness", "representativeness", "round_weights", "task_ratio")
_VALUE_ABLATIONS = ("informativeness", "uniqueness", "representativeness")


def _is_ablation_list(value) -> bool:
    names = list(value)
    return all(isinstance(name, str) and name in ABLATIONS for name in names) and len(set(names)) == len(names)


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
        (diagonal zeros counted). ``"paper"`` (paper-literal): ``sum_{j != i} D_ij I_j / sum_{k in C} I_k``,
        divided by the cluster's mean intra-cluster distance as the appendix does (the official value
        divided by the cluster's mean informativeness; it does not change when a cluster is scaled).
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
    ablate : sequence of names, default ``()``
        The paper's ablations (Table 3), any combination: ``"informativeness"``,
        ``"uniqueness"``, ``"representativeness"`` drop that value from the combination (its
        weight becomes 0; the other weights stay); ``"round_weights"`` gives the three values
        equal weights (``r_i = 1``) instead of the round-adaptive coefficient;
        ``"task_ratio"`` makes each task's budget proportional to its size (``xbar_t`` ignored).
        The three values are still computed and reported. At least one value must remain.
    exact_ward_max : int
        Tasks with at most this many samples (10,000) get exact Ward (fastcluster on float64
        condensed distances, O(n^2) memory). Larger tasks use :func:`ward_labels_approx`
        (interpretation, an approximation needed for scale; its agreement is measured in the docs).
    approx_micro_clusters : "auto" or int
        Number of k-means micro-clusters per task in the approximate route. ``"auto"``: one per
        ``approx_samples_per_micro`` samples, and never fewer than ``exact_ward_max / 2``: a task
        just above the switch runs Ward on half as many points as the largest exact task, with
        micro-clusters of about two samples, which costs about as much as that exact task
        (measured in the docs), so the cost neither drops nor jumps at the switch.
    approx_samples_per_micro : float
        Target samples per micro-cluster of ``approx_micro_clusters="auto"`` (8: forced on tasks
        of 5,000-30,000 samples, small enough for exact Ward, this ratio selects what exact Ward
        selects at Jaccard >= 0.98 in the docs' measurements, and the 665k run fits 10 minutes
        on 2 cores; lower values come closer to exact Ward at a cost growing as ``(n / ratio)^2``).
    approx_ward_points : "auto" or int
        ``"auto"``: Ward on the micro-cluster centroids with their exact sizes as weights. An
        integer rounds the weights so that the equivalent problem with each centroid repeated in
        proportion to its size has at most this many points (the earlier default was 16,384).
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

    uses_preset_tasks = True  # clustering and budgets are per task: LLaVA-1.5's sources, not image folders

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
        "ablate": Param("the paper's ablations (Table 3) to apply",
                        Satisfies(lambda v: not isinstance(v, str) and _is_ablation_list(v),
                                  "a list of distinct names from " + ", ".join(repr(a) for a in ABLATIONS))),
        "exact_ward_max": Param("tasks up to this size get exact Ward, larger ones the approximation",
                                Interval(int, 0, None)),
        "approx_micro_clusters": Param("k-means micro-clusters per task in the approximate Ward "
                                       "('auto': n / approx_samples_per_micro, at least exact_ward_max / 2)",
                                       Choice("auto"), Interval(int, 2, None)),
        "approx_samples_per_micro": Param("samples per micro-cluster of approx_micro_clusters='auto'",
                                          Interval(float, 1, None)),
        "approx_ward_points": Param("weighted Ward of the approximate route: exact weights ('auto') or "
                                    "weights rounded to fit this many repeated points",
                                    Choice("auto"), POSITIVE_INT),
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
        ablate: tuple[str, ...] = (),
        exact_ward_max: int = 10000,
        approx_micro_clusters: int | str = "auto",
        approx_samples_per_micro: float = 8.0,
        approx_ward_points: int | str = "auto",
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
        self.ablate = ablate
        self.exact_ward_max = exact_ward_max
        self.approx_micro_clusters = approx_micro_clusters
        self.approx_samples_per_micro = approx_samples_per_micro
        self.approx_ward_points = approx_ward_points
        self.approx_dim = approx_dim
        self.kmeans_backend = kmeans_backend
        self.uniqueness_max_refs = uniqueness_max_refs
        self.block_rows = block_rows
        self.seed = seed

    # --- parameters and features --------------------------------------------------------------
    def _check_params(self) -> None:
        if (
            self.approx_ward_points != "auto" and self.approx_micro_clusters != "auto"
            and int(self.approx_ward_points) < int(self.approx_micro_clusters)
        ):
            raise ConfigError("approx_ward_points must be >= approx_micro_clusters")
        if self.approx_dim is not None and int(self.approx_dim) < 1:
            raise ConfigError("approx_dim must be a positive integer or None")
        if set(_VALUE_ABLATIONS) <= set(self.ablate):
            raise ConfigError("ablate removes all three values; keep at least one of " + ", ".join(_VALUE_ABLATIONS))

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
        # "task_ratio" ablation: budgets in proportion to the task sizes alone
        weights = sizes.astype(np.float64) if "task_ratio" in self.ablate else sizes * xbar**2

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
            value = self._combine(qi, qu, qr, rounds[rows])
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
        if self.ablate:
            info["ablate"] = list(self.ablate)
        if budget_info["shortfall"]:
            info["budget_shortfall"] = int(budget_info["shortfall"])
        return SelectionResult(
            selected=selected,
            scores=scores.copy(),
            values={name: values.copy() for name, values in self.values_.items()},
            info=info,
        )

    def _combine(self, qi: np.ndarray, qu: np.ndarray, qr: np.ndarray, rounds: np.ndarray) -> np.ndarray:
        """``V = (w_I q(I) + w_U q(U) + w_R q(R)) / (w_I + w_U + w_R)`` with ``w_I = r_i`` (1 under
        the ``round_weights`` ablation), ``w_U = w_R = 1``, and 0 for an ablated value. Where
        every remaining weight is 0 (informativeness alone, a sample of 0 rounds) ``V = q(I)``."""
        ablate = set(self.ablate)
        w_i = np.ones_like(rounds) if "round_weights" in ablate else rounds.astype(np.float64)
        w_i = np.zeros_like(w_i) if "informativeness" in ablate else w_i
        w_u = 0.0 if "uniqueness" in ablate else 1.0
        w_r = 0.0 if "representativeness" in ablate else 1.0
        total = w_i + w_u + w_r
        weighted = w_i * qi + w_u * qu + w_r * qr
        return np.where(total > 0, weighted / np.where(total > 0, total, 1.0), qi)

    def _normalise(self, values: np.ndarray) -> np.ndarray:
        return rank_normalise(values) if self.normalize == "rank" else minmax_normalise(values)

    # --- clustering ---------------------------------------------------------------------------
    def micro_clusters_for(self, n: int) -> int:
        """Micro-clusters of an ``n``-sample task on the approximate route.

        ``"auto"``: ``min(n, max(ceil(n / approx_samples_per_micro), ceil(exact_ward_max / 2)))``."""
        if self.approx_micro_clusters != "auto":
            return int(self.approx_micro_clusters)
        by_ratio = math.ceil(n / float(self.approx_samples_per_micro))
        return int(min(n, max(by_ratio, math.ceil(int(self.exact_ward_max) / 2))))

    def cluster(self, x: np.ndarray, rng: np.random.Generator | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """0-based cluster labels of the rows of ``x`` (one task) and a description of the route."""
        rng = np.random.default_rng(self.seed) if rng is None else rng
        if len(x) <= int(self.exact_ward_max) or len(x) <= 2:
            labels, info = ward_labels_exact(x, self.lam, self.threshold_space, block_rows=int(self.block_rows))
            return labels, {"route": "exact", **info}
        labels, info = ward_labels_approx(
            x, self.lam, self.threshold_space,
            micro_clusters=self.micro_clusters_for(len(x)),
            ward_points=None if self.approx_ward_points == "auto" else int(self.approx_ward_points),
            dim=self.approx_dim, backend=self.kmeans_backend, seed=int(rng.integers(2**31 - 1)),
            block_rows=int(self.block_rows),
        )
        return labels, {"route": "approximate", **info}



def _log_stage(task: str, stage: str, started: float, **extra: Any) -> None:
    seconds = time.perf_counter() - started
    log.info(
        "datatailor task %s: %s %.2fs %s", task, stage, seconds,
        " ".join(f"{key}={value}" for key, value in extra.items()),
        extra={"dt_task": task, "dt_stage": stage, "dt_seconds": seconds},
    )
