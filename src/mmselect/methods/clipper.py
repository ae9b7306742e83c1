"""CLIPPER (arXiv 2603.28058) [interpretation]: zero-/one-shot answer perplexity, a coreset that
mirrors the perplexity histogram, ranked inside each bin by in-context-learning gain."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..budget import apportion
from ..features.pairs import PAIRINGS, aggregate_pairs, clipper_pairs  # noqa: F401 (public here too)
from ..features.store import FeatureSet
from .base import (
    POSITIVE_INT,
    Choice,
    FeatureNeed,
    Interval,
    Param,
    SelectionMethod,
    SelectionResult,
)

DISTRIBUTION_SCORES = ("zero_shot", "one_shot", "ratio")
WITHIN_BIN = ("demo_gain", "random", "icl_gain")


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

    _parameter_constraints: ClassVar[dict[str, Param]] = {
        "distribution_score": Param("perplexity whose histogram the coreset mirrors", Choice(*DISTRIBUTION_SCORES)),
        "n_bins": Param("number of quantile bins of the distribution score", POSITIVE_INT),
        "within_bin": Param("ranking inside a bin", Choice(*WITHIN_BIN)),
        "seed": Param("seed of the random within-bin ranking", Interval(int, 0, None)),
    }

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
        column = lambda name: np.asarray(features.column(name), dtype=float)
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
    """Edges ``[min, c_1, ..., max]`` of ``n_bins`` quantile bins of ``values``.

    The cuts ``c`` are the empirical quantiles at ``1/B, ..., (B-1)/B`` (``inverted_cdf``: every cut is a
    data value), duplicates and cuts equal to the maximum removed, so tied values are never split
    and no bin is empty; heavy ties therefore give fewer bins. See :func:`assign_bins`.
    """
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return np.array([0.0, 0.0])
    low, high = float(values.min()), float(values.max())
    cuts = np.quantile(values, np.arange(1, n_bins) / n_bins, method="inverted_cdf") if n_bins > 1 else []
    cuts = np.unique(np.asarray(cuts, dtype=float))
    cuts = cuts[cuts < high]
    return np.concatenate([[low], cuts, [high]])


def assign_bins(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index of every value: bin 0 holds ``v <= edges[1]``, bin b holds ``edges[b] < v <= edges[b+1]``
    (right-closed bins, so a value equal to a cut stays with the values below it)."""
    inner = np.asarray(edges, dtype=float)[1:-1]
    return np.searchsorted(inner, np.asarray(values, dtype=float), side="left").astype(np.int64)


def proportional_quotas(counts: np.ndarray, k: int) -> np.ndarray:
    """Split ``k`` over bins in proportion to ``counts`` by largest remainder; sums to ``k`` and no
    quota exceeds its count (for ``k <= sum(counts)``). Equal remainders go to the lower bin."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if not 0 <= k <= total:
        raise ValueError(f"budget {k} outside [0, {total}]")
    if total == 0:
        return np.zeros_like(counts)
    return apportion(k, counts, caps=counts)


# --- pairing and aggregation (called by the extraction engine) ----------------------------------------
__all__ = [
    "Clipper",
    "aggregate_pairs",
    "assign_bins",
    "clipper_pairs",
    "proportional_quotas",
    "quantile_edges",
]
