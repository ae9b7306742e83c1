"""COINCIDE: parity with the official selection stage, budget allocation, greedy MMD, k-means path."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from mmselect.errors import DataFormatError, NonFiniteFeaturesError
from mmselect.features.store import FeatureSet
from mmselect.methods.coincide import kernels as coincide_module
from mmselect.methods.coincide import clusters as coincide_clusters
from mmselect.methods import get_method
from mmselect.numerics import spherical_kmeans
from mmselect.methods.coincide import (
    _Greedy,
    allocate,
    gaussian_kernel,
    greedy_mmd,
    transferability,
)

CASE1 = Path(__file__).parent / "fixtures" / "coincide_official" / "case1"


def _case1():
    load = lambda name: np.load(CASE1 / f"{name}.npy")
    return load("embeddings"), load("labels"), load("centroids"), load("official_selected"), load("official_transfer")


def _given(emb, labels, centroids, **columns):
    return FeatureSet.from_arrays(
        n=len(emb),
        columns={"cluster": labels, **columns},
        arrays={"coincide_embed": emb},
        aux={"cluster_centroids": centroids},
    )


def _text_cols(layers, half):
    return (np.arange(layers)[:, None] * 2 * half + half + np.arange(half)[None, :]).ravel()


# --- parity with the official code --------------------------------------------------------------
def test_official_parity_case1():
    emb, labels, centroids, official, official_transfer = _case1()
    result = get_method("coincide").select(_given(emb, labels, centroids), 0.2)
    assert result.n_selected == len(official) == 300
    np.testing.assert_array_equal(result.order, official)  # same picks, same order
    np.testing.assert_array_equal(result.indices, np.sort(official))
    # transferability: text halves of the 5 x [32 | 32] centroids, cosines > 0.9 masked
    per_cluster = np.full(len(centroids), np.nan)
    per_cluster[labels] = result.values["cluster_transferability"]
    np.testing.assert_allclose(per_cluster, official_transfer, rtol=0, atol=1e-7)  # official: float32 cosines
    np.testing.assert_allclose(transferability(centroids[:, _text_cols(5, 32)]), official_transfer, rtol=0, atol=1e-7)
    assert result.info["allocation"]["topup"] == 0
    assert np.isnan(result.scores).all()
    assert (result.values["pick_rank"][official] == np.arange(300)).all()


def test_parity_with_arbitrary_ids_small_buffers_and_no_kernel_cache(monkeypatch):
    """Ids that are not centroid rows are mapped in ascending order; regrouped reads and
    recomputed kernels (cache off) give the same selection."""
    emb, labels, centroids, official, _ = _case1()
    monkeypatch.setattr(coincide_module, "_BUFFER_BYTES", 100 * emb.shape[1] * 8)
    monkeypatch.setattr(coincide_module, "_CACHE_BYTES", 0)
    ids = labels * 7 - 30  # negative and sparse ids, same ascending order as the rows
    result = get_method("coincide").select(_given(emb, ids, centroids), 0.2)
    np.testing.assert_array_equal(result.order, official)
    assert set(np.unique(result.values["cluster"])) == set(np.unique(ids))


def test_memory_mapped_float16_features(tmp_path):
    emb, labels, centroids, _, _ = _case1()
    features = _given(emb.astype(np.float16), labels, centroids)
    in_memory = get_method("coincide").select(features, 0.2)
    loaded = FeatureSet.load(features.save(tmp_path / "feat"))
    assert isinstance(loaded.array("coincide_embed"), np.memmap)
    on_disk = get_method("coincide").select(loaded, 0.2)
    np.testing.assert_array_equal(on_disk.order, in_memory.order)


# --- allocation ------------------------------------------------------------------------------------
def _official_loop(score, sizes, budget, tau):
    """The official loop, written the way cluster_wise_prune.py writes it."""
    ratio = np.exp(score / tau) / np.sum(np.exp(score / tau))
    order = np.argsort(ratio)[::-1]
    ratio, score = ratio[order], score[order]
    remaining, taken = budget, np.zeros(len(sizes), dtype=int)
    for idx, c in enumerate(order):
        m = round(remaining * ratio[idx])
        taken[c] = min(m, sizes[c])
        remaining -= taken[c]
        ratio[idx + 1 :] = np.exp(score[idx + 1 :] / tau) / np.sum(np.exp(score[idx + 1 :] / tau))
    return order, taken


def test_allocation_matches_official_loop_and_meets_the_budget_exactly():
    rng = np.random.default_rng(3)
    hit_topup = 0
    for trial in range(60):
        n_clusters = int(rng.integers(1, 40))
        sizes = rng.integers(1, 60, n_clusters)
        score = rng.normal(0.1, 0.05, n_clusters) / rng.uniform(0.2, 1.0, n_clusters)
        budget = int(rng.integers(0, sizes.sum() + 1))
        alloc = allocate(score, sizes, budget, 0.1)
        order, official = _official_loop(score, sizes, budget, 0.1)
        np.testing.assert_array_equal(alloc.visit, order)
        np.testing.assert_array_equal(alloc.first, official)
        total = alloc.first + alloc.extra
        assert total.sum() == budget
        assert (total <= sizes).all() and (total >= 0).all()
        hit_topup += alloc.extra.sum() > 0
    assert hit_topup > 0  # the official loop fell short in some trials and the top-up filled it


def test_topup_when_the_last_clusters_are_too_small():
    # A (share .5, 100 rows), B (.3, 100), C (.2, 1 row): the official loop gives 50 + 30 + 1 = 81 of 100
    score = np.log(np.array([0.5, 0.3, 0.2])) * 0.1
    alloc = allocate(score, np.array([100, 100, 1]), 100, 0.1)
    assert list(alloc.first) == [50, 30, 1] and alloc.whole[2]
    assert (alloc.first + alloc.extra).sum() == 100
    assert alloc.extra[2] == 0 and alloc.extra[0] > alloc.extra[1] > 0  # shared by share


def test_topup_through_the_method_selects_exactly_k():
    rng = np.random.default_rng(0)
    # many singleton clusters with a low share are visited last and cannot absorb the roll-over
    big = rng.normal(size=(4, 40))
    x = np.concatenate([big[i] + 0.3 * rng.normal(size=(50, 40)) for i in range(4)] + [rng.normal(size=(30, 40))])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = np.r_[np.repeat(np.arange(4), 50), 4 + np.arange(30)]
    centroids = np.stack([x[labels == c].mean(0) for c in range(34)])
    features = _given(x.astype(np.float32), labels, centroids)
    method = get_method("coincide", n_layers=2, temperature=0.05)
    for budget in (40, 120, 200, 229):
        result = method.select(features, budget)
        assert result.n_selected == budget == len(np.unique(result.order))
        alloc = result.info["allocation"]
        assert alloc["first_pass"] + alloc["topup"] == budget
    assert alloc["topup"] > 0


# --- greedy MMD ------------------------------------------------------------------------------------
def _brute_force_greedy(kernel, m):
    n = len(kernel)
    chosen = []
    for _ in range(m):
        best, best_value = None, np.inf
        for c in range(n):
            if c in chosen:
                continue
            s = chosen + [c]
            value = kernel.mean() + kernel[np.ix_(s, s)].mean() - 2 * kernel[:, s].mean()
            if value < best_value:  # strict: ties keep the lowest index
                best, best_value = c, value
        chosen.append(best)
    return np.array(chosen)


def test_incremental_greedy_equals_brute_force():
    import torch

    rng = np.random.default_rng(1)
    for trial in range(12):
        n = int(rng.integers(2, 30))
        x = rng.normal(size=(n, 8)) * rng.uniform(0.2, 1.0)
        kernel = gaussian_kernel(torch.from_numpy(x), 1.0).numpy()
        m = int(rng.integers(1, n + 1))
        np.testing.assert_array_equal(greedy_mmd(kernel, m), _brute_force_greedy(kernel, m))


def test_greedy_continuation_equals_one_run():
    import torch

    x = np.random.default_rng(2).normal(size=(25, 6))
    kernel = gaussian_kernel(torch.from_numpy(x), 1.0).numpy()
    state = _Greedy(kernel, kernel.sum(0))
    np.testing.assert_array_equal(np.r_[state.advance(4), state.advance(7)], greedy_mmd(kernel, 11))


def test_large_cluster_kernel_in_float32_blocks(monkeypatch):
    import torch

    x = np.random.default_rng(4).normal(size=(50, 12)) / 3
    exact = gaussian_kernel(torch.from_numpy(x), 1.0).numpy()
    monkeypatch.setattr(coincide_module, "_F64_KERNEL_ROWS", 10)
    blocked = coincide_module._kernel_of(x, 1.0, block_rows=16)
    assert blocked.dtype == np.float32
    np.testing.assert_allclose(blocked, exact, atol=1e-6)


# --- k-means path ---------------------------------------------------------------------------------
def _synthetic(n=1200, layers=2, half=16, n_concepts=12, seed=0, text_fraction=0.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_concepts, layers, 2, half))
    x = centres[rng.integers(0, n_concepts, n)] + 0.7 * rng.normal(size=(n, layers, 2, half))
    x = np.tanh(x)
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    n_images = (rng.random(n) >= text_fraction).astype(int)
    x[n_images == 0, :, 0, :] = 0  # text-only records: no visual halves
    x = (x / np.sqrt(2 * layers)).reshape(n, -1)
    return x.astype(np.float16), n_images


@pytest.mark.parametrize("backend", ["sklearn", "faiss"])
def test_kmeans_path_selects_k_and_is_deterministic(backend):
    x, _ = _synthetic()
    features = FeatureSet.from_arrays(n=len(x), arrays={"coincide_embed": x})
    method = get_method("coincide", n_layers=2, backend=backend, seed=7, kmeans_iters=10)
    first = method.select(features, 0.15)
    again = method.select(features, 0.15)
    assert first.n_selected == 180
    np.testing.assert_array_equal(first.order, again.order)
    clusters = first.info["clusters"]
    assert clusters["backend"].startswith(backend) and clusters["seed"] == 7
    assert clusters["n_clusters"] == round(1200 / 67)
    assert len(np.unique(first.values["cluster"])) > 1
    json.dumps(first.info)  # the manifest must be able to record it


def test_auto_backend_falls_back_to_sklearn_without_faiss(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` now raises ImportError
    x, _ = _synthetic(n=400)
    features = FeatureSet.from_arrays(n=len(x), arrays={"coincide_embed": x})
    result = get_method("coincide", n_layers=2, kmeans_iters=5).select(features, 40)
    assert result.n_selected == 40
    assert result.info["clusters"]["backend"].startswith("sklearn")


def test_kmeans_helper_reduction_and_sampling():
    x, _ = _synthetic(n=900, layers=4, half=32)
    labels, centroids, info = spherical_kmeans(x, 12, seed=3, niter=8, reduce_dim=16, max_points_per_centroid=30)
    assert labels.shape == (900,) and centroids.shape == (12, 256)
    np.testing.assert_allclose(np.linalg.norm(centroids[np.bincount(labels, minlength=12) > 0], axis=1), 1, atol=1e-5)
    assert info["dim"] == 16 and info["n_train"] == 360 and info["reduction"]["from_dim"] == 256
    # the recomputed centroids are the normalised member means
    unit = x.astype(np.float64) / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    c0 = unit[labels == labels[0]].mean(0)
    np.testing.assert_allclose(centroids[labels[0]], c0 / np.linalg.norm(c0), atol=1e-5)


@pytest.mark.parametrize("params", [
    {"text_only": "as_is", "kmeans_dim": None, "kmeans_points_per_centroid": None},  # the official behaviour
    {},
])
def test_sixty_records_select_the_budget(params):
    # K = round(60 / 67) = 1: the one centroid has no other cosine to count (0 / 0 officially),
    # which used to reach the budget split as NaN.
    x, n_images = _synthetic(n=60, text_fraction=0.2)
    features = FeatureSet.from_arrays(n=len(x), columns={"n_images": n_images}, arrays={"coincide_embed": x})
    method = get_method("coincide", n_layers=2, **params).fit(features)
    for k in (1, 6, 30, 60):
        result = method.select_budget(k)
        assert result.n_selected == k
        assert np.isfinite(result.values["cluster_share"]).all()


def test_transferability_without_a_cosine_to_count_is_zero():
    # one centroid: only its own cosine, which is above the threshold; two near-duplicates: each
    # sees only cosines above 0.9, while the third centroid counts the two (both 0)
    np.testing.assert_array_equal(transferability(np.array([[1.0, 2.0]])), [0.0])
    c = np.array([[1.0, 0.0, 0.0], [1.0, 0.01, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(transferability(c, 0.9), [0.0, 0.0, 0.0], atol=1e-12)
    c[2] = [0.5, 0.0, 1.0]  # cosine 0.5 / sqrt(1.25) with the first
    s = transferability(c, 0.9)
    cos_02 = 0.5 / np.sqrt(1.25)
    cos_12 = c[1] @ c[2] / np.linalg.norm(c[1]) / np.linalg.norm(c[2])
    np.testing.assert_allclose(s, [cos_02, cos_12, (cos_02 + cos_12) / 2], rtol=1e-12)


def test_text_only_records_are_clustered_apart():
    x, n_images = _synthetic(text_fraction=0.2, seed=5)
    features = FeatureSet.from_arrays(n=len(x), columns={"n_images": n_images}, arrays={"coincide_embed": x})
    result = get_method("coincide", n_layers=2, kmeans_iters=10).select(features, 0.2)
    assert result.n_selected == 240
    cluster = result.values["cluster"]
    text_clusters, image_clusters = set(cluster[n_images == 0]), set(cluster[n_images == 1])
    assert text_clusters and image_clusters and not (text_clusters & image_clusters)
    groups = {run["group"]: run["n_clusters"] for run in result.info["clusters"]["runs"]}
    assert groups["text_only"] == round(18 * (n_images == 0).sum() / len(x))
    assert groups["text_only"] + groups["image"] == 18
    as_is = get_method("coincide", n_layers=2, kmeans_iters=10, text_only="as_is").select(features, 0.2)
    assert as_is.n_selected == 240 and [r["group"] for r in as_is.info["clusters"]["runs"]] == ["all"]


def test_bad_inputs():
    x, _ = _synthetic(n=200)
    with pytest.raises(DataFormatError):
        get_method("coincide", n_layers=3).select(FeatureSet.from_arrays(n=200, arrays={"coincide_embed": x}), 0.2)
    x = x.copy()
    x[17, 3] = np.nan
    features = FeatureSet.from_arrays(n=200, arrays={"coincide_embed": x})
    for kmeans_dim in (None, 8, "none"):  # full width, the projected k-means input, None from the CLI
        with pytest.raises(NonFiniteFeaturesError, match="17"):
            get_method("coincide", n_layers=2, kmeans_dim=kmeans_dim).select(features, 0.2)


def test_layers_from_manifest_and_transferability_of_computed_centroids():
    x, _ = _synthetic(n=600, layers=2, half=16)  # width 64: not divisible by 2 * 5
    manifest = {"extraction": {"features": {"coincide": {"points": [["o_proj", 0], ["o_proj", 1]]}}}}
    features = FeatureSet.from_arrays(n=len(x), arrays={"coincide_embed": x}, manifest=manifest)
    result = get_method("coincide", kmeans_iters=5).select(features, 100)
    assert result.info["n_layers"] == 2 and result.n_selected == 100
    # without given centroids, S comes from the text halves of the normalised member means
    cluster = result.values["cluster"]
    unit = x.astype(np.float64) / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    ids = np.unique(cluster)
    means = np.stack([unit[cluster == c].mean(0) for c in ids])
    expected = transferability(means[:, _text_cols(2, 16)])
    got = np.array([result.values["cluster_transferability"][cluster == c][0] for c in ids])
    np.testing.assert_allclose(got, expected, atol=1e-9)
    # and the densities are the mean within-cluster kernel, diagonal included
    rows = np.flatnonzero(cluster == ids[0])
    d2 = ((x[rows, None, :].astype(np.float64) - x[None, rows, :].astype(np.float64)) ** 2).sum(-1)
    np.testing.assert_allclose(result.values["cluster_density"][rows[0]], np.exp(-d2 / 2).mean(), rtol=1e-10)


def test_row_reading_from_a_memory_mapped_file(tmp_path):
    from mmselect.features.rows import gather_rows, iter_row_blocks, read_rows

    data = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float16)
    np.save(tmp_path / "a.npy", data)
    mapped = np.load(tmp_path / "a.npy", mmap_mode="r")
    rows = np.array([3, 4, 5, 9, 9, 20, 49])
    np.testing.assert_array_equal(read_rows(mapped, rows), data[rows])
    shuffled = np.array([49, 0, 7, 7, 8, 2])
    np.testing.assert_array_equal(gather_rows(mapped, shuffled, dtype=np.float64), data[shuffled].astype(np.float64))
    subset = np.array([1, 2, 3, 5, 8, 13, 21, 34])
    blocks = list(iter_row_blocks(mapped, subset, block_rows=3))
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), data[subset].astype(np.float32))
    np.testing.assert_array_equal(np.concatenate([p for p, _ in blocks]), np.arange(len(subset)))


def test_one_fit_serves_every_budget(monkeypatch):
    x, n_images = _synthetic(text_fraction=0.1, seed=3)
    features = FeatureSet.from_arrays(n=len(x), columns={"n_images": n_images}, arrays={"coincide_embed": x})
    params = dict(n_layers=2, kmeans_iters=10, seed=5)
    runs = []
    kmeans = coincide_clusters.spherical_kmeans
    monkeypatch.setattr(coincide_clusters, "spherical_kmeans", lambda *a, **kw: runs.append(1) or kmeans(*a, **kw))
    monkeypatch.setattr(coincide_module, "_CACHE_BYTES", 200 * 200 * 8)  # some kernels cached, others recomputed
    fitted = get_method("coincide", **params).fit(features)
    assert len(runs) == 2  # image and text-only groups, once
    for budget in (0.1, 0.15, 0.2, 0.1):
        swept = fitted.select_budget(budget)
        fresh = get_method("coincide", **params).select(features, budget)
        np.testing.assert_array_equal(swept.order, fresh.order)
        np.testing.assert_array_equal(swept.selected, fresh.selected)
        for name in fresh.values:
            np.testing.assert_array_equal(swept.values[name], fresh.values[name])
        assert swept.info["allocation"] == fresh.info["allocation"]
    assert len(runs) == 2 + 4 * 2  # the sweep itself ran no k-means
