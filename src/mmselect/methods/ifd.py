"""IFD baseline: instruction-following difficulty (Li et al., arXiv 2308.12032)."""

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

RATIOS = ("loss", "perplexity")


class IFD(SelectionMethod):
    """Instruction-following difficulty.

    ``nll`` is the mean answer-token NLL given the instruction and ``nll_noinstr`` the mean NLL of
    the same answer tokens with the instruction removed. In the multimodal setting the instruction
    is the image and the question together, so the conditional-free pass drops both: it sees the
    answer alone (the ``ifd`` extract option renders no user turn and no image).

    ``ratio="loss"`` (default) ranks by ``IFD = nll / nll_noinstr``, the ratio of mean answer
    losses that the paper defines (``s(A|Q) / s(A)``) and its released code computes [paper, code].
    ``ratio="perplexity"`` ranks by ``PPL(a|q) / PPL(a) = exp(nll - nll_noinstr)``. Both are below
    1 exactly when the instruction helps, but they order samples differently (losses 0.5 | 1.0 give
    0.5 and 0.61, losses 2.0 | 2.6 give 0.77 and 0.55).

    A high IFD means the instruction helps the model little, so the sample is hard to follow; an
    IFD above 1 means the instruction hurts, and the paper and its code discard such samples.

    Parameters
    ----------
    ratio : {"loss", "perplexity"}, default ``"loss"``
        Which ratio is the IFD (see above).
    band : {"high", "mid", "low"}, default ``"high"``
        Which part of the IFD ranking (among the eligible samples) to keep. ``high`` keeps the
        largest IFD values, as the IFD paper does ("cherry" data) [paper].
    threshold : float or None, default ``1.0``
        Samples with ``IFD > threshold`` are not eligible [paper, code: ratios above 1 are
        dropped, 1 itself is kept]. ``None`` keeps all. A sample whose ratio is undefined (both
        losses 0) is never eligible. When fewer than ``k`` samples are eligible, the budget is
        filled with the ineligible samples of lowest IFD (the ones closest to the threshold);
        ``info["filled_above_threshold"]`` counts them.

    Ties are resolved by position (earlier first). The score of every sample is its place in the
    preference order (eligible band first, then the rest of the eligible samples, then the
    ineligible ones by ascending IFD); the IFD itself is written as the ``ifd`` column.
    Features: columns ``answer_nll`` (``--features answer_nll``) and ``answer_nll_noinstr``
    (``--features ifd``).
    """

    summary = "instruction-following difficulty: loss(a|q) / loss(a)"
    _parameter_constraints: ClassVar[dict[str, Param]] = {
        "ratio": Param("IFD as the ratio of mean answer losses (paper, code) or of perplexities", Choice(*RATIOS)),
        "band": Param("part of the IFD ranking kept among the eligible samples", Choice(*BANDS)),
        "threshold": Param("samples with IFD > threshold are not eligible (None: all are)",
                           Interval(float, None, None), NONE),
    }

    def __init__(self, *, ratio: str = "loss", band: str = "high", threshold: float | None = 1.0):
        self.ratio = ratio
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
        self.ifd_ = ifd_values(nll, nll_noinstr, self.ratio)

    def _select_budget(self, k: int) -> SelectionResult:
        ifd = self.ifd_
        n = len(ifd)
        defined = ~np.isnan(ifd)
        eligible = defined if self.threshold is None else defined & (ifd <= float(self.threshold))
        good = np.flatnonzero(eligible)
        bad = np.flatnonzero(~eligible)
        k_good = min(k, len(good))
        order_good = good[band_order(ifd[good], k_good, self.band)]
        bad_key = np.where(np.isnan(ifd[bad]), np.inf, ifd[bad])  # undefined ratios last
        order_bad = bad[np.lexsort((bad, np.isnan(ifd[bad]), bad_key))]
        order = np.concatenate([order_good, order_bad])
        selected = np.zeros(n, dtype=bool)
        selected[order[:k]] = True
        picked = ifd[selected]
        return SelectionResult(
            selected=selected,
            scores=scores_from_order(order),
            values={"ifd": ifd},
            info={
                "ratio": self.ratio,
                "band": self.band,
                "threshold": self.threshold,
                "n_eligible": int(len(good)),
                "n_undefined": int((~defined).sum()),
                "filled_above_threshold": int(k - k_good),
                "selected_ifd_range": [float(np.nanmin(picked)), float(np.nanmax(picked))] if k and defined[selected].any() else None,
            },
        )


def ifd_values(nll: np.ndarray, nll_noinstr: np.ndarray, ratio: str = "loss") -> np.ndarray:
    """Per-sample IFD from the two mean answer NLLs; NaN where the ratio is undefined.

    ``loss``: ``nll / nll_noinstr`` (``inf`` when only the denominator is 0, NaN when both are);
    ``perplexity``: ``exp(nll - nll_noinstr)`` (``inf`` on overflow).
    """
    nll = np.asarray(nll, dtype=float)
    nll_noinstr = np.asarray(nll_noinstr, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if ratio == "loss":
            return nll / nll_noinstr
        if ratio == "perplexity":
            return np.exp(nll - nll_noinstr)
    raise ValueError(f"unknown IFD ratio {ratio!r}")
