"""FeatureSet.check_finite and the row scan behind it, on arrays saved and re-opened memory-mapped."""

import json
import os

import numpy as np
import pytest

from mmselect.errors import NonFiniteFeaturesError
from mmselect.features import rows as rows_module
from mmselect.features.rows import nonfinite_rows
from mmselect.features.store import FeatureSet
from mmselect.methods.base import FeatureNeed

N, D, BLOCK = 50, 8, 8  # 7 blocks, the last one partial


def _saved(tmp_path, values: np.ndarray) -> FeatureSet:
    keys = [f"k{i}" for i in range(len(values))]
    FeatureSet.from_arrays(keys=keys, arrays={"emb": values}).save(tmp_path / "feat")
    features = FeatureSet.load(tmp_path / "feat")
    assert isinstance(features.array("emb"), np.memmap)
    return features


def _clean(dtype) -> np.ndarray:
    values = np.random.default_rng(0).normal(size=(N, D)).astype(dtype)
    if dtype == np.float16:  # extremes that are finite: the largest value and a subnormal
        values[1, 0], values[2, 1], values[3, 2] = 65504, -65504, 6e-8
    return values


@pytest.fixture
def preads(monkeypatch):
    """Counts the pread calls made while a test runs."""
    calls = []
    inner = os.preadv

    def counted(fd, buffers, offset, *args):
        calls.append(offset)
        return inner(fd, buffers, offset, *args)

    monkeypatch.setattr(os, "preadv", counted)
    return calls


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_check_finite_names_the_keys_across_blocks(tmp_path, dtype, preads, monkeypatch):
    values = _clean(dtype)
    values[3, 5] = np.nan  # block 0
    values[22, 0] = np.inf  # block 2
    values[23, 7] = -np.inf  # block 2, next row
    values[49, 2] = np.nan  # the last, partial block
    features = _saved(tmp_path, values)
    through_the_mapping = []
    monkeypatch.setattr(rows_module, "release_pages", lambda array: through_the_mapping.append(array))

    with pytest.raises(NonFiniteFeaturesError) as error:
        features.check_finite([FeatureNeed("emb", "array", finite=True)], block_rows=BLOCK)
    message = str(error.value)
    assert "feature 'emb' has NaN or inf for 4 sample(s): k3, k22, k23, k49" in message
    assert "more" not in message
    # streamed with pread, never through the memory map
    assert len(preads) >= N // BLOCK and not through_the_mapping
    np.testing.assert_array_equal(nonfinite_rows(features.array("emb"), block_rows=BLOCK), [3, 22, 23, 49])
    np.testing.assert_array_equal(nonfinite_rows(features.array("emb")), [3, 22, 23, 49])  # default block size
    np.testing.assert_array_equal(nonfinite_rows(values, block_rows=BLOCK), [3, 22, 23, 49])  # in memory
    # a need declared finite=False is not checked
    features.check_finite([FeatureNeed("emb", "array", finite=False)], block_rows=BLOCK)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_check_finite_passes_a_clean_memory_mapped_array(tmp_path, dtype, preads):
    features = _saved(tmp_path, _clean(dtype))
    for block_rows in (BLOCK, 1, N, None):
        features.check_finite([FeatureNeed("emb", "array")], block_rows=block_rows)
    assert preads
    assert nonfinite_rows(features.array("emb"), block_rows=BLOCK).tolist() == []


def test_check_finite_shows_ten_keys_and_counts_the_rest(tmp_path):
    values = _clean(np.float16)
    bad = np.arange(5, N, 3)  # 15 rows, spread over every block
    values[bad, bad % D] = np.nan
    features = _saved(tmp_path, values)
    with pytest.raises(NonFiniteFeaturesError, match=r"for 15 sample\(s\): k5, k8, .*, k32 and 5 more"):
        features.check_finite([FeatureNeed("emb", "array")], block_rows=BLOCK)


# --- files that cannot be read, or do not fit the others --------------------------------------
from mmselect.errors import MissingFeaturesError  # noqa: E402
from mmselect.features.alignment import align_to_dataset  # noqa: E402
from mmselect.features.store import FeatureConflictError, FeatureFormatError  # noqa: E402


