"""mmSSR (arXiv 2503.13383): capability scores round-robin over style x source bins."""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Sequence

import numpy as np

from ..errors import ConfigError, MissingFeaturesError, NonFiniteFeaturesError
from ..features.store import FeatureSet
from ..features.user_scores import as_style_list as _as_style_list
from ..features.user_scores import load_user_scores  # noqa: F401 (moved to the features layer; public here too)
from .base import (
    NONE,
    Choice,
    FeatureNeed,
    Interval,
    OfType,
    Param,
    Satisfies,
    SelectionMethod,
    SelectionResult,
)
from .mmssr_sampler import FILL_RULES, mmssr_sample, tie_break_ranks

SCORE_PREFIX = "score_"
STYLES_COLUMN = "styles"
PRODUCED_BY = "mmssr-scores"

log = logging.getLogger("mmselect.methods.mmssr")


class MMSSR(SelectionMethod):
    """mmSSR sampler: a fine-tuned scorer rates each sample 0-5 per capability, a styler tags its
    interaction styles; the budget is filled round-robin over the capabilities and evenly over
    ``<style>+<source>`` bins.

    Features (``mmselect extract --features mmssr-scores``, or your own file, see
    :func:`load_user_scores`): ``score_<capability>`` columns (float, NaN = no usable reply) and
    ``styles`` (list of strings per sample, first style first). The source of a sample is its
    ``task`` column.

    Parameters
    ----------
    capabilities : list of str or None
        Capabilities to sample for, in round-robin order (names without the ``score_`` prefix).
        ``None``: every ``score_*`` column, in column order. As in the official code, the weight of
        a capability is set by listing it: each listed capability gets an equal share per round.
    threshold : float
        Only samples with ``score > threshold`` enter a capability's pool (official ``--thr``, 0).
    seed : int or None
        Tie-break between equal scores (frequent: scores are integers) and in the fill. ``int``:
        a hash of (seed, sample key), so the outcome does not depend on the row order; ``None``: the
        earlier row first. Recorded in ``info``.
    fill : {"max-score", "random", "none"}
        What happens when every capability has run dry (no sample left with score > threshold)
        before the budget is met. ``"max-score"`` (default): the rest of the budget goes to the
        unselected samples with the highest score over the listed capabilities (NaN lowest), ties
        by the seeded tie-break. ``"random"``: seeded tie-break order only. ``"none"``: stop short
        and report ``info["budget_shortfall"]``.
    warn_unparsable : float
        A capability whose share of NaN scores (replies the scorer gave that are not a score 0-5)
        is above this fraction is reported by a warning and in ``info["unparsable_scores"]``
        (default 0.1). When every score of every listed capability is NaN the method refuses to
        select (:class:`~mmselect.errors.NonFiniteFeaturesError`): the selection would be made by
        the fill rule alone.

    Official behaviour (github.com/lyumengyao/mmssr ``llava/select/mmssr.py``), reproduced exactly:

    * While the budget is not met: ``q = max(remaining // |caps|, 1)``; for each capability in
      order, ``q = min(q, remaining)``, pool = unselected samples with score > threshold sorted by
      score (descending), pick ``q`` from the pool with the style-balanced rule, drop the
      capability if it picked nothing; stop as soon as the budget is met.
    * Style-balanced rule: bins ``<style>+<source>`` over the pool (a sample with several styles
      sits in several bins), ordered by size ascending (equal sizes: by bin name, the order
      ``pandas.groupby`` gives them); quota per bin ``max(q // #bins, 1)``; unused quota carries to
      the next bin ("debt"); stop once ``q`` are picked. A bin's take is capped at what is left
      of ``q``; the official code has no cap, so when ``q`` is smaller than the number of bins and
      one pick empties several bins (a sample with several styles sits in several bins), the
      debt makes it pick more than ``q`` and exceed the budget.
    * Inside a bin, samples for which it is the first style come first (in score order), then those
      for which it is the second style, and so on (the ``melt`` order of the official code).

    Changes from the official code (its bugs): the unstable score sort is replaced by the seeded,
    recorded tie-break; the loop stops cleanly when every capability runs dry (the official code
    fails an assertion / divides by zero or never ends) and fills by ``fill``; the capability list
    keeps the given order after drops (the official ``list(set(...))`` order depends on the string
    hash seed). A sample without styles (empty styler reply) is binned under ``"+<source>"``, which
    is what the official parsing makes of an empty reply.

    The sampler depends on the budget throughout (each round's quota is ``remaining // |caps|``),
    so all of it runs in :meth:`select_budget`; :meth:`fit` only checks the features.

    Scores: a preference rank, ``n - position`` in (pick order, then the fill order of the rest), so
    the ``k`` highest scores are the selection. ``values``: ``mmssr_capability`` (capability that
    picked the sample, ``""`` if none), ``mmssr_round``, ``mmssr_bin``, ``mmssr_max_score``.
    """

    summary = "capability scores round-robin over style x source bins"
    _parameter_constraints: ClassVar[dict[str, Param]] = {
        "capabilities": Param(
            "capabilities to rotate over, in order (None: every score_<capability> column)",
            NONE, OfType(str),
            Satisfies(lambda v: isinstance(v, (list, tuple)) and all(isinstance(c, str) for c in v), "a list of names"),
        ),
        "threshold": Param("only samples scoring above it enter a capability's pool", Interval(float, None, None)),
        "seed": Param("seed of the tie-break between equal scores (None: row order)", Interval(int, None, None), NONE),
        "fill": Param("what fills the budget once every capability has run dry", Choice(*FILL_RULES)),
        "warn_unparsable": Param("warn about a capability whose share of NaN (unparsable) scores is above this",
                                 Interval(float, 0, 1)),
    }

    def __init__(
        self,
        *,
        capabilities: Sequence[str] | None = None,
        threshold: float = 0.0,
        seed: int | None = 0,
        fill: str = "max-score",
        warn_unparsable: float = 0.1,
    ):
        self.capabilities = capabilities
        self.threshold = threshold
        self.seed = seed
        self.fill = fill
        self.warn_unparsable = warn_unparsable

    def feature_needs(self):
        needs = [FeatureNeed(f"{SCORE_PREFIX}{c}", "column", PRODUCED_BY, finite=False) for c in self._named_caps()]
        needs.append(FeatureNeed(STYLES_COLUMN, "column", PRODUCED_BY, finite=False))
        return needs

    def feature_params(self) -> dict[str, dict[str, Any]]:
        """Generate scores only for the capabilities this selection samples."""
        caps = self._named_caps()
        return {PRODUCED_BY: {"capabilities": caps}} if caps else {}

    def _named_caps(self) -> list[str]:
        if self.capabilities is None:
            return []
        caps = [self.capabilities] if isinstance(self.capabilities, str) else list(self.capabilities)
        caps = [c[len(SCORE_PREFIX):] if c.startswith(SCORE_PREFIX) else c for c in caps]
        if not caps:
            raise ConfigError("capabilities must name at least one capability (or be None for all)")
        if len(set(caps)) != len(caps):
            raise ConfigError(f"capabilities are listed twice: {caps}")
        return caps

    def _select(self, features: FeatureSet, k: int) -> SelectionResult:
        caps = self._named_caps() or [
            name[len(SCORE_PREFIX):] for name in features.column_names if name.startswith(SCORE_PREFIX)
        ]
        if not caps:
            raise MissingFeaturesError(
                "method 'mmssr' needs at least one score_<capability> column "
                f"(produced by `mmselect extract --features {PRODUCED_BY}` or load_user_scores)"
            )
        scores = [np.asarray(features.column(f"{SCORE_PREFIX}{c}"), dtype=float) for c in caps]
        unparsable = self._check_unparsable(caps, scores, features.n)
        styles = [_as_style_list(v) for v in features.column(STYLES_COLUMN)]
        tie = tie_break_ranks(features.keys, self.seed)
        outcome = mmssr_sample(
            scores, styles, features.tasks, k, threshold=float(self.threshold), tie_rank=tie, fill=self.fill,
            capability_names=caps,
        )
        n = features.n
        preference = np.empty(n, dtype=float)
        preference[outcome["full_order"]] = n - np.arange(n, dtype=float)
        selected = np.zeros(n, dtype=bool)
        selected[outcome["order"]] = True
        stacked = np.vstack(scores)
        best = np.where(np.isnan(stacked), -np.inf, stacked).max(axis=0)
        max_score = np.where(np.isnan(stacked).all(axis=0), np.nan, best)
        info = outcome["info"]
        info.update({"seed": self.seed, "fill": self.fill, "threshold": float(self.threshold)})
        info["unparsable_scores"] = unparsable
        info["tie_break"] = (
            "row order" if self.seed is None else f"blake2b hash of the sample key keyed by seed {self.seed}"
        )
        return SelectionResult(
            selected=selected,
            scores=preference,
            values={
                "mmssr_capability": outcome["capability"],
                "mmssr_round": outcome["round"],
                "mmssr_bin": outcome["bin"],
                "mmssr_max_score": max_score,
            },
            order=np.asarray(outcome["order"], dtype=np.int64),
            info=info,
        )


    def _check_unparsable(self, caps: list[str], scores: list[np.ndarray], n: int) -> dict[str, int]:
        """NaN scores per capability; refuses when there is no score at all, warns above
        ``warn_unparsable``."""
        counts = {c: int(np.isnan(s).sum()) for c, s in zip(caps, scores)}
        if n and all(count == n for count in counts.values()):
            raise NonFiniteFeaturesError(
                f"method 'mmssr': every score is NaN ({', '.join(f'score_{c}' for c in caps)}, {n} samples): "
                "no scorer reply could be read as a score 0-5, so the selection would be made by the fill "
                "rule alone. Check the scorer (--feature-param mmssr-scores.scorer=..., released: "
                "mengyaolyu/mmssr-7b-scorer; the extraction log shows example replies) and extract again, "
                "or bring your own scores (load_user_scores)."
            )
        heavy = {c: count for c, count in counts.items() if n and count / n > float(self.warn_unparsable)}
        if heavy:
            log.warning(
                "mmssr: more than %.0f%% of the scores are NaN (unparsable replies) for %s of %d samples; "
                "those samples never enter that capability's pool",
                100 * float(self.warn_unparsable), ", ".join(f"{c}: {count}" for c, count in heavy.items()), n,
            )
        return counts


__all__ = ["MMSSR", "load_user_scores"]
