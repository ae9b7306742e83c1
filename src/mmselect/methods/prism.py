"""PRISM (Bi et al., arXiv 2502.12119): keep the samples whose pooled visual features correlate
least, on average, with those of all other samples. Training-free; no proxy model.

No official code has been located; the algorithm follows the detailed notes of the ACL version
(consistent with the v4 abstract's "implicit re-centering"), with the v1 wording available as
options.
"""

from __future__ import annotations

import time
from typing import ClassVar

import numpy as np

from ..budget import apportion
from ..errors import BudgetError
from ..features.rows import iter_row_blocks
from ..features.store import FeatureSet
from ..numerics import check_finite_rows
from .base import (
    POSITIVE_INT,
    Choice,
    FeatureNeed,
    Param,
    SelectionMethod,
    SelectionResult,
    top_k_mask,
)


class Prism(SelectionMethod):
    """PRISM selection from the ``visual_mean`` array and the ``n_images`` column.

    For every image record i with pooled visual feature F_i (``visual_mean``: visual-token hidden
    states of a shallow layer of the target MLLM, averaged over the image tokens), the
    redundancy is the mean centred correlation with all other image records,
    ``R_i = 1/(N-1) sum_{j != i} rho(F_i, F_j)``, and the ``k`` records with the lowest R are kept.
    It is computed exactly in O(N d) without an N x N matrix: with
    ``u_i = (F_i - c_i) / ||F_i - c_i||``, ``R_i = (u_i . sum_j u_j - |u_i|^2) / (N - 1)``
    (``|u_i|^2`` is 1, or 0 for a record whose centred feature is zero: it is given correlation
    0 with everyone). The array is streamed in row blocks (three passes for the dataset mean,
    two for per-vector centring), so a memory-mapped float16 array is never loaded whole.

    Parameters
    ----------
    center : {"dataset_mean", "per_vector"}
        ``dataset_mean`` (default; ACL version): c_i = mu, the mean feature over the image
        records (of the task, with ``scope="per_task"``). ``per_vector`` (v1's "Pearson
        correlation"): each vector is centred by its own mean over dimensions.
    scope : {"global", "per_task"}
        ``global`` (default; the ACL notes describe one global threshold): one score over all
        image records. ``per_task`` [interpretation of v1's "task-specific correlation score"]:
        mu and R are computed within each ``task``; the budget left after the text-only records
        is split across tasks in proportion to their number of image records (largest
        remainder, capped by each task's size, any excess passed on in the same proportion),
        and each task keeps its lowest-R records.
    keep_text_only : bool
        ``True`` (default; the paper keeps text-only samples): records with ``n_images == 0`` are
        always selected and count towards the budget; their score is ``+inf``. If they alone
        exceed the budget, selection fails with a :class:`BudgetError` (asking for a larger
        budget or ``keep_text_only=False``) instead of dropping an arbitrary part of them.
        ``False``: they get no score (NaN) and are ranked after every image record; they are
        selected only when the budget exceeds the number of image records (earliest first).

    The score written for an image record is ``-R`` (higher = preferred); ``values`` holds
    ``redundancy`` (R, NaN for text-only) and ``text_only``. Ties go to the earlier record.
    Rows of ``visual_mean`` that belong to text-only records are never read as data (they may
    hold zeros or NaN); the image records' rows must be finite.
    """

    summary = "lowest mean centred correlation of pooled visual features"

    _parameter_constraints: ClassVar[dict[str, Param]] = {
        "center": Param("what each pooled feature is centred by before the correlation",
                        Choice("dataset_mean", "per_vector")),
        "scope": Param("correlate against all image records, or within each task", Choice("global", "per_task")),
        "keep_text_only": Param("keep every text-only record (they have no visual feature)", Choice(True, False)),
        "block_rows": Param("rows read at a time (memory bound)", POSITIVE_INT),
    }

    def __init__(
        self,
        *,
        center: str = "dataset_mean",
        scope: str = "global",
        keep_text_only: bool = True,
        block_rows: int = 4096,
    ):
        self.center = center
        self.scope = scope
        self.keep_text_only = keep_text_only
        self.block_rows = block_rows

    def feature_needs(self):
        return [
            # finite=False: text-only rows may be NaN; image rows are checked while streaming
            FeatureNeed("visual_mean", "array", "visual_mean", finite=False),
            FeatureNeed("n_images", "column", None),
        ]

    def _fit(self, features: FeatureSet) -> None:
        """The redundancy of every image record (does not depend on the budget)."""
        t_start = time.perf_counter()
        n = features.n
        feats = features.array("visual_mean")
        text_only = np.asarray(features.column("n_images"), dtype=float) == 0
        image_rows = np.flatnonzero(~text_only)
        if self.scope == "global":
            groups = {"all": image_rows}
        else:
            tasks = np.asarray(features.tasks)[image_rows]
            groups = {str(t): image_rows[tasks == t] for t in sorted(set(tasks.tolist()))}
        redundancy = np.full(n, np.nan)
        for rows in groups.values():
            redundancy[rows] = redundancy_scores(
                feats, rows, center=self.center, block_rows=int(self.block_rows), keys=features.keys
            )
        self.redundancy_, self.text_only_, self.groups_ = redundancy, text_only, groups
        self.fit_s_ = time.perf_counter() - t_start

    def _select_budget(self, k: int) -> SelectionResult:
        t_start = time.perf_counter()
        redundancy, text_only, groups = self.redundancy_, self.text_only_, self.groups_
        n = len(redundancy)
        image_rows = np.flatnonzero(~text_only)
        n_text = int(text_only.sum())
        info: dict = {
            "center": self.center,
            "scope": self.scope,
            "keep_text_only": bool(self.keep_text_only),
            "image_records": len(image_rows),
            "text_only_records": n_text,
        }
        scores = -redundancy
        if self.keep_text_only:
            if n_text > k:
                raise BudgetError(
                    f"PRISM keeps every text-only record, but there are {n_text} of them and the budget is {k}: "
                    "use a larger budget or keep_text_only=False"
                )
            scores[text_only] = np.inf
            image_budget = k - n_text
        else:
            image_budget = min(k, len(image_rows))

        selected = np.zeros(n, dtype=bool)
        if self.keep_text_only:
            selected[text_only] = True
        if self.scope == "global":
            selected |= top_k_mask(np.where(text_only, np.nan, scores), image_budget)
        else:
            quotas = _proportional_quotas({t: len(r) for t, r in groups.items()}, image_budget)
            info["task_quotas"] = {t: int(q) for t, q in quotas.items()}
            for t, rows in groups.items():
                local = top_k_mask(scores[rows], quotas[t])
                selected[rows[local]] = True
        if not self.keep_text_only and k > len(image_rows):  # fill with text-only, earliest first
            selected[np.flatnonzero(text_only)[: k - len(image_rows)]] = True
        info["redundancy_range"] = (
            [float(np.nanmin(redundancy)), float(np.nanmax(redundancy))] if len(image_rows) else None
        )
        info["time_s"] = round(self.fit_s_ + time.perf_counter() - t_start, 3)
        return SelectionResult(
            selected=selected,
            scores=scores,
            values={"redundancy": redundancy, "text_only": text_only},
            info=info,
        )


