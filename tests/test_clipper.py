"""CLIPPER (interpretation): pairing, aggregation, proportional quotas and the histogram match."""

from __future__ import annotations

import numpy as np
import pytest

from mmselect.errors import ConfigError
from mmselect.features.store import FeatureSet
from mmselect.methods import get_method
from mmselect.methods.clipper import (
    Clipper,
    aggregate_pairs,
    assign_bins,
    clipper_pairs,
    proportional_quotas,
    quantile_edges,
)


def _features(n=1000, seed=0, never_demo=0.1):
    rng = np.random.default_rng(seed)
    zero = rng.gamma(2.0, 1.0, n)
    one = zero - rng.normal(0.3, 0.5, n)
    gain = rng.normal(size=n)
    gain[rng.random(n) < never_demo] = np.nan
    return FeatureSet.from_arrays(
        n=n,
        tasks=rng.choice(["vqa", "caption", "ocr"], n),
        columns={"answer_nll": zero, "icl_answer_nll": one, "demo_gain": gain},
    )


# --- pairs ------------------------------------------------------------------------------------------------
def _check_pairs(query, demo, n, m):
    m_eff = min(m, n - 1)
    assert len(query) == len(demo) == n * m_eff
    assert np.array_equal(query, np.repeat(np.arange(n), m_eff))
    assert not np.any(query == demo)
    assert demo.min() >= 0 and demo.max() < n
    per_query = demo.reshape(n, m_eff)
    assert all(len(set(row)) == m_eff for row in per_query.tolist())
    return per_query


@pytest.mark.parametrize("n,m", [(2, 1), (5, 4), (5, 9), (300, 4), (50, 1)])
def test_random_pairs_invariants(n, m):
    query, demo = clipper_pairs(n, m=m, seed=n)
    _check_pairs(query, demo, n, m)
    again = clipper_pairs(n, m=m, seed=n)
    assert np.array_equal(again[1], demo)  # seeded


def test_random_pairs_cover_all_other_samples_roughly_uniformly():
    n, m = 40, 3
    counts = np.zeros((n, n))
    for seed in range(300):
        query, demo = clipper_pairs(n, m=m, seed=seed)
        np.add.at(counts, (query, demo), 1)
    off_diagonal = counts[~np.eye(n, dtype=bool)]
    expected = 300 * m / (n - 1)
    assert np.all(np.diag(counts) == 0)
    assert abs(off_diagonal.mean() - expected) < 1e-9
    # Chi-square of the pair counts against uniform: about one per cell for uniform draws
    # (a draw biased towards some demonstrations gives values far above 1).
    chi2_per_cell = ((off_diagonal - expected) ** 2 / expected).mean()
    assert 0.8 < chi2_per_cell < 1.2


def test_same_task_pairs_stay_in_task_and_fall_back():
    tasks = np.array(["a"] * 30 + ["b"] * 3 + ["c"] * 1 + ["d"] * 20)
    n, m = len(tasks), 4
    query, demo = clipper_pairs(n, tasks, m=m, pairing="same-task", seed=7)
    per_query = _check_pairs(query, demo, n, m)
    for i in range(n):
        same = tasks[per_query[i]] == tasks[i]
        if tasks[i] in ("a", "d"):
            assert same.all()  # enough samples in the task
        elif tasks[i] == "b":
            assert same.sum() == 2  # both others of the task, then two from other tasks
            assert same[:2].all()
        else:
            assert not same.any()  # single-sample task: random pairing
    with pytest.raises(ConfigError):
        clipper_pairs(5, m=0)
    with pytest.raises(ConfigError):
        clipper_pairs(5, m=2, pairing="nearest")


# --- aggregation ------------------------------------------------------------------------------------------
def test_aggregate_pairs_exact_on_a_hand_made_case():
    zero = np.array([2.0, 1.0, 3.0, 0.5])
    query = np.array([0, 0, 1, 2, 2, 1])
    demo = np.array([1, 2, 0, 0, 1, 2])
    one = np.array([1.5, 1.0, 1.25, 2.0, np.nan, 0.75])
    icl, gain = aggregate_pairs(4, query, demo, zero, one)
    # queries: 0 -> (1.5, 1.0); 1 -> (1.25, 0.75); 2 -> (2.0, NaN dropped); 3 -> never a query
    assert np.allclose(icl, [1.25, 1.0, 2.0, np.nan], equal_nan=True)
    # gains g = zero[query] - one: (0<-1) 0.5, (0<-2) 1.0, (1<-0) -0.25, (2<-0) 1.0, (2<-1) NaN, (1<-2) 0.25
    # demo 0: (-0.25, 1.0) -> 0.375; demo 1: (0.5) -> 0.5; demo 2: (1.0, 0.25) -> 0.625; demo 3: never
    assert np.allclose(gain, [0.375, 0.5, 0.625, np.nan], equal_nan=True)
    with pytest.raises(ValueError):
        aggregate_pairs(4, np.array([1]), np.array([1]), zero, np.array([1.0]))


def test_pairs_and_aggregation_round_trip_with_a_known_gain():
    # one-shot NLL = zero-shot NLL - effect of the demonstration -> demo_gain recovers the effect.
    n, m = 200, 4
    rng = np.random.default_rng(1)
    zero = rng.gamma(2.0, 1.0, n)
    effect = rng.normal(size=n)
    query, demo = clipper_pairs(n, m=m, seed=3)
    one = zero[query] - effect[demo]
    icl, gain = aggregate_pairs(n, query, demo, zero, one)
    used = np.bincount(demo, minlength=n) > 0
    assert np.allclose(gain[used], effect[used])
    assert np.all(np.isnan(gain[~used]))
    expected_icl = zero - effect[demo].reshape(n, m).mean(axis=1)
    assert np.allclose(icl, expected_icl)


