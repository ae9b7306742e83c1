"""DataTailor (arXiv 2412.06293): informativeness, uniqueness and representativeness under
task-adaptive budgets.

* :mod:`.method`: the :class:`DataTailor` selection method (the paper's algorithm, step by step);
* :mod:`.clustering`: exact and approximate Ward per task;
* :mod:`.values`: uniqueness, representativeness, normalisation, the row reader;
* :mod:`.budgets`: the task budgets.
"""

from .budgets import split_budget
from .clustering import (
    KMEANS_ITERATIONS,
    KMEANS_POINTS_PER_CENTROID,
    PCA_SAMPLE,
    _replica_scale,
    condensed_distances,
    ward_labels_approx,
    ward_labels_exact,
)
from .method import LLAVA665K_BLOCK_SIZES, LLAVA665K_N, DataTailor
from .values import (
    SINGLE_CLUSTER_TAU,
    RowReader,
    association_coefficients,
    cluster_uniqueness,
    minmax_normalise,
    rank_normalise,
)

__all__ = [
    "KMEANS_ITERATIONS",
    "KMEANS_POINTS_PER_CENTROID",
    "LLAVA665K_BLOCK_SIZES",
    "LLAVA665K_N",
    "PCA_SAMPLE",
    "SINGLE_CLUSTER_TAU",
    "DataTailor",
    "RowReader",
    "_replica_scale",
    "association_coefficients",
    "cluster_uniqueness",
    "condensed_distances",
    "minmax_normalise",
    "rank_normalise",
    "split_budget",
    "ward_labels_approx",
    "ward_labels_exact",
]
