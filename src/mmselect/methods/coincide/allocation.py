"""COINCIDE's cluster scores and budget split: transferability of the centroids, softmax shares
spent cluster by cluster with roll-over (the official loop), then top-up rounds."""

from __future__ import annotations

import numpy as np


def transferability(centroids: np.ndarray, threshold: float = 0.9, block_rows: int = 2048) -> np.ndarray:
    """S_i = sum of the cosines C_ij <= threshold over j, divided by their number.

    Cosines above ``threshold`` (which always includes C_ii) are zeroed and not counted, as in
    the official ``cluster_transferability.py``. Zero centroids have cosine 0 with everyone.
    A cluster with no cosine left to count (a single cluster, as small data gives with the default
    K = N / 67, or one whose every other centroid lies above the threshold) gets 0 where the
    official code divides 0 by 0 and the NaN then breaks the budget split; with a single cluster
    the value changes nothing (its share is 1). Computed in row blocks (never a K x K matrix).
    """
    c = np.asarray(centroids, dtype=np.float64)
    norms = np.linalg.norm(c, axis=1, keepdims=True)
    norms[norms == 0] = 1
    c = c / norms
    out = np.empty(len(c))
    for start in range(0, len(c), block_rows):
        sim = c[start : start + block_rows] @ c.T
        keep = sim <= threshold
        counts = keep.sum(axis=1)
        sums = np.where(keep, sim, 0.0).sum(axis=1)
        out[start : start + len(sim)] = sums / np.maximum(counts, 1)  # no count: sum 0 -> 0
    return out


class Allocation:
    """Result of :func:`allocate` (positions refer to the clusters passed in)."""

    def __init__(self, shares, visit, first, whole, extra, topup_visit, rounds):
        self.shares = shares  # initial softmax shares
        self.visit = visit  # official visit order (descending share)
        self.first = first  # samples taken in the official pass
        self.whole = whole  # taken as the whole cluster (m > size) in the official pass
        self.extra = extra  # samples added by the top-up rounds
        self.topup_visit = topup_visit  # clusters in the order the top-up first touched them
        self.rounds = rounds


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def allocate(score: np.ndarray, sizes: np.ndarray, budget: int, temperature: float) -> Allocation:
    """How many samples each cluster gives: the official roll-over loop, then top-up rounds.

    Official loop: visit clusters by descending ``softmax(score / temperature)``; cluster i
    gets ``m = round(R_left * P_i)`` (Python rounding: half to even), or all of it when
    ``m > size``; ``R_left`` drops by what was taken and the shares of the clusters not yet
    visited are re-normalised. Top-up (only when the loop ends short): the same rule, in the
    same order, over the clusters that still have unselected samples, capped by what they have
    left, until the budget is met.
    """
    score = np.asarray(score, dtype=np.float64)
    sizes = np.asarray(sizes, dtype=np.int64)
    n_clusters = len(score)
    if budget > sizes.sum():
        raise ValueError(f"budget {budget} exceeds the {int(sizes.sum())} samples")
    z = score / temperature
    shares = _softmax(z) if n_clusters else np.empty(0)
    visit = np.argsort(shares, kind="stable")[::-1]
    first = np.zeros(n_clusters, dtype=np.int64)
    whole = np.zeros(n_clusters, dtype=bool)
    remaining = int(budget)
    ratio = shares[visit].copy()
    z_sorted = z[visit]
    for idx, c in enumerate(visit):
        m = int(round(remaining * ratio[idx]))
        if m > sizes[c]:
            first[c], whole[c] = sizes[c], True
        else:
            first[c] = m
        remaining -= int(first[c])
        if idx + 1 < n_clusters:
            ratio[idx + 1 :] = _softmax(z_sorted[idx + 1 :])
    extra = np.zeros(n_clusters, dtype=np.int64)
    topup_visit: list[int] = []
    rounds = 0
    while remaining > 0:
        rounds += 1
        open_ = np.array([c for c in visit if sizes[c] - first[c] - extra[c] > 0])
        ratio = _softmax(z[open_])
        for idx, c in enumerate(open_):
            left = int(sizes[c] - first[c] - extra[c])
            m = min(left, int(round(remaining * ratio[idx])))
            if m > 0:
                if c not in topup_visit:
                    topup_visit.append(int(c))
                extra[c] += m
                remaining -= m
            if idx + 1 < len(open_):
                ratio[idx + 1 :] = _softmax(z[open_[idx + 1 :]])
    return Allocation(shares, visit, first, whole, extra, topup_visit, rounds)


