"""The duplicate guard: records that repeat an earlier record are set aside before any method selects.

``exact``: records with the same content hash (the second half of the sample key, a hash of the
whole record) keep their first occurrence by source position. Two records that differ only in a
field such as ``id`` have different hashes; ``near`` catches them (their embeddings are equal).

``near``: additionally, inside each task, a record whose embedding has cosine similarity of at
least ``threshold`` with an *earlier kept* record of the same task is a duplicate of it. The cosine
is taken between *centred* unit embeddings (the mean unit row of the whole set subtracted first):
a language model's hidden states share a large common direction, so raw cosines between unrelated
records are often above 0.9 and would mark nearly everything as a duplicate. Candidates
are found with SemDeDup's machinery and defaults (rows L2-normalised, projected on their top 128
uncentred singular directions when wider, spherical k-means with about 66 rows per cluster, then
exact full-dimension cosines inside each cluster and task), so near duplicates that k-means puts
in different clusters are missed, as in SemDeDup itself. The cost is that of one SemDeDup pass.

A guard never looks at scores or labels, so it is the same for every method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
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


def guard_features(mode: str, embedding: str | None, names: list[str]) -> list[str]:
    """Features to extract besides ``names`` so that the guard has its embedding."""
    if mode != "near":
        return []
    if embedding is not None:
        return [] if embedding in names else [embedding]
    return [] if any(name in names for name in NEAR_EMBEDDINGS) else [NEAR_EMBEDDINGS[0]]


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
    """row -> kept row it nearly repeats, for rows among ``candidates``. SemDeDup's partition
    (its defaults: PCA to 128-d, K = n / 66, k-means trained on at most 100,000 rows) over all
    rows, then every (cluster, task) group of candidates in source order."""
    from .methods.semdedup import SemDeDup
    from .numerics import pca_project, spherical_kmeans

    array = features.array(name)
    n, d = array.shape
    shape = SemDeDup(seed=seed)
    n_clusters = shape.resolve_clusters(n)
    if n_clusters > 1:
        source = array
        if shape.pca_dim is not None and shape.pca_dim < d and shape.pca_dim < n:
            source, _ = pca_project(array, shape.pca_dim, seed=seed, center=True, normalize_input=True, normalize_output=True)
        per_centroid = None
        if shape.kmeans_max_points is not None and n > shape.kmeans_max_points:
            per_centroid = max(1, math.ceil(shape.kmeans_max_points / n_clusters))
        labels, _, _ = spherical_kmeans(source, n_clusters, seed=seed, niter=shape.niter, backend=shape.kmeans_backend,
                                        max_points_per_centroid=per_centroid)
        del source
    else:
        labels = np.zeros(n, dtype=np.int64)
    _, task_ids = np.unique(np.asarray(features.tasks, dtype=object).astype(str), return_inverse=True)
    positions = np.asarray(features.column("position"), dtype=np.int64) if features.has_column("position") else np.arange(n)
    rows = np.asarray(candidates)
    order = np.lexsort((positions[rows], task_ids[rows], labels[rows]))  # by cluster, task, then position
    rows = rows[order]
    group = labels[rows].astype(np.int64) * (int(task_ids.max()) + 1) + task_ids[rows]
    starts = np.flatnonzero(np.r_[True, np.diff(group) != 0])
    mean = _mean_unit_row(array)
    stops = np.r_[starts[1:], len(rows)]
    found: dict[int, int] = {}
    g = 0
    while g < len(starts):  # groups are read together, about _BLOCK_ROWS rows at a time
        h = g + 1
        while h < len(starts) and stops[h] - starts[g] <= _BLOCK_ROWS:
            h += 1
        first = starts[g]
        x = _centred_unit_rows(array, rows[first:stops[h - 1]], mean)
        for start, stop in zip(starts[g:h], stops[g:h]):
            found.update(_greedy_within(x[start - first:stop - first], rows[start:stop], threshold))
        g = h
    return found


def _centred_unit_rows(array: np.ndarray, rows: np.ndarray, mean: np.ndarray) -> np.ndarray:
    from .numerics import l2_normalize, read_rows

    return l2_normalize(read_rows(array, rows, normalize=True) - mean)


def _mean_unit_row(array: np.ndarray, block_rows: int = 16_384) -> np.ndarray:
    """Mean of the L2-normalised rows, read block by block."""
    from .numerics import read_rows

    total = np.zeros(array.shape[1], dtype=np.float64)
    for start in range(0, len(array), block_rows):
        total += read_rows(array, slice(start, min(len(array), start + block_rows)), normalize=True).sum(0)
    return (total / max(1, len(array))).astype(np.float32)


def _greedy_within(x: np.ndarray, rows: np.ndarray, threshold: float) -> dict[int, int]:
    """In the given order, each row is a duplicate of the most similar earlier *kept* row when
    that cosine is >= ``threshold``; otherwise it is kept. ``x``: the centred unit rows of ``rows``."""
    found: dict[int, int] = {}
    if len(rows) < 2:
        return found
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


def pool_features(features: FeatureSet, guard: DuplicateGuard, arrays: list[str], scratch: Path) -> FeatureSet:
    """The rows the guard kept, with the ``arrays`` a method reads. A memory-mapped array is copied
    block by block into a memory-mapped file under ``scratch`` (bounded memory at any scale)."""
    rows = np.flatnonzero(guard.kept)
    if len(rows) == features.n:
        return features
    columns = {name: features.column(name)[rows] for name in features.column_names}
    pooled = {}
    for name in arrays:
        if not features.has_array(name):
            continue  # the method reports what is missing
        source = features.array(name)
        if isinstance(source, np.memmap) or getattr(source, "filename", None):
            scratch.mkdir(parents=True, exist_ok=True)
            target = np.lib.format.open_memmap(scratch / f"{name}.npy", mode="w+", dtype=source.dtype,
                                               shape=(len(rows), source.shape[1]))
            for start in range(0, len(rows), 16_384):
                block = rows[start:start + 16_384]
                target[start:start + len(block)] = source[block]
            target.flush()
            pooled[name] = np.load(scratch / f"{name}.npy", mmap_mode="r")
        else:
            pooled[name] = np.asarray(source[rows])
    return FeatureSet(columns, pooled, features.manifest, root=features.root)


def expand_to_all_rows(result, guard: DuplicateGuard):
    """A :class:`SelectionResult` over the kept rows, as one over every row: duplicates are not
    selected, have no score (NaN) and carry ``duplicate_of``."""
    from .methods.base import SelectionResult

    kept = np.flatnonzero(guard.kept)
    n = len(guard.kept)
    if len(kept) == n:
        values = dict(result.values)
    else:
        selected = np.zeros(n, dtype=bool)
        selected[kept] = result.selected
        scores = np.full(n, np.nan)
        scores[kept] = result.scores
        values = {}
        for name, column in result.values.items():
            column = np.asarray(column)
            if column.ndim != 1 or len(column) != len(kept):
                continue
            if column.dtype.kind in "fc":
                full = np.full(n, np.nan, dtype=column.dtype)
            elif column.dtype.kind in "iub":
                full = np.full(n, -1 if column.dtype.kind == "i" else 0, dtype=column.dtype)
            else:
                full = np.full(n, None, dtype=object)
            full[kept] = column
            values[name] = full
        order = None if result.order is None else kept[np.asarray(result.order, dtype=np.int64)]
        result = SelectionResult(selected=selected, scores=scores, values=values, order=order, info=result.info)
    if guard.mode != "none":
        values["duplicate_of"] = np.asarray([v or None for v in guard.duplicate_of], dtype=object)
        result.values = values
    return result


__all__ = ["DEDUP_MODES", "DEFAULT_NEAR_THRESHOLD", "DuplicateGuard", "expand_to_all_rows", "find_duplicates", "guard_features",
           "pool_features"]
