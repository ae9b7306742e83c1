"""How to select, apart from the method and the budget: one object that ``select`` and ``run`` take
(the selection-side twin of :class:`~mmselect.features.context.ExtractOptions`)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from .dedup import DEFAULT_NEAR_THRESHOLD


@dataclass(frozen=True)
class SelectOptions:
    """How to select: the user's own scores, the duplicate guard and the export format.

    ``scores``: a file of per-sample columns (e.g. ``score_<capability>`` / ``styles``; CSV, JSONL
    or parquet, keyed by ``key`` or ``position``) merged into the features before selection;
    ``allow_missing_scores``: records the file lacks get NaN instead of an error. ``dedup``
    (``exact``, ``near`` or ``none``): the duplicate guard of :mod:`mmselect.dedup`, which sets
    repeated records aside before the method sees any; ``dedup_threshold``: the cosine at or above
    which ``near`` calls two records duplicates; ``dedup_embedding``: the array it compares
    (default: the first of :data:`mmselect.dedup.NEAR_EMBEDDINGS` the features hold). ``export_format``: ``same`` (the input's format) or a trainer's
    format (:mod:`mmselect.trainer_formats`), written next to the subset.
    """

    scores: str | os.PathLike | None = None
    allow_missing_scores: bool = False
    dedup: str = "exact"
    dedup_threshold: float = DEFAULT_NEAR_THRESHOLD
    dedup_embedding: str | None = None
    export_format: str = "same"

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def replace(self, **changes: Any) -> SelectOptions:
        """A copy with ``changes`` (``None`` keeps the current value); unknown names are an error."""
        unknown = sorted(set(changes) - set(self.field_names()))
        if unknown:
            raise TypeError(f"unknown selection option(s) {unknown}; options: {', '.join(self.field_names())}")
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})
