"""Length baseline: keep the longest conversations ("Long is more", arXiv 2402.04833)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..features.store import FeatureSet
from .base import (
    Choice,
    FeatureNeed,
    Param,
    SelectionMethod,
    SelectionResult,
    top_k_mask,
)


class LengthSelection(SelectionMethod):
    """Rank by length and keep the longest.

    Parameters
    ----------
    by : {"n_tokens", "n_text_chars"}
        ``n_tokens``: tokens of the full training sequence under the model's template (image
        tokens included); ``n_text_chars``: characters of the conversation text, needs no model.
    """

    summary = "longest conversations first (token count)"
    _parameter_constraints: ClassVar[dict[str, Param]] = {
        "by": Param("length measure: tokens under the model's template, or characters of the text",
                    Choice("n_tokens", "n_text_chars")),
    }

    def __init__(self, *, by: str = "n_tokens"):
        self.by = by

    def feature_needs(self):
        return [FeatureNeed(self.by, "column", "tokens" if self.by == "n_tokens" else None)]

    def _fit(self, features: FeatureSet) -> None:
        self.scores_ = np.asarray(features.column(self.by), dtype=float)

    def _select_budget(self, k: int) -> SelectionResult:
        return SelectionResult(selected=top_k_mask(self.scores_, k), scores=self.scores_)
