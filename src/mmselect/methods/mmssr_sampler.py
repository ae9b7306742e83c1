"""The mmSSR sampler (arXiv 2503.13383) on plain arrays: capabilities in round robin, each taking
its best-scored samples spread over style x source bins, then a fill rule once every capability
has run dry. :class:`~.mmssr.MMSSR` feeds it the columns of a features directory."""

from __future__ import annotations

import hashlib
from typing import Any, Sequence

import numpy as np

from .base import check_choice

FILL_RULES = ("max-score", "random", "none")


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
