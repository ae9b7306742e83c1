"""mmSSR (arXiv 2503.13383): capability scores round-robin over style x source bins."""

from __future__ import annotations

import hashlib
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
    check_choice,
)

SCORE_PREFIX = "score_"
STYLES_COLUMN = "styles"
PRODUCED_BY = "mmssr-scores"
FILL_RULES = ("max-score", "random", "none")

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


# --- helpers ---------------------------------------------------------------------------------------
def tie_break_ranks(keys: Sequence[str], seed: int | None) -> np.ndarray:
    """Rank (0 = first) of every sample in the tie-break order.

    ``seed=None``: row order. Otherwise the order of a keyed hash of (seed, key): reproducible,
    independent of the row order, different for different seeds.
    """
    n = len(keys)
    if seed is None:
        return np.arange(n, dtype=np.int64)
    salt = str(int(seed)).encode()
    digests = np.fromiter(
        (int.from_bytes(hashlib.blake2b(str(key).encode(), digest_size=8, key=salt).digest(), "big") for key in keys),
        dtype=np.uint64,
        count=n,
    )
    order = np.lexsort((np.arange(n), digests))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    return rank


def _bins(styles: Sequence[Sequence[str]], sources: Sequence[str]):
    """Entry arrays (sample, style position, bin id) and bin names; bin ids follow the sorted names."""
    entry_sample: list[int] = []
    entry_pos: list[int] = []
    entry_raw: list[int] = []
    name_id: dict[str, int] = {}
    n_no_style = 0
    for i, (sample_styles, source) in enumerate(zip(styles, sources)):
        if not sample_styles:
            n_no_style += 1
            sample_styles = [""]
        seen: list[str] = []
        for style in sample_styles:
            name = f"{str(style).strip()}+{source}"
            if name in seen:
                continue
            seen.append(name)
            entry_sample.append(i)
            entry_pos.append(len(seen) - 1)
            entry_raw.append(name_id.setdefault(name, len(name_id)))
    bin_names = sorted(name_id)
    remap = np.empty(len(name_id), dtype=np.int64)
    remap[[name_id[name] for name in bin_names]] = np.arange(len(bin_names))
    return (
        np.asarray(entry_sample, dtype=np.int64),
        np.asarray(entry_pos, dtype=np.int64),
        remap[np.asarray(entry_raw, dtype=np.int64)] if entry_raw else np.empty(0, dtype=np.int64),
        bin_names,
        n_no_style,
    )


class _CapabilityPool:
    """Entries of the samples with score > threshold for one capability, in official bin order:
    by bin, then style position, then score (descending) with the tie-break."""

    def __init__(self, score, threshold, tie_rank, entry_sample, entry_pos, entry_bin):
        key = np.where(np.isnan(score), -np.inf, score)
        rank_order = np.lexsort((tie_rank, -key))
        rank = np.empty(len(score), dtype=np.int64)
        rank[rank_order] = np.arange(len(score))
        eligible = score[entry_sample] > threshold  # NaN compares False
        es, ep, eb = entry_sample[eligible], entry_pos[eligible], entry_bin[eligible]
        # One int64 key (bin, position, rank) sorts faster than a three-key lexsort; keys are unique.
        n_pos = int(entry_pos.max()) + 1 if entry_pos.size else 1
        order = np.argsort((eb * n_pos + ep) * len(score) + rank[es])
        self.sample = es[order]
        self.bin = eb[order]


