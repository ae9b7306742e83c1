"""ScalSelect: parity with the official selection step, a hand-worked case, the options against a
full-SVD reference, streaming invariants, per-task budgets and records without vision tokens."""

import json
from pathlib import Path

import numpy as np
import pytest

from mmselect.errors import BudgetError, MissingFeaturesError, NonFiniteFeaturesError
from mmselect.features.store import FeatureSet
from mmselect.methods import get_method
from mmselect.methods.scalselect import _rank_for_energy, leverage_scores

FIXTURE = Path(__file__).parent / "fixtures" / "scalselect_official"


def _features(embed, vision_tokens=None, tasks=None):
    n = len(embed)
    tokens = np.full(n, 576) if vision_tokens is None else np.asarray(vision_tokens)
    return FeatureSet.from_arrays(
        n=n, tasks=tasks, columns={"scalselect_vision_tokens": tokens}, arrays={"scalselect_embed": embed}
    )


def _reference(x, energy=0.9, standardize=False, l2_normalize=False):
    """The official selection step written out: centre, optionally standardise and L2-normalise,
    full SVD, k by cumulative energy, leverage = row sums of U_k squared."""
    z = np.asarray(x, dtype=np.float64).copy()
    z -= z.mean(axis=0)
    if standardize:
        std = z.std(axis=0)
        std[std == 0] = 1
        z /= std
    if l2_normalize:
        norms = np.linalg.norm(z, axis=1, keepdims=True)
        norms[norms == 0] = 1
        z /= norms
    u, s, _ = np.linalg.svd(z, full_matrices=False)
    cumulative = np.cumsum(s**2) / np.sum(s**2)
    k = max(1, min(int(np.searchsorted(cumulative, energy)) + 1, len(s)))
    return (u[:, :k] ** 2).sum(axis=1), k


