"""The report's 2-D map: two principal components of a sample of the method's embedding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .sources import Output

MAP_POINTS = 3000
# Preferred embedding for the 2-D map, when the features directory holds several arrays.
MAP_ARRAYS = ("last_token", "coincide", "visual_mean", "clip_image", "clip_text")


@dataclass
class Projection:
    array: str
    x: np.ndarray
    y: np.ndarray
    selected: np.ndarray
    n_total: int
    explained: tuple[float, float]


def _method_arrays(manifest: dict[str, Any]) -> list[str]:
    """The arrays the run's method reads (its embedding), first to last."""
    try:
        from ..methods import get_method

        method = get_method(manifest.get("method"), **(manifest.get("params") or {}))
        return [need.name for need in method.feature_needs() if need.kind == "array"]
    except Exception:  # noqa: BLE001 - an unknown method or another version's parameters: the usual names
        return []


def projection(output: Output, featureset, points: int = MAP_POINTS, seed: int = 0) -> Projection | None:
    """First two principal components (scikit-learn's randomized PCA) of a sample of the method's embedding."""
    if featureset is None or not featureset.array_names:
        return None
    names = featureset.array_names
    preferred = _method_arrays(output.manifest) + list(MAP_ARRAYS)
    name = next((n for n in preferred if n in names), names[0])
    matrix = featureset.array(name)
    feature_keys = np.asarray(featureset.keys, dtype=object)
    keys = output.columns["key"]
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(keys), size=min(points, len(keys)), replace=False))
    if len(feature_keys) == len(keys) and np.array_equal(feature_keys, keys):
        feature_rows = rows
    else:
        order = np.argsort(feature_keys)
        where = np.clip(np.searchsorted(feature_keys[order], keys[rows]), 0, len(order) - 1)
        found = feature_keys[order][where] == keys[rows]
        rows, feature_rows = rows[found], order[where][found]
    if len(rows) < 3:
        return None
    sample = np.asarray(matrix[np.sort(feature_rows)], dtype=np.float64)[np.argsort(np.argsort(feature_rows))]
    finite = np.isfinite(sample).all(axis=1)
    sample, rows = sample[finite], rows[finite]
    if len(rows) < 3:
        return None
    from sklearn.decomposition import PCA

    components = min(2, sample.shape[1])
    pca = PCA(n_components=components, svd_solver="randomized", random_state=seed)
    coords = pca.fit_transform(sample)
    if components < 2:
        coords = np.column_stack([coords, np.zeros(len(coords))])
    ratios = np.nan_to_num(pca.explained_variance_ratio_).tolist() + [0.0]
    return Projection(name, coords[:, 0], coords[:, 1], output.selected[rows], len(keys), (ratios[0], ratios[1]))
