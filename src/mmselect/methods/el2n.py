"""EL2N baseline: keep a band of the answer-token error L2 norm (Paul et al., arXiv 2107.07075)."""

from __future__ import annotations

import numpy as np

from ..features.store import FeatureSet
from .base import FeatureNeed, SelectionMethod, SelectionResult, check_choice

BANDS = ("low", "mid", "high")


def band_order(values: np.ndarray, k: int, band: str) -> np.ndarray:
    """Indices of ``values`` in order of preference for a ``band``; the first ``k`` are the band.

    Samples are ranked by (value, position), ascending. ``low`` prefers the lowest values,
    ``high`` the highest (ties: earlier position first), ``mid`` prefers ranks by their distance
    to the centre ``c = (n - k) // 2 + (k - 1) / 2`` of the band ``[(n - k) // 2, (n - k) // 2 + k)``;
    equal distances go to the lower rank. The first ``k`` entries of the ``mid`` order are exactly
    that band, so a score derived from the order agrees with the selection.
    """
    values = np.asarray(values, dtype=float)
    n = len(values)
    positions = np.arange(n)
    if band == "low":
        return np.lexsort((positions, values))
    if band == "high":
        return np.lexsort((positions, -values))
    if band != "mid":
        raise ValueError(f"unknown band {band!r}")
    ascending = np.lexsort((positions, values))
    rank = np.empty(n, dtype=float)
    rank[ascending] = np.arange(n)
    centre = (n - k) // 2 + (k - 1) / 2.0
    distance = np.abs(rank - centre)
    # 2*distance is an integer; +1 on the right of the centre makes every key unique and puts
    # the left neighbour first at equal distance.
    key = 2.0 * distance + (rank > centre)
    return np.argsort(key, kind="stable")


def scores_from_order(order: np.ndarray) -> np.ndarray:
    """Scores that decrease along ``order``: ``n`` for the first, ``1`` for the last."""
    n = len(order)
    scores = np.empty(n, dtype=float)
    scores[order] = np.arange(n, 0, -1, dtype=float)
    return scores


class EL2N(SelectionMethod):
    """EL2N = mean over the answer tokens of ``||softmax(logits_t) - onehot(y_t)||_2``.

    The reference model's next-token distribution is compared with the one-hot target at every
    answer position; the mean over the answer tokens is the sample's score (the COINCIDE code,
    ``tinyllava/eval/score/el2n/score_el2n.py``, computes exactly this with TinyLLaVA-2B). Low
    EL2N = easy (the model already predicts the answer), high = hard or noisy.

    Parameters
    ----------
    band : {"low", "mid", "high"}, default ``"mid"``
        Which part of the EL2N ranking to keep: the ``k`` lowest, the ``k`` highest, or the ``k``
        samples of the band centred on the median rank. Default ``mid``
        [interpretation: the COINCIDE code computes only the score; the COINCIDE paper's Fig. 1
        illustrates the EL2N baseline with the middle 20%, and Marion et al. (arXiv 2309.04564)
        found middle bands of such scores the best for pruning. The original EL2N paper keeps
        the *highest* scores, computed early in training and averaged over runs: use
        ``band="high"`` for that reading].

    Ties are resolved by position (earlier first), so the selection is deterministic.
    Feature: column ``el2n`` (``mmselect extract --features el2n``).
    """

    summary = "answer-token error L2 norm, keep a band"

    def __init__(self, *, band: str = "mid"):
        self.band = band

    def feature_needs(self):
        check_choice("band", self.band, set(BANDS))
        return [FeatureNeed("el2n", "column", "el2n")]

    def _select(self, features: FeatureSet, k: int) -> SelectionResult:
        el2n = np.asarray(features.column("el2n"), dtype=float)
        n = len(el2n)
        order = band_order(el2n, k, self.band)
        selected = np.zeros(n, dtype=bool)
        selected[order[:k]] = True
        kept = el2n[selected]
        return SelectionResult(
            selected=selected,
            scores=scores_from_order(order),
            info={
                "band": self.band,
                "selected_el2n_range": [float(kept.min()), float(kept.max())] if k else None,
            },
        )
