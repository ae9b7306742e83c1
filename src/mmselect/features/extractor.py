"""The extractor: runs the model over batches of samples and collects hook features per shard.

A batch is prepared on the CPU (render, load images, tokenize; ahead of time in worker processes,
see :mod:`.prepare_pool`, or in a background thread, see :mod:`.prefetch`) and run on the device with the hooks of :mod:`.hooks`. A batch that
cannot be encoded together is run sample by sample; one that runs out of device memory is halved.
"""

from __future__ import annotations

import gc
import hashlib
import json
from typing import Any

import numpy as np
import torch

from ..data.records import Sample
from ..models.registry import ModelBundle
from ..models.templates import Rendered
from .encode import EncodedBatch, EncodeError, load_image
from .hooks import decoder_layers, hooked_forward
from .prefetch import prefetched
from .prepare_pool import BatchPreparer, PreparedBatch, PreparePool, default_workers
from .reducers import FeatureDef
from .shards import ExtractionOutput

CACHE_FORMAT = 1


def _release_device_memory(device: torch.device) -> None:
    gc.collect()  # tensors of the failed pass still held in reference cycles
    if device.type == "cuda":
        torch.cuda.empty_cache()


class Extractor:
    """Runs the model over samples and collects the requested features.

    ``num_workers``: processes preparing batches (rendering, image decoding, tokenization) while the
    device runs the current one, each with its own processor; ``None`` = ``min(8, CPUs - 1)`` on a
    GPU, 0 on the CPU (where both halves compete for the same cores). With 0 workers,
    ``prefetch``: batches prepared ahead in one background thread; ``None`` = 2 on a GPU, 0 on the
    CPU. The features do not depend on either. ``max_length``: tokens per sample, default the model's
    context length (longer samples lose their tail; a sample whose image tokens do not fit is
    rejected).
    """

    def __init__(
        self,
        bundle: ModelBundle,
        features: list[FeatureDef],
        *,
        batch_size: int = 8,
        max_length: int | None = None,
        array_dtype: str = "float32",
        prefetch: int | None = None,
        num_workers: int | None = None,
    ):
        self.bundle = bundle
        self.prefetch = prefetch if prefetch is not None else (2 if bundle.device.type != "cpu" else 0)
        self.features = features
        self.batch_size = batch_size
        self.max_length = int(max_length or bundle.context_length)
        self.array_dtype = array_dtype
        self.layers = decoder_layers(bundle.model)
        self.n_layers = len(self.layers)
        self.num_workers = default_workers(bundle.device) if num_workers is None else int(num_workers)
        self.preparer = BatchPreparer(bundle, self.max_length, pin=bundle.device.type == "cuda")
        self._pool: PreparePool | None = None

    # --- description --------------------------------------------------------------------------
    def spec(self) -> dict[str, Any]:
        return {
            "format": CACHE_FORMAT,
            "model": self.bundle.describe(),
            "features": {f.name: {"params": f.params, "points": self._points_of(f)} for f in self.features},
            "max_length": self.max_length,
            "array_dtype": self.array_dtype,
            # Padding within a batch changes the features in their last bits: shards of two batch sizes never mix.
            "batch_size": self.batch_size,
        }

    def spec_hash(self) -> str:
        return hashlib.sha1(json.dumps(self.spec(), sort_keys=True, default=str).encode()).hexdigest()[:16]

    def _points_of(self, feature: FeatureDef) -> list:
        return [list(p) for p in feature.points(self.n_layers)]

    # --- one view = one forward kind ----------------------------------------------------------
    def _render(self, sample: Sample, view: str) -> Rendered:
        return self.preparer.render(sample, view)

    def prepare(self, samples: list[Sample], view: str) -> PreparedBatch:
        """The CPU half of a batch, in this process: render, load images, tokenize."""
        return self.preparer.prepare(samples, view)

    def _encode(self, rendered, images) -> tuple[EncodedBatch | None, str | None]:
        return self.preparer.encode(rendered, images)

    def prepared_batches(self, batches: list[list[Sample]], view: str):
        """``prepare`` of each batch, in order, ahead of the device: in the worker processes
        (``num_workers``), else in a background thread (``prefetch``), else in turn."""
        if self.num_workers > 0:
            if self._pool is None:
                self._pool = PreparePool(self.preparer, self.num_workers, depth=max(self.prefetch, 2),
                                         pin=self.bundle.device.type == "cuda")
            return self._pool.prepared(batches, view)
        return prefetched(batches, lambda batch: self.prepare(batch, view), self.prefetch)

    def close(self) -> None:
        """Stop the preparation workers, if any (a later batch starts them again)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pool": None}  # worker processes do not travel

    def forward_prepared(self, prepared: PreparedBatch) -> tuple[list[int], dict[str, np.ndarray], list[tuple[int, str]]]:
        """The device half: one forward pass; returns (kept row indices, values, [(row, reason)] rejected).

        A batch that cannot be encoded as a whole is run sample by sample (the ones that cannot be
        encoded are rejected with the reason); a batch that runs out of device memory is run in two
        halves, down to single samples, which are rejected if they still do not fit."""
        kept, rejected = prepared.kept, list(prepared.rejected)
        if not kept:
            return [], {}, rejected
        if prepared.batch is None:
            if len(kept) == 1:
                return [], {}, rejected + [(kept[0], prepared.error or "cannot be encoded")]
            return self._forward_groups(prepared, [[i] for i in range(len(kept))], rejected)
        try:
            rows, values, sub_rejected = self._forward(prepared.batch)
        except torch.OutOfMemoryError:
            # Retry outside this block: until it ends, the traceback keeps the failed pass's tensors alive.
            out_of_memory = True
        else:
            out_of_memory = False
        if out_of_memory:
            _release_device_memory(self.bundle.device)
            if len(kept) == 1:
                tokens = int(prepared.batch.attention.sum())
                return [], {}, rejected + [(kept[0], f"out of device memory at {tokens} tokens (lower --max-length)")]
            half = (len(kept) + 1) // 2
            return self._forward_groups(prepared, [list(range(half)), list(range(half, len(kept)))], rejected)
        rejected.extend((kept[r], reason) for r, reason in sub_rejected)
        return [kept[r] for r in rows], values, rejected

    def _forward_groups(self, prepared: PreparedBatch, groups: list[list[int]], rejected: list) -> tuple:
        """Run ``groups`` (positions in ``prepared.kept``) as batches of their own, merged in order."""
        rows, parts = [], []
        for group in groups:
            if prepared.images is None:  # prepared in a worker process, which kept no images
                group, rendered, images = self._reload_images(prepared, group, rejected)
                if not group:
                    continue
            else:
                rendered = [prepared.rendered[i] for i in group]
                images = [prepared.images[i] for i in group]
            batch, error = self._encode(rendered, images)
            sub = PreparedBatch([prepared.kept[i] for i in group], [], rendered, images, batch, error)
            sub_rows, values, sub_rejected = self.forward_prepared(sub)
            rejected.extend(sub_rejected)
            if sub_rows:
                rows.extend(sub_rows)
                parts.append(values)
        return rows, _concat(parts), rejected

    @staticmethod
    def _reload_images(prepared: PreparedBatch, group: list[int], rejected: list) -> tuple:
        """The rows of ``group`` whose images load again, their renderings and images; the others
        are rejected."""
        kept, rendered, images = [], [], []
        for i in group:
            try:
                loaded = [load_image(p) for p in prepared.rendered[i].image_paths]
            except EncodeError as err:
                rejected.append((prepared.kept[i], str(err)))
                continue
            kept.append(i)
            rendered.append(prepared.rendered[i])
            images.append(loaded)
        return kept, rendered, images

    def _forward(self, batch: EncodedBatch):
        batch = batch.to(self.bundle.device, non_blocking=True)
        out = hooked_forward(self.bundle.model, self.layers, self.features, batch)
        values = {k: v.detach().float().cpu().numpy() for k, v in out.items()}
        values["n_tokens"] = batch.attention.sum(dim=1).cpu().numpy()
        if "n_answer_tokens" not in values and any(f.name == "tokens" for f in self.features):
            # response length (the loss targets), for the length baseline
            values["n_answer_tokens"] = batch.answer[:, 1:].sum(dim=1).cpu().numpy()
        rows, rejected = list(range(batch.batch_size)), []
        if any(f.needs_answers for f in self.features):
            answers = batch.answer[:, 1:].sum(dim=1).cpu().numpy()
            rows = [r for r in range(batch.batch_size) if answers[r] > 0]
            rejected = [(r, f"no answer tokens within max_length={self.max_length}") for r in range(batch.batch_size) if answers[r] == 0]
            values = {k: v[rows] for k, v in values.items()}
        return rows, values, rejected


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    names = [k for k in parts[0]] if parts else []
    return {k: np.concatenate([p[k] for p in parts]) for k in names}


def extract_shard(extractor: Extractor, shard: list[Sample], progress=None) -> ExtractionOutput:
    rejected: list[dict[str, Any]] = []
    # The full view always runs: it decodes every image and counts tokens, even with no feature.
    views = ["full"] + sorted({f.view for f in extractor.features} - {"full"})
    per_view: dict[str, tuple[list[str], dict[str, np.ndarray]]] = {}
    for view in views:
        saved_features = extractor.features
        extractor.features = [f for f in saved_features if f.view == view]
        view_keys, view_parts = [], []
        batches = [shard[start : start + extractor.batch_size] for start in range(0, len(shard), extractor.batch_size)]
        prepared = extractor.prepared_batches(batches, view)
        for batch, ready in zip(batches, prepared):
            rows, values, bad = extractor.forward_prepared(ready)
            view_keys.extend(batch[r].key for r in rows)
            if rows:
                view_parts.append(values)
            rejected.extend({"key": batch[r].key, "reason": reason} for r, reason in bad)
            if progress is not None and view == views[0]:
                progress(len(batch))
        extractor.features = saved_features
        per_view[view] = (view_keys, _concat(view_parts))
    # Keep the samples every view produced, in shard order.
    rejected_keys = {r["key"] for r in rejected}
    keys = [s.key for s in shard if s.key not in rejected_keys]
    values: dict[str, np.ndarray] = {}
    for view, (view_keys, view_values) in per_view.items():
        index = {k: i for i, k in enumerate(view_keys)}
        take = np.array([index[k] for k in keys], dtype=int)
        for name, array in view_values.items():
            if view != "full" and name in ("n_tokens", "n_answer_tokens"):
                continue
            values[name] = array[take] if len(take) else array[:0]
    return ExtractionOutput(keys, values, rejected)


__all__ = ["CACHE_FORMAT", "Extractor", "PreparedBatch", "extract_shard"]
