"""Selection stage of the baselines ifd, el2n, clip-score, semdedup and d2-pruning: small cases
worked by hand, exact budgets, determinism, agreement of the fast paths with plain references."""

import math

import numpy as np
import pytest

from mmselect.errors import ConfigError, MissingFeaturesError, NonFiniteFeaturesError
from mmselect.features.store import FeatureSet
from mmselect.methods import get_method, top_k_mask
from mmselect.methods.d2_pruning import forward_scores, greedy_reverse
from mmselect.numerics import exact_knn, ivf_knn, rerank_exact
from mmselect.methods.el2n import band_order
from mmselect.methods.semdedup import SemDeDup, max_similarity_to_earlier, pca_project


def _features(n=None, columns=None, arrays=None):
    return FeatureSet.from_arrays(n=n, columns=columns or {}, arrays=arrays or {})


def _picked(result):
    return set(np.flatnonzero(result.selected).tolist())


# --- EL2N / band order ----------------------------------------------------------------------------
def test_band_order_by_hand():
    values = np.array([0.5, 0.1, 0.9, 0.3, 0.7])  # ascending: 1, 3, 0, 4, 2
    assert band_order(values, 2, "low")[:2].tolist() == [1, 3]
    assert band_order(values, 2, "high")[:2].tolist() == [2, 4]
    # mid: n - k = 3, the band starts at rank 1 -> ranks 1, 2 -> samples 3 and 0
    assert set(band_order(values, 2, "mid")[:2].tolist()) == {3, 0}
    assert set(band_order(values, 3, "mid")[:3].tolist()) == {3, 0, 4}


def test_band_ties_go_to_the_earlier_position():
    values = np.ones(4)
    assert band_order(values, 2, "high")[:2].tolist() == [0, 1]
    assert band_order(values, 2, "low")[:2].tolist() == [0, 1]
    assert set(band_order(values, 2, "mid")[:2].tolist()) == {1, 2}


