"""ScalSelect (Wu et al., arXiv 2602.11636): keep the samples with the highest rank-k leverage of
their instruction-attended visual representation. Training-free and linear in the number of
samples: one d x d Gram matrix, one eigendecomposition, no pairwise comparison.

The selection step follows the official ``scripts/cur.py`` (github.com/ChangtiWu/ScalSelect); the
defaults are those of its released run script (``run_cur.sh``: centring only, energy 0.9). The
official code takes a full SVD of the whole matrix; here the same scores come from a streamed
Gram matrix, so a memory-mapped 665k x 4096 array is never copied.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..budget import apportion
from ..errors import BudgetError
from ..features.rows import iter_row_blocks
from ..features.store import FeatureSet
from ..numerics import Stopwatch, check_finite_rows, single_threaded
from .base import (
    POSITIVE_INT,
    Choice,
    FeatureNeed,
    Interval,
    Param,
    SelectionMethod,
    SelectionResult,
)

#: Eigenvalues below this share of the largest are treated as zero (numerical rank).
_RANK_TOLERANCE = 1e-12


class ScalSelect(SelectionMethod):
    """ScalSelect selection from the ``scalselect_embed`` array and the ``scalselect_vision_tokens`` column.

    The candidates are the records with vision tokens (``scalselect_vision_tokens > 0``); their
    representations ``x_i`` (``scalselect_embed``: layer-0 hidden states of the target MLLM,
    mean-pooled over the vision tokens that carry 90 % of the instruction's attention) form X.

    1. Preprocess: centre the columns (``x_i - mu``); optionally divide every column by its
       standard deviation (ddof 0; a zero one counts as 1), then optionally scale every row to
       unit L2 norm (a zero row stays zero). The order is the official one; the L2 step comes
       last and the result is *not* centred again.
    2. With Z the preprocessed matrix and ``Z^T Z = V diag(lambda) V^T`` (lambda descending, the
       squared singular values of Z), k is the smallest k with
       ``sum_{j<=k} lambda_j / sum_j lambda_j >= energy``, clipped to ``[1, min(N, d)]`` and to
       the numerical rank.
    3. Score ``pi_i = sum_{j<=k} U_ij^2`` (U: left singular vectors of Z), computed as
       ``||z_i V_k diag(lambda_k)^(-1/2)||^2``: the rank-k leverage, in [0, 1], summing to k.
    4. Keep the ``budget`` highest scores; ties go to the earlier record (order by
       (-score, position), stable).

    Streaming: pass 1 accumulates, over blocks of ``block_rows`` rows, the column sums and the
    Gram matrix of the rows shifted by the first candidate row, in float64 (the shift keeps a
    large common offset from cancelling catastrophically in ``G - N mu mu^T``); then one
    ``numpy.linalg.eigh`` of the d x d matrix; pass 2 computes the scores block by block. With
    ``l2_normalize`` the Gram matrix of the normalised rows needs its own pass (three in all).
    Nothing N x d is ever held; a memory-mapped ``.npy`` is read with ``pread``.

    Parameters
    ----------
    energy : float in (0, 1]
        Share of the energy (sum of squared singular values) the k directions must reach
        (official ``--sv-threshold``, 0.9).
    standardize : bool
        Divide each column by its standard deviation after centring. ``False`` in the official
        run script (``--no-standardize``); the official ``cur.py`` command-line default is on.
    l2_normalize : bool
        Scale each preprocessed row to unit L2 norm. ``False`` in the official run script
        (``--no-l2-normalize``); the official ``cur.py`` command-line default is on.
    per_task : bool
        ``False`` (official): the top scores over all candidates. ``True``: the scores are the
        same (one subspace for all candidates), but the budget is split over the tasks in
        proportion to their numbers of candidates (largest remainder, capped by each task's
        candidates, see :func:`mmselect.budget.apportion`) and each task keeps its top scores.
    text_only : {"exclude", "keep"}
        Records without vision tokens have no representation. ``"exclude"`` (official): they are
        never selected, get a NaN score and are counted in ``info["not_candidates"]``; a budget
        larger than the number of candidates selects every candidate and reports
        ``info["budget_shortfall"]``. ``"keep"``: they are all selected and count towards the
        budget (score ``+inf``); the image records fill the rest of it. If they alone exceed the
        budget, selection fails with a :class:`BudgetError`.
    gram_dtype : {"auto", "float64", "float32"}
        Precision of the per-block products ``X_b^T X_b`` of the Gram passes; they are always
        summed in float64. ``"float64"`` reproduces the official scores to about 1e-7;
        ``"float32"`` (the precision of the official script's float32 SVD) halves the time of the
        Gram pass, the dominant cost at d = 4,096, and agrees to about 1e-6. ``"auto"`` (default):
        float64 while the Gram pass is small (N d^2 below 1e12 multiply-adds, e.g. 665k x 1,024),
        float32 beyond (665k x 4,096), so the pass stays within minutes on a 2-core machine.
    block_rows : int
        Rows read at a time (memory bound: about ``3 * block_rows * d * 8`` bytes).

    Scores and values: ``scores`` is pi for the candidates; ``values`` holds ``leverage`` (pi, NaN
    for records without vision tokens) and ``candidate``. ``info["scalselect_k"]`` is k.
    """

    summary = "rank-k leverage of attention-pooled early visual features, keep the highest"

    _parameter_constraints: ClassVar[dict[str, Param]] = {
        "energy": Param("share of the squared singular values the k directions reach",
                        Interval(float, 0.0, 1.0, closed="right")),
        "standardize": Param("divide each column by its standard deviation after centring", Choice(True, False)),
        "l2_normalize": Param("scale each preprocessed row to unit L2 norm", Choice(True, False)),
        "per_task": Param("split the budget over tasks, top scores within each", Choice(True, False)),
        "text_only": Param("records without vision tokens: never selected, or always kept",
                           Choice("exclude", "keep")),
        "gram_dtype": Param("precision of the per-block Gram products (summed in float64)",
                            Choice("auto", "float64", "float32")),
        "block_rows": Param("rows read at a time (memory bound)", POSITIVE_INT),
    }

    def __init__(
        self,
        *,
        energy: float = 0.9,
        standardize: bool = False,
        l2_normalize: bool = False,
        per_task: bool = False,
        text_only: str = "exclude",
        gram_dtype: str = "auto",
        block_rows: int = 4096,
    ):
        self.energy = energy
        self.standardize = standardize
        self.l2_normalize = l2_normalize
        self.per_task = per_task
        self.text_only = text_only
        self.gram_dtype = gram_dtype
        self.block_rows = block_rows

    def feature_needs(self):
        return [
            # finite=False: the candidates' rows are checked while streaming (no extra pass)
            FeatureNeed("scalselect_embed", "array", "scalselect", finite=False),
            FeatureNeed("scalselect_vision_tokens", "column", "scalselect"),
        ]

    def _fit(self, features: FeatureSet) -> None:
        """Leverage scores of the candidates (independent of the budget)."""
        stopwatch = Stopwatch()
        embed = features.array("scalselect_embed")
        candidate = np.asarray(features.column("scalselect_vision_tokens"), dtype=np.float64) > 0
        rows = np.flatnonzero(candidate)
        leverage = np.full(features.n, np.nan)
        self.gram_dtype_ = resolve_gram_dtype(self.gram_dtype, len(rows), embed.shape[1])
        fit = leverage_scores(
            embed,
            rows,
            energy=float(self.energy),
            standardize=self.standardize,
            l2_normalize=self.l2_normalize,
            gram_dtype=self.gram_dtype_,
            block_rows=int(self.block_rows),
            keys=features.keys,
            stopwatch=stopwatch,
        )
        leverage[rows] = fit.scores
        self.leverage_, self.candidate_, self.k_ = leverage, candidate, fit.k
        self.energy_captured_, self.rank_limited_ = fit.energy_captured, fit.rank_limited
        self.fit_timings_ = stopwatch.rounded()

    def _select_budget(self, k: int) -> SelectionResult:
        leverage, candidate = self.leverage_, self.candidate_
        n = len(leverage)
        candidates = np.flatnonzero(candidate)
        text_only = np.flatnonzero(~candidate)
        info: dict = {
            "scalselect_k": int(self.k_),
            "energy": float(self.energy),
            "energy_captured": self.energy_captured_,
            "standardize": bool(self.standardize),
            "l2_normalize": bool(self.l2_normalize),
            "gram_dtype": self.gram_dtype_,
            "per_task": bool(self.per_task),
            "text_only": self.text_only,
            "candidates": len(candidates),
            "not_candidates": len(text_only),
            "tie_break": "stable (higher score first, then the earlier record)",
            "fit_time_s": self.fit_timings_,
        }
        if self.rank_limited_:
            info["k_limited_by_rank"] = True
        scores = leverage.copy()
        selected = np.zeros(n, dtype=bool)
        if self.text_only == "keep":
            if len(text_only) > k:
                raise BudgetError(
                    f"ScalSelect with text_only='keep' keeps every record without vision tokens, but there are "
                    f"{len(text_only)} of them and the budget is {k}: use a larger budget or text_only='exclude'"
                )
            scores[text_only] = np.inf
            selected[text_only] = True
            image_budget = k - len(text_only)
        else:
            image_budget = min(k, len(candidates))
            if k > len(candidates):
                info["budget_shortfall"] = int(k - len(candidates))
                info["budget_shortfall_reason"] = (
                    f"only {len(candidates)} records have vision tokens; records without them are never "
                    "selected (text_only='exclude')"
                )
        ranking = candidates[_descending_order(leverage[candidates])]
        if not self.per_task:
            selected[ranking[:image_budget]] = True
        else:
            tasks = np.asarray(self.features_.tasks)[ranking]
            names = sorted(set(tasks.tolist()))
            sizes = np.array([int((tasks == t).sum()) for t in names], dtype=np.int64)
            quotas = apportion(image_budget, sizes, caps=sizes) if len(names) else np.zeros(0, dtype=np.int64)
            info["task_quotas"] = {t: int(q) for t, q in zip(names, quotas)}
            for name, quota in zip(names, quotas):
                selected[ranking[tasks == name][:quota]] = True  # ranking order is kept within a task
        order = np.flatnonzero(selected)
        order = order[_descending_order(scores[order])]
        return SelectionResult(
            selected=selected,
            scores=scores,
            values={"leverage": leverage, "candidate": candidate},
            order=order,
            info=info,
        )


def _descending_order(scores: np.ndarray) -> np.ndarray:
    """Positions ordered by (-score, position): a stable descending sort."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


class LeverageFit:
    """Outcome of :func:`leverage_scores`: ``scores`` (one per row), ``k``, the share of the
    energy its directions hold, the eigenvalues (descending) and whether the numerical rank,
    not the energy, set k."""

    def __init__(self, scores, k, energy_captured, eigenvalues, rank_limited):
        self.scores, self.k, self.energy_captured = scores, k, energy_captured
        self.eigenvalues, self.rank_limited = eigenvalues, rank_limited


def leverage_scores(
    array,
    rows: np.ndarray | None = None,
    *,
    energy: float = 0.9,
    standardize: bool = False,
    l2_normalize: bool = False,
    gram_dtype: str = "float64",
    block_rows: int = 4096,
    keys=None,
    stopwatch: Stopwatch | None = None,
) -> LeverageFit:
    """Rank-k leverage of the rows ``rows`` (default: all) of the (N, d) ``array``, after the
    official preprocessing (centre, optionally standardise columns, optionally unit-norm rows).

    Streams ``array`` in blocks of ``block_rows`` rows (two passes, three with ``l2_normalize``);
    memory is a few blocks plus two d x d float64 matrices. ``gram_dtype``: precision of each
    block's Gram product (the sums are float64). The d x d eigendecomposition runs on one thread
    (torch, float64): multi-threaded LAPACK is slower on a busy machine. Rows with NaN/inf are refused
    (:class:`~mmselect.errors.NonFiniteFeaturesError` naming ``keys``)."""
    stopwatch = stopwatch or Stopwatch()
    n_total, d = array.shape
    if rows is None:
        rows = np.arange(n_total)
    rows = np.asarray(rows, dtype=np.int64)
    n = len(rows)
    if n == 0:
        return LeverageFit(np.empty(0), 0, None, np.empty(0), False)
    source_rows = None if n == n_total and np.array_equal(rows, np.arange(n)) else rows

    def blocks():
        for positions, block in iter_row_blocks(array, source_rows, block_rows, dtype=np.float64):
            check_finite_rows(block, "scalselect_embed", rows[positions], keys, what="record(s) with vision tokens")
            yield positions, block

    with stopwatch.stage("pass 1: column sums and Gram"):
        shift = None
        column_sum = np.zeros(d)
        gram = np.zeros((d, d))
        for _, block in blocks():
            if shift is None:
                shift = block[0].copy()
            block -= shift
            column_sum += block.sum(axis=0)
            gram += _gram(block, gram_dtype)
    mean = shift + column_sum / n
    # scatter of the centred rows: sum (x - mu)(x - mu)^T = sum (x - s)(x - s)^T - N (mu - s)(mu - s)^T
    scatter = gram - np.outer(column_sum, column_sum) / n
    del gram
    scale = np.ones(d)
    if standardize:
        variance = np.clip(np.diag(scatter) / n, 0.0, None)
        scale = np.where(variance > 0, np.sqrt(variance), 1.0)
        scatter /= scale[:, None]
        scatter /= scale[None, :]

    def preprocessed(block):
        block -= mean
        if standardize:
            block /= scale
        if l2_normalize:
            norms = np.sqrt(np.einsum("ij,ij->i", block, block))
            norms[norms == 0] = 1.0
            block /= norms[:, None]
        return block

    if l2_normalize:
        # the unit-norm rows are not centred again (as in the official code): their plain Gram
        with stopwatch.stage("pass 2: Gram of the normalised rows"):
            scatter = np.zeros((d, d))
            for _, block in blocks():
                scatter += _gram(preprocessed(block), gram_dtype)

    with stopwatch.stage("eigendecomposition"):
        eigenvalues, vectors = _eigh_descending(scatter)
        del scatter
        eigenvalues = np.clip(eigenvalues, 0.0, None)[: min(n, d)]
        k, captured, rank_limited = _rank_for_energy(eigenvalues, energy)
        whiten = vectors[:, :k] / np.sqrt(eigenvalues[:k])
        del vectors

    scores = np.zeros(n)
    if k:
        with stopwatch.stage(f"pass {3 if l2_normalize else 2}: scores"):
            for positions, block in blocks():
                projected = preprocessed(block) @ whiten
                scores[positions] = np.einsum("ij,ij->i", projected, projected)
    return LeverageFit(scores, k, captured, eigenvalues, rank_limited)


#: ``gram_dtype="auto"`` takes float32 products from this many multiply-adds of the Gram pass (N d^2).
AUTO_FLOAT32_FROM = 1e12


def resolve_gram_dtype(gram_dtype: str, n_rows: int, dim: int) -> str:
    """The precision ``gram_dtype`` means for an ``n_rows`` x ``dim`` array (``"auto"``: see the
    method's docstring)."""
    if gram_dtype != "auto":
        return gram_dtype
    return "float32" if float(n_rows) * dim * dim >= AUTO_FLOAT32_FROM else "float64"


def _gram(block: np.ndarray, dtype: str) -> np.ndarray:
    """``block^T block`` computed in ``dtype`` (the caller sums the results in float64)."""
    if dtype == "float32":
        block = block.astype(np.float32)
    return block.T @ block


def _eigh_descending(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) and eigenvectors (columns) of a symmetric float64 matrix."""
    import torch

    with single_threaded():
        eigenvalues, vectors = torch.linalg.eigh(torch.from_numpy(np.ascontiguousarray(matrix)))
    return eigenvalues.numpy()[::-1].copy(), vectors.numpy()[:, ::-1].copy()


def _rank_for_energy(eigenvalues: np.ndarray, energy: float) -> tuple[int, float | None, bool]:
    """``(k, share of the energy in the top k, whether the numerical rank cut k)`` for
    eigenvalues in descending order: k is the smallest with cumulative share >= ``energy``
    (as the official ``searchsorted(cumulative, energy) + 1``), clipped to [1, len]; directions
    with (numerically) zero energy are never used. All-zero energy gives k = 0."""
    total = float(eigenvalues.sum())
    if total <= 0:
        return 0, None, True
    cumulative = np.cumsum(eigenvalues) / total
    k = int(np.searchsorted(cumulative, energy, side="left")) + 1
    k = max(1, min(k, len(eigenvalues)))
    rank = int((eigenvalues > eigenvalues[0] * _RANK_TOLERANCE).sum())
    rank_limited = k > rank
    k = min(k, rank)
    return k, float(cumulative[k - 1]), rank_limited
