"""Matching a features directory to the dataset it describes: mmselect's sample keys, or, for a
hand-made directory, a ``position`` column that names each row's record."""

from __future__ import annotations

import os

import numpy as np

from .store import SAMPLES_FILE, FeatureSet
from .store_files import FeatureFormatError


def dataset_keys(data: str | os.PathLike, **read_options) -> list[str]:
    """The key of every record of ``data``, in file order (``keys[i]`` is record ``i``'s): what a
    hand-made features directory's ``key`` column holds to match the records without a
    ``position`` column. ``read_options`` go to :func:`mmselect.data.readers.read_dataset`."""
    from ..data.readers import read_dataset

    dataset = read_dataset(data, check_images=False, **read_options)
    return [dataset.key_of(position) for position in range(dataset.n_records)]


def align_to_dataset(features: FeatureSet, dataset, by_key) -> FeatureSet:
    """``features`` with the dataset's keys: as they are when every key is one of the dataset's
    records (``by_key``), else taken from the ``position`` column (a hand-made directory)."""
    keys = features.keys.tolist()
    unknown = [k for k in keys if k not in by_key]
    if not unknown:
        return features
    where = f"{features.root / SAMPLES_FILE}" if features.root is not None else "the features"
    if not features.has_column("position"):
        raise FeatureFormatError(
            f"{len(unknown):,} row(s) of {where} match no record of {dataset.path} (first key: {unknown[0]!r}). "
            "Give a `position` column (the record's index in the file, from 0), or use mmselect's keys: "
            "mmselect.features.alignment.dataset_keys(path) lists them in file order"
        )
    positions = features.column("position")
    if positions.dtype.kind not in "iu" and not (positions.dtype.kind == "f" and np.all(positions == np.round(positions))):
        raise FeatureFormatError(f"{where}: column 'position' must hold integers, got {positions.dtype}")
    positions = positions.astype(np.int64)
    outside = np.flatnonzero((positions < 0) | (positions >= dataset.n_records))
    if len(outside):
        raise FeatureFormatError(
            f"{where}: position {int(positions[outside[0]])} (row {int(outside[0])}) is outside {dataset.path}, "
            f"which has {dataset.n_records:,} record(s) (positions 0..{dataset.n_records - 1})"
        )
    return features.with_columns(key=np.array([dataset.key_of(int(p)) for p in positions], dtype=object))