@pytest.mark.parametrize("band", ["low", "mid", "high"])
def test_el2n_scores_agree_with_the_selection(band):
    rng = np.random.default_rng(3)
    for n in (1, 2, 7, 50):
        values = rng.integers(0, 5, n).astype(float)  # many ties
        fs = _features(columns={"el2n": values})
        for k in sorted({0, 1, n // 2, n - 1, n} - {-1}):
            result = get_method("el2n", band=band).select(fs, k)
            assert result.n_selected == k
            assert np.array_equal(top_k_mask(result.scores, k), result.selected)
            # the band is contiguous in the ranking by value, ties by position (earlier first)
            key = -values if band == "high" else values
            ranking = np.lexsort((np.arange(n), key))
            ranks = np.flatnonzero(result.selected[ranking])
            if k:
                assert ranks.max() - ranks.min() == k - 1
                expected_start = {"low": 0, "high": 0, "mid": (n - k) // 2}[band]
                assert ranks.min() == expected_start


def test_el2n_default_is_the_middle_band_and_budget_is_exact():
    values = np.arange(10.0)[::-1]  # sample i has value 9 - i
    result = get_method("el2n").select(_features(columns={"el2n": values}), 0.4)
    assert result.n_selected == 4
    assert sorted(values[result.selected].tolist()) == [3.0, 4.0, 5.0, 6.0]  # ranks 3..6 of 10


def test_el2n_missing_feature_names_the_extract_option():
    with pytest.raises(MissingFeaturesError, match="--features el2n"):
        get_method("el2n").select(_features(n=3), 1)
    with pytest.raises(ConfigError):
        get_method("el2n", band="top").select(_features(columns={"el2n": np.ones(3)}), 1)


# --- IFD ------------------------------------------------------------------------------------------
IFD_VALUES = np.array([0.5, 0.9, 1.2, 0.7, 1.0, 0.95])


def _ifd_features(ratio="loss"):
    nll_noinstr = np.array([2.0, 1.0, 0.5, 3.0, 1.5, 0.25])
    nll = nll_noinstr * IFD_VALUES if ratio == "loss" else nll_noinstr + np.log(IFD_VALUES)
    return _features(columns={"answer_nll": nll, "answer_nll_noinstr": nll_noinstr})


@pytest.mark.parametrize("ratio", ["loss", "perplexity"])
def test_ifd_keeps_the_highest_values_up_to_one(ratio):
    result = get_method("ifd", ratio=ratio).select(_ifd_features(ratio), 2)
    assert _picked(result) == {4, 5}  # 1.0 and 0.95; only 1.2 is above the threshold
    assert np.allclose(result.values["ifd"], IFD_VALUES)
    assert result.info["n_eligible"] == 5 and result.info["filled_above_threshold"] == 0
    assert np.array_equal(top_k_mask(result.scores, 2), result.selected)


def test_ifd_default_is_the_ratio_of_mean_losses():
    # losses (with | without instruction): sample 0 0.5 | 1.0, sample 1 2.0 | 2.6.
    # loss ratios 0.5 and 0.769; perplexity ratios exp(-0.5) = 0.607 and exp(-0.6) = 0.549.
    fs = _features(columns={"answer_nll": np.array([0.5, 2.0]), "answer_nll_noinstr": np.array([1.0, 2.6])})
    result = get_method("ifd").select(fs, 1)
    assert _picked(result) == {1}
    assert np.allclose(result.values["ifd"], [0.5, 2.0 / 2.6])
    assert _picked(get_method("ifd", ratio="perplexity").select(fs, 1)) == {0}


def test_ifd_undefined_ratio_is_never_eligible_and_ranks_last():
    # sample 1 has no loss at all (0 / 0), sample 2 only loses without the instruction removed (x / 0)
    fs = _features(columns={"answer_nll": np.array([0.4, 0.0, 0.3, 0.9]),
                            "answer_nll_noinstr": np.array([0.5, 0.0, 0.0, 1.0])})
    result = get_method("ifd").select(fs, 3)
    assert _picked(result) == {0, 2, 3}  # 0.9, 0.8 eligible; inf fills before the undefined ratio
    assert result.info["n_undefined"] == 1 and result.info["filled_above_threshold"] == 1
    assert _picked(get_method("ifd", threshold=None).select(fs, 1)) == {2}


def test_ifd_bands_threshold_and_fill():
    fs = _ifd_features()
    assert _picked(get_method("ifd", band="low").select(fs, 2)) == {0, 3}
    assert _picked(get_method("ifd", band="mid").select(fs, 2)) == {3, 1}  # eligible ranks 1, 2 of 5
    assert _picked(get_method("ifd", threshold=None).select(fs, 1)) == {2}
    assert _picked(get_method("ifd", threshold=0.96).select(fs, 2)) == {1, 5}
    # five wanted, four eligible: the ineligible sample closest to the threshold fills the budget
    result = get_method("ifd", threshold=0.96).select(fs, 5)
    assert _picked(result) == {0, 1, 3, 4, 5}
    assert result.info["filled_above_threshold"] == 1
    assert np.array_equal(top_k_mask(result.scores, 5), result.selected)


def test_ifd_answer_only_pass_drops_the_question_and_the_image(tiny_llava):
    # the instruction of a visual sample is its image and its question: the pass without it
    # scores the same answer tokens with neither
    from mmselect.data.records import Sample, Turn
    from mmselect.features.prepare_pool import BatchPreparer

    sample = Sample(position=0, key="k", record={}, turns=[Turn("user", "<image>\nWhat is it?"), Turn("assistant", "A cat.")],
                    images=["a.png"], task="t", image_paths=["a.png"])
    preparer = BatchPreparer(tiny_llava, 2048)
    full = preparer.render(sample, "full")
    alone = preparer.render(sample, "answer_only")
    assert full.image_paths and "What is it?" in full.text
    assert alone.image_paths == [] and "What is it?" not in alone.text
    assert [alone.text[s:e] for s, e in alone.answer_spans] == [full.text[s:e] for s, e in full.answer_spans]


def test_ifd_needs_both_passes():
    fs = _features(columns={"answer_nll": np.ones(3)})
    with pytest.raises(MissingFeaturesError, match="--features ifd"):
        get_method("ifd").select(fs, 1)
    assert get_method("ifd").extract_features() == ["answer_nll", "ifd"]


# --- length ---------------------------------------------------------------------------------------
def test_length_ranks_by_response_tokens_by_default():
    # sample 0: an image record (576 image tokens) with a short answer; sample 1: a text-only
    # record with a long answer; sample 2: in between on both
    fs = _features(columns={"n_tokens": np.array([650, 120, 400]), "n_answer_tokens": np.array([8, 60, 30]),
                            "n_text_chars": np.array([90, 300, 200])})
    assert _picked(get_method("length").select(fs, 1)) == {1}
    assert _picked(get_method("length").select(fs, 2)) == {1, 2}
    assert _picked(get_method("length", by="n_tokens").select(fs, 1)) == {0}
    assert get_method("length").extract_features() == ["tokens"]
    with pytest.raises(MissingFeaturesError, match="--features tokens"):
        get_method("length").select(_features(columns={"n_tokens": np.arange(3)}), 1)


def test_tokens_feature_counts_the_answer_tokens(tiny_llava, mini_data, mini_images, tmp_path):
    from mmselect.data import read_dataset
    from mmselect.features.encode import encode, load_image
    from mmselect.features.extract import extract_features

    samples = read_dataset(mini_data, image_root=mini_images).samples[:8]
    fs, rejected = extract_features(samples, tiny_llava, ["tokens"], cache_dir=tmp_path, batch_size=4, progress=False)
    assert not rejected and fs.n == 8
    rendered = [tiny_llava.template.render([s]) for s in samples]
    batch = encode(tiny_llava, rendered, [[load_image(p) for p in r.image_paths] for r in rendered], 2048)
    expected = batch.answer[:, 1:].sum(dim=1).numpy()  # the loss targets: answers and their turn ends
    assert fs.column("n_answer_tokens").tolist() == expected.tolist()
    assert (fs.column("n_answer_tokens") < fs.column("n_tokens")).all() and expected.min() > 0
    # the same count as the answer-loss features report
    with_nll, _ = extract_features(samples, tiny_llava, ["tokens", "answer_nll"], cache_dir=tmp_path / "nll",
                                   batch_size=4, progress=False)
    assert with_nll.column("n_answer_tokens").tolist() == expected.tolist()


# --- CLIP score -----------------------------------------------------------------------------------
def test_clip_score_keeps_the_highest_and_ranks_missing_last():
    scores = np.array([0.2, np.nan, 0.5, 0.5, -0.1])
    fs = _features(columns={"clip_score": scores})
    assert _picked(get_method("clip-score").select(fs, 2)) == {2, 3}
    assert _picked(get_method("clip-score").select(fs, 3)) == {0, 2, 3}
    result = get_method("clip-score").select(fs, 5)
    assert result.n_selected == 5 and result.info["n_without_score_selected"] == 1
    assert get_method("clip-score").select(fs, 4).info == {"n_without_score": 1, "n_without_score_selected": 0, "budget": 4}


# --- SemDeDup -------------------------------------------------------------------------------------
def test_max_similarity_to_earlier_by_hand():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.6, 0.8]])
    assert np.allclose(max_similarity_to_earlier(x), [-1.0, 0.0, 0.8, 1.0])
    assert np.allclose(max_similarity_to_earlier(x, block_rows=1), [-1.0, 0.0, 0.8, 1.0])


