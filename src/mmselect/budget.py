"""Selection budgets: a fraction of the dataset (``0.15``) or a sample count (``5000``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

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
