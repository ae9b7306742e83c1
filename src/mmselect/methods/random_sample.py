"""Uniform random selection, the baseline every paper reports."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..features.store import FeatureSet
from .base import Interval, Param, SelectionMethod, SelectionResult


class RandomSelection(SelectionMethod):
    """Uniform sample without replacement.

    Parameters
    ----------
    seed : int
        Seed of the numpy generator; the same seed and the same samples give the same subset.
    """

    summary = "uniform random subset (seeded)"
    _parameter_constraints: ClassVar[dict[str, Param]] = {"seed": Param("seed of the random scores (same seed, same subset)", Interval(int, 0, None))}

    def __init__(self, *, seed: int = 0):
        self.seed = seed

    def _fit(self, features: FeatureSet) -> None:
        # A random score per sample makes the subset nested across budgets for one seed.
        self.scores_ = np.random.default_rng(self.seed).random(features.n)

    def _select_budget(self, k: int) -> SelectionResult:
        order = np.argsort(-self.scores_, kind="stable")
        selected = np.zeros(len(order), dtype=bool)
        selected[order[:k]] = True
        return SelectionResult(selected=selected, scores=self.scores_, info={"seed": self.seed})