def _semdedup_points():
    # cluster A around +e1 (centroid exactly e1), cluster B around -e1; every cross cosine < 0
    return np.array(
        [
            [1.0, 0.0, 0.0],
            [0.96, 0.28, 0.0],
            [0.96, -0.28, 0.0],
            [-1.0, 0.0, 0.0],
            [-1.0, 0.0, 0.0],
            [-0.8, 0.0, 0.6],
        ],
        dtype=np.float32,
    )


def test_semdedup_by_hand():
    """Hard order (farthest from the centroid first): A = 1, 2, 0 (cos 0.96, 0.96, 1);
    B = 5, 3, 4 (cos 0.908, 0.978, 0.978). M: 1 -> -1, 2 -> cos(1, 2) = 0.8432, 0 -> 0.96,
    5 -> -1, 3 -> 0.8, 4 -> max(0.8, 1) = 1."""
    fs = _features(arrays={"last_token_final": _semdedup_points()})
    method = get_method("semdedup", n_clusters=2)
    expected_m = np.array([0.96, -1.0, 0.8432, 0.8, 1.0, -1.0])
    for k, picked, eps, kept in [(3, {1, 5, 3}, 0.2, 3), (4, {1, 5, 3, 2}, 1 - 0.8432, 4), (1, {1}, 2.0, 2)]:
        result = method.select(fs, k)
        labels = result.values["cluster"]
        assert labels[0] == labels[1] == labels[2] != labels[3] == labels[4] == labels[5]
        assert np.allclose(result.values["max_sim_earlier"], expected_m, atol=1e-5)
        assert _picked(result) == picked
        assert result.info["eps"] == pytest.approx(eps, abs=1e-5)
        assert result.info["kept_at_eps"] == kept and result.info["trimmed_ties"] == kept - k
    easy = get_method("semdedup", n_clusters=2, keep="easy").select(fs, 3)
    # easy order: A = 0, 1, 2 -> M = -1, 0.96, 0.96; B = 3, 4, 5 -> M = -1, 1, 0.8
    assert np.allclose(easy.values["max_sim_earlier"], [-1.0, 0.96, 0.96, -1.0, 1.0, 0.8], atol=1e-5)
    assert _picked(easy) == {0, 3, 5}


