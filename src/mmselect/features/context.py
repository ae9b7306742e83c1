"""Extraction options and the context every feature's pass runs in."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class ExtractOptions:
    """How to extract: the model, where and how it runs, the cache, and each feature's options.

    ``runner``: ``local`` (this process, on ``device``) or ``ray`` (Ray Data workers, one per GPU by
    default; ``runner_options`` go to :class:`~mmselect.runners.RayRunner`). ``max_length``: tokens
    per sample (default: the model's context length). ``cache_dir``: finished shards (default
    ``<out>/cache``). ``feature_params``: ``{"feature": {"option": value}}``, see ``mmselect features``.
    ``prefetch``: batches prepared ahead in a background thread (default: 2 on a GPU, 0 on the CPU).
    ``num_workers``: processes preparing batches instead, each with its own processor (default:
    ``min(8, CPUs - 1)`` on a GPU, 0 on the CPU); the features do not depend on it.
    ``template``: the chat template to render with (``mmselect.models.templates.template_names()``).
    """

    model: str = "tiny-llava"
    revision: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    trust_remote_code: bool = False
    batch_size: int = 8
    shard_size: int = 256
    max_length: int | None = None
    array_dtype: str = "float32"
    cache_dir: str | os.PathLike | None = None
    runner: Any = None  # "local", "ray" or a Runner
    runner_options: dict[str, Any] = field(default_factory=dict)
    progress: bool = True
    feature_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    prefetch: int | None = None
    num_workers: int | None = None  # batch-preparation processes (None: min(8, CPUs - 1) on a GPU, 0 on the CPU)
    template: str | None = None  # chat template name (default: the preset's, else the family's)
    device_map: str | None = None  # "auto": a model larger than one GPU spread by accelerate

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def replace(self, **changes: Any) -> "ExtractOptions":
        """A copy with ``changes`` (``None`` keeps the current value); unknown names are an error."""
        unknown = sorted(set(changes) - set(self.field_names()))
        if unknown:
            raise TypeError(f"unknown extraction option(s) {unknown}; options: {', '.join(self.field_names())}")
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


@dataclass
class ExtractionContext:
    """What a feature's pass may use: the options, the runner (every pass maps its shards through
    it), the cache directory, the main model (``bundle``; a description without weights when the
    runner's workers load their own), and the columns of the features that ran before."""

    options: ExtractOptions
    runner: Any
    cache_dir: Path
    bundle: Any = None
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    main_spec: str | None = None  # digest of the main pass, for passes that build on its samples
    _models: dict[tuple, Any] = field(default_factory=dict, repr=False)

    @property
    def progress(self) -> bool:
        return self.options.progress

    @property
    def remote(self) -> bool:
        """True when the runner's workers load their own models (do not load weights here)."""
        return bool(getattr(self.runner, "remote", False))

    @property
    def device(self):
        from ..models.registry import resolve_device

        return resolve_device(self.options.device)

    def model(self, name: str | None = None, revision: str | None = None):
        """A model bundle for a pass: ``None`` is the main model. Others are loaded once, with the
        extraction's device, dtype and trust_remote_code; without weights (on the meta device) when
        the runner is remote, since its workers load them from ``bundle.load_args``."""
        if name is None:
            return self.bundle
        from ..models.registry import load_model

        device = "meta" if self.remote else self.options.device
        dtype = self.options.dtype
        if self.remote and dtype == "auto":
            dtype = "bfloat16" if getattr(self.runner, "uses_gpus", False) else "float32"
        key = (name, revision, device, dtype)
        if key not in self._models:
            self._models[key] = load_model(name, revision=revision, device=device, dtype=dtype,
                                           trust_remote_code=self.options.trust_remote_code)
        return self._models[key]


__all__ = ["ExtractOptions", "ExtractionContext"]
