"""Demonstration-query pairs for CLIPPER's one-shot stage, and their per-sample aggregation.

Used by the extraction engine (which runs the pairs) and by the ``clipper`` method (which reads
the aggregated columns). CLIPPER has no official code: this pairing is an interpretation, see
docs/methods/clipper.md.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import ConfigError

PAIRINGS = ("random", "same-task")


def _distinct_draws(pool_sizes: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """For every row r, ``m`` distinct integers in ``[0, pool_sizes[r])`` (requires ``pool_sizes >= m``),
    by Floyd's algorithm, vectorised over rows."""
    rows = len(pool_sizes)
    out = np.empty((rows, m), dtype=np.int64)
    for step in range(m):
        upper = pool_sizes - m + step  # draw t uniformly in [0, upper]
        t = np.floor(rng.random(rows) * (upper + 1)).astype(np.int64)
        t = np.minimum(t, upper)
        clash = (out[:, :step] == t[:, None]).any(axis=1) if step else np.zeros(rows, dtype=bool)
        out[:, step] = np.where(clash, upper, t)
    return out


def clipper_pairs(
    n: int,
    tasks: Sequence[str] | np.ndarray | None = None,
    m: int = 4,
    pairing: str = "random",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(query_idx, demo_idx) for the one-shot stage: every query gets ``min(m, n - 1)`` distinct
    demonstrations, none of them itself.

    ``pairing="random"``: demonstrations uniformly from all other samples. ``"same-task"``: from the
    other samples of the query's task; when the task has fewer than ``m`` other samples, all of them
    are used and the rest is drawn at random from the other tasks (a task with a single sample thus
    falls back to random pairing). Pairs are grouped by query (ascending), in draw order.
    """
    if pairing not in PAIRINGS:
        raise ConfigError(f"pairing must be one of {list(PAIRINGS)}, got {pairing!r}")
    if m < 1:
        raise ConfigError(f"m must be >= 1, got {m}")
    if n < 2:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    m_eff = min(m, n - 1)
    queries = np.arange(n, dtype=np.int64)
    if pairing == "random" or tasks is None:
        draws = _distinct_draws(np.full(n, n - 1, dtype=np.int64), m_eff, rng)
        demos = draws + (draws >= queries[:, None])  # skip the query itself
        return np.repeat(queries, m_eff), demos.reshape(-1)
    tasks = np.asarray([str(t) for t in tasks], dtype=object)
    if len(tasks) != n:
        raise ValueError("one task per sample")
    names, task_id = np.unique(tasks.astype(str), return_inverse=True)
    members_sorted = np.argsort(task_id, kind="stable")  # samples grouped by task, ascending inside
    task_sizes = np.bincount(task_id, minlength=len(names))
    task_start = np.concatenate([[0], np.cumsum(task_sizes)[:-1]])
    position_in_task = np.empty(n, dtype=np.int64)
    position_in_task[members_sorted] = np.arange(n) - np.repeat(task_start, task_sizes)
    demos = np.empty((n, m_eff), dtype=np.int64)
    pool = task_sizes[task_id] - 1
    full = pool >= m_eff
    if full.any():
        rows = np.flatnonzero(full)
        draws = _distinct_draws(pool[rows], m_eff, rng)
        draws = draws + (draws >= position_in_task[rows][:, None])
        demos[rows] = members_sorted[task_start[task_id[rows]][:, None] + draws]
    for i in np.flatnonzero(~full):  # small tasks: all of the task, then random others
        t = task_id[i]
        same = members_sorted[task_start[t] : task_start[t] + task_sizes[t]]
        same = same[same != i]
        same = same[rng.permutation(len(same))]
        others = np.flatnonzero(task_id != t)
        extra = rng.choice(others, size=m_eff - len(same), replace=False)
        demos[i] = np.concatenate([same, extra])
    return np.repeat(queries, m_eff), demos.reshape(-1)


def aggregate_pairs(
    n: int,
    query_idx: np.ndarray,
    demo_idx: np.ndarray,
    zero_shot_nll: np.ndarray,
    one_shot_nll: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample ``(icl_answer_nll, demo_gain)`` from the one-shot results of the pairs.

    ``one_shot_nll[p]`` is the answer NLL of query ``query_idx[p]`` with demonstration
    ``demo_idx[p]``. ``icl_answer_nll[i]`` = mean of ``one_shot_nll`` over the pairs where i is the
    query; ``demo_gain[j]`` = mean over the pairs where j is the demonstration of
    ``g_{j->i} = zero_shot_nll[i] - one_shot_nll[p]`` (= log PPL0_i - log PPL1_{i|j}). Pairs with a
    non-finite value are left out; a sample with no usable pair gets NaN.
    """
    query_idx = np.asarray(query_idx, dtype=np.int64)
    demo_idx = np.asarray(demo_idx, dtype=np.int64)
    zero = np.asarray(zero_shot_nll, dtype=float)
    one = np.asarray(one_shot_nll, dtype=float)
    if not (len(query_idx) == len(demo_idx) == len(one)):
        raise ValueError("query_idx, demo_idx and one_shot_nll need one entry per pair")
    if len(zero) != n:
        raise ValueError("zero_shot_nll needs one entry per sample")
    if np.any(query_idx == demo_idx):
        raise ValueError("a sample cannot be its own demonstration")
    gain = zero[query_idx] - one
    ok_query = np.isfinite(one)
    ok_gain = np.isfinite(gain)

    def mean_by(index, values, ok):
        total = np.bincount(index[ok], weights=values[ok], minlength=n)
        count = np.bincount(index[ok], minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / np.maximum(count, 1), np.nan)

    return mean_by(query_idx, one, ok_query), mean_by(demo_idx, gain, ok_gain)
