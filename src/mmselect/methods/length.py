"""Length baseline: keep the longest responses ("Long is more", arXiv 2402.04833)."""

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

#: Length measure -> the extract option that writes it (None: every features directory has it).
MEASURES = {"n_answer_tokens": "tokens", "n_tokens": "tokens", "n_text_chars": None}


class LengthSelection(SelectionMethod):
    """Rank by length and keep the longest.

    Parameters
    ----------
    by : {"n_answer_tokens", "n_tokens", "n_text_chars"}, default ``"n_answer_tokens"``
        ``n_answer_tokens``: tokens of the responses (the assistant turns and their turn-end
        tokens, the tokens the training loss covers), as "Long is more" ranks by response
        length [paper]. ``n_tokens``: tokens of the whole training sequence under the model's
        template, image and system tokens included (a LLaVA-1.5 image adds 576, so text-only
        records rank far lower). ``n_text_chars``: characters of the conversation text, needs no
        model. Ties go to the earlier sample.
    """

    summary = "longest responses first (answer tokens)"
    _parameter_constraints: ClassVar[dict[str, Param]] = {
        "by": Param("length measure: response tokens, tokens of the whole sequence, or characters of the text",
                    Choice(*MEASURES)),
    }

    def __init__(self, *, by: str = "n_answer_tokens"):
        self.by = by

    def feature_needs(self):
        return [FeatureNeed(self.by, "column", MEASURES[self.by])]

    def _fit(self, features: FeatureSet) -> None:
        self.scores_ = np.asarray(features.column(self.by), dtype=float)

    def _select_budget(self, k: int) -> SelectionResult:
        return SelectionResult(selected=top_k_mask(self.scores_, k), scores=self.scores_, info={"by": self.by})
