"""The report's summaries of a selection: rejection reasons grouped, composition before and after,
score histograms, cluster sizes and timings. Sizes stay bounded whatever the number of records."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from .sources import Output, Records, feature_manifest

HISTOGRAM_BINS = 40


def reason_group(reason: str) -> str:
    """A rejection reason without its particulars (paths, quoted values, numbers), for grouping."""
    head = str(reason).split(":")[0]
    head = re.sub(r"'[^']*'|\"[^\"]*\"|\S*/\S*", "…", head)
    head = re.sub(r"\b\d+\b", "N", head)
    return head.strip() or "unknown"


def rejected_groups(rejected: list[dict[str, Any]], examples: int = 3) -> list[dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {}
    for item in rejected:
        group = groups.setdefault(reason_group(item.get("reason", "")), {"count": 0, "examples": []})
        group["count"] += 1
        if len(group["examples"]) < examples:
            group["examples"].append(item)
    rows = [{"reason": name, **values} for name, values in groups.items()]
    return sorted(rows, key=lambda r: (-r["count"], r["reason"]))


@dataclass
class Composition:
    """Records per category, among all candidates and among the selected."""

    title: str
    categories: list[str]
    before: list[int]
    after: list[int]


def task_composition(output: Output, limit: int = 30) -> Composition:
    names, inverse, selected = output.task_names, output.task_codes, output.selected
    before = np.bincount(inverse, minlength=len(names))
    after = np.bincount(inverse[selected], minlength=len(names))
    order = np.argsort(-before, kind="stable")
    categories = [str(names[i]) for i in order[:limit]]
    b, a = before[order[:limit]].tolist(), after[order[:limit]].tolist()
    if len(order) > limit:  # many tasks: the long tail as one bar
        categories.append(f"{len(order) - limit} other tasks")
        b.append(int(before[order[limit:]].sum()))
        a.append(int(after[order[limit:]].sum()))
    return Composition("task", categories, [int(v) for v in b], [int(v) for v in a])


def binned_composition(title: str, values: np.ndarray, selected: np.ndarray, edges: list[int]) -> Composition:
    """Counts in [edges[i], edges[i+1]) with the last bin open-ended."""
    values = np.asarray(values, dtype=np.float64)
    index = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="right") - 1
    index = np.clip(index, 0, len(edges) - 1)
    before = np.bincount(index, minlength=len(edges))
    after = np.bincount(index[selected], minlength=len(edges))
    labels = []
    for i, low in enumerate(edges):
        if i == len(edges) - 1:
            labels.append(f"{low:,}+")
        elif edges[i + 1] - low == 1:
            labels.append(f"{low:,}")
        else:
            labels.append(f"{low:,}–{edges[i + 1] - 1:,}")
    shown = [i for i in range(len(edges)) if before[i]] or [0]  # empty bins say nothing
    return Composition(title, [labels[i] for i in shown], before[shown].tolist(), after[shown].tolist())


COMPOSITION_EDGES = {
    "rounds": ("turns", [0, 1, 2, 3, 4, 5, 8, 16]),
    "n_images": ("images", [0, 1, 2, 3, 5]),
    "n_text_chars": ("characters", [0, 100, 200, 400, 800, 1600, 3200, 6400]),
}
COMPOSITION_TITLES = {
    "task": "task",
    "turns": "number of turns (question–answer rounds)",
    "images": "images per record",
    "characters": "text length (characters of all turns)",
}


def record_attributes(output: Output, featureset, records: Records) -> dict[str, np.ndarray]:
    """rounds / n_images / n_text_chars per row of the selection table, from the features or the records."""
    keys = output.columns["key"]
    if featureset is not None and all(featureset.has_column(c) for c in COMPOSITION_EDGES):
        feature_keys = np.asarray(featureset.keys, dtype=object)
        if len(feature_keys) == len(keys) and np.array_equal(feature_keys, keys):
            return {c: np.asarray(featureset.column(c)) for c in COMPOSITION_EDGES}
        order = np.argsort(feature_keys)
        where = np.searchsorted(feature_keys[order], keys)
        where = np.clip(where, 0, len(order) - 1)
        if np.array_equal(feature_keys[order][where], keys):
            return {c: np.asarray(featureset.column(c))[order][where] for c in COMPOSITION_EDGES}
    if records.dataset is not None:
        by_key = records.by_key()
        samples = [by_key.get(k) for k in keys]
        if all(s is not None for s in samples):
            return {
                "rounds": np.array([s.rounds for s in samples]),
                "n_images": np.array([s.n_images for s in samples]),
                "n_text_chars": np.array([s.text_chars for s in samples]),
            }
    return {}


@dataclass
class Histogram:
    name: str
    edges: np.ndarray
    kept: np.ndarray
    dropped: np.ndarray
    missing_kept: int
    missing_dropped: int


def histogram(name: str, values: np.ndarray, selected: np.ndarray, bins: int = HISTOGRAM_BINS) -> Histogram:
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    if finite.any():
        low, high = float(values[finite].min()), float(values[finite].max())
        if high <= low:
            low, high = low - 0.5, high + 0.5
        edges = np.linspace(low, high, bins + 1)
    else:
        edges = np.array([0.0, 1.0])
    kept, _ = np.histogram(values[finite & selected], bins=edges)
    dropped, _ = np.histogram(values[finite & ~selected], bins=edges)
    return Histogram(
        name, edges, kept, dropped, int((~finite & selected).sum()), int((~finite & ~selected).sum())
    )


def cluster_summary(output: Output, top: int = 15) -> dict[str, Any] | None:
    """Sizes of the clusters in the selection table's ``cluster`` column, and how many each kept."""
    if "cluster" not in output.columns:
        return None
    clusters = np.asarray(output.columns["cluster"])
    if clusters.dtype.kind not in "iu":
        return None
    valid = clusters >= 0
    if not valid.any():
        return None
    names, inverse = np.unique(clusters[valid], return_inverse=True)
    sizes = np.bincount(inverse)
    kept = np.bincount(inverse, weights=output.selected[valid].astype(np.float64)).astype(int)
    tasks = output.task_codes[valid]
    order = np.argsort(-sizes, kind="stable")[:top]
    _, first_row = np.unique(inverse, return_index=True)
    largest = [
        {"cluster": int(names[i]), "task": output.task_names[tasks[first_row[i]]], "records": int(sizes[i]), "selected": int(kept[i])}
        for i in order
    ]
    size_counts = np.bincount(sizes)
    return {
        "clusters": len(names),
        "singletons": int((sizes == 1).sum()),
        "median size": float(np.median(sizes)),
        "largest": int(sizes.max()),
        "clusters with a selected record": int((kept > 0).sum()),
        "largest clusters": largest,
        "clusters by size": [{"size": s, "clusters": int(c)} for s, c in enumerate(size_counts) if c][:20],
    }


def timings(output: Output, featureset=None) -> dict[str, float]:
    times = {}
    if output.manifest.get("seconds") is not None:
        times["selection"] = float(output.manifest["seconds"])
    features = featureset.manifest if featureset is not None else feature_manifest(output)
    if features.get("seconds") is not None:
        times["feature extraction"] = float(features["seconds"])
    return times
