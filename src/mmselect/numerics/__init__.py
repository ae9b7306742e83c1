"""Numerical building blocks shared by the selection methods.

* :mod:`.kmeans`: the k-means backend choice (faiss when installed, else scikit-learn),
  spherical k-means of large row matrices, k-means labels of points in memory.
* :mod:`.pca`: randomized PCA / uncentred SVD of a row sample, streamed projection.
* :mod:`.distances`: pairwise squared Euclidean distances (numpy and torch).
* :mod:`.knn`: k nearest neighbours, exact (torch blocks) or approximate (faiss IVF), exact re-ranking.
* :mod:`.rows`: float32 row blocks, unit-norm rows.
* :mod:`.runtime`: torch thread-count control, per-stage timing.
* :mod:`.finite`: the one NaN/inf refusal (:func:`nonfinite_error`).

A method's own algorithm stays in its module under :mod:`mmselect.methods`; what two methods
would otherwise each carry lives here, and no method imports another.
"""

from .distances import euclidean_distances, squared_distances, squared_distances_torch
from .finite import NonFiniteRowsError, check_finite_rows, nonfinite_error
from .kmeans import (
    assign,
    available_backend,
    kmeans_labels,
    member_means,
    spherical_kmeans,
)
from .knn import build_ivf_index, exact_knn, ivf_knn, rerank_exact, search_ivf
from .pca import PCABasis, pca_project, project, randomized_pca
from .rows import BLOCK_ROWS, l2_normalize, normalize_rows, read_rows
from .runtime import Stopwatch, single_threaded, torch_threads

__all__ = [
    "BLOCK_ROWS",
    "NonFiniteRowsError",
    "PCABasis",
    "Stopwatch",
    "assign",
    "available_backend",
    "build_ivf_index",
    "check_finite_rows",
    "euclidean_distances",
    "exact_knn",
    "ivf_knn",
    "kmeans_labels",
    "l2_normalize",
    "member_means",
    "nonfinite_error",
    "normalize_rows",
    "pca_project",
    "project",
    "randomized_pca",
    "read_rows",
    "rerank_exact",
    "search_ivf",
    "single_threaded",
    "spherical_kmeans",
    "squared_distances",
    "squared_distances_torch",
    "torch_threads",
]
