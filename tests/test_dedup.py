"""The duplicate guard on small cases worked by hand."""

import math

import numpy as np
import pytest

from mmselect.dedup import find_duplicates
from mmselect.errors import ConfigError, MissingFeaturesError
from mmselect.features.store import FeatureSet


def _unit(degrees: float) -> list[float]:
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


def test_exact_keeps_the_first_occurrence_by_position_not_row_order():
    # rows are not in source order: the record at position 1 is the first "aaa"
    keys = ["0000003-aaa", "0000001-aaa", "0000002-bbb", "0000000-ccc", "0000004-aaa"]
    features = FeatureSet.from_arrays(keys=keys, columns={"position": np.array([3, 1, 2, 0, 4])})
    guard = find_duplicates(features, "exact")
    assert guard.duplicate_of.tolist() == ["0000001-aaa", "", "", "", "0000001-aaa"]
    assert guard.kind.tolist() == ["exact", "", "", "", "exact"]
    assert guard.n_duplicates == 2 and guard.info["exact"] == 2


def test_none_marks_nothing():
    features = FeatureSet.from_arrays(keys=["0000000-a", "0000001-a"])
    assert find_duplicates(features, "none").n_duplicates == 0


def test_near_compares_with_earlier_kept_records_of_the_same_task_only():
    # task t: 0, 20, 40, 90 deg; task u: 0 deg (identical to row 0, other task). Tasks v and w hold
    # the negated rows, so the mean unit row is zero and centring changes nothing here.
    # cos(0, 20) = .940 >= .9 -> row 1 repeats row 0; row 2 (40 deg) is compared with the kept
    # rows only: cos(0, 40) = .766 < .9, so it is kept although cos(20, 40) = .940.
    angles = [0, 20, 40, 90, 0, 180, 200, 220, 270, 180]
    embedding = np.array([_unit(a) for a in angles], dtype=np.float32)
    keys = [f"{i:07d}-h{i}" for i in range(10)]
    features = FeatureSet.from_arrays(
        keys=keys, tasks=["t", "t", "t", "t", "u", "v", "v", "v", "v", "w"], columns={"position": np.arange(10)},
        arrays={"last_token": embedding},
    )
    guard = find_duplicates(features, "near", threshold=0.9)
    assert guard.duplicate_of.tolist() == ["", keys[0], "", "", "", "", keys[5], "", "", ""]
    assert guard.kind.tolist()[:2] == ["", "near"]
    assert guard.info["embedding"] == "last_token" and guard.info["near"] == 2
    # a looser threshold catches the 40-degree record too (cos .766 >= .75)
    loose = find_duplicates(features, "near", threshold=0.75).duplicate_of.tolist()
    assert loose[:5] == ["", keys[0], keys[0], "", ""]


def test_near_compares_centred_embeddings():
    # every row shares a large common direction: raw cosines are all above .99, yet only the planted
    # copy is a near duplicate once the mean is taken out
    rng = np.random.default_rng(2)
    common = 20.0 * rng.standard_normal(16).astype(np.float32)
    rows = common + rng.standard_normal((30, 16)).astype(np.float32)
    rows[29] = rows[3] + 1e-3
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    assert (unit @ unit.T).min() > 0.99
    keys = [f"{i:07d}-h{i}" for i in range(30)]
    features = FeatureSet.from_arrays(keys=keys, columns={"position": np.arange(30)}, arrays={"last_token": rows})
    guard = find_duplicates(features, "near", threshold=0.95)
    assert guard.n_duplicates == 1 and guard.duplicate_of[29] == keys[3]


def test_near_after_exact_and_every_row_accounted_for():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((40, 16)).astype(np.float32)
    embedding = np.concatenate([base, base[:5] + 1e-4, base[5:8]])  # 5 near copies, 3 exact copies
    hashes = [f"h{i}" for i in range(45)] + [f"h{i}" for i in range(5, 8)]
    keys = [f"{i:07d}-{h}" for i, h in enumerate(hashes)]
    features = FeatureSet.from_arrays(keys=keys, columns={"position": np.arange(48)}, arrays={"last_token": embedding})
    guard = find_duplicates(features, "near", threshold=0.99)
    assert guard.info["exact"] == 3 and guard.info["near"] == 5
    assert guard.duplicate_of[40:45].tolist() == keys[:5]
    assert guard.duplicate_of[45:].tolist() == keys[5:8]
    assert guard.kept.sum() == 40


def test_near_needs_an_embedding_and_bad_options_are_refused():
    features = FeatureSet.from_arrays(keys=["0000000-a", "0000001-b"])
    with pytest.raises(MissingFeaturesError, match="last_token"):
        find_duplicates(features, "near")
    with pytest.raises(ConfigError):
        find_duplicates(features, "fuzzy")
    with pytest.raises(ConfigError):
        find_duplicates(features, "near", threshold=1.5)


def test_near_with_several_clusters_finds_every_planted_copy():
    rng = np.random.default_rng(1)
    base = rng.standard_normal((280, 32)).astype(np.float32)
    copies = base[:20] + 1e-3 * rng.standard_normal((20, 32)).astype(np.float32)
    embedding = np.concatenate([base, copies])
    keys = [f"{i:07d}-h{i}" for i in range(300)]
    features = FeatureSet.from_arrays(keys=keys, columns={"position": np.arange(300)}, arrays={"last_token": embedding})
    guard = find_duplicates(features, "near", threshold=0.99)
    from mmselect.methods.semdedup import SemDeDup

    assert SemDeDup().resolve_clusters(300) > 1  # the k-means partition is really used
    assert guard.duplicate_of[280:].tolist() == keys[:20]
    assert guard.n_duplicates == 20  # random 32-d rows are far apart: nothing else is marked
