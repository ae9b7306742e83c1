"""mmSSR sampler: official parity, the official rules on hand-made cases, the fixed bugs, user scores."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmselect.errors import DataFormatError, MissingFeaturesError, NonFiniteFeaturesError
from mmselect.features.store import FeatureSet
from mmselect.methods import get_method
from mmselect.methods.mmssr import MMSSR, load_user_scores
from mmselect.methods.mmssr_sampler import mmssr_sample, tie_break_ranks

FIXTURE = Path(__file__).parent / "fixtures" / "mmssr_official" / "case1"


def _styles(rows):
    out = np.empty(len(rows), dtype=object)
    out[:] = [list(r) for r in rows]
    return out


def _features(scores: dict, styles, tasks, keys=None) -> FeatureSet:
    columns = {f"score_{c}": np.asarray(v, dtype=float) for c, v in scores.items()}
    columns["styles"] = _styles(styles)
    return FeatureSet.from_arrays(keys=keys, tasks=tasks, columns=columns)


def _fixture_features() -> FeatureSet:
    with open(FIXTURE / "scores.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    records = json.loads((FIXTURE / "styles.json").read_text())
    assert [int(r["idx"]) for r in rows] == [r["idx"] for r in records]
    value = lambda text: float(text) if text != "" else np.nan  # noqa: E731
    scores = {c: [value(r[c]) for r in rows] for c in ("spatial", "ocr", "logic")}
    return _features(
        scores, [r["styles"] for r in records], [r["image_source"] for r in records], keys=[r["idx"] for r in rows]
    )


# --- parity with the official sampler ------------------------------------------------------------------
def test_official_parity_case1():
    features = _fixture_features()
    assert np.isnan(features.column("score_logic")).any()  # the fixture has unparsable replies
    official = json.loads((FIXTURE / "official_selected.json").read_text())
    result = get_method("mmssr").select(features, 0.25)
    assert result.n_selected == 300
    assert sorted(int(k) for k in features.keys[result.selected]) == official
    # Parity does not depend on the tie-break: the fixture scores are distinct.
    again = MMSSR(seed=None).select(features, 0.25)
    assert np.array_equal(again.selected, result.selected)


def test_capability_order_matters_and_defaults_to_column_order():
    features = _fixture_features()
    default = MMSSR().select(features, 300)
    named = MMSSR(capabilities=["spatial", "ocr", "logic"]).select(features, 300)
    reordered = MMSSR(capabilities=["ocr", "spatial", "logic"]).select(features, 300)
    assert np.array_equal(default.selected, named.selected)
    assert not np.array_equal(default.selected, reordered.selected)
    assert reordered.info["capabilities"] == ["ocr", "spatial", "logic"]


# --- official rules on hand-made cases -------------------------------------------------------------------
def test_melt_order_first_styles_come_first_inside_a_bin():
    # Bin "y+t" lists B (its first style) before A (its second style) although A scores higher.
    features = _features(
        {"c": [5, 1, 4, 4, 4]},
        [["x", "y"], ["y"], ["x"], ["x"], ["x"]],
        ["t"] * 5,
        keys=["A", "B", "C", "D", "E"],
    )
    result = MMSSR().select(features, 1)
    assert list(features.keys[result.selected]) == ["B"]
    assert result.values["mmssr_bin"][1] == "y+t"


def test_smallest_bin_first_and_debt_carried_forward():
    # q = 6 over two bins: per-bin quota 3; the 1-sample bin gives 1 and passes 2 on.
    scores = [9] + list(range(10, 0, -1))
    features = _features({"c": scores}, [["a"]] + [["b"]] * 10, ["t"] * 11)
    outcome = mmssr_sample([features.column("score_c")], [["a"]] + [["b"]] * 10, ["t"] * 11, 6)
    assert outcome["order"][0] == 0  # the small bin is served first
    assert list(outcome["order"][1:]) == [1, 2, 3, 4, 5]  # then the best 5 of bin b (3 + debt 2)
    assert set(outcome["bin"][outcome["order"]]) == {"a+t", "b+t"}


def test_a_bin_takes_no_more_than_what_is_left_of_the_quota():
    # Bins by size: a, b, c hold only sample 0 (three styles), d holds samples 1-4. Budget 3 over
    # 4 bins: one per bin; a takes sample 0, which empties b and c, so their two unused picks
    # carry to d as debt. Uncapped, d would take 1 + 2 = 3 and the total would be 4.
    styles = [["a", "b", "c"], ["d"], ["d"], ["d"], ["d"]]
    features = _features({"x": [5, 4, 3, 2, 1]}, styles, ["s"] * 5)
    result = get_method("mmssr").select(features, 3)
    assert result.n_selected == 3
    assert result.order.tolist() == [0, 1, 2]
    assert result.values["mmssr_bin"][[0, 1, 2]].tolist() == ["a+s", "d+s", "d+s"]


def test_bins_are_style_plus_source():
    # Same style, two sources -> two bins, served evenly although source s1 has the better scores.
    n = 8
    features = _features({"c": [8, 7, 6, 5, 4, 3, 2, 1]}, [["yes/no"]] * n, ["s1"] * 4 + ["s2"] * 4)
    result = MMSSR().select(features, 4)
    assert sorted(features.tasks[result.selected]) == ["s1", "s1", "s2", "s2"]
    assert result.info["n_bins"] == 2


def test_round_robin_gives_each_capability_an_equal_share():
    rng = np.random.default_rng(3)
    n = 60
    features = _features(
        {"a": rng.integers(1, 6, n), "b": rng.integers(1, 6, n), "c": rng.integers(1, 6, n)},
        [["s"]] * n,
        ["t"] * n,
    )
    result = MMSSR().select(features, 30)
    assert result.info["picked_per_capability"] == {"a": 10, "b": 10, "c": 10}
    assert result.info["filled"] == 0


def test_threshold_excludes_low_scores_from_the_pools():
    features = _features({"c": [1, 2, 3, 4, 5, 0]}, [["s"]] * 6, ["t"] * 6)
    result = MMSSR(threshold=2).select(features, 3)
    assert sorted(features.column("score_c")[result.selected]) == [3, 4, 5]
    assert result.info["filled"] == 0


# --- fixed bugs -------------------------------------------------------------------------------------------
def test_dry_capabilities_stop_cleanly_and_fill_by_best_score():
    # Only two samples have a score > 0: the official loop would crash; here it fills the rest.
    features = _features(
        {"a": [3, 0, -2, np.nan, 0, -3], "b": [0, 2, -1, np.nan, -0.5, np.nan]},
        [["s"], ["s"], ["s"], ["s"], ["s"], []],
        ["t"] * 6,
        keys=list("uvwxyz"),
    )
    result = MMSSR().select(features, 5)
    assert result.n_selected == 5
    assert result.info["filled"] == 3
    assert set(result.info["dropped_capabilities"]) == {"a", "b"}
    keys = list(features.keys[result.order])
    assert keys[:2] == ["u", "v"]  # picked by the sampler, in pick order
    assert keys[2:] == ["y", "w", "z"]  # best remaining score over the capabilities (0, -1, -3)
    assert "x" not in keys  # NaN everywhere ranks last
    assert list(result.values["mmssr_capability"][result.order[2:]]) == ["fill"] * 3

    short = MMSSR(fill="none").select(features, 5)
    assert short.n_selected == 2 and "budget_shortfall" in short.info

    randomly = MMSSR(fill="random").select(features, 6)
    assert randomly.n_selected == 6


def test_empty_pool_from_the_start_does_not_crash():
    # every score at the threshold: no pool, the fill rule alone meets the budget
    features = _features({"a": [0.0, 0.0, np.nan, 0.0]}, [["s"]] * 4, ["t"] * 4)
    result = MMSSR().select(features, 2)
    assert result.n_selected == 2 and result.info["filled"] == 2 and result.info["rounds"] == 1


def test_no_parsable_score_at_all_is_refused():
    features = _features({"a": [np.nan] * 4, "b": [np.nan] * 4}, [["s"]] * 4, ["t"] * 4)
    for fill in ("max-score", "random", "none"):
        with pytest.raises(NonFiniteFeaturesError, match="every score is NaN.*score_a, score_b.*4 samples"):
            MMSSR(fill=fill).select(features, 2)


def test_many_unparsable_scores_warn_with_the_count(caplog):
    # capability b: 2 of 4 NaN (50 % > 10 %); a: 1 of 4 (25 %) is under warn_unparsable=0.3
    features = _features({"a": [3, np.nan, 2, 1], "b": [np.nan, 4, np.nan, 1]}, [["s"]] * 4, ["t"] * 4)
    with caplog.at_level("WARNING", logger="mmselect.methods.mmssr"):
        result = MMSSR(warn_unparsable=0.3).select(features, 2)
    assert result.info["unparsable_scores"] == {"a": 1, "b": 2}
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "b: 2 of 4 samples" in warnings[0] and "a:" not in warnings[0]


def test_tie_break_is_seeded_recorded_and_independent_of_row_order():
    n = 12
    keys = [f"k{i}" for i in range(n)]
    features = _features({"c": [3.0] * n}, [["s"]] * n, ["t"] * n, keys=keys)
    picks = {}
    for seed in range(6):
        result = MMSSR(seed=seed).select(features, 1)
        assert "seed" in result.info["tie_break"] or str(seed) in result.info["tie_break"]
        assert result.info["seed"] == seed
        (picked,) = features.keys[result.selected]
        rank = tie_break_ranks(keys, seed)
        assert picked == keys[int(np.argmin(rank))]
        picks[seed] = picked
        # Same seed, rows shuffled: the same sample wins.
        perm = np.random.default_rng(seed).permutation(n)
        shuffled = features.subset(perm)
        again = MMSSR(seed=seed).select(shuffled, 1)
        assert list(shuffled.keys[again.selected]) == [picked]
    assert len(set(picks.values())) > 1  # the seed matters
    first = MMSSR(seed=None).select(features, 1)
    assert list(features.keys[first.selected]) == ["k0"]
    assert first.info["tie_break"] == "row order"


def test_budget_is_met_exactly_on_random_cases():
    rng = np.random.default_rng(0)
    styles_pool = ["multi-choice", "yes/no", "short description", "detailed description", "coordinate"]
    for trial in range(25):
        n = int(rng.integers(20, 200))
        caps = {f"c{j}": rng.integers(0, 6, n).astype(float) for j in range(int(rng.integers(1, 5)))}
        for values in caps.values():
            values[rng.random(n) < 0.1] = np.nan
        styles = [list(rng.choice(styles_pool, size=int(rng.integers(0, 4)), replace=False)) for _ in range(n)]
        tasks = rng.choice(["a", "b", "c"], size=n)
        features = _features(caps, styles, tasks)
        k = int(rng.integers(0, n + 1))
        result = MMSSR(threshold=float(rng.integers(0, 3)), seed=trial).select(features, k)
        assert result.n_selected == k
        assert len(result.order) == k and len(set(result.order.tolist())) == k
        assert np.array_equal(np.sort(result.order), result.indices)
        # The preference scores rank the selection first.
        assert set(np.argsort(-result.scores, kind="stable")[:k]) == set(result.indices)


def test_feature_needs_and_missing_scores():
    needs = MMSSR(capabilities=["ocr", "score_logic"]).feature_needs()
    assert [(n.name, n.produced_by, n.finite) for n in needs] == [
        ("score_ocr", "mmssr-scores", False),
        ("score_logic", "mmssr-scores", False),
        ("styles", "mmssr-scores", False),
    ]
    assert MMSSR().extract_features() == ["mmssr-scores"]
    features = FeatureSet.from_arrays(n=3, columns={"styles": _styles([["a"], ["a"], ["a"]])})
    with pytest.raises(MissingFeaturesError):
        MMSSR().select(features, 1)


def test_styles_saved_and_loaded_through_parquet(tmp_path):
    features = _fixture_features()
    loaded = FeatureSet.load(features.save(tmp_path / "feat"))
    result = MMSSR().select(loaded, 0.25)
    official = json.loads((FIXTURE / "official_selected.json").read_text())
    assert sorted(int(k) for k in loaded.keys[result.selected]) == official


# --- user-brought scores ------------------------------------------------------------------------------------
def test_load_user_scores_csv_by_key(tmp_path):
    path = tmp_path / "scores.csv"
    path.write_text(
        'key,score_ocr,score_logic,styles\n'
        '007,3,,"yes/no, multi-choice"\n'
        'b,1.5,2,"[""coordinate""]"\n'
        'c,nan,4,\n'
    )
    features = FeatureSet.from_arrays(keys=["b", "007", "c"], columns={})
    columns = load_user_scores(path, features)
    assert np.allclose(columns["score_ocr"], [1.5, 3, np.nan], equal_nan=True)
    assert np.allclose(columns["score_logic"], [2, np.nan, 4], equal_nan=True)
    assert list(columns["styles"]) == [["coordinate"], ["yes/no", "multi-choice"], []]
    merged = features.with_columns(**columns)
    assert MMSSR(capabilities=["logic"]).select(merged, 2).n_selected == 2


def test_load_user_scores_jsonl_and_parquet_by_position(tmp_path):
    rows = [
        {"position": 1, "score_spatial": 5, "styles": ["comparison"]},
        {"position": 0, "score_spatial": None, "styles": "yes/no,coordinate"},
    ]
    jsonl = tmp_path / "s.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    parquet = tmp_path / "s.parquet"
    pq.write_table(
        pa.table({"position": [1, 0], "score_spatial": [5.0, None], "styles": [["comparison"], ["yes/no", "coordinate"]]}),
        parquet,
    )
    for path in (jsonl, parquet):
        columns = load_user_scores(path, ["x", "y"])
        assert np.allclose(columns["score_spatial"], [np.nan, 5.0], equal_nan=True)
        assert list(columns["styles"]) == [["yes/no", "coordinate"], ["comparison"]]


def test_load_user_scores_errors(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps({"key": "zz", "score_a": 1}) + "\n")
    with pytest.raises(DataFormatError, match="not a sample"):
        load_user_scores(path, ["a", "b"])
    path.write_text(json.dumps({"key": "a", "score_a": 1}) + "\n" + json.dumps({"key": "a", "score_a": 2}) + "\n")
    with pytest.raises(DataFormatError, match="twice"):
        load_user_scores(path, ["a", "b"])
    path.write_text(json.dumps({"key": "a", "score_a": 1}) + "\n")
    with pytest.raises(DataFormatError, match="no row"):
        load_user_scores(path, ["a", "b"])
    columns = load_user_scores(path, ["a", "b"], allow_missing=True)
    assert np.allclose(columns["score_a"], [1, np.nan], equal_nan=True)
    path.write_text(json.dumps({"id": "a", "score_a": 1}) + "\n")
    with pytest.raises(DataFormatError, match="'key' or a 'position'"):
        load_user_scores(path, ["a"])


def test_user_scores_by_position_follow_record_positions_not_feature_rows(tmp_path):
    # record 1 was rejected: the features hold records 0, 2, 3 in rows 0, 1, 2
    features = FeatureSet.from_arrays(
        keys=["0000000-aa", "0000002-bb", "0000003-cc"], columns={"position": np.array([0, 2, 3])}
    )
    path = tmp_path / "s.jsonl"
    rows = [{"position": p, "score_ocr": float(p * 10)} for p in range(4)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    columns = load_user_scores(path, features)
    assert columns["score_ocr"].tolist() == [0.0, 20.0, 30.0]  # not [0, 10, 20]
    # without a position column, the position comes from the sample key
    keys_only = FeatureSet.from_arrays(keys=["0000000-aa", "0000002-bb", "0000003-cc"])
    assert load_user_scores(path, keys_only)["score_ocr"].tolist() == [0.0, 20.0, 30.0]
