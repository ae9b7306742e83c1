"""CLIPPER (arXiv 2603.28058) [interpretation]: zero-/one-shot answer perplexity, a coreset that
mirrors the perplexity histogram, ranked inside each bin by in-context-learning gain."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError
from ..features.store import FeatureSet
from .base import FeatureNeed, SelectionMethod, SelectionResult, check_choice

DISTRIBUTION_SCORES = ("zero_shot", "one_shot", "ratio")
WITHIN_BIN = ("demo_gain", "random", "icl_gain")
PAIRINGS = ("random", "same-task")


class Clipper(SelectionMethod):
    """CLIPPER, **as interpreted here**: no official code exists and the paper's method section
    could not be consulted. The paper states a training-free two-stage inference (zero-shot, then
    one-shot in-context learning over demonstration-query pairs) and a coreset that mirrors the
    dataset's perplexity distribution while keeping critical samples; the procedure below is this
    project's interpretation of that shape [interp], to be validated against the full paper.

    Features:

    * ``answer_nll`` (``mmselect extract --features answer_nll``): zero-shot mean NLL of the answer
      tokens given image + question, i.e. log PPL0.
    * ``icl_answer_nll`` and ``demo_gain`` (``mmselect extract --features clipper``): each sample
      as a query is paired with ``m`` demonstrations (:func:`clipper_pairs`); ``icl_answer_nll`` is
      the mean over them of its one-shot answer NLL (log of the geometric mean of PPL1);
      ``demo_gain`` is the mean ICL gain ``g_{j->i} = nll0_i - nll1_{i|j}`` the sample gives when
      used as a demonstration (NaN if it never was one). See :func:`aggregate_pairs`. ``m`` and the
      pairing rule are options of that extraction, not of this method.

    Parameters
    ----------
    distribution_score : {"zero_shot", "one_shot", "ratio"}
        The perplexity whose distribution the subset mirrors: log PPL0 (``answer_nll``, default),
        log PPL1 (``icl_answer_nll``), or log(PPL1 / PPL0) (``icl_answer_nll - answer_nll``).
    n_bins : int
        B quantile bins of that score over the full set (default 10). Tied values stay in one bin,
        so heavy ties can leave fewer, unequal bins (reported in ``info``).
    within_bin : {"demo_gain", "random", "icl_gain"}
        Ranking inside a bin: highest ``demo_gain`` first (default: the "critical" samples that help
        others most in context; samples never used as a demonstration rank last); ``"random"``
        (seeded); ``"icl_gain"``: highest own gain as a query, ``answer_nll - icl_answer_nll``.
    seed : int
        Tie-break and ``"random"`` ranking.

    Selection [interp]: quota of bin b = its share of the budget in proportion to its mass
    (``k * n_b / n``), rounded by largest remainder (ties to the lower bin) so the quotas sum to
    ``k`` exactly; each bin keeps its ``quota`` best-ranked samples. A quota never exceeds its bin.

    Scores: the within-bin preference ``(quota_b - rank) / n_b`` (rank 0 = best), positive exactly
    for the selected samples. ``values``: ``clipper_bin``, ``clipper_rank``, ``clipper_distribution``.
    """

    summary = "[interpretation] zero-/one-shot perplexity, coreset mirroring the perplexity histogram"

    def __init__(
        self,
        *,
        distribution_score: str = "zero_shot",
        n_bins: int = 10,
        within_bin: str = "demo_gain",
        seed: int = 0,
    ):
        self.distribution_score = distribution_score
        self.n_bins = n_bins
        self.within_bin = within_bin
        self.seed = seed

    def feature_needs(self):
        check_choice("distribution_score", self.distribution_score, set(DISTRIBUTION_SCORES))
        check_choice("within_bin", self.within_bin, set(WITHIN_BIN))
        if int(self.n_bins) != self.n_bins or self.n_bins < 1:
            raise ConfigError(f"n_bins must be a positive integer, got {self.n_bins!r}")
        names: list[str] = []
        if self.distribution_score in ("zero_shot", "ratio") or self.within_bin == "icl_gain":
            names.append("answer_nll")
        if self.distribution_score in ("one_shot", "ratio") or self.within_bin == "icl_gain":
            names.append("icl_answer_nll")
        needs = [
            FeatureNeed(name, "column", "answer_nll" if name == "answer_nll" else "clipper") for name in names
        ]
        if self.within_bin == "demo_gain":
            needs.append(FeatureNeed("demo_gain", "column", "clipper", finite=False))
        return needs

    def _select(self, features: FeatureSet, k: int) -> SelectionResult:
        n = features.n
        column = lambda name: np.asarray(features.column(name), dtype=float)  # noqa: E731
        if self.distribution_score == "zero_shot":
            dist = column("answer_nll")
        elif self.distribution_score == "one_shot":
            dist = column("icl_answer_nll")
        else:
            dist = column("icl_answer_nll") - column("answer_nll")
        rng = np.random.default_rng(self.seed)
        tie = rng.permutation(n)  # tie-break rank: lower first
        if self.within_bin == "demo_gain":
            gain = column("demo_gain")
            preference = np.where(np.isfinite(gain), gain, -np.inf)
        elif self.within_bin == "icl_gain":
            preference = column("answer_nll") - column("icl_answer_nll")
        else:
            preference = np.zeros(n)
        edges = quantile_edges(dist, int(self.n_bins))
        bins = assign_bins(dist, edges)
        n_edge_bins = len(edges) - 1
        counts = np.bincount(bins, minlength=n_edge_bins)
        quotas = proportional_quotas(counts, k)
        selected = np.zeros(n, dtype=bool)
        rank = np.empty(n, dtype=np.int64)
        scores = np.empty(n, dtype=float)
        # Rank inside every bin at once: by bin, then preference (descending), then the tie-break.
        order = np.lexsort((tie, -preference, bins))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        position = np.arange(n) - np.repeat(starts, counts)
        rank[order] = position
        bin_of = bins
        scores[:] = (quotas[bin_of] - rank) / np.maximum(counts[bin_of], 1)
        selected[rank < quotas[bin_of]] = True
        info: dict[str, Any] = {
            "interpretation": True,
            "distribution_score": self.distribution_score,
            "within_bin": self.within_bin,
            "n_bins_requested": int(self.n_bins),
            "n_bins": int(n_edge_bins),
            "bin_edges": [float(e) for e in edges],
            "bin_counts": counts.tolist(),
            "bin_quotas": quotas.tolist(),
            "seed": self.seed,
        }
        if self.within_bin == "demo_gain":
            info["never_demonstration"] = int((~np.isfinite(column("demo_gain"))).sum())
        return SelectionResult(
            selected=selected,
            scores=scores,
            values={"clipper_bin": bins.astype(np.int64), "clipper_rank": rank, "clipper_distribution": dist},
            info=info,
        )


# --- binning ---------------------------------------------------------------------------------------
def quantile_edges(values: np.ndarray, n_bins: int) -> np.ndarray:
    """Edges of ``n_bins`` quantile bins of ``values`` (duplicates removed, so heavy ties give fewer
    bins). The first and last edges are the minimum and maximum."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return np.array([0.0, 0.0])
    edges = np.unique(np.quantile(values, np.linspace(0.0, 1.0, n_bins + 1)))
    if len(edges) == 1:
        edges = np.array([edges[0], edges[0]])
    return edges


