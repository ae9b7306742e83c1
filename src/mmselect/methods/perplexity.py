"""Perplexity baseline: keep a band (low, mid or high) of answer perplexity (arXiv 2309.04564)."""

from __future__ import annotations

import numpy as np

from ..features.store import FeatureSet
from .base import FeatureNeed, SelectionMethod, SelectionResult, check_choice


class PerplexitySelection(SelectionMethod):
    """Perplexity = exp(mean NLL of the answer tokens) under the reference model.

    Parameters
    ----------
    band : {"low", "mid", "high"}
        ``low`` keeps the k lowest perplexities, ``high`` the k highest, ``mid`` the k closest
        to the median in rank (the band centred on the middle of the sorted order).

    Samples are ordered by (perplexity, position), so ties are resolved deterministically.
    The score written for every sample is its preference under the chosen band (higher = kept first).
    """

    summary = "keep a low / mid / high band of answer perplexity"

    def __init__(self, *, band: str = "mid"):
        self.band = band

    def feature_needs(self):
        check_choice("band", self.band, {"low", "mid", "high"})
        return [FeatureNeed("answer_nll", "column", "answer_nll")]

    def _select(self, features: FeatureSet, k: int) -> SelectionResult:
        nll = np.asarray(features.column("answer_nll"), dtype=float)
        n = len(nll)
        order = np.lexsort((np.arange(n), nll))  # ascending perplexity, earlier position first
        rank = np.empty(n, dtype=float)
        rank[order] = np.arange(n)
        if self.band == "low":
            preference = -rank
        elif self.band == "high":
            preference = rank
        else:
            # Distance in rank from the centre; the band [start, start + k) is centred on it.
            centre = (n - 1) / 2.0
            preference = -np.abs(rank - centre)
        start = {"low": 0, "high": n - k, "mid": (n - k) // 2}[self.band]
        selected = np.zeros(n, dtype=bool)
        selected[order[start : start + k]] = True
        return SelectionResult(
            selected=selected,
            scores=preference,
            values={"perplexity": np.exp(nll)},
            info={"band": self.band, "band_ranks": [int(start), int(start + k)]},
        )
