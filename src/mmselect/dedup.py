"""The duplicate guard: records that repeat an earlier record are set aside before any method selects.

``exact``: records with the same content hash (the second half of the sample key, a hash of the
whole record) keep their first occurrence by source position. Two records that differ only in a
field such as ``id`` have different hashes; ``near`` catches them (their embeddings are equal).

``near``: additionally, inside each task, a record whose embedding has cosine similarity of at
least ``threshold`` with an *earlier kept* record of the same task is a duplicate of it. Candidates
are found with SemDeDup's machinery (rows L2-normalised, projected on their top 128 uncentred
singular directions when wider, spherical k-means with about 66 rows per cluster, then exact
full-dimension cosines inside each cluster), so near duplicates that k-means puts in different
clusters are missed, as in SemDeDup itself. The cost is that of one SemDeDup pass.

A guard never looks at scores or labels, so it is the same for every method.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ConfigError, MissingFeaturesError
from .features.store import FeatureSet

DEDUP_MODES = ("none", "exact", "near")
DEFAULT_NEAR_THRESHOLD = 0.95
NEAR_EMBEDDINGS = ("last_token", "mean_embed", "visual_mean")
_BLOCK_ROWS = 2048


@dataclass
class DuplicateGuard:
    """Which rows of a :class:`FeatureSet` are duplicates, and of what.

    ``duplicate_of``: per row, the key of the kept record it repeats, or ``""`` for a kept row.
    ``kind``: per row, ``""``, ``"exact"`` or ``"near"``.
    """

    mode: str
    duplicate_of: np.ndarray
    kind: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def kept(self) -> np.ndarray:
        return self.duplicate_of == ""

    @property
    def n_duplicates(self) -> int:
        return int((~self.kept).sum())


def _content_hashes(keys: np.ndarray) -> np.ndarray:
    return np.asarray([str(k).rsplit("-", 1)[-1] for k in keys], dtype=object)


def _source_order(features: FeatureSet) -> np.ndarray:
    """Row indices in source order (position when the features have it, else row order)."""
    if features.has_column("position"):
        return np.argsort(np.asarray(features.column("position"), dtype=np.int64), kind="stable")
    return np.arange(features.n)


def pick_embedding(features: FeatureSet, embedding: str | None) -> str:
    if embedding is not None:
        if not features.has_array(embedding):
            raise MissingFeaturesError(
                f"--dedup near: the features have no array {embedding!r} "
                f"(arrays: {', '.join(features.array_names) or 'none'})"
            )
        return embedding
    for name in NEAR_EMBEDDINGS:
        if features.has_array(name):
            return name
    raise MissingFeaturesError(
        "--dedup near needs a row-aligned embedding (one of "
        f"{', '.join(NEAR_EMBEDDINGS)}); the features have {', '.join(features.array_names) or 'none'}. "
        "Extract it with `mmselect extract --features last_token`, or use --dedup exact"
    )


def find_duplicates(
    features: FeatureSet,
    mode: str = "exact",
    *,
    threshold: float = DEFAULT_NEAR_THRESHOLD,
    embedding: str | None = None,
    seed: int = 1234,
) -> DuplicateGuard:
    """Mark the duplicates among the rows of ``features`` (see the module docstring)."""
    if mode not in DEDUP_MODES:
        raise ConfigError(f"dedup must be one of {', '.join(DEDUP_MODES)}, got {mode!r}")
    if not (0.0 < float(threshold) <= 1.0):
        raise ConfigError(f"dedup threshold is a cosine similarity in (0, 1], got {threshold!r}")
    n = features.n
    duplicate_of = np.full(n, "", dtype=object)
    kind = np.full(n, "", dtype=object)
    info: dict[str, Any] = {"mode": mode, "exact": 0}
    if mode == "none":
        return DuplicateGuard(mode, duplicate_of, kind, info)
    keys = features.keys
    first_row: dict[str, int] = {}
    for row, digest in zip(_source_order(features), _content_hashes(keys)[_source_order(features)]):
        earlier = first_row.setdefault(digest, int(row))
        if earlier != row:
            duplicate_of[row] = keys[earlier]
            kind[row] = "exact"
    info["exact"] = int((kind == "exact").sum())
    if mode == "near":
        name = pick_embedding(features, embedding)
        info.update({"embedding": name, "threshold": float(threshold)})
        near = _near_duplicates(features, name, float(threshold), seed, candidates=np.flatnonzero(duplicate_of == ""))
        for row, kept_row in near.items():
            duplicate_of[row] = keys[kept_row]
            kind[row] = "near"
        info["near"] = len(near)
    return DuplicateGuard(mode, duplicate_of, kind, info)


def _near_duplicates(features: FeatureSet, name: str, threshold: float, seed: int, candidates: np.ndarray) -> dict[int, int]:
    """row -> kept row it nearly repeats, for rows among ``candidates`` (task by task)."""
    from .methods.semdedup import SemDeDup, pca_project, read_rows
    from .methods._kmeans import spherical_kmeans

    array = features.array(name)
    tasks = np.asarray(features.tasks, dtype=object)
    positions = np.asarray(features.column("position"), dtype=np.int64) if features.has_column("position") else np.arange(features.n)
    found: dict[int, int] = {}
    shape = SemDeDup(seed=seed)
    for task in sorted(set(tasks[candidates].tolist())):
        rows = candidates[tasks[candidates] == task]
        if len(rows) < 2:
            continue
        n_clusters = shape.resolve_clusters(len(rows))
        if n_clusters > 1:
            sub = read_rows(array, rows, normalize=True)
            if shape.pca_dim is not None and shape.pca_dim < sub.shape[1] and shape.pca_dim < len(rows):
                sub, _ = pca_project(sub, shape.pca_dim, seed=seed, center=False, normalize_input=False, normalize_output=True)
            labels, _, _ = spherical_kmeans(sub, n_clusters, seed=seed, niter=shape.niter, backend=shape.kmeans_backend)
            del sub
        else:
            labels = np.zeros(len(rows), dtype=np.int64)
        order = np.lexsort((positions[rows], labels))  # by cluster, then source position
        sorted_rows, sorted_labels = rows[order], labels[order]
        starts = np.flatnonzero(np.r_[True, np.diff(sorted_labels) != 0])
        for start, stop in zip(starts, np.r_[starts[1:], len(sorted_rows)]):
            found.update(_greedy_within(array, sorted_rows[start:stop], threshold))
    return found


def _greedy_within(array: np.ndarray, rows: np.ndarray, threshold: float) -> dict[int, int]:
    """In the given order, each row is a duplicate of the most similar earlier *kept* row when
    that cosine is >= ``threshold``; otherwise it is kept."""
    from .methods.semdedup import read_rows

    found: dict[int, int] = {}
    if len(rows) < 2:
        return found
    x = read_rows(array, rows, normalize=True)
    kept = np.zeros(len(rows), dtype=bool)
    for start in range(0, len(rows), _BLOCK_ROWS):
        stop = min(len(rows), start + _BLOCK_ROWS)
        sims = x[start:stop] @ x[:stop].T
        for j in range(start, stop):
            earlier = np.flatnonzero(kept[:j])
            if len(earlier):
                best = earlier[int(np.argmax(sims[j - start, earlier]))]
                if sims[j - start, best] >= threshold - 1e-6:
                    found[int(rows[j])] = int(rows[best])
                    continue
            kept[j] = True
    return found


__all__ = ["DEDUP_MODES", "DEFAULT_NEAR_THRESHOLD", "DuplicateGuard", "find_duplicates"]
