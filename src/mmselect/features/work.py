"""Work units: what a runner maps over shards, ``work(shard, advance) -> ExtractionOutput``.

A runner may ship a work unit to other processes or machines (Ray). Pickling drops loaded models;
a worker loads them again on first use, on its own device.
"""

from __future__ import annotations

import json
from typing import Any

from .extractor import Extractor, extract_shard
from .reducers import make_features
from .shards import ExtractionOutput


class ModelWork:
    """Base for work units that hold a model: :meth:`load` builds what :meth:`loaded` returns,
    once per process."""

    _loaded: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_loaded": None}

    def load(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def loaded(self) -> Any:
        if self._loaded is None:
            self._loaded = self.load()
        return self._loaded


class ShardWork:
    """Hook extraction of one shard. A worker loads the model from ``bundle.load_args`` and checks
    that it describes the same extraction (model, revision, dtype, features) as the one the shards
    are stored under."""

    def __init__(self, extractor: Extractor, feature_names: list[str], feature_params: dict | None):
        self.load_args = extractor.bundle.load_args
        self.feature_names = list(feature_names)
        self.feature_params = feature_params or {}
        self.options = {"batch_size": extractor.batch_size, "max_length": extractor.max_length,
                        "array_dtype": extractor.array_dtype}
        self.spec_hash = extractor.spec_hash()
        self._extractor: Extractor | None = extractor

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_extractor": None}

    def __call__(self, shard: list, advance) -> ExtractionOutput:
        if self._extractor is None:
            from ..models.registry import load_model

            bundle = load_model(**self.load_args, device="auto")
            extractor = Extractor(bundle, make_features(self.feature_names, self.feature_params), **self.options)
            if extractor.spec_hash() != self.spec_hash:
                raise RuntimeError(
                    f"this worker's extraction differs from the driver's (spec {extractor.spec_hash()} != "
                    f"{self.spec_hash}): {json.dumps(extractor.spec()['model'], default=str)}"
                )
            self._extractor = extractor
        return extract_shard(self._extractor, shard, advance)


__all__ = ["ModelWork", "ShardWork"]
