"""IFD baseline: instruction-following difficulty PPL(a|q) / PPL(a) (Li et al., arXiv 2308.12032)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..features.store import FeatureSet
from .base import (
    BANDS,
    NONE,
    Choice,
    FeatureNeed,
    Interval,
    Param,
    SelectionMethod,
    SelectionResult,
    band_order,
    scores_from_order,
)


class IFD(SelectionMethod):
    """Instruction-following difficulty.

    ``IFD = PPL(answer | image, instruction) / PPL(answer | image) = exp(nll - nll_noinstr)``,
    where ``nll`` is the mean answer-token NLL with the instruction and ``nll_noinstr`` the mean
    NLL of the same answer tokens with the instruction removed. A high IFD means the instruction
    helps the model little, so the sample is hard to follow; IFD >= 1 means the instruction does
    not help at all (or hurts), and the IFD paper discards such samples as misaligned.

    Parameters
    ----------
    band : {"high", "mid", "low"}, default ``"high"``
        Which part of the IFD ranking (among the samples below ``threshold``) to keep. ``high``
        keeps the largest IFD values, as the IFD paper does ("cherry" data) [paper].
    threshold : float or None, default ``1.0``
        Samples with ``IFD >= threshold`` are not eligible [paper: IFD > 1 is filtered out; the
        boundary value 1 itself is also dropped here, interpretation]. ``None`` keeps all.
        When fewer than ``k`` samples are eligible, the budget is filled with the ineligible
        samples of lowest IFD (the ones closest to the threshold); ``info["filled_above_threshold"]``
        counts them.

    Ties are resolved by position (earlier first). The score of every sample is its place in the
    preference order (eligible band first, then the rest of the eligible samples, then the
    ineligible ones by ascending IFD); the IFD itself is written as the ``ifd`` column.
    Features: columns ``answer_nll`` (``--features answer_nll``) and ``answer_nll_noinstr``
    (``--features ifd``). In the multimodal setting the image stays in both passes; only the
    text instruction is removed [interpretation; defined by the extractor].
    """

    summary = "instruction-following difficulty: PPL(a|q) / PPL(a)"
    _parameter_constraints: ClassVar[dict[str, Param]] = {
        "band": Param("part of the IFD ranking kept among the eligible samples", Choice(*BANDS)),
        "threshold": Param("samples with IFD >= threshold are not eligible (None: all are)",
                           Interval(float, None, None), NONE),
    }

    def __init__(self, *, band: str = "high", threshold: float | None = 1.0):
        self.band = band
        self.threshold = threshold

    def feature_needs(self):
        return [
            FeatureNeed("answer_nll", "column", "answer_nll"),
            FeatureNeed("answer_nll_noinstr", "column", "ifd"),
        ]

    def _fit(self, features: FeatureSet) -> None:
        nll = np.asarray(features.column("answer_nll"), dtype=float)
        nll_noinstr = np.asarray(features.column("answer_nll_noinstr"), dtype=float)
        self.log_ifd_ = nll - nll_noinstr

    def _select_budget(self, k: int) -> SelectionResult:
        log_ifd = self.log_ifd_
        ifd = np.exp(log_ifd)
        n = len(ifd)
        if self.threshold is None:
            eligible = np.ones(n, dtype=bool)
        else:
            # compare in log space: exp() may overflow for extreme NLL differences
            eligible = log_ifd < np.log(float(self.threshold)) if self.threshold > 0 else np.zeros(n, bool)
        good = np.flatnonzero(eligible)
        bad = np.flatnonzero(~eligible)
        k_good = min(k, len(good))
        order_good = good[band_order(log_ifd[good], k_good, self.band)]
        order_bad = bad[np.lexsort((bad, log_ifd[bad]))]
        order = np.concatenate([order_good, order_bad])
        selected = np.zeros(n, dtype=bool)
        selected[order[:k]] = True
        return SelectionResult(
            selected=selected,
            scores=scores_from_order(order),
            values={"ifd": ifd},
            info={
                "band": self.band,
                "threshold": self.threshold,
                "n_eligible": int(len(good)),
                "filled_above_threshold": int(k - k_good),
                "selected_ifd_range": [float(ifd[selected].min()), float(ifd[selected].max())] if k else None,
            },
        )
