"""The one refusal of NaN/inf in features: :func:`nonfinite_error` builds it, naming the feature
and the offending samples by key (the first ten, then a count)."""

from __future__ import annotations

import numpy as np

from ..errors import NonFiniteFeaturesError


class NonFiniteRowsError(ValueError):
    """Rows with NaN or inf met inside a numerical routine that knows row numbers, not keys;
    ``rows`` holds their row numbers in the input array. Methods turn it into
    :func:`nonfinite_error` (see :func:`refuse_nonfinite_rows`)."""

    def __init__(self, rows: np.ndarray):
        self.rows = np.asarray(rows)
        super().__init__(f"{len(self.rows)} row(s) with NaN or inf, e.g. row {int(self.rows[0])}")


def nonfinite_error(feature: str, rows, keys=None, what: str = "sample(s)") -> NonFiniteFeaturesError:
    """``feature '<feature>' has NaN or inf for <n> <what>: <keys>[ and <m> more]``."""
    rows = np.asarray(rows)
    names = keys[rows[:10]] if keys is not None else rows[:10]
    more = f" and {len(rows) - 10} more" if len(rows) > 10 else ""
    return NonFiniteFeaturesError(
        f"feature '{feature}' has NaN or inf for {len(rows)} {what}: {', '.join(map(str, names))}{more}"
    )


def check_finite_rows(block: np.ndarray, feature: str, rows, keys=None, what: str = "sample(s)") -> None:
    """Refuse a block whose rows (``rows``: their row numbers) hold NaN or inf."""
    bad = ~np.isfinite(block).all(axis=1)
    if bad.any():
        raise nonfinite_error(feature, np.asarray(rows)[bad], keys, what)
