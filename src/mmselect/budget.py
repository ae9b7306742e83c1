"""Selection budgets: a fraction of the dataset (``0.15``) or a sample count (``5000``), and the
largest-remainder split of a budget over parts (tasks, clusters, bins)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .errors import BudgetError


@dataclass(frozen=True)
class Budget:
    """How many samples to keep.

    ``fraction`` in (0, 1] keeps ``floor(fraction * n)`` samples (the official codes all use
    ``int(ratio * N)``); ``count`` keeps exactly that many.
    """

    fraction: float | None = None
    count: int | None = None

    def __post_init__(self):
        if (self.fraction is None) == (self.count is None):
            raise BudgetError("a budget is either a fraction or a count")
        if self.fraction is not None and not (0.0 < self.fraction <= 1.0):
            raise BudgetError(f"budget fraction must be in (0, 1], got {self.fraction}")
        if self.count is not None and self.count < 0:
            raise BudgetError(f"budget count must be >= 0, got {self.count}")

    @classmethod
    def parse(cls, value: "str | int | float | Budget") -> "Budget":
        """``"0.15"``/``0.15`` -> fraction, ``"5000"``/``5000`` -> count, ``"15%"`` -> fraction."""
        if isinstance(value, Budget):
            return value
        if isinstance(value, bool):
            raise BudgetError(f"invalid budget {value!r}")
        if isinstance(value, int):
            return cls(count=value)
        if isinstance(value, float):
            if value >= 1.0 and value.is_integer():
                return cls(count=int(value))
            return cls(fraction=value)
        text = str(value).strip()
        try:
            if text.endswith("%"):
                return cls(fraction=float(text[:-1]) / 100.0)
            if any(ch in text for ch in ".eE"):
                number = float(text)
                if number >= 1.0 and number.is_integer() and "." not in text:
                    return cls(count=int(number))
                return cls(fraction=number)
            return cls(count=int(text))
        except ValueError:
            raise BudgetError(
                f"invalid budget {value!r}: give a fraction such as 0.15 (or 15%) or a count such as 5000"
            ) from None

    def resolve(self, n: int) -> int:
        """Number of samples to select out of ``n``."""
        if self.count is not None:
            if self.count > n:
                raise BudgetError(f"budget of {self.count} samples exceeds the {n} samples available")
            return self.count
        return int(math.floor(self.fraction * n + 1e-9))

    def __str__(self) -> str:
        return f"{self.fraction:g}" if self.fraction is not None else str(self.count)


# --- splitting a budget over parts -------------------------------------------------------------
@dataclass
class Apportionment:
    """Detail of :func:`apportion_detail`: the integer ``budgets``, the proportional shares before
    any bound (``raw``), the shares after the bounds and the redistribution (``share``), which
    parts were fixed at a bound (``fixed``), and how far the integers fall short of ``k``."""

    budgets: np.ndarray
    raw: np.ndarray
    share: np.ndarray
    fixed: np.ndarray
    shortfall: int


def apportion(k: int, weights, caps=None, floors=None) -> np.ndarray:
    """Split ``k`` into integers in proportion to ``weights`` (largest-remainder method).

    Each part gets ``k w_t / sum w``; a part whose share exceeds ``caps[t]`` (or falls below
    ``floors[t]``) is fixed at that bound and the rest is re-split over the other parts in
    proportion to their weights, until every share is within its bounds. The integer budgets are
    the floors of the shares plus one each, in order of decreasing fractional part (ties: the
    earlier part), for the parts still below their cap, until they sum to exactly ``k``.

    Integer weights are split in exact rational arithmetic (``7 * 1/3`` and ``7 * 2/3`` leave
    equal remainders, not two floats that differ in the last bit); other weights in float64.
    Bounds may be fractional: a part's budget lies in ``[floor(floors_t), floor(caps_t)]``.
    Raises :class:`BudgetError` when ``k`` cannot be met (``k > sum(caps)`` or ``k < sum(floors)``)
    or the weights are not finite and >= 0.
    """
    return apportion_detail(k, weights, caps=caps, floors=floors).budgets


def _integral(values: np.ndarray) -> bool:
    if values.dtype.kind in "iub":
        return True
    return values.dtype.kind == "f" and bool(np.all(np.isfinite(values))) and bool(
        np.all(values == np.round(values))
    ) and bool(np.all(np.abs(values) < 2**53))


def apportion_detail(k: int, weights, caps=None, floors=None, *, fill: bool = True) -> Apportionment:
    """:func:`apportion` with its intermediate quantities; ``fill=False`` stops at the floors of
    the shares (the total may then fall short of ``k``, by ``shortfall``)."""
    k = int(k)
    weights = np.asarray(weights)
    n = len(weights)
    if weights.dtype.kind not in "iubf" or not np.all(np.isfinite(weights)) or (weights < 0).any():
        raise BudgetError(f"weights must be finite numbers >= 0, got {weights.tolist()!r}")
    upper = np.full(n, np.inf) if caps is None else np.asarray(caps, dtype=np.float64)
    lower = np.zeros(n) if floors is None else np.asarray(floors, dtype=np.float64)
    if upper.shape != (n,) or lower.shape != (n,):
        raise BudgetError("caps and floors need one value per weight")
    lower = np.minimum(lower, upper)
    if k < 0:
        raise BudgetError(f"budget must be >= 0, got {k}")
    if k > upper.sum() + 1e-9:
        raise BudgetError(f"budget {k} exceeds what the parts can take under their caps ({upper.sum():g})")
    if k < lower.sum() - 1e-9:
        raise BudgetError(f"budget {k} is below the sum of the parts' floors ({lower.sum():g})")
    exact = _integral(weights) and all(_integral(b[np.isfinite(b)]) for b in (upper, lower))
    if exact:  # Python integers and fractions: no rounding anywhere
        w = np.array([Fraction(int(x)) for x in weights], dtype=object)
        upper = np.array([Fraction(int(x)) if np.isfinite(x) else x for x in upper], dtype=object)
        lower = np.array([Fraction(int(x)) for x in lower], dtype=object)
        eps = 0
        floor = lambda a: np.array([int(x // 1) if isinstance(x, Fraction) else x for x in a], dtype=object)
    else:
        w = weights.astype(np.float64)
        eps = 1e-9
        floor = lambda a: np.floor(a + eps)
    if n == 0 or (k == 0 and lower.sum() == 0):
        zeros = np.zeros(n, dtype=np.int64)
        return Apportionment(zeros, np.zeros(n), np.zeros(n), np.zeros(n, dtype=bool), 0)
    total = w.sum()
    if total <= 0:
        raise BudgetError("cannot split a budget over parts whose weights are all 0")
    finite_upper = np.where(np.isfinite(upper.astype(np.float64)), upper, 0)
    raw = k * w / total
    share = raw.copy()
    fixed = np.zeros(n, dtype=bool)
    for _ in range(n + 1):
        free = ~fixed
        if not free.any():
            break
        rest = k - share[fixed].sum()
        wf = w[free].sum()
        if wf > 0:
            share[free] = rest * w[free] / wf
        else:  # only weightless parts left: in proportion to their caps, else equally
            room = finite_upper[free]
            share[free] = rest * room / room.sum() if room.sum() > 0 else rest / free.sum()
        over = free & (share > upper + eps)
        under = free & (share < lower - eps)
        if not (over.any() or under.any()):
            break
        share[over] = upper[over]
        share[under] = lower[under]
        fixed |= over | under
    base = np.minimum(floor(share), floor(upper))
    budgets = np.array([int(x) for x in base], dtype=np.int64)
    if fill:
        frac = share - base
        order = sorted(range(n), key=lambda t: (-frac[t], t))
        while budgets.sum() < k:
            progressed = False
            for t in order:
                if budgets.sum() >= k:
                    break
                if budgets[t] < upper[t]:
                    budgets[t] += 1
                    progressed = True
            if not progressed:  # pragma: no cover - excluded by the feasibility check above
                raise BudgetError("cannot place the whole budget within the caps")
    as_float = lambda a: np.array([float(x) for x in a], dtype=np.float64)
    return Apportionment(budgets, as_float(raw), as_float(share), fixed, int(k - budgets.sum()))
