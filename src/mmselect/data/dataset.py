"""A read dataset held columnar: per record a byte span and a content hash, per valid sample its task
and counts. Samples, the key index and the records themselves are read again from the source on
demand, so tens of millions of records fit in memory."""

from __future__ import annotations

import json
import os
from array import array
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Iterable, Iterator

from .images import ImageResolver
from .keys import format_key
from .records import Sample, Turn, conversation, image_list
from .rejected import RejectedRecord

ROW_CONTAINERS = ("parquet", "arrow")


class _Origin:
    """Where samples' records are read again from: the source and the image resolver (picklable,
    so samples sent to worker processes reopen the file themselves)."""

    def __init__(self, source: Any, resolver: ImageResolver, container: str):
        self.source = source
        self.resolver = resolver
        self.container = container

    def record(self, position: int, start: int, end: int) -> dict[str, Any]:
        if self.container in ROW_CONTAINERS:
            return self.source.record(position)
        return json.loads(self.source.read(start, end))

    def images(self, position: int, record: dict[str, Any], key: str) -> list[str]:
        if self.container in ROW_CONTAINERS:
            return self.source.images(position).names
        return image_list(record, key)

    def image_refs(self, position: int, record: dict[str, Any], key: str) -> list[str]:
        if self.container in ROW_CONTAINERS:
            row_images = self.source.images(position)
            return self.resolve(row_images.names, key, row_images.refs)
        return self.resolve(image_list(record, key), key)

    def resolve(self, names: list[str], key: str, embedded: list[str] | None = None) -> list[str]:
        """References of the images ``names``: an embedded image's row reference, else the path
        under the image root (without a root: as written, an absolute path or URL)."""
        embedded = embedded or [""] * len(names)
        if self.resolver.local_root is None and self.resolver.url_prefix is None:
            return [ref or name for name, ref in zip(names, embedded)]
        return [ref or self.resolver.resolve(name, key) for name, ref in zip(names, embedded)]


class StoredSample(Sample):
    """A :class:`Sample` whose record, turns and images are read again from the dataset's file
    when asked for; only position, key, task and counts are held."""

    def __init__(self, origin: _Origin, position: int, key: str, task: str, n_images: int, text_chars: int,
                 span: tuple[int, int]):  # noqa: D107 - the record's fields are properties
        self._origin = origin
        self.position = position
        self.key = key
        self.task = task
        self._n_images = n_images
        self._text_chars = text_chars
        self._span = span

    @property
    def record(self) -> dict[str, Any]:
        return self._origin.record(self.position, *self._span)

    @property
    def turns(self) -> list[Turn]:
        return [Turn(role, text) for role, text in conversation(self.record, self.key)]

    @property
    def images(self) -> list[str]:
        return self._origin.images(self.position, self.record, self.key)

    @property
    def id(self) -> str | None:
        raw_id = self.record.get("id")
        return None if raw_id is None else str(raw_id)

    @property
    def image_paths(self) -> list[str]:
        return self._origin.image_refs(self.position, self.record, self.key)

    @property
    def n_images(self) -> int:
        return self._n_images

    @property
    def text_chars(self) -> int:
        return self._text_chars

    def __repr__(self) -> str:
        return f"StoredSample(position={self.position}, key={self.key!r}, task={self.task!r})"


class SampleList(Sequence):
    """The valid samples in source order, made on access (a list of 10M objects is not)."""

    def __init__(self, dataset: "Dataset"):
        self._dataset = dataset

    def __len__(self) -> int:
        return len(self._dataset._sample_positions)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self._dataset._sample(i) for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self._dataset._sample(index)

    def __iter__(self) -> Iterator[StoredSample]:
        for index in range(len(self)):
            yield self._dataset._sample(index)


