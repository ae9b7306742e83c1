"""Shared numerics: distances, the NaN/inf refusal, thread control, randomized PCA, k-means."""

import sys

import numpy as np
import pytest
import torch

from mmselect.errors import ConfigError, NonFiniteFeaturesError
from mmselect.numerics import (
    NonFiniteRowsError,
    Stopwatch,
    available_backend,
    check_finite_rows,
    euclidean_distances,
    kmeans_labels,
    l2_normalize,
    nonfinite_error,
    pca_project,
    randomized_pca,
    squared_distances,
    squared_distances_torch,
    torch_threads,
)


def test_squared_distances_by_hand():
    a = np.array([[0.0, 0.0], [3.0, 4.0]])
    b = np.array([[0.0, 4.0], [3.0, 0.0], [3.0, 4.0]])
    expected = np.array([[16.0, 9.0, 25.0], [9.0, 16.0, 0.0]])
    np.testing.assert_array_equal(squared_distances(a, b), expected)
    np.testing.assert_array_equal(euclidean_distances(a, b), np.sqrt(expected))
    np.testing.assert_array_equal(squared_distances_torch(torch.from_numpy(a), torch.from_numpy(b)).numpy(), expected)
    np.testing.assert_array_equal(squared_distances(a), np.array([[0.0, 25.0], [25.0, 0.0]]))


def test_squared_distances_are_clamped_at_zero():
    x = np.full((2, 3), 1e8, dtype=np.float32)  # cancellation: a.a + b.b - 2 a.b may come out < 0
    assert (squared_distances(x) >= 0).all()


def test_one_nonfinite_message():
    keys = np.array([f"{i:07d}-k" for i in range(30)])
    error = nonfinite_error("last_token", np.arange(12), keys)
    assert isinstance(error, NonFiniteFeaturesError)
    assert str(error) == (
        "feature 'last_token' has NaN or inf for 12 sample(s): "
        + ", ".join(keys[:10]) + " and 2 more"
    )
    block = np.ones((3, 2))
    block[1, 0] = np.inf
    with pytest.raises(NonFiniteFeaturesError, match=r"for 1 image record\(s\): 0000021-k$"):
        check_finite_rows(block, "visual_mean", np.array([20, 21, 22]), keys, what="image record(s)")
    with pytest.raises(NonFiniteRowsError) as caught:
        l2_normalize(block.copy(), row_numbers=np.array([20, 21, 22]))
    assert caught.value.rows.tolist() == [21]


def test_torch_threads_are_restored():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError):
        with torch_threads(1):
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_stopwatch_accumulates_per_stage_in_order():
    clock = Stopwatch()
    for name in ("read", "fit", "read"):
        with clock.stage(name):
            pass
    assert list(clock.rounded()) == ["read", "fit"] and all(v >= 0 for v in clock.timings.values())


def test_randomized_pca_recovers_a_low_rank_subspace_exactly():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((20, 3)))[0].T  # 3 orthonormal directions in 20-d
    x = (rng.standard_normal((400, 3)) * [5.0, 2.0, 1.0]) @ basis + 7.0
    fitted = randomized_pca(x.astype(np.float32), 3, seed=0, center=True)
    assert fitted.rank == 3 and fitted.explained == pytest.approx(1.0, abs=1e-5)
    components = fitted.components.numpy().astype(np.float64)
    np.testing.assert_allclose(components @ components.T, np.eye(3), atol=1e-5)
    # the principal directions span the generating subspace
    np.testing.assert_allclose(np.linalg.svd(components @ basis.T, compute_uv=False), 1.0, atol=1e-4)
    z, info = pca_project(x.astype(np.float32), 3, seed=0, center=True, normalize_input=False, normalize_output=False)
    centred = x - x.mean(0)
    np.testing.assert_allclose(
        np.linalg.norm(z[:5, None] - z[None, :5], axis=-1),
        np.linalg.norm(centred[:5, None] - centred[None, :5], axis=-1),
        rtol=1e-4,
    )
    again, _ = pca_project(x.astype(np.float32), 3, seed=0, center=True, normalize_input=False, normalize_output=False)
    assert np.array_equal(z, again) and info["rank"] == 3


@pytest.mark.parametrize("backend", ["sklearn", "faiss"])
def test_kmeans_labels_find_separated_groups(backend):
    if backend == "faiss":
        pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]])
    truth = np.repeat(np.arange(3), 50)
    points = centres[truth] + rng.standard_normal((150, 2))
    labels, used = kmeans_labels(points, 3, backend=backend, seed=0)
    assert used == backend
    # one label per group, three groups
    assert len(set(labels.tolist())) == 3
    assert all(len(set(labels[truth == g].tolist())) == 1 for g in range(3))


def test_backend_choice(monkeypatch):
    with pytest.raises(ConfigError, match="'auto', 'faiss' or 'sklearn'"):
        available_backend("cuml")
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` now fails
    assert available_backend("auto") == "sklearn"
    with pytest.raises(ConfigError, match="faiss-cpu"):
        available_backend("faiss")
