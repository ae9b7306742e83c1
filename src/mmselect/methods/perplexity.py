"""Perplexity baseline: keep a band (low, mid or high) of answer perplexity (arXiv 2309.04564)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..features.store import FeatureSet
from .base import (
    BANDS,
    Choice,
    FeatureNeed,
    Param,
    SelectionMethod,
    SelectionResult,
    band_mask,
    band_order,
    scores_from_order,
)


class PerplexitySelection(SelectionMethod):
    """Perplexity = exp(mean NLL of the answer tokens) under the reference model.

    Parameters
    ----------
    band : {"low", "mid", "high"}
        ``low`` keeps the k lowest perplexities, ``high`` the k highest, ``mid`` the band of k
        ranks centred on the middle of the sorted order (:func:`~mmselect.methods.base.band_order`).

    Samples are ordered by (perplexity, position), so ties are resolved deterministically.
    The score written for every sample is its place in the band's preference order (higher = kept
    first), so the ``k`` highest scores are exactly the selection.
    """

    summary = "keep a low / mid / high band of answer perplexity"
    _parameter_constraints: ClassVar[dict[str, Param]] = {
        "band": Param("part of the perplexity ranking kept: the lowest, the middle or the highest", Choice(*BANDS)),
    }

    def __init__(self, *, band: str = "mid"):
        self.band = band

    def feature_needs(self):
        return [FeatureNeed("answer_nll", "column", "answer_nll")]

    def _fit(self, features: FeatureSet) -> None:
        self.nll_ = np.asarray(features.column("answer_nll"), dtype=float)

    def _select_budget(self, k: int) -> SelectionResult:
        n = len(self.nll_)
        order = band_order(self.nll_, k, self.band)
        start = {"low": 0, "high": n - k, "mid": (n - k) // 2}[self.band]
        return SelectionResult(
            selected=band_mask(order, k),
            scores=scores_from_order(order),
            values={"perplexity": np.exp(self.nll_)},
            info={"band": self.band, "band_ranks": [int(start), int(start + k)]},
        )