def assign_bins(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index of every value: bin b holds ``edges[b] <= v < edges[b+1]``, the last bin also the
    maximum (like ``numpy.histogram``)."""
    inner = np.asarray(edges, dtype=float)[1:-1]
    return np.searchsorted(inner, np.asarray(values, dtype=float), side="right").astype(np.int64)


def proportional_quotas(counts: np.ndarray, k: int) -> np.ndarray:
    """Split ``k`` over bins in proportion to ``counts`` by largest remainder; sums to ``k`` and no
    quota exceeds its count (for ``k <= sum(counts)``). Equal remainders go to the lower bin."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if not 0 <= k <= total:
        raise ValueError(f"budget {k} outside [0, {total}]")
    if total == 0:
        return np.zeros_like(counts)
    exact_num = counts * k  # quota_b = floor(exact_num / total) + (largest remainders)
    quotas = exact_num // total
    remainders = exact_num - quotas * total
    left = k - int(quotas.sum())
    if left:
        order = np.lexsort((np.arange(len(counts)), -remainders))
        quotas[order[:left]] += 1
    return quotas


# --- pairing and aggregation (called by the extraction engine) ----------------------------------------
def _distinct_draws(pool_sizes: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """For every row r, ``m`` distinct integers in ``[0, pool_sizes[r])`` (requires ``pool_sizes >= m``),
    by Floyd's algorithm, vectorised over rows."""
    rows = len(pool_sizes)
    out = np.empty((rows, m), dtype=np.int64)
    for step in range(m):
        upper = pool_sizes - m + step  # draw t uniformly in [0, upper]
        t = np.floor(rng.random(rows) * (upper + 1)).astype(np.int64)
        t = np.minimum(t, upper)
        clash = (out[:, :step] == t[:, None]).any(axis=1) if step else np.zeros(rows, dtype=bool)
        out[:, step] = np.where(clash, upper, t)
    return out


def clipper_pairs(
    n: int,
    tasks: Sequence[str] | np.ndarray | None = None,
    m: int = 4,
    pairing: str = "random",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(query_idx, demo_idx) for the one-shot stage: every query gets ``min(m, n - 1)`` distinct
    demonstrations, none of them itself.

    ``pairing="random"``: demonstrations uniformly from all other samples. ``"same-task"``: from the
    other samples of the query's task; when the task has fewer than ``m`` other samples, all of them
    are used and the rest is drawn at random from the other tasks (a task with a single sample thus
    falls back to random pairing). Pairs are grouped by query (ascending), in draw order.
    """
    check_choice("pairing", pairing, set(PAIRINGS))
    if m < 1:
        raise ConfigError(f"m must be >= 1, got {m}")
    if n < 2:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    m_eff = min(m, n - 1)
    queries = np.arange(n, dtype=np.int64)
    if pairing == "random" or tasks is None:
        draws = _distinct_draws(np.full(n, n - 1, dtype=np.int64), m_eff, rng)
        demos = draws + (draws >= queries[:, None])  # skip the query itself
        return np.repeat(queries, m_eff), demos.reshape(-1)
    tasks = np.asarray([str(t) for t in tasks], dtype=object)
    if len(tasks) != n:
        raise ValueError("one task per sample")
    names, task_id = np.unique(tasks.astype(str), return_inverse=True)
    members_sorted = np.argsort(task_id, kind="stable")  # samples grouped by task, ascending inside
    task_sizes = np.bincount(task_id, minlength=len(names))
    task_start = np.concatenate([[0], np.cumsum(task_sizes)[:-1]])
    position_in_task = np.empty(n, dtype=np.int64)
    position_in_task[members_sorted] = np.arange(n) - np.repeat(task_start, task_sizes)
    demos = np.empty((n, m_eff), dtype=np.int64)
    pool = task_sizes[task_id] - 1
    full = pool >= m_eff
    if full.any():
        rows = np.flatnonzero(full)
        draws = _distinct_draws(pool[rows], m_eff, rng)
        draws = draws + (draws >= position_in_task[rows][:, None])
        demos[rows] = members_sorted[task_start[task_id[rows]][:, None] + draws]
    for i in np.flatnonzero(~full):  # small tasks: all of the task, then random others
        t = task_id[i]
        same = members_sorted[task_start[t] : task_start[t] + task_sizes[t]]
        same = same[same != i]
        same = same[rng.permutation(len(same))]
        others = np.flatnonzero(task_id != t)
        extra = rng.choice(others, size=m_eff - len(same), replace=False)
        demos[i] = np.concatenate([same, extra])
    return np.repeat(queries, m_eff), demos.reshape(-1)


def aggregate_pairs(
    n: int,
    query_idx: np.ndarray,
    demo_idx: np.ndarray,
    zero_shot_nll: np.ndarray,
    one_shot_nll: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample ``(icl_answer_nll, demo_gain)`` from the one-shot results of the pairs.

    ``one_shot_nll[p]`` is the answer NLL of query ``query_idx[p]`` with demonstration
    ``demo_idx[p]``. ``icl_answer_nll[i]`` = mean of ``one_shot_nll`` over the pairs where i is the
    query; ``demo_gain[j]`` = mean over the pairs where j is the demonstration of
    ``g_{j->i} = zero_shot_nll[i] - one_shot_nll[p]`` (= log PPL0_i - log PPL1_{i|j}). Pairs with a
    non-finite value are left out; a sample with no usable pair gets NaN.
    """
    query_idx = np.asarray(query_idx, dtype=np.int64)
    demo_idx = np.asarray(demo_idx, dtype=np.int64)
    zero = np.asarray(zero_shot_nll, dtype=float)
    one = np.asarray(one_shot_nll, dtype=float)
    if not (len(query_idx) == len(demo_idx) == len(one)):
        raise ValueError("query_idx, demo_idx and one_shot_nll need one entry per pair")
    if len(zero) != n:
        raise ValueError("zero_shot_nll needs one entry per sample")
    if np.any(query_idx == demo_idx):
        raise ValueError("a sample cannot be its own demonstration")
    gain = zero[query_idx] - one
    ok_query = np.isfinite(one)
    ok_gain = np.isfinite(gain)

    def mean_by(index, values, ok):
        total = np.bincount(index[ok], weights=values[ok], minlength=n)
        count = np.bincount(index[ok], minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / np.maximum(count, 1), np.nan)

    return mean_by(query_idx, one, ok_query), mean_by(demo_idx, gain, ok_gain)


__all__ = [
    "Clipper",
    "aggregate_pairs",
    "assign_bins",
    "clipper_pairs",
    "proportional_quotas",
    "quantile_edges",
]
