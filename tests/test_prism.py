"""PRISM: the O(N d) redundancy equals the explicit correlation matrix; budgets and text-only records."""

import json

import numpy as np
import pytest

from mmselect.errors import BudgetError, NonFiniteFeaturesError
from mmselect.features.store import FeatureSet
from mmselect.methods import get_method
from mmselect.methods.prism import _proportional_quotas


def _explicit_redundancy(f, center):
    """R_i = mean over j != i of the centred correlation, from the full N x N matrix."""
    f = np.asarray(f, dtype=np.float64)
    if center == "dataset_mean":
        c = f - f.mean(axis=0)
        rho = (c @ c.T) / np.outer(np.linalg.norm(c, axis=1), np.linalg.norm(c, axis=1))
    else:
        rho = np.corrcoef(f)  # Pearson between the feature vectors
    np.fill_diagonal(rho, 0.0)
    return rho.sum(axis=1) / (len(f) - 1)


def _features(n=120, d=24, text_only=(), tasks=None, seed=0, dtype=np.float16):
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, d)) + rng.normal(size=d) * 2 + rng.normal(size=(n, 1))
    f = f.astype(dtype)
    n_images = np.ones(n, dtype=int)
    n_images[list(text_only)] = 0
    return f, FeatureSet.from_arrays(n=n, tasks=tasks, columns={"n_images": n_images}, arrays={"visual_mean": f})


@pytest.mark.parametrize("center", ["dataset_mean", "per_vector"])
def test_linear_time_score_equals_explicit_matrix(center):
    f, features = _features()
    result = get_method("prism", center=center, block_rows=17).select(features, 30)
    expected = _explicit_redundancy(f, center)
    np.testing.assert_allclose(result.values["redundancy"], expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(result.scores, -expected, rtol=1e-9, atol=1e-12)
    kept = np.argsort(expected, kind="stable")[:30]  # the lowest redundancy
    np.testing.assert_array_equal(result.indices, np.sort(kept))


def test_text_only_rows_are_ignored_kept_and_counted():
    text = [3, 10, 50, 51, 99]
    f, features = _features(text_only=text)
    f_nan = np.array(f)
    f_nan[text] = np.nan  # text-only rows carry no visual feature
    features = features.with_arrays(visual_mean=f_nan)
    result = get_method("prism").select(features, 25)
    image = np.setdiff1d(np.arange(120), text)
    expected = _explicit_redundancy(f[image], "dataset_mean")
    np.testing.assert_allclose(result.values["redundancy"][image], expected, rtol=1e-9)
    assert np.isnan(result.values["redundancy"][text]).all()
    assert result.n_selected == 25
    assert result.selected[text].all() and np.isinf(result.scores[text]).all()
    np.testing.assert_array_equal(np.flatnonzero(result.selected[image]), np.sort(np.argsort(expected, kind="stable")[:20]))
    with pytest.raises(BudgetError, match="text-only"):
        get_method("prism").select(features, 4)


def test_text_only_ranked_last_when_not_kept():
    text = [0, 1, 2]
    _, features = _features(n=20, text_only=text)
    result = get_method("prism", keep_text_only=False).select(features, 10)
    assert not result.selected[text].any() and np.isnan(result.scores[text]).all()
    everything_but_one = get_method("prism", keep_text_only=False).select(features, 19)
    assert everything_but_one.selected[:2].all() and not everything_but_one.selected[2]


def test_per_task_scope():
    tasks = np.array(["a"] * 60 + ["b"] * 30 + ["c"] * 30)
    text = [5, 70]
    f, features = _features(tasks=tasks, text_only=text)
    result = get_method("prism", scope="per_task", center="per_vector").select(features, 32)
    assert result.n_selected == 32 and result.selected[text].all()
    quotas = result.info["task_quotas"]
    json.dumps(result.info)
    image_counts = {"a": 59, "b": 29, "c": 30}
    assert sum(quotas.values()) == 30
    for task, count in image_counts.items():  # largest remainder: floor or ceil of the exact share
        assert abs(quotas[task] - 30 * count / 118) < 1
    for task in "abc":
        rows = np.flatnonzero((tasks == task) & ~np.isin(np.arange(120), text))
        expected = _explicit_redundancy(f[rows], "per_vector")
        np.testing.assert_allclose(result.values["redundancy"][rows], expected, rtol=1e-9)
        chosen = rows[np.sort(np.argsort(expected, kind="stable")[: quotas[task]])]
        np.testing.assert_array_equal(np.flatnonzero(result.selected & (tasks == task) & ~np.isin(np.arange(120), text)), chosen)


def test_proportional_quotas_are_exact_and_capped():
    rng = np.random.default_rng(0)
    for _ in range(50):
        sizes = {str(i): int(s) for i, s in enumerate(rng.integers(0, 40, rng.integers(1, 8)))}
        budget = int(rng.integers(0, sum(sizes.values()) + 1))
        quotas = _proportional_quotas(sizes, budget)
        assert sum(quotas.values()) == budget
        assert all(0 <= quotas[t] <= sizes[t] for t in sizes)
        total = sum(sizes.values())
        if total:
            assert all(abs(quotas[t] - budget * sizes[t] / total) < 1 for t in sizes)


def test_streams_memory_mapped_float16(tmp_path):
    _, features = _features(n=300, d=40, text_only=[7])
    loaded = FeatureSet.load(features.save(tmp_path / "feat"))
    assert isinstance(loaded.array("visual_mean"), np.memmap)
    a = get_method("prism", block_rows=64).select(loaded, 100)
    b = get_method("prism", block_rows=100000).select(features, 100)
    np.testing.assert_allclose(a.values["redundancy"], b.values["redundancy"], rtol=1e-12, equal_nan=True)
    np.testing.assert_array_equal(a.selected, b.selected)


def test_degenerate_vector_and_bad_rows():
    f, features = _features(n=30, d=8, dtype=np.float64)
    f[4] = f.mean(axis=0) * 0 + 3.0  # constant vector: zero after per-vector centring
    features = features.with_arrays(visual_mean=f)
    result = get_method("prism", center="per_vector").select(features, 10)
    assert result.values["redundancy"][4] == 0.0  # correlation 0 with everyone
    others = np.setdiff1d(np.arange(30), [4])
    rho = np.corrcoef(f[others])
    np.fill_diagonal(rho, 0)
    np.testing.assert_allclose(result.values["redundancy"][others], rho.sum(1) / 29, rtol=1e-9)
    f[9, 2] = np.inf
    with pytest.raises(NonFiniteFeaturesError, match="9"):
        get_method("prism").select(features.with_arrays(visual_mean=f), 10)