def _brute_force_max_sim(x, labels, cos_to_centroid):
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    out = np.full(len(x), -1.0)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[np.lexsort((idx, cos_to_centroid[idx]))]
        for pos in range(1, len(idx)):
            out[idx[pos]] = max(float(unit[idx[pos]] @ unit[idx[q]]) for q in range(pos))
    return out


def test_semdedup_matches_a_brute_force_reference_and_is_deterministic():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((6, 16))
    x = (centers[rng.integers(0, 6, 300)] + 0.4 * rng.standard_normal((300, 16))).astype(np.float16)
    x[50:60] = x[0:10]  # exact duplicates
    fs = _features(arrays={"last_token_final": x})
    method = get_method("semdedup", n_clusters=6)
    a, b = method.select(fs, 0.3), method.select(fs, 0.3)
    assert a.n_selected == 90 and np.array_equal(a.selected, b.selected)
    reference = _brute_force_max_sim(x.astype(np.float64), a.values["cluster"], a.values["cos_to_centroid"])
    assert np.allclose(a.values["max_sim_earlier"], reference, atol=1e-5)
    # the dedup pass reads clusters in chunks: chunk boundaries must not change anything
    labels = a.values["cluster"]
    m_small, cos_small = method._dedup_pass(x, labels, chunk_rows=7)  # every cluster alone, in blocks
    m_large, cos_large = method._dedup_pass(x, labels, chunk_rows=10_000)  # one padded batch
    assert np.allclose(m_small, m_large, atol=1e-6) and np.allclose(cos_small, cos_large, atol=1e-6)
    assert np.allclose(m_large, a.values["max_sim_earlier"])
    # one of each duplicate pair has M = 1 and is never kept before the non-duplicates
    assert np.all(np.maximum(a.values["max_sim_earlier"][0:10], a.values["max_sim_earlier"][50:60]) > 0.999)
    assert a.selected[0:10].sum() + a.selected[50:60].sum() <= 10
    for k in (0, 1, 17, 299, 300):
        assert method.select(fs, k).n_selected == k


def test_semdedup_scale_reductions_run_and_report():
    rng = np.random.default_rng(1)
    center = rng.standard_normal(40)
    side = rng.integers(0, 2, 400) * 2 - 1  # two antipodal blobs
    x = (side[:, None] * center + 0.3 * rng.standard_normal((400, 40))).astype(np.float16)
    fs = _features(arrays={"last_token_final": x})
    full = get_method("semdedup", n_clusters=2, pca_dim=None, kmeans_max_points=None).select(fs, 100)
    reduced = get_method("semdedup", n_clusters=2, pca_dim=8, kmeans_max_points=200).select(fs, 100)
    assert reduced.info["pca"]["dim"] == 8 and full.info["pca"] is None
    assert reduced.info["kmeans"]["n_train"] == 200 and full.info["kmeans"]["n_train"] == 400
    assert np.array_equal(full.values["cluster"] == full.values["cluster"][0], side == side[0])
    # the reduced clustering finds the same partition, hence the same M and selection
    same = (full.values["cluster"][:, None] == full.values["cluster"][None, :]) == (
        reduced.values["cluster"][:, None] == reduced.values["cluster"][None, :]
    )
    assert same.all()
    assert np.array_equal(full.selected, reduced.selected)


def test_semdedup_cluster_count_scales_with_the_data():
    method = SemDeDup()
    assert method.resolve_clusters(665_298) == 10_000
    assert method.resolve_clusters(100) == 2
    assert method.resolve_clusters(10) == 1
    assert SemDeDup(n_clusters=50).resolve_clusters(20) == 20
    with pytest.raises(ConfigError):
        get_method("semdedup", n_clusters=0).select(_features(arrays={"last_token_final": np.eye(3)}), 1)
    with pytest.raises(MissingFeaturesError, match="--features last_token_final"):
        get_method("semdedup").select(_features(n=3), 1)


