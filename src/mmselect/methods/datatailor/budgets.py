"""DataTailor's task budgets: ``k_t`` from the shares ``k n_t xbar_t^2 / sum_u n_u xbar_u^2``."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...budget import apportion_detail
from ...errors import BudgetError


def split_budget(
    k: int,
    sizes: np.ndarray,
    weights: np.ndarray,
    *,
    fill: str = "remainder",
    rate_clamp: tuple[float, float] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Integer task budgets ``k_t`` from shares ``k w_t / sum w`` (official formula).

    Each task's budget is bounded by ``[min(ceil(lo n_t), upper), upper]`` with
    ``upper = min(n_t, floor(hi n_t))`` (``[0, n_t]`` without
    ``rate_clamp``); a task whose share leaves its bounds is fixed at the bound and the rest of the
    budget is re-split over the other tasks in proportion to ``w``, until nothing changes. Then
    ``fill="official"`` floors every share; ``fill="remainder"`` also gives the floor remainder,
    one sample each, to the tasks with the largest fractional parts (earlier task on ties), so the
    budgets sum to exactly ``k``.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.float64)
    n_tasks = len(sizes)
    if not np.all(np.isfinite(weights)) or (weights < 0).any():
        raise BudgetError("task weights n_t * xbar_t^2 must be finite and >= 0")
    if weights.sum() <= 0:
        weights = sizes.astype(np.float64)
    upper = sizes.astype(np.float64)
    lower = np.zeros(n_tasks)
    if rate_clamp is not None:
        lo, hi = rate_clamp
        upper = np.minimum(upper, np.floor(hi * sizes + 1e-9))
        # an integer lower bound: the floors of fill="official" then never drop a task below lo
        lower = np.minimum(np.ceil(lo * sizes - 1e-9), upper)
    if k > upper.sum() + 1e-9:
        raise BudgetError(f"budget {k} exceeds what the tasks can give under their caps ({int(upper.sum())})")
    if k < lower.sum() - 1e-9:
        raise BudgetError(f"budget {k} is below the sum of the tasks' minimum rates ({lower.sum():.1f})")
    detail = apportion_detail(k, weights, caps=upper, floors=lower, fill=fill == "remainder")
    budgets, raw, share, fixed, shortfall = detail.budgets, detail.raw, detail.share, detail.fixed, detail.shortfall
    at_upper = fixed & (share >= upper - 1e-9)
    capped = [int(t) for t in np.flatnonzero(at_upper)]
    raised = [int(t) for t in np.flatnonzero(fixed & ~at_upper & (share <= lower + 1e-9))]
    info = {
        "tasks": [
            {
                "raw_budget": float(raw[t]),
                "budget": int(budgets[t]),
                "rate": float(budgets[t] / sizes[t]) if sizes[t] else 0.0,
                "capped": bool(t in capped),
                "raised": bool(t in raised),
            }
            for t in range(n_tasks)
        ],
        "capped_tasks": capped,
        "raised_tasks": raised,
        "redistributed": float(np.abs(raw - share)[fixed].sum()),
        "shortfall": shortfall,
    }
    return budgets, info