def _low_rank(n=90, d=12, seed=0, dtype=np.float64):
    """A planted rank-4 signal with unequal column scales, a common offset and noise."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=(n, 4)) * [5.0, 3.0, 2.0, 1.0] @ rng.normal(size=(4, d))
    x = signal + 0.3 * rng.normal(size=(n, d))
    x = x * rng.uniform(0.2, 4.0, size=d) + rng.normal(size=d) * 10
    return x.astype(dtype)


# --- parity with the official code ------------------------------------------------------------------


def test_official_parity_k_scores_and_selected_sets():
    x = np.load(FIXTURE / "representations.npy")
    expected_scores = np.load(FIXTURE / "expected_scores_center_only.npy")
    expected = json.loads((FIXTURE / "expected_center_only.json").read_text())
    method = get_method("scalselect", block_rows=128).fit(_features(x))
    assert method.k_ == expected["k"] == 16
    np.testing.assert_allclose(method.leverage_, expected_scores, rtol=0, atol=1e-6)
    assert len(expected["selected_indices"]) == 4
    for name, ids in expected["selected_indices"].items():
        fraction = float(name.removeprefix("frac_"))
        result = method.select_budget(fraction)  # our fractions are of all records: 600 here, as in the fixture
        assert result.n_selected == len(ids), name
        assert set(result.indices.tolist()) == set(ids), name
        assert result.info["scalselect_k"] == 16


def test_float32_gram_products_keep_the_official_selection():
    x = np.load(FIXTURE / "representations.npy")
    expected_scores = np.load(FIXTURE / "expected_scores_center_only.npy")
    expected = json.loads((FIXTURE / "expected_center_only.json").read_text())
    method = get_method("scalselect", gram_dtype="float32", block_rows=100).fit(_features(x))
    assert method.k_ == 16
    np.testing.assert_allclose(method.leverage_, expected_scores, rtol=0, atol=1e-5)
    for ids in expected["selected_indices"].values():
        assert set(method.select_budget(len(ids)).indices.tolist()) == set(ids)


# --- a case worked by hand -------------------------------------------------------------------------


def test_hand_worked_k_and_scores():
    # centred rows (2,0), (-1,0), (-1,0), (0,3), (0,-3), moved by an offset: the scatter is
    # diag(6, 18), the energy shares 0.75 and 0.25.
    centred = np.array([[2, 0], [-1, 0], [-1, 0], [0, 3], [0, -3]], dtype=np.float64)
    x = centred + [10.0, -5.0]
    features = _features(x)

    # energy 0.7: k = 1 (the y axis, 18); pi = y^2 / 18
    one = get_method("scalselect", energy=0.7).select(features, 1)
    assert one.info["scalselect_k"] == 1 and one.info["energy_captured"] == pytest.approx(0.75)
    np.testing.assert_allclose(one.scores, [0, 0, 0, 0.5, 0.5], atol=1e-12)
    assert one.indices.tolist() == [3]  # tie with row 4: the earlier record

    # energy 0.9: k = 2; pi = x^2 / 6 + y^2 / 18, summing to k
    two = get_method("scalselect", energy=0.9).select(features, 2)
    assert two.info["scalselect_k"] == 2
    np.testing.assert_allclose(two.scores, [4 / 6, 1 / 6, 1 / 6, 0.5, 0.5], atol=1e-12)
    assert two.indices.tolist() == [0, 3]
    assert two.order.tolist() == [0, 3]  # by descending score

    # energy exactly at a cumulative share: ">=" keeps k = 1 (searchsorted left, plus one)
    assert get_method("scalselect", energy=0.75).select(features, 1).info["scalselect_k"] == 1


# --- options against the full-SVD reference --------------------------------------------------------


@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize("l2_normalize", [False, True])
@pytest.mark.parametrize("energy", [0.5, 0.9, 0.99])
def test_options_match_full_svd_reference(standardize, l2_normalize, energy):
    x = _low_rank()
    expected, k = _reference(x, energy, standardize, l2_normalize)
    method = get_method(
        "scalselect", energy=energy, standardize=standardize, l2_normalize=l2_normalize, block_rows=7
    ).fit(_features(x))
    assert method.k_ == k
    np.testing.assert_allclose(method.leverage_, expected, rtol=0, atol=1e-10)
    assert method.leverage_.sum() == pytest.approx(k)
    result = method.select_budget(20)
    top = np.lexsort((np.arange(len(x)), -expected))[:20]
    np.testing.assert_array_equal(result.indices, np.sort(top))


def test_standardize_changes_the_scores_when_columns_differ_in_scale():
    x = _low_rank()
    plain = get_method("scalselect").fit(_features(x)).leverage_
    standardized = get_method("scalselect", standardize=True).fit(_features(x)).leverage_
    assert np.abs(plain - standardized).max() > 1e-3


# --- invariants of the streamed computation -----------------------------------------------------------


def test_invariant_to_global_scale_and_offset():
    x = _low_rank()
    base = get_method("scalselect").fit(_features(x)).leverage_
    for transformed in (x * 1e3, x * 1e-3, x + 1e6):
        # + 1e6: the Gram matrix of the shifted rows keeps the offset from cancelling
        np.testing.assert_allclose(get_method("scalselect").fit(_features(transformed)).leverage_, base, atol=1e-8)


def test_block_size_does_not_change_the_result():
    x = _low_rank(n=70).astype(np.float32)
    results = [get_method("scalselect", block_rows=b, standardize=True).select(_features(x), 15) for b in (1, 5, 70, 4096)]
    for other in results[1:]:
        np.testing.assert_allclose(other.scores, results[0].scores, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(other.selected, results[0].selected)


def test_deterministic():
    x = _low_rank(seed=3)
    first = get_method("scalselect", l2_normalize=True).select(_features(x), 25)
    second = get_method("scalselect", l2_normalize=True).select(_features(x), 25)
    np.testing.assert_array_equal(first.scores, second.scores)
    np.testing.assert_array_equal(first.selected, second.selected)


def test_memory_mapped_float32_array(tmp_path):
    x = _low_rank(n=64).astype(np.float32)
    np.save(tmp_path / "embed.npy", x)
    mapped = np.load(tmp_path / "embed.npy", mmap_mode="r")
    in_memory = get_method("scalselect").select(_features(x), 10)
    streamed = get_method("scalselect", block_rows=9).select(_features(mapped), 10)
    np.testing.assert_allclose(streamed.scores, in_memory.scores, atol=1e-12)
    np.testing.assert_array_equal(streamed.selected, in_memory.selected)


def test_k_never_exceeds_the_numerical_rank():
    # 5 records in 10 dimensions: the centred matrix has rank 4
    x = np.random.default_rng(0).normal(size=(5, 10))
    fit = leverage_scores(x, energy=1.0)
    assert fit.k == 4
    np.testing.assert_allclose(fit.scores, 4 / 5, atol=1e-10)  # full-rank leverage of 5 centred points: (n-1)/n
    # a direction with 1e-13 of the energy would be needed to reach 1.0, but it is numerically zero
    k, captured, rank_limited = _rank_for_energy(np.array([3.0, 1.0, 1e-13]), 1.0)
    assert (k, rank_limited) == (2, True) and captured == pytest.approx(1.0)
    k, captured, rank_limited = _rank_for_energy(np.array([3.0, 1.0, 1e-13]), 0.7)
    assert (k, rank_limited) == (1, False) and captured == pytest.approx(0.75)


def test_identical_rows_give_zero_scores():
    x = np.tile(np.arange(6, dtype=np.float64), (8, 1))
    result = get_method("scalselect").select(_features(x), 3)
    assert result.info["scalselect_k"] == 0
    np.testing.assert_array_equal(result.scores, np.zeros(8))
    assert result.indices.tolist() == [0, 1, 2]


# --- per-task budgets -----------------------------------------------------------------------------


def test_per_task_budget_split_and_top_within_each_task():
    x = _low_rank(n=120, seed=1)
    tasks = np.array(["a"] * 60 + ["b"] * 30 + ["c"] * 30)
    tokens = np.full(120, 576)
    tokens[[0, 1, 2, 3, 4, 5, 60]] = 0  # a: 54 candidates, b: 29, c: 30
    features = _features(x, tokens, tasks)
    result = get_method("scalselect", per_task=True).select(features, 23)
    # 23 over (54, 29, 30) by largest remainder: shares 10.99, 5.90, 6.11 -> 10 + 6 + 6 = 22, then
    # the largest remainder (a, 0.99) gets the last one
    assert result.info["task_quotas"] == {"a": 11, "b": 6, "c": 6}
    candidate = tokens > 0
    reference, _ = _reference(x[candidate])
    assert result.info["scalselect_k"] == get_method("scalselect").fit(features).k_
    np.testing.assert_allclose(result.scores[candidate], reference, atol=1e-10)  # one subspace for all tasks
    for name, quota in result.info["task_quotas"].items():
        rows = np.flatnonzero((tasks == name) & candidate)
        top = rows[np.lexsort((rows, -result.scores[rows]))[:quota]]
        np.testing.assert_array_equal(np.flatnonzero(result.selected & (tasks == name)), np.sort(top))


# --- records without vision tokens ----------------------------------------------------------------


def test_text_only_excluded_by_default():
    x = _low_rank(n=40, seed=2)
    text = [0, 7, 8, 39]
    x[text] = np.nan  # never read as data
    tokens = np.full(40, 576)
    tokens[text] = 0
    features = _features(x, tokens)
    result = get_method("scalselect").select(features, 10)
    candidate = tokens > 0
    reference, _ = _reference(x[candidate])
    np.testing.assert_allclose(result.scores[candidate], reference, atol=1e-10)
    assert np.isnan(result.scores[text]).all() and not result.selected[text].any()
    assert result.info["candidates"] == 36 and result.info["not_candidates"] == 4
    assert "budget_shortfall" not in result.info

    everything = get_method("scalselect").select(features, 38)  # more than the 36 candidates
    assert everything.n_selected == 36 and everything.info["budget_shortfall"] == 2
    np.testing.assert_array_equal(everything.selected, candidate)


def test_text_only_kept_count_towards_the_budget():
    x = _low_rank(n=40, seed=2)
    text = [0, 7, 8, 39]
    x[text] = 0.0
    tokens = np.full(40, 576)
    tokens[text] = 0
    features = _features(x, tokens)
    result = get_method("scalselect", text_only="keep").select(features, 10)
    assert result.n_selected == 10 and result.selected[text].all()
    assert np.isinf(result.scores[text]).all() and np.isnan(result.values["leverage"][text]).all()
    image = np.flatnonzero(tokens > 0)
    reference, _ = _reference(x[image])
    top = image[np.lexsort((image, -reference))[:6]]  # the other 6 of the budget
    np.testing.assert_array_equal(np.flatnonzero(result.selected & (tokens > 0)), np.sort(top))
    assert result.order[:4].tolist() == text
    with pytest.raises(BudgetError, match="text_only='keep'"):
        get_method("scalselect", text_only="keep").select(features, 3)


# --- inputs -----------------------------------------------------------------------------------------


def test_nan_in_a_candidate_row_is_refused_by_key():
    x = _low_rank(n=30)
    x[11, 3] = np.inf
    with pytest.raises(NonFiniteFeaturesError, match="11"):
        get_method("scalselect").select(_features(x), 5)


def test_declares_the_scalselect_feature():
    method = get_method("scalselect")
    assert method.extract_features() == ["scalselect"]
    bare = FeatureSet.from_arrays(n=4, columns={"scalselect_vision_tokens": np.ones(4)})
    with pytest.raises(MissingFeaturesError, match="mmselect extract --features scalselect"):
        method.select(bare, 2)
    with pytest.raises(Exception, match="energy"):
        get_method("scalselect", energy=0.0)


def test_selects_from_extracted_features(mini_data, mini_images, tiny_llava, tmp_path):
    from mmselect.data import read_dataset
    from mmselect.features.extract import extract_features

    samples = read_dataset(mini_data, image_root=mini_images).samples
    features, rejected = extract_features(samples, tiny_llava, ["scalselect"], cache_dir=tmp_path, progress=False)
    assert rejected == []
    text_only = features.column("scalselect_vision_tokens") == 0
    assert 0 < text_only.sum() < features.n
    result = get_method("scalselect").select(features, 0.5)
    candidates = features.array("scalselect_embed")[~text_only]
    reference, k = _reference(candidates)
    assert result.info["scalselect_k"] == k
    np.testing.assert_allclose(result.scores[~text_only], reference, atol=1e-8)
    assert np.isnan(result.scores[text_only]).all() and not result.selected[text_only].any()
    assert result.n_selected == int(0.5 * features.n)


def test_auto_gram_precision_is_float64_on_small_pools_and_float32_at_llava_scale():
    from mmselect.methods.scalselect import resolve_gram_dtype

    assert resolve_gram_dtype("auto", 600, 64) == "float64"  # the parity fixture: float64 products
    assert resolve_gram_dtype("auto", 665_298, 1024) == "float64"  # 7.0e11 multiply-adds
    assert resolve_gram_dtype("auto", 665_298, 4096) == "float32"  # 1.1e13
    assert resolve_gram_dtype("float64", 665_298, 4096) == "float64"  # an explicit choice stays
    assert resolve_gram_dtype("float32", 10, 4) == "float32"
