"""Moved to :mod:`mmselect.numerics.kmeans`; kept so that older imports keep working."""

from ..numerics.kmeans import (  # noqa: F401
    NonFiniteRowsError,
    assign,
    available_backend,
    kmeans_labels,
    l2_normalize,
    member_means,
    spherical_kmeans,
)