def _directory(tmp_path, n=4, **arrays) -> "Path":
    root = tmp_path / "feat"
    FeatureSet.from_arrays(keys=[f"k{i}" for i in range(n)], columns={"sve": np.arange(n, dtype=float)},
                           arrays=arrays, manifest={"model": {"name": "m", "revision": "r1"}, "feature_arrays": list(arrays)}
                           ).save(root)
    return root


@pytest.mark.parametrize("content", [b"", b"PAR1 not really parquet"])
def test_unreadable_samples_parquet_names_the_file(tmp_path, content):
    root = _directory(tmp_path)
    (root / "samples.parquet").write_bytes(content)
    with pytest.raises(FeatureFormatError, match=r"samples.parquet cannot be read as parquet"):
        FeatureSet.load(root)


@pytest.mark.parametrize("damage, reason", [("empty", "the file is empty"), ("short header", "not a valid .npy"),
                                            ("short data", ".npy"), ("text", "not a valid .npy")])
def test_unreadable_npy_names_the_file(tmp_path, damage, reason):
    root = _directory(tmp_path, emb=np.ones((4, 3), dtype=np.float32))
    data = (root / "emb.npy").read_bytes()
    (root / "emb.npy").write_bytes({"empty": b"", "short header": data[:100], "short data": data[:-10], "text": b"hello, not numpy"}[damage])
    with pytest.raises(FeatureFormatError, match="emb.npy") as caught:
        FeatureSet.load(root)
    assert reason in str(caught.value)


def test_object_array_is_refused_without_unpickling(tmp_path):
    root = _directory(tmp_path)
    np.save(root / "emb.npy", np.array([{"a": 1}] * 4, dtype=object), allow_pickle=True)
    with pytest.raises(FeatureFormatError, match="holds Python objects"):
        FeatureSet.load(root)


@pytest.mark.parametrize("shape", [(3, 5), (4,), (4, 2, 2)])
def test_array_of_the_wrong_shape_is_reported_as_such_not_as_missing(tmp_path, shape):
    from mmselect.methods.base import FeatureNeed

    root = _directory(tmp_path)
    np.save(root / "emb.npy", np.ones(shape, dtype=np.float32))
    features = FeatureSet.load(root)  # a hand-made file not listed in the manifest: read as a side file
    with pytest.raises(FeatureFormatError, match=rf"emb.npy has shape \({shape[0]},") as caught:
        features.require([FeatureNeed("emb", kind="array")], "semdedup")
    assert "one row per sample (4" in str(caught.value)
    with pytest.raises(FeatureFormatError):
        features.array("emb")
    # listed in the manifest as a feature array: refused when the directory is opened
    manifest = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps({**manifest, "feature_arrays": ["emb"]}))
    with pytest.raises(FeatureFormatError, match="emb.npy has shape"):
        FeatureSet.load(root)


def test_duplicate_keys_name_the_key_and_the_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "feat"
    root.mkdir()
    pq.write_table(pa.table({"key": ["a", "b", "a"], "task": ["t"] * 3}), root / "samples.parquet")
    with pytest.raises(FeatureFormatError, match=r"samples.parquet: sample keys must be unique; key 'a' appears 2 times"):
        FeatureSet.load(root)


@pytest.mark.parametrize("manifest, model", [([1, 2, 3], None), ({"model": "my-encoder"}, {"name": "my-encoder"}),
                                             ({"model": 7}, {"name": "7"})])
def test_free_form_manifest_is_kept_readable(tmp_path, manifest, model):
    root = _directory(tmp_path)
    (root / "manifest.json").write_text(json.dumps(manifest))
    loaded = FeatureSet.load(root)
    assert loaded.manifest.get("model") == model
    assert (loaded.manifest.get("model") or {}).get("name") == (model or {}).get("name")


def test_invalid_manifest_json_names_the_file(tmp_path):
    root = _directory(tmp_path)
    (root / "manifest.json").write_text("{not json")
    with pytest.raises(FeatureFormatError, match="manifest.json is not valid JSON"):
        FeatureSet.load(root)


