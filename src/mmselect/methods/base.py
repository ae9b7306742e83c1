"""What every selection method is: parameters in the constructor, features declared, ``select`` returns a result.

A method never knows where it runs or where its features came from: it reads a
:class:`~mmselect.features.store.FeatureSet` and returns a :class:`SelectionResult`.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Literal

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
    (keyword-only, no work), declare them in ``_parameter_constraints``, declare ``feature_needs``
    and implement either ``_select`` (all work for one budget) or ``_fit`` (the work that does not
    depend on the budget, stored in trailing-underscore attributes) and ``_select_budget``.

    ``_parameter_constraints`` maps every ``__init__`` parameter to a :class:`Param`: its one-line
    meaning and the values it accepts. They are checked when the method is constructed, so a bad
    value fails before any work, with a :class:`~mmselect.errors.ConfigError` naming the method,
    the parameter, the value and what is allowed. Checks that involve several parameters go in
    ``_check_params``.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    # Whether the method's tasks should come from the model preset's task preset (e.g. LLaVA-1.5's
    # source datasets) when the user names no --task-field or --task-preset.
    uses_preset_tasks: ClassVar[bool] = False
    _parameter_constraints: ClassVar[dict[str, "Param"]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _checking_params(cls.__dict__["__init__"])

    # --- parameters (scikit-learn style) ------------------------------------------------------
    @classmethod
    def param_names(cls) -> list[str]:
        parameters = inspect.signature(cls.__init__).parameters.values()
        return [
            p.name for p in parameters if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        ]

    @classmethod
    def param_defaults(cls) -> dict[str, Any]:
        parameters = inspect.signature(cls.__init__).parameters
        empty = inspect.Parameter.empty
        return {name: (None if parameters[name].default is empty else parameters[name].default) for name in cls.param_names()}

    @classmethod
    def describe_params(cls) -> list[tuple[str, Any, str, str]]:
        """``(name, default, meaning, allowed values)`` for every parameter, in signature order."""
        rows = []
        for name, default in cls.param_defaults().items():
            param = cls._parameter_constraints.get(name)
            rows.append((name, default, param.meaning if param else "", param.describe() if param else "any"))
        return rows

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.param_names()}

    def check_params(self) -> None:
        """Refuse parameter values outside their declared constraints (:class:`ConfigError`)."""
        label = self.name or type(self).__name__
        missing = object()
        for name, param in self._parameter_constraints.items():
            value = getattr(self, name, missing)
            if value is not missing and not param.accepts(value):
                raise ConfigError(
                    f"method {label!r}: parameter {name}={value!r} is not allowed; {name} must be {param.describe()}"
                )
        try:
            self._check_params()
        except ConfigError as error:
            if str(error).startswith("method "):
                raise
            raise ConfigError(f"method {label!r}: {error}") from None

    def _check_params(self) -> None:
        """Checks that involve several parameters (override)."""

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

    def feature_params(self) -> dict[str, dict[str, Any]]:
        """Options this method implies for the features it needs (``{"feature": {"option": value}}``);
        the user's ``--feature-param`` values take precedence."""
        return {}

    # --- selection ----------------------------------------------------------------------------
    def select(self, features: FeatureSet, budget: "Budget | str | int | float") -> SelectionResult:
        """Select ``budget`` samples from ``features``; scores are returned for every sample.

        The same as ``fit(features).select_budget(budget)``."""
        budget = Budget.parse(budget)
        budget.resolve(features.n)  # a budget larger than the data fails before any work
        return self.fit(features).select_budget(budget)

    def fit(self, features: FeatureSet) -> "SelectionMethod":
        """Check the features and do the work that does not depend on the budget (clusters,
        scores, values), kept in trailing-underscore attributes; returns ``self``."""
        needs = self.feature_needs()
        features.require(needs, method=self.name)
        features.check_finite(needs)
        self.features_ = features
        self.n_samples_ = features.n
        self._fit(features)
        return self

    def select_budget(self, budget: "Budget | str | int | float") -> SelectionResult:
        """Select ``budget`` samples from the features given to :meth:`fit`; call it as many times
        as there are budgets, the budget-independent work is not repeated."""
        if not hasattr(self, "features_"):
            raise ConfigError(f"method {self.name!r}: call fit(features) before select_budget(budget)")
        budget = Budget.parse(budget)
        k = budget.resolve(self.n_samples_)
        result = self._select_budget(k)
        if result.selected.shape != (self.n_samples_,):
            raise RuntimeError(f"method {self.name} returned a mask of the wrong length")
        if result.n_selected != k and not result.info.get("budget_shortfall"):
            raise BudgetError(f"method {self.name} selected {result.n_selected} samples, budget {k}")
        result.info.setdefault("budget", k)
        return result

    def _fit(self, features: FeatureSet) -> None:
        """Budget-independent work (override); by default there is none."""

    def _select_budget(self, k: int) -> SelectionResult:
        """Select ``k`` samples after :meth:`fit`; by default the whole of :meth:`_select`."""
        return self._select(self.features_, k)

    def _select(self, features: FeatureSet, k: int) -> SelectionResult:  # pragma: no cover - abstract
        raise NotImplementedError


