"""COINCIDE (arXiv 2406.10995): cluster transferability and density decide how many samples each
cluster gets; greedy MMD prototypes decide which.

* :mod:`.method`: the :class:`Coincide` selection method (clusters, scores, allocation, picks);
* :mod:`.clusters`: spherical k-means (text-only records apart) or the given clusters;
* :mod:`.allocation`: transferability and the roll-over budget split;
* :mod:`.kernels`: kernels, the per-cluster pass and the greedy MMD.
"""

from .allocation import Allocation, allocate, transferability
from .clusters import SAMPLES_PER_CLUSTER
from .kernels import _Greedy, gaussian_kernel, greedy_mmd
from .method import MAX_CLUSTER_ROWS, Coincide

__all__ = [
    "MAX_CLUSTER_ROWS",
    "SAMPLES_PER_CLUSTER",
    "Allocation",
    "Coincide",
    "_Greedy",
    "allocate",
    "gaussian_kernel",
    "greedy_mmd",
    "transferability",
]
