"""DataTailor: parity with the official code, hand-worked values, budgets, guards, scale routes."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist
from sklearn.metrics import adjusted_rand_score

from mmselect.errors import BudgetError, ConfigError, NonFiniteFeaturesError
from mmselect.features.store import FeatureSet
from mmselect.methods import get_method
from mmselect.methods.datatailor import (
    LLAVA665K_BLOCK_SIZES,
    DataTailor,
    RowReader,
    _replica_scale,
    association_coefficients,
    cluster_uniqueness,
    condensed_distances,
    minmax_normalise,
    rank_normalise,
    split_budget,
    ward_labels_approx,
    ward_labels_exact,
)
from mmselect.methods.datatailor.clustering import weighted_ward_linkage

FIXTURE = Path(__file__).parent / "fixtures" / "datatailor_official" / "case1"


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def load_fixture():
    arrays = {name: np.load(FIXTURE / f"{name}.npy") for name in ("last_token", "sve", "tau", "task", "rounds")}
    features = FeatureSet.from_arrays(
        tasks=[str(t) for t in arrays["task"]],
        columns={"sve": arrays["sve"], "sv_top_ratio": arrays["tau"], "rounds": arrays["rounds"]},
        arrays={"last_token": arrays["last_token"]},
    )
    official = {
        "selected": np.array(json.loads((FIXTURE / "official_selected.json").read_text())),
        "labels": np.load(FIXTURE / "official_labels.npy"),
        "uniqueness": np.load(FIXTURE / "official_uniqueness.npy"),
        "representativeness": np.load(FIXTURE / "official_representativeness.npy"),
    }
    return features, arrays, official


def blobs(n_per, centres, spread, rng):
    return np.concatenate([c + rng.standard_normal((n_per, len(c))) * s for c, s in zip(centres, spread)])


def random_features(rng, sizes, dim=16, tasks=None):
    n = sum(sizes)
    centres = rng.standard_normal((6, dim)) * 8
    x = centres[rng.integers(0, 6, n)] + rng.standard_normal((n, dim))
    names = tasks or [f"t{i}" for i in range(len(sizes))]
    return FeatureSet.from_arrays(
        tasks=np.repeat(names, sizes),
        columns={
            "sve": rng.uniform(3, 7, n),
            "sv_top_ratio": np.repeat(rng.uniform(0.05, 0.3, len(sizes)), sizes),
            "rounds": rng.integers(1, 5, n),
        },
        arrays={"last_token": x.astype(np.float32)},
    )


# ----------------------------------------------------------------------------------------------
# parity with the official code
# ----------------------------------------------------------------------------------------------
def test_parity_with_official_code():
    features, arrays, official = load_fixture()
    # The official code floors each task share: 40.10 + 56.26 + 155.42 + 108.22 -> 359 of k = 360.
    result = get_method("datatailor", fill="official").select(features, 0.15)
    np.testing.assert_array_equal(result.indices, official["selected"])
    assert result.info["budget_shortfall"] == 1
    assert [t["budget"] for t in result.info["tasks"]] == [40, 56, 155, 108]

    # Uniqueness: NaN exactly where the official code has NaN (singleton clusters), else equal.
    u = result.values["uniqueness"]
    np.testing.assert_array_equal(np.isnan(u), np.isnan(official["uniqueness"]))
    assert np.isnan(u).sum() == 24
    finite = ~np.isnan(u)
    np.testing.assert_allclose(u[finite], official["uniqueness"][finite], rtol=1e-3)
    np.testing.assert_allclose(result.values["representativeness"], official["representativeness"], rtol=1e-5)

    # Cluster labels: the same partition (a bijection between label sets).
    mine, theirs = result.values["cluster"], official["labels"]
    pairs = set(zip(mine.tolist(), theirs.tolist()))
    assert len(pairs) == len(np.unique(mine)) == len(np.unique(theirs)) == 51

    # Default fill: given the official total as the budget, the same 359 samples.
    default = DataTailor().select(features, 359)
    np.testing.assert_array_equal(default.indices, official["selected"])
    # At 15 % the default meets the budget exactly: the official subset plus one sample of the
    # task with the largest fractional share (task 2: 155.42).
    full = DataTailor().select(features, 0.15)
    assert full.n_selected == 360 and "budget_shortfall" not in full.info
    assert set(official["selected"]) < set(full.indices)
    extra = np.setdiff1d(full.indices, official["selected"])
    assert arrays["task"][extra].tolist() == [2]


def test_threshold_space_dsse_is_a_sqrt_lambda_height_cut():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((300, 5)).astype(np.float32)  # no gaps: the cut level matters
    labels, info = DataTailor(threshold_space="dsse").cluster(x)
    z = linkage(x.astype(np.float64), method="ward")
    expected = fcluster(z, math.sqrt(0.1) * z[-1, 2], criterion="distance")
    assert adjusted_rand_score(labels, expected) == 1.0
    assert info["threshold"] == pytest.approx(math.sqrt(0.1) * info["root_height"])
    height_labels, height_info = DataTailor().cluster(x)
    official = fcluster(z, 0.1 * z[-1, 2], criterion="distance")
    assert adjusted_rand_score(height_labels, official) == 1.0
    assert height_info["root_height"] == pytest.approx(z[-1, 2], rel=1e-9)
    assert labels.max() < height_labels.max()  # dSSE <= 0.1 dSSE_max is the coarser cut


def test_condensed_distances_match_pdist():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((301, 40)) + 100).astype(np.float32)  # large offset: cancellation test
    np.testing.assert_allclose(condensed_distances(x, block_rows=64), pdist(x.astype(np.float64)), rtol=1e-9)


# ----------------------------------------------------------------------------------------------
# hand-worked values
# ----------------------------------------------------------------------------------------------
# Cluster A: (5, -4/3), (8, -4/3), (5, 8/3): the 3-4-5 triangle, mean (6, 0), informativeness 1, 2, 3.
#   D12 = 3, D13 = 4, D23 = 5; sum over all ordered pairs = 2 (3 + 4 + 5) = 24, mean = 24 / 3 = 8.
#   U1 = (3*2 + 4*3) / 8 = 2.25, U2 = (3*1 + 5*3) / 8 = 2.25, U3 = (4*1 + 5*2) / 8 = 1.75.
#   paper: divide by sum I = 6 and by the mean distance over all 9 ordered pairs, 24 / 9:
#   (18/6) / (8/3) = 9/8, 9/8, (14/6) / (8/3) = 7/8 (the official values / the mean I of 2).
# Cluster B: (0, 7) alone: 0 / 0 -> NaN in both modes (0 with singleton="zero").
# Cluster C: (-2, 0), (-4, 0), mean (-3, 0), informativeness 4, 5: D = 2, mean distance 4 / 2 = 2,
#   U = (2*5)/2 = 5 and (2*4)/2 = 4; paper: (10/9) / (4/4) and (8/9) / 1.
# Association: cos(A, B) = 0, cos(A, C) = -1, cos(B, C) = 0, so
#   tau_A = (e^0 + e^-1) / 2, tau_B = (e^0 + e^0) / 2 = 1, tau_C = (e^-1 + e^0) / 2.
HAND_X = np.array([[5, -4 / 3], [8, -4 / 3], [5, 8 / 3], [0, 7], [-2, 0], [-4, 0]], dtype=np.float32)
HAND_LABELS = np.array([0, 0, 0, 1, 2, 2])
HAND_V = np.array([1.0, 2.0, 3.0, 6.0, 4.0, 5.0])


def test_hand_worked_uniqueness_and_association():
    u, means, stats = cluster_uniqueness(HAND_X, HAND_LABELS, HAND_V)
    np.testing.assert_allclose(u[[0, 1, 2, 4, 5]], [2.25, 2.25, 1.75, 5.0, 4.0], rtol=1e-6)
    assert np.isnan(u[3]) and stats["degenerate_clusters"] == 1
    np.testing.assert_allclose(means, [[6, 0], [0, 7], [-3, 0]], atol=1e-6)

    paper, _, _ = cluster_uniqueness(HAND_X, HAND_LABELS, HAND_V, mode="paper")
    np.testing.assert_allclose(paper[[0, 1, 2, 4, 5]], [9 / 8, 9 / 8, 7 / 8, 10 / 9, 8 / 9], rtol=1e-6)
    assert np.isnan(paper[3])
    zero, _, _ = cluster_uniqueness(HAND_X, HAND_LABELS, HAND_V, singleton="zero")
    assert zero[3] == 0.0
    paper_zero, _, _ = cluster_uniqueness(HAND_X, HAND_LABELS, HAND_V, mode="paper", singleton="zero")
    assert paper_zero[3] == 0.0

    tau = association_coefficients(means)
    e = math.e
    np.testing.assert_allclose(tau, [(1 + 1 / e) / 2, 1.0, (1 + 1 / e) / 2], rtol=1e-9)
    assert association_coefficients(means[:1]).tolist() == [pytest.approx(e)]  # single-cluster guard


def test_paper_uniqueness_does_not_depend_on_a_clusters_scale():
    # Scaling cluster A's features x10 about its mean multiplies every distance in it by 10; the
    # appendix's division by the mean intra-cluster distance cancels that.
    scaled = HAND_X.copy()
    centre = scaled[:3].mean(axis=0)
    scaled[:3] = centre + 10 * (scaled[:3] - centre)
    before, _, _ = cluster_uniqueness(HAND_X, HAND_LABELS, HAND_V, mode="paper")
    after, _, _ = cluster_uniqueness(scaled, HAND_LABELS, HAND_V, mode="paper")
    np.testing.assert_allclose(after[[0, 1, 2]], before[[0, 1, 2]], rtol=1e-5)
    np.testing.assert_allclose(after[[4, 5]], before[[4, 5]], rtol=1e-6)


def test_sampled_uniqueness_estimates_exact_values():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3000, 24)).astype(np.float32)
    v = rng.uniform(1, 5, 3000)
    labels = np.zeros(3000, dtype=int)
    exact, _, stats_exact = cluster_uniqueness(x, labels, v, max_refs=4000)
    approx, _, stats = cluster_uniqueness(x, labels, v, max_refs=1000, rng=np.random.default_rng(0))
    assert stats_exact["sampled_clusters"] == 0 and stats["sampled_clusters"] == 1
    assert np.max(np.abs(approx / exact - 1)) < 0.03
    assert np.corrcoef(approx, exact)[0, 1] > 0.95


def test_normalisations():
    # Ascending rank / n; NaN ranks highest; ties keep position order.
    np.testing.assert_allclose(rank_normalise([2.0, np.nan, 1.0, 2.0]), [0.25, 0.75, 0.0, 0.5])
    np.testing.assert_allclose(minmax_normalise([3.0, np.nan, 1.0, 2.0]), [1.0, 1.0, 0.0, 0.5])
    np.testing.assert_allclose(minmax_normalise([2.0, 2.0]), [0.0, 0.0])


def test_round_adaptive_combination_on_fixture():
    features, arrays, _ = load_fixture()
    result = DataTailor(normalize="minmax").select(features, 0.15)
    task = arrays["task"]
    r = arrays["rounds"].astype(float)
    for t in np.unique(task):
        rows = task == t
        q = [minmax_normalise(result.values[name][rows]) for name in ("informativeness", "uniqueness", "representativeness")]
        expected = (r[rows] * q[0] + q[1] + q[2]) / (r[rows] + 2)
        np.testing.assert_allclose(result.scores[rows], expected, rtol=1e-12)
        # the selected samples of the task are its top-k_t by the combined value
        k_t = int(result.selected[rows].sum())
        assert result.scores[rows][result.selected[rows]].min() >= np.sort(expected)[::-1][k_t - 1]


def test_paper_options_change_values_as_specified():
    features, arrays, _ = load_fixture()
    official = DataTailor().select(features, 0.15)
    paper = DataTailor(uniqueness="paper", representativeness="paper").select(features, 0.15)
    labels = official.values["cluster"]
    v = arrays["sve"].astype(float)
    cluster_sum = np.bincount(labels, weights=v)[labels]
    np.testing.assert_allclose(paper.values["representativeness"], official.values["representativeness"] / cluster_sum, rtol=1e-9)
    # paper uniqueness = official uniqueness / the cluster's mean informativeness; 0/0 stays NaN
    cluster_mean = cluster_sum / np.bincount(labels)[labels]
    np.testing.assert_allclose(paper.values["uniqueness"], official.values["uniqueness"] / cluster_mean, rtol=1e-5)
    assert np.array_equal(np.isnan(paper.values["uniqueness"]), np.isnan(official.values["uniqueness"]))
    assert paper.n_selected == official.n_selected == 360


@pytest.mark.parametrize("ablate", [["informativeness"], ["uniqueness"], ["representativeness"], ["round_weights"],
                                    ["uniqueness", "round_weights"]])
def test_ablations_drop_one_term_of_the_combination(ablate):
    features, arrays, _ = load_fixture()
    full = DataTailor().select(features, 0.15)
    result = DataTailor(ablate=ablate).select(features, 0.15)
    for name in ("informativeness", "uniqueness", "representativeness", "cluster"):  # values unchanged
        np.testing.assert_array_equal(result.values[name], full.values[name])
    task, r = arrays["task"], arrays["rounds"].astype(float)
    for t in np.unique(task):
        rows = task == t
        q = {name: rank_normalise(result.values[name][rows]) for name in ("informativeness", "uniqueness", "representativeness")}
        w = {"informativeness": np.ones(rows.sum()) if "round_weights" in ablate else r[rows],
             "uniqueness": np.ones(rows.sum()), "representativeness": np.ones(rows.sum())}
        for name in ablate:
            if name in w:
                w[name] = np.zeros(rows.sum())
        expected = sum(w[name] * q[name] for name in q) / sum(w.values())
        np.testing.assert_allclose(result.scores[rows], expected, rtol=1e-12)
    assert result.info["ablate"] == ablate and result.n_selected == full.n_selected
    assert not np.array_equal(result.selected, full.selected)
    # the task budgets still follow n_t xbar_t^2
    assert [t["budget"] for t in result.info["tasks"]] == [t["budget"] for t in full.info["tasks"]]


def test_task_ratio_ablation_splits_the_budget_by_task_size():
    features, arrays, _ = load_fixture()
    full = DataTailor().select(features, 0.15)
    result = DataTailor(ablate=["task_ratio"]).select(features, 0.15)
    sizes = np.array([t["n"] for t in result.info["tasks"]])
    expected, _ = split_budget(360, sizes, sizes.astype(float))
    assert [t["budget"] for t in result.info["tasks"]] == expected.tolist()
    assert [t["budget"] for t in result.info["tasks"]] != [t["budget"] for t in full.info["tasks"]]
    np.testing.assert_array_equal(result.scores, full.scores)


def test_ablation_parameter_is_checked():
    for bad in (["uniqueness", "uniqueness"], ["novelty"], "uniqueness",
                ["informativeness", "uniqueness", "representativeness"]):
        with pytest.raises(ConfigError, match="ablate"):
            DataTailor(ablate=bad)


# ----------------------------------------------------------------------------------------------
# budgets
# ----------------------------------------------------------------------------------------------
def test_budget_cap_and_redistribution():
    sizes = np.array([100, 10, 50])
    weights = np.array([1.0, 5.0, 1.0])
    # raw shares 61 * (1, 5, 1) / 7 = (8.71, 43.57, 8.71): task 1 is capped at its 10 samples,
    # the remaining 51 are re-split 1:1 -> 25.5 each.
    budgets, info = split_budget(61, sizes, weights, fill="remainder")
    assert budgets.tolist() == [26, 10, 25]  # tie in fractional part: earlier task gets the extra
    assert info["capped_tasks"] == [1] and info["tasks"][1]["capped"]
    assert info["redistributed"] == pytest.approx(61 * 5 / 7 - 10)
    official, info = split_budget(61, sizes, weights, fill="official")
    assert official.tolist() == [25, 10, 25] and info["shortfall"] == 1


def test_budget_rate_clamp():
    sizes = np.array([100, 100])
    budgets, info = split_budget(50, sizes, np.array([1.0, 9.0]), rate_clamp=(0.1, 0.4))
    assert budgets.tolist() == [10, 40] and info["capped_tasks"] == [1]  # 45 capped at 40
    budgets, info = split_budget(50, sizes, np.array([1.0, 99.0]), rate_clamp=(0.2, 1.0))
    assert budgets.tolist() == [20, 30] and info["raised_tasks"] == [0]  # 0.5 raised to 20
    with pytest.raises(BudgetError):
        split_budget(90, sizes, np.array([1.0, 1.0]), rate_clamp=(0.0, 0.4))


@pytest.mark.parametrize("fill", ["official", "remainder"])
def test_rate_clamp_lower_bound_holds_after_flooring(fill):
    # task 0's share 0.1 is raised to 0.05 * 30 = 1.5 samples; a floor of 1.5 would give a rate
    # of 1/30 = 0.033, below the bound: the bound is the integer ceil(1.5) = 2.
    sizes = np.array([30, 70])
    budgets, info = split_budget(10, sizes, np.array([1.0, 99.0]), fill=fill, rate_clamp=(0.05, 1.0))
    assert budgets.tolist() == [2, 8] and info["raised_tasks"] == [0]
    assert (budgets / sizes >= 0.05).all()


def test_exact_budget_met_and_task_budgets_respected():
    rng = np.random.default_rng(2)
    features = random_features(rng, [120, 7, 60, 33])
    # task t1 has a high sigma_1 share: its raw budget k * 1.75 / 3.88 exceeds its 7 samples
    top = np.where(features.tasks == "t1", 0.5, 0.1)
    features = features.with_columns(sv_top_ratio=top)
    for budget in (0.15, 0.5, 97, 220):
        result = DataTailor().select(features, budget)
        k = result.info["budget"]
        assert result.n_selected == k
        tasks = features.tasks
        for t in result.info["tasks"]:
            assert result.selected[tasks == t["task"]].sum() == t["budget"] <= t["n"]
        assert result.info["capped_tasks"][:1] == ["t1"] and result.info["tasks"][1]["capped"]
        assert result.selected[tasks == "t1"].all()


def test_one_cluster_tasks_are_guarded():
    rng = np.random.default_rng(3)
    features = random_features(rng, [40, 25])
    # lam = 1 cuts at the root height: every task is a single cluster (K_t - 1 = 0 officially).
    result = DataTailor(lam=1.0).select(features, 0.2)
    assert result.info["single_cluster_tasks"] == ["t0", "t1"]
    np.testing.assert_allclose(result.values["association"], math.e)
    np.testing.assert_allclose(result.values["representativeness"], math.e * features.column("sve"))
    assert result.n_selected == 13
    # A task of identical samples: one cluster, mean distance 0 -> NaN uniqueness, still selects.
    x = np.asarray(features.array("last_token")).copy()
    x[:40] = x[0]
    same = features.with_arrays(last_token=x)
    result = DataTailor().select(same, 0.2)
    first = result.info["tasks"][0]
    assert first["clusters"] == 1 and first["degenerate_clusters"] == 1
    assert np.isnan(result.values["uniqueness"][:40]).all()
    assert result.n_selected == 13


# ----------------------------------------------------------------------------------------------
# tasks, reading, errors
# ----------------------------------------------------------------------------------------------
def test_llava_block_preset():
    n = sum(LLAVA665K_BLOCK_SIZES)
    features = FeatureSet.from_arrays(n=n)
    blocks = DataTailor(task_preset="llava665k-blocks")._task_rows(features)
    assert len(blocks) == 12
    assert [(int(rows[0]), int(rows[-1])) for _, rows in blocks][6] == (315653, 364099)
    assert blocks[-1][1][-1] == 665297 and sum(len(rows) for _, rows in blocks) == n
    small = FeatureSet.from_arrays(n=10)
    with pytest.raises(ConfigError, match="665298"):
        DataTailor(task_preset="llava665k-blocks")._task_rows(small)


def test_memmap_reading_matches_in_memory(tmp_path):
    rng = np.random.default_rng(4)
    sizes = [50, 40, 30]
    features = random_features(rng, sizes, tasks=["a", "b", "c"])
    # interleave the tasks so the reader also handles scattered rows
    order = rng.permutation(sum(sizes))
    shuffled = features.subset(order)
    shuffled = shuffled.with_arrays(last_token=np.asarray(shuffled.array("last_token"), dtype=np.float16))
    shuffled.save(tmp_path)
    loaded = FeatureSet.load(tmp_path)
    assert isinstance(loaded.array("last_token"), np.memmap)
    reader = RowReader(loaded.array("last_token"), block_rows=7)
    assert reader._file is not None
    rows = np.flatnonzero(loaded.tasks == "b")
    np.testing.assert_array_equal(reader.read(rows), np.asarray(shuffled.array("last_token"))[rows].astype(np.float32))
    a = DataTailor(block_rows=16).select(loaded, 0.3)
    b = DataTailor().select(shuffled, 0.3)
    np.testing.assert_array_equal(a.selected, b.selected)
    np.testing.assert_allclose(a.scores, b.scores)


def test_non_finite_last_token_is_refused():
    rng = np.random.default_rng(5)
    features = random_features(rng, [20, 20])
    x = np.asarray(features.array("last_token")).copy()
    x[23, 4] = np.nan
    with pytest.raises(NonFiniteFeaturesError, match="23"):
        DataTailor().select(features.with_arrays(last_token=x), 0.2)


def test_parameter_validation_and_needs():
    method = DataTailor()
    needs = {n.name: n for n in method.feature_needs()}
    assert needs["sve"].produced_by == needs["sv_top_ratio"].produced_by == "spectrum"
    assert needs["last_token"].kind == "array" and needs["last_token"].produced_by == "last_token"
    assert needs["rounds"].produced_by is None
    assert method.extract_features() == ["spectrum", "last_token"]
    for bad in ({"uniqueness": "x"}, {"lam": 0.0}, {"rate_clamp": (0.5, 0.1)}, {"fill": "nope"}):
        with pytest.raises(ConfigError):
            DataTailor(**bad).feature_needs()


# ----------------------------------------------------------------------------------------------
# approximate route and determinism
# ----------------------------------------------------------------------------------------------
def test_approximate_ward_agrees_with_exact_on_clustered_data():
    rng = np.random.default_rng(6)
    centres = rng.standard_normal((6, 32)) * 6
    x = blobs(200, centres, [0.5, 1.0, 0.7, 1.2, 0.6, 0.9], rng).astype(np.float32)
    exact, _ = ward_labels_exact(x)
    approx, info = ward_labels_approx(x, micro_clusters=100, ward_points=400, dim=8, seed=0)
    assert info["micro_clusters"] <= 100 and info["ward_points"] <= 400
    assert adjusted_rand_score(exact, approx) > 0.9
    # through the method: route recorded per task, selections largely the same
    features = FeatureSet.from_arrays(
        columns={"sve": rng.uniform(3, 7, len(x)), "sv_top_ratio": np.full(len(x), 0.1), "rounds": np.ones(len(x))},
        arrays={"last_token": x},
    )
    a = DataTailor().select(features, 0.2)
    b = DataTailor(exact_ward_max=500, approx_micro_clusters=100, approx_ward_points=400, approx_dim=8).select(features, 0.2)
    assert a.info["ward_routes"] == {"all": "exact"} and b.info["ward_routes"] == {"all": "approximate"}
    jaccard = (a.selected & b.selected).sum() / (a.selected | b.selected).sum()
    assert jaccard > 0.7


def test_replica_scale_uses_the_ward_budget():
    weights = np.array([1.0, 3.0, 10.0, 40.0, 200.0])
    scale = _replica_scale(weights, 60)
    count = lambda s: int(np.maximum(1, np.rint(weights / s)).sum())  # noqa: E731
    assert count(scale) <= 60 < count(scale * 0.99)  # the finest unit that fits (to 1 %)
    assert _replica_scale(weights, 1000) == 1.0  # room for every sample: exact integer weights


def test_deterministic():
    rng = np.random.default_rng(7)
    features = random_features(rng, [300, 200])
    params = dict(exact_ward_max=250, approx_micro_clusters=60, approx_ward_points=200, approx_dim=4, uniqueness_max_refs=50)
    a = DataTailor(**params).select(features, 0.25)
    b = DataTailor(**params).select(features, 0.25)
    np.testing.assert_array_equal(a.selected, b.selected)
    np.testing.assert_array_equal(a.scores, b.scores)
    for name in a.values:
        np.testing.assert_array_equal(a.values[name], b.values[name])
    assert json.dumps(a.info) == json.dumps(b.info)  # also JSON-serialisable
    assert a.info["tasks"][0]["uniqueness_sampled_clusters"] > 0


# ----------------------------------------------------------------------------------------------
# fit once, select several budgets
# ----------------------------------------------------------------------------------------------
def test_one_fit_serves_every_budget(monkeypatch):
    rng = np.random.default_rng(8)
    features = random_features(rng, [300, 200, 120])
    params = dict(exact_ward_max=250, approx_micro_clusters=60, approx_ward_points=200, approx_dim=4, uniqueness_max_refs=50)
    calls = []
    cluster = DataTailor.cluster
    monkeypatch.setattr(DataTailor, "cluster", lambda self, x, rng=None: calls.append(len(x)) or cluster(self, x, rng))
    fitted = DataTailor(**params).fit(features)
    assert calls == [300, 200, 120]  # one clustering per task, before any budget
    for budget in (0.1, 0.15, 0.2, 37):
        swept = fitted.select_budget(budget)
        fresh = DataTailor(**params).select(features, budget)
        np.testing.assert_array_equal(swept.selected, fresh.selected)
        np.testing.assert_array_equal(swept.scores, fresh.scores)
        assert swept.values.keys() == fresh.values.keys()
        for name in fresh.values:
            np.testing.assert_array_equal(swept.values[name], fresh.values[name])
        assert json.dumps(swept.info) == json.dumps(fresh.info)
    assert len(calls) == 3 + 4 * 3  # the sweep itself clustered nothing
    assert fitted.select_budget(0.1).n_selected == int(0.1 * 620)


# ----------------------------------------------------------------------------------------------
# weighted Ward and the micro-cluster count of the approximate route
# ----------------------------------------------------------------------------------------------
def hierarchical_blobs(rng, n, dim):
    """Groups -> sub-blobs -> points plus 1 % broad outliers (the scale benchmark's shape)."""
    groups = rng.standard_normal((12, dim))
    subs = groups[rng.integers(0, 12, 60)] + rng.standard_normal((60, dim)) * rng.uniform(0.15, 0.45, (60, 1))
    member = rng.integers(0, 60, n)
    x = subs[member] + rng.standard_normal((n, dim)) * rng.uniform(0.04, 0.2, 60)[member, None]
    outliers = rng.random(n) < 0.01
    x[outliers] = rng.standard_normal((int(outliers.sum()), dim)) * 1.5
    return x.astype(np.float32)


@pytest.mark.parametrize("n", [300, 2500])  # 2,500: the matrix sheds merged rows on the way
def test_weighted_ward_with_unit_weights_is_scipy_ward(n):
    x = np.random.default_rng(11).standard_normal((n, 7))
    z = weighted_ward_linkage(x, np.ones(n), block_rows=64)  # several blocks: the mirrored triangle
    reference = linkage(x, method="ward")
    np.testing.assert_array_equal(z[:, [0, 1, 3]], reference[:, [0, 1, 3]])
    np.testing.assert_allclose(z[:, 2], reference[:, 2], rtol=1e-12)


def test_weighted_ward_equals_ward_on_repeated_points():
    rng = np.random.default_rng(12)
    points = rng.standard_normal((120, 5))
    weights = rng.integers(1, 6, 120)
    z = weighted_ward_linkage(points, weights, block_rows=50)
    repeated = linkage(np.repeat(points, weights, axis=0), method="ward")
    # The copies merge first at height 0; the remaining merges are those of the weighted tree.
    np.testing.assert_allclose(z[:, 2], repeated[-119:, 2], rtol=1e-10)
    first_copy = np.concatenate([[0], np.cumsum(weights)[:-1]])
    for height in (0.5, 1.0, 2.0, 4.0):
        ours = fcluster(z, height, criterion="distance")
        theirs = fcluster(repeated, height, criterion="distance")[first_copy]
        assert adjusted_rand_score(ours, theirs) == 1.0
    # Unequal weights matter: the same points with unit weights give another tree.
    assert not np.allclose(weighted_ward_linkage(points, np.ones(120))[:, 2], z[:, 2])


@pytest.mark.parametrize(
    ("n", "exact_ward_max", "per_micro", "expected"),
    [
        (86417, 10000, 5.0, 17284),  # ceil(86,417 / 5)
        (30000, 10000, 5.0, 6000),
        (20000, 10000, 5.0, 5000),  # never below exact_ward_max / 2: no cost step at the switch
        (10001, 10000, 5.0, 5000),
        (10001, 10001, 5.0, 5001),
        (2000, 0, 5.0, 400),
        (2001, 0, 2.0, 1001),
        (300, 1000, 5.0, 300),  # never more than the samples
    ],
)
def test_auto_micro_clusters(n, exact_ward_max, per_micro, expected):
    method = DataTailor(exact_ward_max=exact_ward_max, approx_samples_per_micro=per_micro)
    assert method.micro_clusters_for(n) == expected
    assert DataTailor(approx_micro_clusters=123).micro_clusters_for(n) == 123  # integers are kept


def test_default_approximate_route_agrees_with_exact_ward():
    """Approximate route forced on 2,000-sample tasks (exact_ward_max=0): the default ceil(n / 8)
    = 250 micro-clusters with exact weights select nearly what exact Ward selects; 20 samples per
    micro-cluster (the earlier full-scale regime) select visibly less alike."""
    default_ratio = DataTailor().approx_samples_per_micro
    agreement = {default_ratio: [], 20.0: []}
    for seed in range(4):
        rng = np.random.default_rng(seed)
        n = 2000
        features = FeatureSet.from_arrays(
            columns={"sve": rng.uniform(3, 7, n), "sv_top_ratio": np.full(n, 0.1), "rounds": rng.integers(1, 3, n)},
            arrays={"last_token": hierarchical_blobs(rng, n, 16)},
        )
        exact = DataTailor(uniqueness_max_refs=10**9).select(features, 0.2)
        assert exact.info["ward_routes"] == {"all": "exact"}
        for per_micro, found in agreement.items():
            approx = DataTailor(exact_ward_max=0, approx_samples_per_micro=per_micro,
                                uniqueness_max_refs=10**9).select(features, 0.2)
            task = approx.info["tasks"][0]
            assert task["route"] == "approximate" and task["weight_error_mean"] == 0.0
            assert 0.95 * n / per_micro <= task["micro_clusters"] <= n / per_micro
            found.append((exact.selected & approx.selected).sum() / (exact.selected | approx.selected).sum())
    # Harder than the docs' 4,096-d benchmark (16-d, overlapping sub-blobs, only 250 micro-clusters):
    # Jaccard 0.91-1.00 here, mean 0.95.
    assert min(agreement[default_ratio]) >= 0.88 and np.mean(agreement[default_ratio]) >= 0.93
    assert np.mean(agreement[20.0]) < np.mean(agreement[default_ratio]) - 0.05


def test_integer_ward_points_still_round_the_weights():
    rng = np.random.default_rng(13)
    x = hierarchical_blobs(rng, 1500, 8)
    labels, info = ward_labels_approx(x, micro_clusters=300, ward_points=600, dim=None, seed=0)
    assert info["micro_clusters"] == 300 and 300 <= info["ward_points"] <= 600
    assert info["weight_scale"] > 1 and info["weight_error_mean"] > 0
    exact_weights, exact_info = ward_labels_approx(x, micro_clusters=300, dim=None, seed=0)
    assert exact_info["weight_scale"] == 1.0 and exact_info["ward_points"] == 1500
    assert adjusted_rand_score(labels, exact_weights) > 0.8  # same micro-clusters, rounded weights
    with pytest.raises(ConfigError, match="approx_ward_points"):
        DataTailor(approx_micro_clusters=100, approx_ward_points=50).feature_needs()
    DataTailor(approx_ward_points=50).feature_needs()  # with "auto" micro-clusters: at least one copy each


def test_two_level_micro_clusters_cover_every_row_with_about_m_groups():
    from mmselect.methods.datatailor.clustering import KMEANS_FLAT_MAX, _micro_cluster_labels

    rng = np.random.default_rng(14)
    work = hierarchical_blobs(rng, 6000, 8)
    m = 1500
    assert m > KMEANS_FLAT_MAX  # the two-level path
    labels, _ = _micro_cluster_labels(work, m, backend="auto", seed=0)
    _, sizes = np.unique(labels, return_counts=True)
    assert labels.min() == 0 and labels.max() < 1.05 * m  # every row labelled
    assert 0.95 * m <= len(sizes) <= 1.05 * m
    assert sizes.max() < 40  # no giant group: about 4 rows each
    again, _ = _micro_cluster_labels(work, m, backend="auto", seed=0)
    np.testing.assert_array_equal(labels, again)