def _checking_params(init):
    """``init`` followed by :meth:`SelectionMethod.check_params`, run once: by the ``__init__`` of
    the most derived class, after its own parameters are stored."""

    @functools.wraps(init)
    def checked_init(self, *args, **params):
        init(self, *args, **params)
        own_init = next(c.__dict__["__init__"] for c in type(self).__mro__ if "__init__" in c.__dict__)
        if own_init is checked_init:
            self.check_params()

    return checked_init


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
        raise ConfigError(f"{name} must be one of {sorted(choices, key=repr)}, got {value!r}")


# --- banded ranking -----------------------------------------------------------------------------
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


def band_mask(order: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the first ``k`` entries of a preference ``order``."""
    mask = np.zeros(len(order), dtype=bool)
    mask[order[:k]] = True
    return mask


# --- declared parameter constraints ---------------------------------------------------------------
class Constraint:
    """One kind of value a parameter accepts."""

    def accepts(self, value: Any) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


class Choice(Constraint):
    """One of a fixed set of values (``None`` included when listed)."""

    def __init__(self, *values: Any):
        self.values = values

    def accepts(self, value):
        return any(value == v and type(value) is type(v) or (value is None and v is None) for v in self.values)

    def describe(self):
        return "one of " + ", ".join(repr(v) for v in self.values)


class Interval(Constraint):
    """A real number (``kind=float``; integers accepted) or an integer (``kind=int``) in an
    interval; ``closed`` is "both", "left", "right" or "neither"; ``None`` bounds are open ends."""

    def __init__(self, kind: type, low: float | None, high: float | None, closed: str = "both"):
        self.kind, self.low, self.high, self.closed = kind, low, high, closed

    def accepts(self, value):
        if isinstance(value, bool):
            return False
        if self.kind is int:
            if not isinstance(value, numbers.Integral):
                return False
        elif not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
            return False
        if self.low is not None:
            if value < self.low or (value == self.low and self.closed in ("right", "neither")):
                return False
        if self.high is not None:
            if value > self.high or (value == self.high and self.closed in ("left", "neither")):
                return False
        return True

    def describe(self):
        kind = "an integer" if self.kind is int else "a number"
        if self.low is None and self.high is None:
            return kind
        left = "[" if self.low is not None and self.closed in ("both", "left") else "("
        right = "]" if self.high is not None and self.closed in ("both", "right") else ")"
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"{kind} in {left}{low}, {high}{right}"


class OfType(Constraint):
    """Any value of the given types (e.g. ``str`` for a feature name)."""

    def __init__(self, *types: type, label: str | None = None):
        self.types, self.label = types, label

    def accepts(self, value):
        return isinstance(value, self.types) and not (isinstance(value, bool) and bool not in self.types)

    def describe(self):
        return self.label or " or ".join(f"a {t.__name__}" for t in self.types)


class Satisfies(Constraint):
    """A value for which ``test(value)`` is true, described by ``label``."""

    def __init__(self, test: Callable[[Any], bool], label: str):
        self.test, self.label = test, label

    def accepts(self, value):
        try:
            return bool(self.test(value))
        except (TypeError, ValueError):
            return False

    def describe(self):
        return self.label


class Param:
    """A parameter's one-line meaning and the constraints it may satisfy (any one suffices)."""

    def __init__(self, meaning: str, *constraints: Constraint):
        self.meaning = meaning
        self.constraints = constraints

    def accepts(self, value: Any) -> bool:
        return not self.constraints or any(c.accepts(value) for c in self.constraints)

    def describe(self) -> str:
        return " or ".join(c.describe() for c in self.constraints) if self.constraints else "any value"


POSITIVE_INT = Interval(int, 1, None)
NONE = Choice(None)
