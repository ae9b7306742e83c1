"""Length baseline: keep the longest conversations ("Long is more", arXiv 2402.04833)."""

from __future__ import annotations

import numpy as np

from ..features.store import FeatureSet
from .base import FeatureNeed, SelectionMethod, SelectionResult, check_choice, top_k_mask


class LengthSelection(SelectionMethod):
    """Rank by length and keep the longest.

    Parameters
    ----------
    by : {"n_tokens", "n_text_chars"}
        ``n_tokens``: tokens of the full training sequence under the model's template (image
        tokens included); ``n_text_chars``: characters of the conversation text, needs no model.
    """

    summary = "longest conversations first (token count)"

    def __init__(self, *, by: str = "n_tokens"):
        self.by = by

    def feature_needs(self):
        check_choice("by", self.by, {"n_tokens", "n_text_chars"})
        return [FeatureNeed(self.by, "column", "tokens" if self.by == "n_tokens" else None)]

    def _select(self, features: FeatureSet, k: int) -> SelectionResult:
        scores = np.asarray(features.column(self.by), dtype=float)
        return SelectionResult(selected=top_k_mask(scores, k), scores=scores)