def test_not_a_directory(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(MissingFeaturesError, match="it is a file"):
        FeatureSet.load(tmp_path / "file")


# --- a second extraction adds to the directory ------------------------------------------------
def _extracted(keys, columns, arrays, model=("m", "r1")):
    return FeatureSet.from_arrays(keys=keys, columns=columns, arrays=arrays,
                                  manifest={"model": {"name": model[0], "revision": model[1]},
                                            "features": list(columns) + list(arrays)})


def test_second_extraction_keeps_the_other_features(tmp_path):
    root = tmp_path / "feat"
    keys = ["k0", "k1", "k2"]
    emb = np.arange(6, dtype=np.float32).reshape(3, 2)
    _extracted(keys, {"sve": np.array([1.0, 2.0, 3.0])}, {"emb": emb}).save(root)
    second = _extracted(keys[::-1], {"answer_nll": np.array([0.3, 0.2, 0.1]), "sve": np.array([9.0, 8.0, 7.0])},
                        {"last_token": np.eye(3, dtype=np.float32)})
    second.added_to(root).save(root)
    merged = FeatureSet.load(root)
    assert merged.keys.tolist() == ["k2", "k1", "k0"]  # the new extraction's order
    assert merged.column("answer_nll").tolist() == [0.3, 0.2, 0.1]
    assert merged.column("sve").tolist() == [9.0, 8.0, 7.0]  # the new values replace the old
    assert np.array_equal(merged.array("emb"), emb[::-1])  # kept, reordered with its rows
    assert np.array_equal(merged.array("last_token"), np.eye(3))
    assert merged.manifest["features"] == ["sve", "emb", "answer_nll", "last_token"]
    assert sorted(merged.manifest["feature_arrays"]) == ["emb", "last_token"]


def test_second_extraction_in_the_same_order_leaves_the_arrays_files_alone(tmp_path):
    root = tmp_path / "feat"
    keys = ["k0", "k1"]
    _extracted(keys, {"sve": np.array([1.0, 2.0])}, {"emb": np.ones((2, 2), dtype=np.float32)}).save(root)
    before = (root / "emb.npy").stat().st_mtime_ns
    _extracted(keys, {"el2n": np.array([0.5, 0.6])}, {}).added_to(root).save(root)
    assert (root / "emb.npy").stat().st_mtime_ns == before
    assert set(FeatureSet.load(root).column_names) == {"key", "task", "sve", "el2n"}


@pytest.mark.parametrize("model, message", [(("other", "r1"), "model m at revision r1; this extraction uses model other"),
                                            (("m", "r2"), "revision r1; this extraction uses model m at revision r2")])
def test_features_of_another_model_are_refused(tmp_path, model, message):
    root = tmp_path / "feat"
    _extracted(["k0"], {"sve": np.array([1.0])}, {}).save(root)
    with pytest.raises(FeatureConflictError, match=message):
        _extracted(["k0"], {"el2n": np.array([1.0])}, {}, model=model).added_to(root)


def test_features_of_other_records_are_refused(tmp_path):
    root = tmp_path / "feat"
    _extracted(["k0", "k1"], {"sve": np.array([1.0, 2.0])}, {}).save(root)
    with pytest.raises(FeatureConflictError, match=r"1 record\(s\) only there, 1 only in this extraction"):
        _extracted(["k0", "k2"], {"el2n": np.array([1.0, 2.0])}, {}).added_to(root)


# --- a hand-made directory matched to its dataset by position -----------------------------------
def test_hand_made_keys_are_replaced_by_the_records_at_their_positions(tmp_path):
    from mmselect.data.readers import read_dataset
    from mmselect.features.alignment import dataset_keys

    records = [{"id": f"r{i}", "conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": "a"}]}
               for i in range(3)]
    data = tmp_path / "data.json"
    data.write_text(json.dumps(records))
    dataset = read_dataset(data)
    mine = FeatureSet.from_arrays(keys=["x", "y", "z"], columns={"position": np.array([2, 0, 1]), "sve": np.ones(3)})
    aligned = align_to_dataset(mine, dataset, dataset.by_key())
    keys = dataset_keys(data)
    assert aligned.keys.tolist() == [keys[2], keys[0], keys[1]]
    assert [dataset.by_key()[k].position for k in aligned.keys] == [2, 0, 1]
    no_position = FeatureSet.from_arrays(keys=["x", "y", "z"], columns={"sve": np.ones(3)})
    with pytest.raises(FeatureFormatError, match="Give a `position` column"):
        align_to_dataset(no_position, dataset, dataset.by_key())
    outside = FeatureSet.from_arrays(keys=["x"], columns={"position": np.array([3])})
    with pytest.raises(FeatureFormatError, match="position 3 .* has 3 record"):
        align_to_dataset(outside, dataset, dataset.by_key())