# --- D2-Pruning -----------------------------------------------------------------------------------
LINE = np.array([[0.0], [1.0], [3.0], [6.0], [10.0]])
LINE_SCORES = np.array([2.0, 4.0, 8.0, 1.0, 2.0])


def test_d2_pruning_on_a_line_by_hand():
    """Nearest neighbours: 0->1 (d 1), 1->0 (1), 2->1 (2), 3->2 (3), 4->3 (4). With decay ln 2,
    exp(-ln2 d) = 2^-d. Forward: g = [2+4/2, 4+2/2, 8+4/4, 1+8/8, 2+1/16] = [4, 5, 9, 2, 2.0625].
    Pick 2 (9): g1 -= 9/4 -> 2.75. Pick 0 (4): g1 -= 4/2 -> 0.75. Pick 4 (2.0625):
    g3 -= 2.0625/16 -> 1.87109375. Without reverse passing the second pick would be 1 (5)."""
    fs = _features(columns={"aum": LINE_SCORES}, arrays={"mean_embed_final": LINE})
    method = get_method("d2-pruning", n_neighbors=1, distance="euclidean", forward_gamma=math.log(2), gamma=math.log(2))
    result = method.select(fs, 3)
    assert result.order.tolist() == [2, 0, 4]
    assert _picked(result) == {0, 2, 4}
    assert np.allclose(result.values["d2_graph_score"], [4.0, 5.0, 9.0, 2.0, 2.0625])
    assert np.allclose(result.values["d2_final_score"], [4.0, 0.75, 9.0, 1.87109375, 2.0625])
    assert np.array_equal(top_k_mask(result.scores, 3), result.selected)
    assert result.info["knn"] == "exact"


def test_d2_pruning_code_defaults_use_squared_distances():
    dist, index = exact_knn(LINE, 1)
    assert index[:, 0].tolist() == [1, 0, 1, 2, 3]
    assert dist[:, 0].tolist() == [1.0, 1.0, 4.0, 9.0, 16.0]
    fs = _features(columns={"aum": LINE_SCORES}, arrays={"mean_embed_final": LINE})
    result = get_method("d2-pruning", n_neighbors=1).select(fs, 2)
    expected = LINE_SCORES + np.exp(-np.array([1.0, 1.0, 4.0, 9.0, 16.0])) * LINE_SCORES[[1, 0, 1, 2, 3]]
    assert np.allclose(result.values["d2_graph_score"], expected)
    # scores below the floor count as the floor (1e-7) in the forward pass
    floored = forward_scores(np.array([-1.0, 2.0]), np.array([[1], [0]]), np.array([[0.0], [0.0]]),
                             forward_gamma=1.0, floor=1e-7)
    assert np.allclose(floored, [1e-7 + 2.0, 2.0 + 1e-7])


def _naive_greedy(graph, neighbors, dist, k, gamma):
    g = graph.astype(float).copy()
    picked = np.zeros(len(g), bool)
    order = []
    for _ in range(k):
        i = int(np.argmax(np.where(picked, -np.inf, g)))  # first maximum: smaller index on ties
        order.append(i)
        picked[i] = True
        for j, d in zip(neighbors[i], dist[i]):
            if not picked[j]:
                g[j] -= np.exp(-gamma * d) * g[i]
    return np.array(order)


def test_greedy_heap_matches_a_naive_argmax_loop():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((400, 8))
    dist, neighbors = exact_knn(x, 5)
    graph = forward_scores(rng.random(400), neighbors, dist, forward_gamma=1.0, floor=1e-7)
    graph[10:20] = graph[0]  # ties
    for k in (1, 50, 400):
        order, _ = greedy_reverse(graph, neighbors, dist, k, gamma=0.4)
        assert np.array_equal(order, _naive_greedy(graph, neighbors, dist, k, 0.4))


