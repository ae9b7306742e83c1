"""EL2N baseline: keep a band of the answer-token error L2 norm (Paul et al., arXiv 2107.07075)."""

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
    _parameter_constraints: ClassVar[dict[str, Param]] = {
        "band": Param("part of the EL2N ranking kept: the lowest, the middle or the highest", Choice(*BANDS)),
    }

    def __init__(self, *, band: str = "mid"):
        self.band = band

    def feature_needs(self):
        return [FeatureNeed("el2n", "column", "el2n")]

    def _fit(self, features: FeatureSet) -> None:
        self.el2n_ = np.asarray(features.column("el2n"), dtype=float)

    def _select_budget(self, k: int) -> SelectionResult:
        el2n = self.el2n_
        order = band_order(el2n, k, self.band)
        selected = band_mask(order, k)
        kept = el2n[selected]
        return SelectionResult(
            selected=selected,
            scores=scores_from_order(order),
            info={
                "band": self.band,
                "selected_el2n_range": [float(kept.min()), float(kept.max())] if k else None,
            },
        )
