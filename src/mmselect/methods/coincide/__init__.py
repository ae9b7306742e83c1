"""COINCIDE (arXiv 2406.10995): cluster transferability and density decide how many samples each
cluster gets; greedy MMD prototypes decide which.

* :mod:`.method`: the :class:`Coincide` selection method (clusters, scores, allocation, picks);
* :mod:`.allocation`: transferability and the roll-over budget split;
* :mod:`.kernels`: kernels, the per-cluster pass and the greedy MMD.
"""

from .allocation import Allocation, allocate, transferability
from .kernels import _Greedy, gaussian_kernel, greedy_mmd
from .method import MAX_CLUSTER_ROWS, SAMPLES_PER_CLUSTER, Coincide

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
