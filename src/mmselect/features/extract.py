"""The extraction engine: run the requested features over samples, through a runner, into a FeatureSet.

The main model's pass always runs first (its hook features ride on it; it renders every sample,
counts tokens and rejects the samples the model cannot take); every other feature then runs on the
samples it kept, after the features it reads. Every pass maps its shards through the runner and
stores them with done-markers (:mod:`.shards`), so rerunning after an interruption, even
``kill -9``, skips finished shards and ends with the same features as an uninterrupted run.

This module names no feature: what exists is in :mod:`.registry`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..data.rejected import RejectedRecord
from .context import ExtractionContext, ExtractOptions
from .extractor import CACHE_FORMAT, Extractor, PreparedBatch, extract_shard  # noqa: F401 (public here too)
from .hook_features import MAIN_PASS, main_pass, sample_columns
from .hooks import decoder_layers  # noqa: F401
from .prefetch import prefetched  # noqa: F401
from .registry import resolve_features
from .shards import ExtractionOutput, ShardStore, plan_shards, shard_name  # noqa: F401
from .store import FeatureSet
from .work import ShardWork  # noqa: F401


def run_features(samples: Sequence, names: Sequence[str], context: ExtractionContext) -> tuple[FeatureSet, list[RejectedRecord]]:
    """Extract ``names`` (options from ``context.options.feature_params``) for ``samples``; returns
    the features (rows in ``samples`` order, rejected samples left out) and the rejected samples."""
    if not names:  # nothing to compute: the samples' own columns, and no model
        return FeatureSet(sample_columns(samples), {}, {}), []
    features = resolve_features(names, context.options.feature_params)
    output, kept, rejected = main_pass(samples, [f for f in features if f.shared_pass == MAIN_PASS], context)
    columns, arrays, manifest = output.columns, output.arrays, dict(output.info)
    context.columns = columns
    for feature in features:
        if feature.shared_pass == MAIN_PASS:
            continue
        produced = feature.run(kept, context)
        columns.update(produced.columns)
        arrays.update(produced.arrays)
        manifest.update(produced.info)
    return FeatureSet(columns, arrays, manifest), rejected


def extract_features(
    samples: list,
    bundle,
    feature_names: list[str],
    *,
    feature_params: dict[str, dict[str, Any]] | None = None,
    cache_dir: str | os.PathLike,
    batch_size: int = 8,
    shard_size: int = 256,
    max_length: int | None = None,
    array_dtype: str = "float32",
    progress: bool = True,
    runner=None,
    prefetch: int | None = None,
    num_workers: int | None = None,
) -> tuple[FeatureSet, list[RejectedRecord]]:
    """:func:`run_features` with a loaded model ``bundle`` and the options as keywords."""
    from ..runners import LocalRunner

    options = ExtractOptions(batch_size=batch_size, shard_size=shard_size, max_length=max_length,
                             array_dtype=array_dtype, progress=progress, prefetch=prefetch, num_workers=num_workers,
                             feature_params=dict(feature_params or {}), cache_dir=cache_dir)
    context = ExtractionContext(options, runner or LocalRunner(), Path(cache_dir), bundle)
    return run_features(samples, feature_names, context)


def feature_names_for(methods: Iterable) -> list[str]:
    names: list[str] = []
    for method in methods:
        for name in method.extract_features():
            if name not in names:
                names.append(name)
    return names


__all__ = ["ExtractOptions", "ExtractionContext", "extract_features", "feature_names_for", "run_features"]