class KeyIndex(Mapping):
    """``key -> Sample`` without a dict: the key names its position, and the hash must match."""

    def __init__(self, dataset: "Dataset"):
        self._dataset = dataset

    def _index(self, key: Any) -> int | None:
        if not isinstance(key, str):
            return None
        position_text, _, hash_text = key.partition("-")
        try:
            position, hash40 = int(position_text), int(hash_text, 16)
        except ValueError:
            return None
        dataset = self._dataset
        if not 0 <= position < dataset.n_records or int(dataset._hashes[position]) != hash40:
            return None
        if format_key(position, hash40) != key:
            return None
        index = dataset._sample_index(position)
        return index if index >= 0 else None

    def __getitem__(self, key: str) -> Sample:
        index = self._index(key)
        if index is None:
            raise KeyError(key)
        return self._dataset._sample(index)

    def __contains__(self, key: object) -> bool:
        return self._index(key) is not None

    def __iter__(self) -> Iterator[str]:
        for sample in self._dataset.samples:
            yield sample.key

    def __len__(self) -> int:
        return len(self._dataset._sample_positions)


class Dataset:
    """A read dataset: valid samples and rejected records, both in source order.

    Holds per record a byte span and a content hash, per sample its task and counts; records are
    read again from ``path`` by offset (:meth:`raw`, :meth:`record`)."""

    def __init__(self, path: Path, container: str, source: Any, resolver: ImageResolver):
        self.path = path
        self.container = container  # "json" | "jsonl" | "parquet" | "arrow"
        self.source = source
        self.resolver = resolver
        self.image_root = resolver.local_root if resolver.local_root is not None else resolver.description
        self.rejected: list[RejectedRecord] = []
        self._origin = _Origin(source, resolver, container)
        self._starts = array("q")
        self._ends = array("q")
        self._hashes = array("Q")
        self._sample_positions = array("q")
        self._sample_tasks = array("i")
        self._sample_images = array("i")
        self._sample_chars = array("q")
        self._task_names: list[str] = []
        self._task_codes: dict[str, int] = {}

    # -- what the pipeline uses -------------------------------------------------------------
    @property
    def n_records(self) -> int:
        return len(self._hashes)

    @property
    def samples(self) -> SampleList:
        return SampleList(self)

    def by_key(self) -> KeyIndex:
        return KeyIndex(self)

    def key_of(self, position: int) -> str:
        return format_key(position, int(self._hashes[position]))

    def raw(self, position: int) -> str:
        """The exact source text of record ``position``."""
        return self.raw_bytes(position).decode("utf-8")

    def raw_bytes(self, position: int) -> bytes:
        if self.container in ROW_CONTAINERS:
            raise TypeError("rows of parquet / Arrow datasets have no source text; use write_rows")
        return self.source.read(self._starts[position], self._ends[position])

    def record(self, position: int) -> dict[str, Any]:
        """Record ``position`` as the reader saw it (rows: images as row references)."""
        return self._origin.record(position, self._starts[position], self._ends[position])

    def write_rows(self, positions: Iterable[int], path: str | os.PathLike) -> Path:
        """Rows ``positions`` of a parquet / Arrow dataset, unchanged (same columns, same image
        bytes), in source order, as one parquet file."""
        if self.container not in ROW_CONTAINERS:
            raise TypeError(f"write_rows is for row formats; {self.path} is {self.container}")
        return self.source.write_rows(sorted(int(p) for p in positions), Path(path))

    def iter_raw(self, positions: Iterable[int]) -> Iterator[str]:
        for position in positions:
            yield self.raw(position)

    # -- internals ------------------------------------------------------------------------
    def _sample_index(self, position: int) -> int:
        index = bisect_left(self._sample_positions, position)
        if index < len(self._sample_positions) and self._sample_positions[index] == position:
            return index
        return -1

    def _sample(self, index: int) -> StoredSample:
        position = self._sample_positions[index]
        span = (self._starts[position], self._ends[position])
        return StoredSample(self._origin, position, self.key_of(position), self._task_names[self._sample_tasks[index]],
                            self._sample_images[index], self._sample_chars[index], span)

    def _task_code(self, task: str) -> int:
        code = self._task_codes.get(task)
        if code is None:
            code = self._task_codes[task] = len(self._task_names)
            self._task_names.append(task)
        return code