def _style_balanced_pick(pool: _CapabilityPool, candidate: np.ndarray, q: int, scratch: np.ndarray):
    """Official ``select``: returns (picked samples in pick order, bin id of each)."""
    keep = candidate[pool.sample]
    samples, bins = pool.sample[keep], pool.bin[keep]
    if samples.size == 0 or q <= 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    bin_ids, starts, counts = np.unique(bins, return_index=True, return_counts=True)
    per_bin = max(q // len(bin_ids), 1)
    debt = 0
    picked: list[np.ndarray] = []
    picked_bins: list[np.ndarray] = []
    total = 0
    for b in np.argsort(counts, kind="stable"):  # size ascending, equal sizes by bin name
        if total >= q:
            break
        members = samples[starts[b] : starts[b] + counts[b]]
        available = members[~scratch[members]]
        want = per_bin + debt
        # Capped at what is left of q: when q < #bins and one pick empties several bins (a
        # sample sits in one bin per style), the debt would otherwise overshoot q (the official
        # code then exceeds the budget).
        take = min(want, len(available), q - total)
        debt = max(want - len(available), 0)
        chosen = available[:take]
        scratch[chosen] = True
        picked.append(chosen)
        picked_bins.append(np.full(take, bin_ids[b], dtype=np.int64))
        total += take
    out = np.concatenate(picked) if picked else np.empty(0, dtype=np.int64)
    scratch[out] = False
    return out, (np.concatenate(picked_bins) if picked_bins else np.empty(0, dtype=np.int64))


def mmssr_sample(
    scores: Sequence[np.ndarray],
    styles: Sequence[Sequence[str]],
    sources: Sequence[str],
    k: int,
    *,
    threshold: float = 0.0,
    tie_rank: np.ndarray | None = None,
    fill: str = "max-score",
    capability_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The mmSSR sampler on plain arrays (see :class:`MMSSR`).

    ``scores``: one float array (n,) per capability, in round-robin order. ``styles``: per sample
    a list of styles (first style first). ``sources``: per sample its source (``task``).
    Returns ``order`` (selected indices in pick order), ``full_order`` (every index: picks, then
    the rest in fill order), per-sample ``capability``/``round``/``bin`` and ``info``.
    """
    check_choice("fill", fill, set(FILL_RULES))
    n = len(sources)
    names = list(capability_names) if capability_names is not None else [str(i) for i in range(len(scores))]
    if len(names) != len(scores):
        raise ValueError("one name per capability")
    if not 0 <= k <= n:
        raise ValueError(f"budget {k} outside [0, {n}]")
    tie_rank = np.arange(n, dtype=np.int64) if tie_rank is None else np.asarray(tie_rank, dtype=np.int64)
    scores = [np.asarray(s, dtype=float) for s in scores]
    entry_sample, entry_pos, entry_bin, bin_names, n_no_style = _bins(styles, sources)
    pools = {c: _CapabilityPool(s, threshold, tie_rank, entry_sample, entry_pos, entry_bin) for c, s in zip(names, scores)}

    candidate = np.ones(n, dtype=bool)
    scratch = np.zeros(n, dtype=bool)
    order: list[np.ndarray] = []
    pick_cap = np.full(n, "", dtype=object)
    pick_round = np.full(n, -1, dtype=np.int64)
    pick_bin = np.full(n, "", dtype=object)
    per_cap = {c: 0 for c in names}
    dropped: dict[str, int] = {}
    active = list(names)
    n_selected, rounds = 0, 0
    while n_selected < k and active:
        q = max((k - n_selected) // len(active), 1)
        drop_now = []
        for c in active:
            q = min(q, k - n_selected)
            new, new_bins = _style_balanced_pick(pools[c], candidate, q, scratch)
            if new.size == 0:
                drop_now.append(c)
            else:
                candidate[new] = False
                order.append(new)
                pick_cap[new] = c
                pick_round[new] = rounds
                pick_bin[new] = [bin_names[b] for b in new_bins]
                per_cap[c] += int(new.size)
                n_selected += int(new.size)
            if n_selected >= k:
                break
        for c in drop_now:
            dropped[c] = rounds
        active = [c for c in active if c not in drop_now]
        rounds += 1

    picked = np.concatenate(order) if order else np.empty(0, dtype=np.int64)
    rest = np.flatnonzero(candidate)
    if fill == "max-score" and scores:
        stacked = np.vstack([np.where(np.isnan(s), -np.inf, s) for s in scores])
        best = stacked.max(axis=0)[rest]
        rest = rest[np.lexsort((tie_rank[rest], -best))]
    else:
        rest = rest[np.argsort(tie_rank[rest], kind="stable")]
    info: dict[str, Any] = {
        "capabilities": names,
        "rounds": rounds,
        "picked_per_capability": per_cap,
        "dropped_capabilities": dropped,
        "n_bins": len(bin_names),
        "samples_without_styles": int(n_no_style),
        "filled": 0,
    }
    shortfall = k - n_selected
    if shortfall > 0:
        if fill == "none":
            info["budget_shortfall"] = (
                f"every capability ran dry (no unselected sample with score > {threshold}) after "
                f"{n_selected} of {k} samples, and fill='none'"
            )
        else:
            extra = rest[:shortfall]
            pick_cap[extra] = "fill"
            picked = np.concatenate([picked, extra])
            rest = rest[shortfall:]
            info["filled"] = int(shortfall)
            info["fill_rule"] = (
                "highest score over the capabilities (NaN lowest), then the tie-break"
                if fill == "max-score"
                else "tie-break order"
            )
    return {
        "order": picked,
        "full_order": np.concatenate([picked, rest]),
        "capability": pick_cap,
        "round": pick_round,
        "bin": pick_bin,
        "info": info,
    }


__all__ = ["MMSSR", "load_user_scores", "mmssr_sample", "tie_break_ranks"]
