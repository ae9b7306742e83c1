"""What every selection method is: parameters in the constructor, features declared, ``select`` returns a result.

A method never knows where it runs or where its features came from: it reads a
:class:`~mmselect.features.store.FeatureSet` and returns a :class:`SelectionResult`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

from ..budget import Budget
from ..errors import BudgetError, ConfigError
from ..features.store import FeatureSet


@dataclass(frozen=True)
class FeatureNeed:
    """One feature a method reads.

    ``kind`` says where it lives in a features directory (a ``samples.parquet`` column or a
    ``<name>.npy`` array); ``produced_by`` names the ``mmselect extract --features`` option that
    writes it (``None``: metadata every features directory has, or data the user brings).
    """

    name: str
    kind: Literal["column", "array"] = "column"
    produced_by: str | None = None
    finite: bool = True  # refuse NaN/inf; False for features where NaN has a meaning


@dataclass
class SelectionResult:
    """Outcome of a selection.

    ``selected``: boolean mask over all samples. ``scores``: one float per sample, higher means
    preferred by the method (NaN where a method gives no score). ``values``: extra per-sample
    columns worth keeping (written to ``selection.parquet``). ``order``: indices of the selected
    samples in the order the method picked them, where that order means something. ``info``:
    diagnostics for the manifest (what was capped, guarded, redistributed).
    """

    selected: np.ndarray
    scores: np.ndarray
    values: dict[str, np.ndarray] = field(default_factory=dict)
    order: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.selected = np.asarray(self.selected, dtype=bool)
        self.scores = np.asarray(self.scores, dtype=float)
        if self.scores.shape != self.selected.shape:
            raise ValueError("scores and selected must have one entry per sample")

    @property
    def indices(self) -> np.ndarray:
        return np.flatnonzero(self.selected)

    @property
    def n_selected(self) -> int:
        return int(self.selected.sum())


class SelectionMethod:
    """Base class. Subclasses set ``name`` and ``summary``, store their parameters in ``__init__``
    (keyword-only, no work), declare ``feature_needs`` and implement ``_select``.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""

    # --- parameters (scikit-learn style) ------------------------------------------------------
    @classmethod
    def param_names(cls) -> list[str]:
        parameters = inspect.signature(cls.__init__).parameters.values()
        return [
            p.name for p in parameters if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        ]

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.param_names()}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    # --- features -----------------------------------------------------------------------------
    def feature_needs(self) -> list[FeatureNeed]:
        """Features this method reads, given its parameters."""
        return []

    def extract_features(self) -> list[str]:
        """The ``mmselect extract --features`` options this method needs."""
        names = []
        for need in self.feature_needs():
            if need.produced_by and need.produced_by not in names:
                names.append(need.produced_by)
        return names

    # --- selection ----------------------------------------------------------------------------
    def select(self, features: FeatureSet, budget: "Budget | str | int | float") -> SelectionResult:
        """Select ``budget`` samples from ``features``; scores are returned for every sample."""
        budget = Budget.parse(budget)
        needs = self.feature_needs()
        features.require(needs, method=self.name)
        features.check_finite(needs)
        k = budget.resolve(features.n)
        result = self._select(features, k)
        if result.selected.shape != (features.n,):
            raise RuntimeError(f"method {self.name} returned a mask of the wrong length")
        if result.n_selected != k and not result.info.get("budget_shortfall"):
            raise BudgetError(f"method {self.name} selected {result.n_selected} samples, budget {k}")
        result.info.setdefault("budget", k)
        return result

    def _select(self, features: FeatureSet, k: int) -> SelectionResult:  # pragma: no cover - abstract
        raise NotImplementedError


def top_k_mask(scores: np.ndarray, k: int, tie_break: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of the ``k`` highest ``scores``; ties go to the smaller ``tie_break`` value
    (default: the earlier position), so the result is deterministic. NaN ranks lowest."""
    scores = np.asarray(scores, dtype=float)
    n = len(scores)
    mask = np.zeros(n, dtype=bool)
    if k <= 0:
        return mask
    key = np.where(np.isnan(scores), -np.inf, scores)
    secondary = np.arange(n) if tie_break is None else np.asarray(tie_break)
    order = np.lexsort((secondary, -key))
    mask[order[:k]] = True
    return mask


def check_choice(name: str, value: Any, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {sorted(choices)}, got {value!r}")