def test_exact_knn_matches_brute_force_and_ivf_is_exact_when_probing_every_list():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((500, 12)).astype(np.float32)
    full = ((x[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(full, np.inf)
    dist, index = exact_knn(x, 5, max_block_elems=5000)  # several query blocks
    assert np.array_equal(index, np.argsort(full, axis=1, kind="stable")[:, :5])
    assert np.allclose(dist, np.sort(full, axis=1)[:, :5])
    d_ivf, i_ivf, info = ivf_knn(x, 5, nprobe=10_000, seed=0)
    assert info["nprobe"] == info["nlist"]
    assert np.array_equal(i_ivf, index)
    assert np.allclose(d_ivf, dist, rtol=1e-4)


def test_rerank_restores_full_space_neighbours():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((120, 24)).astype(np.float16)
    dist, index = exact_knn(x.astype(np.float32), 5)
    # every other row as a candidate (shuffled, with gaps): re-ranking must find the exact kNN
    candidates = np.stack([rng.permutation(np.delete(np.arange(120), i)) for i in range(120)])
    candidates[:, -3:] = -1
    for group, block, sub in ((None, 4096, 256), (rng.integers(0, 4, 120), 32, 7)):
        d_r, i_r = rerank_exact(x, candidates, 5, normalize=False, group=group, block_rows=block, sub_block_rows=sub)
        truth = [set(np.argsort(np.where(np.isin(np.arange(120), c[c >= 0]), ((x.astype(np.float64) - x[i]) ** 2).sum(1), np.inf))[:5])
                 for i, c in enumerate(candidates)]
        assert all(set(row) == t for row, t in zip(i_r.tolist(), truth))
        assert np.allclose(np.sort(d_r, 1), d_r) and np.all(d_r >= 0)
    # the projection's own neighbours are worse than the re-ranked ones
    fs = _features(columns={"aum": rng.random(120)}, arrays={"mean_embed_final": x})
    plain = get_method("d2-pruning", knn="ivf", pca_dim=4, rerank=None).select(fs, 30)
    fixed = get_method("d2-pruning", knn="ivf", pca_dim=4, rerank=119).select(fs, 30)
    exact = get_method("d2-pruning", knn="exact").select(fs, 30)
    assert fixed.info["rerank"]["candidates"] == 119 and "rerank" not in plain.info
    assert np.array_equal(fixed.order, exact.order) and not np.array_equal(plain.order, exact.order)


def test_pca_projection_keeps_distances_of_low_rank_data():
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((300, 4)) @ rng.standard_normal((4, 64)) + 3.0).astype(np.float32)
    z, info = pca_project(x, 6, seed=0, center=True, normalize_input=False, normalize_output=False)
    assert z.shape == (300, 6) and info["explained_variance"] == pytest.approx(1.0, abs=1e-4)
    original = np.linalg.norm(x[:40, None] - x[None, :40], axis=-1)
    projected = np.linalg.norm(z[:40, None] - z[None, :40], axis=-1)
    assert np.allclose(original, projected, atol=1e-3 * original.max())


def test_d2_pruning_budget_determinism_and_ivf_path():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((600, 32)).astype(np.float16)
    fs = _features(columns={"aum": rng.random(600), "el2n": rng.random(600)}, arrays={"mean_embed_final": x})
    for params in ({}, {"normalize": True}, {"distance": "cosine"}, {"score": "el2n"}):
        a = get_method("d2-pruning", **params).select(fs, 0.25)
        b = get_method("d2-pruning", **params).select(fs, 0.25)
        assert a.n_selected == 150 and np.array_equal(a.order, b.order)
        assert np.array_equal(top_k_mask(a.scores, 150), a.selected)
    exact = get_method("d2-pruning", normalize=True).select(fs, 150)
    ivf = get_method("d2-pruning", normalize=True, knn="ivf", pca_dim=None, nprobe=10_000).select(fs, 150)
    assert ivf.info["knn"] == "ivf" and np.array_equal(exact.order, ivf.order)
    reduced = get_method("d2-pruning", normalize=True, knn="ivf", pca_dim=8).select(fs, 150)
    assert reduced.info["pca"]["dim"] == 8 and reduced.n_selected == 150
    with pytest.raises(MissingFeaturesError, match="--features aum"):
        get_method("d2-pruning").select(_features(arrays={"mean_embed_final": x}), 1)


def test_d2_pruning_refuses_nan_scores():
    fs = _features(columns={"aum": np.array([0.1, np.nan, 0.3])}, arrays={"mean_embed_final": np.eye(3)})
    with pytest.raises(NonFiniteFeaturesError):
        get_method("d2-pruning").select(fs, 1)
