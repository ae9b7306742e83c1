"""CLIP-Score baseline: keep the samples whose image and text agree most under CLIP
(Hessel et al., arXiv 2104.08718)."""

from __future__ import annotations

import numpy as np

from ..features.store import FeatureSet
from .base import FeatureNeed, SelectionMethod, SelectionResult, top_k_mask


class ClipScore(SelectionMethod):
    """Rank by the cosine between the CLIP image embedding and the CLIP text embedding; keep the
    highest.

    The score is computed at extraction (``mmselect extract --features clip_score``, see
    :func:`mmselect.features.clip_score.clip_scores`): both embeddings L2-normalised, the text
    truncated to CLIP's 77 positions, the mean over the images for multi-image records. DICS used
    ``openai/clip-vit-large-patch14`` with the image and the question text [paper, as reported].

    Text-only records have no CLIP score (NaN). They rank below every scored sample and are
    selected only when the budget exceeds the number of scored samples, earlier positions first;
    ``info`` counts them. The raw cosine is kept (not the ``2.5 * max(cos, 0)`` rescaling of the
    CLIPScore paper: a monotone map, it would not change the ranking except to tie all negative
    cosines).

    No parameters. Ties are resolved by position (earlier first).
    """

    summary = "image-text cosine from a CLIP model, keep the highest"

    def __init__(self):
        pass

    def feature_needs(self):
        return [FeatureNeed("clip_score", "column", "clip_score", finite=False)]

    def _fit(self, features: FeatureSet) -> None:
        scores = np.asarray(features.column("clip_score"), dtype=float)
        self.scores_ = np.where(np.isinf(scores), np.nan, scores)

    def _select_budget(self, k: int) -> SelectionResult:
        scores = self.scores_
        selected = top_k_mask(scores, k)
        missing = np.isnan(scores)
        return SelectionResult(
            selected=selected,
            scores=scores,
            info={
                "n_without_score": int(missing.sum()),
                "n_without_score_selected": int((missing & selected).sum()),
            },
        )
