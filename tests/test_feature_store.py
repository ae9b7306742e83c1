"""FeatureSet.check_finite and the row scan behind it, on arrays saved and re-opened memory-mapped."""

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