def _proportional_quotas(sizes: dict[str, int], budget: int) -> dict[str, int]:
    """Split ``budget`` in proportion to ``sizes`` (largest remainder, ties to the first key),
    capped by each size, the excess of capped groups passed on in the same way."""
    names = list(sizes)
    counts = np.array([sizes[t] for t in names], dtype=np.int64)
    if counts.sum() == 0:
        return {t: 0 for t in names}
    quotas = apportion(min(int(budget), int(counts.sum())), counts, caps=counts)
    return {t: int(q) for t, q in zip(names, quotas)}


def redundancy_scores(
    feats, rows: np.ndarray, *, center: str = "dataset_mean", block_rows: int = 4096, keys=None
) -> np.ndarray:
    """R for the records ``rows`` of ``feats`` (an (N, d) array, possibly memory-mapped), against
    each other only. Returns one float64 per entry of ``rows``."""
    rows = np.asarray(rows, dtype=np.int64)
    m = len(rows)
    if m == 0:
        return np.empty(0)
    if m == 1:
        return np.zeros(1)  # no other record to correlate with
    d = feats.shape[1]
    whole = len(rows) == feats.shape[0] and np.array_equal(rows, np.arange(len(rows)))
    source_rows = None if whole else rows

    def blocks():
        for pos, block in iter_row_blocks(feats, source_rows, block_rows, dtype=np.float64):
            check_finite_rows(block, "visual_mean", rows[pos], keys, what="image record(s)")
            yield pos, block

    mu = None
    if center == "dataset_mean":
        total = np.zeros(d)
        for _, block in blocks():
            total += block.sum(axis=0)
        mu = total / m

    def unit(block):
        centred = block - (mu if mu is not None else block.mean(axis=1, keepdims=True))
        norms = np.sqrt(np.einsum("ij,ij->i", centred, centred))
        ok = norms > 0
        centred[ok] /= norms[ok, None]
        centred[~ok] = 0.0
        return centred, ok

    u_sum = np.zeros(d)
    for _, block in blocks():
        u, _ = unit(block)
        u_sum += u.sum(axis=0)
    out = np.empty(m)
    for pos, block in blocks():
        u, ok = unit(block)
        out[pos] = (u @ u_sum - ok.astype(np.float64)) / (m - 1)
    return out
