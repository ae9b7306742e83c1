"""Uniform random selection, the baseline every paper reports."""

from __future__ import annotations

import numpy as np

from ..features.store import FeatureSet
from .base import SelectionMethod, SelectionResult


class RandomSelection(SelectionMethod):
    """Uniform sample without replacement.

    Parameters
    ----------
    seed : int
        Seed of the numpy generator; the same seed and the same samples give the same subset.
    """

    summary = "uniform random subset (seeded)"

    def __init__(self, *, seed: int = 0):
        self.seed = seed

    def _select(self, features: FeatureSet, k: int) -> SelectionResult:
        rng = np.random.default_rng(self.seed)
        # A random score per sample makes the subset nested across budgets for one seed.
        scores = rng.random(features.n)
        order = np.argsort(-scores, kind="stable")
        selected = np.zeros(features.n, dtype=bool)
        selected[order[:k]] = True
        return SelectionResult(selected=selected, scores=scores, info={"seed": self.seed})