# --- quotas and selection ---------------------------------------------------------------------------------
def test_proportional_quotas_sum_to_budget_and_fit_their_bins():
    rng = np.random.default_rng(0)
    for _ in range(200):
        counts = rng.integers(0, 50, int(rng.integers(1, 15)))
        if counts.sum() == 0:
            continue
        k = int(rng.integers(0, counts.sum() + 1))
        quotas = proportional_quotas(counts, k)
        assert quotas.sum() == k
        assert np.all(quotas <= counts) and np.all(quotas >= 0)
        assert np.all(np.abs(quotas - k * counts / counts.sum()) < 1)
    assert proportional_quotas(np.array([1, 1, 1]), 2).tolist() == [1, 1, 0]  # equal remainders: lower bins


@pytest.mark.parametrize("distribution", ["zero_shot", "one_shot", "ratio"])
@pytest.mark.parametrize("budget", [1, 137, 0.3, 999])
def test_subset_histogram_mirrors_the_full_set(distribution, budget):
    features = _features()
    result = Clipper(distribution_score=distribution).select(features, budget)
    k = result.info["budget"]
    assert result.n_selected == k
    zero, one = features.column("answer_nll"), features.column("icl_answer_nll")
    score = {"zero_shot": zero, "one_shot": one, "ratio": one - zero}[distribution]
    edges = np.asarray(result.info["bin_edges"])
    assert len(edges) == 11
    full = np.bincount(assign_bins(score, edges), minlength=10)
    subset = np.bincount(assign_bins(score[result.selected], edges), minlength=10)
    assert np.all(np.abs(subset - k * full / features.n) < 1)  # within one sample of the proportional quota
    assert subset.tolist() == result.info["bin_quotas"] and sum(result.info["bin_quotas"]) == k
    # Scores: positive exactly for the selected samples.
    assert np.array_equal(result.scores > 0, result.selected)


def test_within_bin_ranking_rules():
    features = _features(n=500, seed=2)
    gain = features.column("demo_gain")
    result = Clipper().select(features, 100)
    bins = result.values["clipper_bin"]
    for b in np.unique(bins):
        inside = bins == b
        chosen, rest = gain[inside & result.selected], gain[inside & ~result.selected]
        if chosen.size and rest.size:
            assert np.nanmin(np.where(np.isnan(chosen), np.inf, chosen)) >= np.nanmax(
                np.where(np.isnan(rest), -np.inf, rest)
            )
            assert not np.isnan(chosen).any() or np.isnan(rest).all()  # never-demonstrations rank last
    assert result.info["never_demonstration"] == int(np.isnan(gain).sum())

    icl = Clipper(within_bin="icl_gain").select(features, 100)
    own_gain = features.column("answer_nll") - features.column("icl_answer_nll")
    for b in np.unique(bins):
        inside = icl.values["clipper_bin"] == b
        chosen, rest = own_gain[inside & icl.selected], own_gain[inside & ~icl.selected]
        if chosen.size and rest.size:
            assert chosen.min() >= rest.max()

    first = Clipper(within_bin="random", seed=1).select(features, 100)
    second = Clipper(within_bin="random", seed=1).select(features, 100)
    other = Clipper(within_bin="random", seed=2).select(features, 100)
    assert np.array_equal(first.selected, second.selected)
    assert not np.array_equal(first.selected, other.selected)
    assert first.info["bin_quotas"] == other.info["bin_quotas"] == result.info["bin_quotas"]


def test_ties_keep_bins_whole_and_budget_exact():
    values = np.repeat([1.0, 2.0, 3.0], [50, 30, 20])
    edges = quantile_edges(values, 10)
    assert len(edges) - 1 < 10  # duplicate edges removed
    features = FeatureSet.from_arrays(
        n=100, columns={"answer_nll": values, "icl_answer_nll": values, "demo_gain": np.arange(100.0)}
    )
    result = Clipper().select(features, 10)
    assert result.n_selected == 10
    assert sorted(result.info["bin_counts"]) == [20, 30, 50]
    assert sorted(result.info["bin_quotas"]) == [2, 3, 5]
    constant = FeatureSet.from_arrays(n=5, columns={"answer_nll": np.ones(5), "demo_gain": np.zeros(5)})
    assert Clipper().select(constant, 2).n_selected == 2


def test_feature_needs_follow_the_parameters():
    names = lambda method: [(n.name, n.produced_by, n.finite) for n in method.feature_needs()]  # noqa: E731
    assert names(Clipper()) == [("answer_nll", "answer_nll", True), ("demo_gain", "clipper", False)]
    assert names(Clipper(distribution_score="one_shot", within_bin="random")) == [
        ("icl_answer_nll", "clipper", True)
    ]
    assert [n for n, _, _ in names(Clipper(distribution_score="ratio", within_bin="icl_gain"))] == [
        "answer_nll",
        "icl_answer_nll",
    ]
    assert Clipper().extract_features() == ["answer_nll", "clipper"]
    with pytest.raises(ConfigError):
        Clipper(distribution_score="median").feature_needs()
    with pytest.raises(ConfigError):
        Clipper(n_bins=0).feature_needs()
    assert get_method("clipper", n_bins=5).n_bins == 5
