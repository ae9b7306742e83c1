"""The CPU half of extraction (render, decode images, run the processor and tokenizer) in worker
processes.

:class:`BatchPreparer` prepares one batch without the model, so it pickles: each worker process
holds its own copy of the processor and tokenizer. :class:`PreparePool` runs it in a persistent
``torch.utils.data.DataLoader`` (workers started once per pass, reused across shards and views)
and yields the prepared batches in submission order, so the features are bit-identical to those
of preparing in this process. Workers are forked where the platform can (they never touch the
GPU, so a CUDA context in this process does not matter, and no script needs a ``__main__`` guard),
with the tokenizer's own thread pool off in them: one worker, one core.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..data.records import Sample
from ..models.templates import Rendered
from .encode import EncodedBatch, EncodeError, encode, load_image

#: Most worker processes chosen by default on a GPU (more rarely pays: the device becomes the bound).
MAX_DEFAULT_WORKERS = 8


@dataclass
class PreparedBatch:
    kept: list[int]  # rows of the batch that rendered and loaded
    rejected: list[tuple[int, str]]
    rendered: list[Rendered]
    images: list[list] | None  # None: not carried back from a worker (loaded again if needed)
    batch: EncodedBatch | None  # None: the kept rows could not be encoded together
    error: str | None = None  # why not

    def pin_memory(self) -> PreparedBatch:
        """Page-locked tensors (called by the DataLoader's pinning thread on a GPU)."""
        return dataclasses.replace(self, batch=self.batch.pin_memory()) if self.batch is not None else self


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_workers(device: torch.device) -> int:
    """Worker processes when the user sets none: on a GPU ``min(8, CPUs - 1)`` (one CPU left to
    drive the device), on the CPU 0 (preparation and the forward would share the same cores)."""
    if device.type == "cpu":
        return 0
    return max(0, min(MAX_DEFAULT_WORKERS, available_cpus() - 1))


class BatchPreparer:
    """Render, load images and encode one batch of samples for a model, without its weights."""

    def __init__(self, bundle, max_length: int, pin: bool = False):
        self.bundle = dataclasses.replace(bundle, model=None)  # the processor, tokenizer and template only
        self.max_length = max_length
        self.pin = pin

    def render(self, sample: Sample, view: str) -> Rendered:
        template = self.bundle.template
        parts = getattr(sample, "parts", None)
        if parts is not None:  # several samples in one sequence, only some of them scored
            return template.render(list(parts), label=list(sample.labels))
        if view == "answer_only":
            return template.render([sample], include_user=False, include_images=False)
        return template.render([sample])

    def encode(self, rendered: list[Rendered], images: list[list]) -> tuple[EncodedBatch | None, str | None]:
        try:
            return encode(self.bundle, rendered, images, self.max_length), None
        except EncodeError as err:
            return None, str(err)

    def prepare(self, samples: list[Sample], view: str, keep_images: bool = True) -> PreparedBatch:
        """``keep_images=False``: the decoded images are dropped once the batch is encoded (a worker
        need not send them back; a batch split later loads them again)."""
        rendered, images, kept, rejected = [], [], [], []
        for row, sample in enumerate(samples):
            try:
                item = self.render(sample, view)
                loaded = [load_image(p) for p in item.image_paths]
            except EncodeError as err:
                rejected.append((row, str(err)))
                continue
            rendered.append(item)
            images.append(loaded)
            kept.append(row)
        batch, error = self.encode(rendered, images) if kept else (None, None)
        if batch is not None and self.pin:
            batch = batch.pin_memory()
        if batch is not None and not keep_images:
            images = None
        return PreparedBatch(kept, rejected, rendered, images, batch, error)


class _PrepareDataset(Dataset):
    """Item ``(view, samples)`` -> the prepared batch (runs in a worker process)."""

    def __init__(self, preparer: BatchPreparer):
        self.preparer = preparer

    def __getitem__(self, item: tuple[str, list[Sample]]) -> PreparedBatch:
        view, samples = item
        return self.preparer.prepare(samples, view, keep_images=False)


class _WorkList(Sampler):
    """The batches of the current iteration; replaced before each pass over the loader."""

    def __init__(self):
        self.items: list[tuple[str, list[Sample]]] = []

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def _as_is(prepared: PreparedBatch) -> PreparedBatch:
    return prepared


def _worker_context():
    return multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")


@contextlib.contextmanager
def _single_threaded_tokenizers():
    """Workers started inside this block run the tokenizer without its thread pool (and without
    the warning it prints when forked after using it); this process keeps its setting."""
    name = "TOKENIZERS_PARALLELISM"
    previous = os.environ.get(name)
    if previous is None:
        os.environ[name] = "false"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)


class PreparePool:
    """``num_workers`` processes preparing batches ahead of the device, in order.

    ``depth``: batches each worker prepares ahead. ``pin``: page-locked batches (for a GPU).
    """

    def __init__(self, preparer: BatchPreparer, num_workers: int, *, depth: int = 2, pin: bool = False):
        if num_workers < 1:
            raise ValueError(f"a prepare pool needs at least one worker, got {num_workers}")
        self.num_workers = num_workers
        self._work = _WorkList()
        self._loader = DataLoader(
            _PrepareDataset(_unpinned(preparer)),
            batch_size=None, sampler=self._work, num_workers=num_workers, collate_fn=_as_is,
            pin_memory=pin, prefetch_factor=max(1, depth), persistent_workers=True,
            multiprocessing_context=_worker_context(),
        )

    def prepared(self, batches: list[list[Sample]], view: str) -> Iterator[PreparedBatch]:
        """The prepared ``batches`` (of ``view``), in order; consume it before the next call."""
        if not batches:
            return iter(())
        self._work.items = [(view, batch) for batch in batches]
        with _single_threaded_tokenizers():  # the first call starts the workers
            return iter(self._loader)

    def close(self) -> None:
        """Stop the worker processes (they also stop when the pool is garbage-collected)."""
        iterator = getattr(self._loader, "_iterator", None)
        if iterator is not None:
            iterator._shutdown_workers()
            self._loader._iterator = None


def _unpinned(preparer: BatchPreparer) -> BatchPreparer:
    """A worker never touches the GPU: the loader pins in this process instead."""
    copy = BatchPreparer.__new__(BatchPreparer)
    copy.__dict__.update(preparer.__dict__, pin=False)
    return copy


__all__ = ["MAX_DEFAULT_WORKERS", "BatchPreparer", "PreparePool", "PreparedBatch", "available_cpus", "default_workers"]
