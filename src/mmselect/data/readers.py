"""Reading datasets: LLaVA / sharegpt / OpenAI / ms-swift JSON and JSONL (optionally compressed),
and row formats (parquet, Hugging Face ``datasets``; see :mod:`.rows`).

Each record is parsed once while the file streams by; what stays in memory is columnar and small
(byte span, content hash, task, a few counts per record), so tens of millions of records fit. A
:class:`Sample` re-reads its record from the file by offset when its turns or record are needed,
and the exported subset is the user's records byte for byte. A file that is not valid JSON stops the
run with the file, line and column; an unusable record is rejected with its key and the reason, and
the run goes on (``strict=True``: it stops, at read time, with every image check already done).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from array import array
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from ..errors import DataFormatError, RecordError
from .images import ImageResolver, check_image, check_image_bytes, max_image_pixels
from .records import IMAGE_PLACEHOLDER, Sample, Turn, conversation, conversation_columns, image_list
from .tasks import NO_DIRECTORY_TASK, TEXT_ONLY_TASK, infer_task
from .textscan import TextSource, compression_of, decompress, detect_container, scan_json_array, scan_jsonl

ROW_CONTAINERS = ("parquet", "arrow")
# Records are validated, and their images checked (in parallel), a block at a time.
BLOCK_RECORDS = 4096
BLOCK_ROWS = 256  # rows carry their image bytes until checked


@dataclass
class Rejected:
    position: int
    key: str
    reason: str
    id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "position": self.position, "id": self.id, "reason": self.reason}


try:  # optional: the same canonical bytes, 5-10x faster (see _hash40)
    import orjson
except ImportError:  # pragma: no cover - exercised by forcing the fallback in tests
    orjson = None

_ENCODE_CANONICAL = json.encoder.c_make_encoder(  # json.dumps(sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    None, json.JSONEncoder().default, json.encoder.encode_basestring, None, ":", ",", True, False, True
) if json.encoder.c_make_encoder is not None else None
# orjson writes floats differently from Python (1e-05 vs 0.00001, NaN as null): records with floats
# (the scan notes them) are written by json; orjson refuses integers beyond 64 bits by itself.


def _canonical_json(record: Any) -> bytes:
    if _ENCODE_CANONICAL is not None:
        text = "".join(_ENCODE_CANONICAL(record, 0))
    else:  # pragma: no cover - Pythons without the C accelerator
        text = json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8", "surrogatepass")


def _fast_canonical(record: Any) -> bytes | None:
    """orjson's sorted compact output (for a record without floats it is byte for byte what json
    writes), or None when orjson is missing or refuses the record."""
    if orjson is None:
        return None
    try:
        return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        return None


def _hash40(record: Any, has_float: bool = True) -> int:
    """The content hash of :func:`~.records.content_hash` (blake2b, 5 bytes), as an integer."""
    canonical = None if has_float else _fast_canonical(record)
    if canonical is None:
        canonical = _canonical_json(record)
    return int.from_bytes(hashlib.blake2b(canonical, digest_size=5).digest(), "big")


def format_key(position: int, hash40: int) -> str:
    return f"{position:07d}-{hash40:010x}"


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
        self.rejected: list[Rejected] = []
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


class _Checked:
    """One record after validation: what stays (hash, task, counts) and what the image check needs."""

    __slots__ = ("position", "start", "end", "hash40", "record", "task", "n_images", "text_chars", "images", "refs",
                 "blobs", "reason")

    def __init__(self, position: int, start: int, end: int, hash40: int, record: Any):
        self.position, self.start, self.end, self.hash40, self.record = position, start, end, hash40, record
        self.task, self.n_images, self.text_chars = "", 0, 0
        self.images: list[str] | None = None  # as written
        self.refs: list[str] | None = None  # resolved
        self.blobs: list[bytes | None] | None = None  # embedded image bytes (row formats)
        self.reason: str | None = None

    @property
    def key(self) -> str:
        return format_key(self.position, self.hash40)

    @property
    def id(self) -> str | None:
        raw_id = self.record.get("id") if isinstance(self.record, dict) else None
        return None if raw_id is None else str(raw_id)


class _Reader:
    def __init__(self, dataset: Dataset, *, task_field, task_preset, check_images, verify_images, strict,
                 max_pixels, workers, progress):
        self.dataset = dataset
        self.task_field = task_field
        self.assign = _task_function(task_preset)
        self.check_images = check_images
        self.verify_images = verify_images
        self.strict = strict
        self.max_pixels = max_image_pixels(max_pixels)
        self.workers = workers or min(32, (os.cpu_count() or 1) * 4)
        self.progress = progress
        self.fields: set[str] = set()
        self.task_field_seen = False
        self.pool: ThreadPoolExecutor | None = None
        self.preset = task_preset

    def validate(self, position: int, start: int, end: int, record: Any, hash40: int | None = None,
                 row_images: Any = None) -> _Checked:
        if hash40 is None:
            hash40 = _hash40(record)
        key = ""  # only a rejection needs it (item.key), and it is formatted then
        item = _Checked(position, start, end, hash40, record)
        try:
            if not isinstance(record, dict):
                raise RecordError(key, "record is not a JSON object")
            if self.task_field and not self.task_field_seen:
                self.fields.update(record)
                self.task_field_seen = record.get(self.task_field) not in (None, "")
            _, texts = conversation_columns(record, key)
            if row_images is None:
                images, embedded = image_list(record, key), None
            elif row_images.error:
                raise RecordError(key, row_images.error)
            else:
                images, embedded, item.blobs = row_images.names, row_images.refs, row_images.blobs
            joined = "".join(texts)
            placeholders = joined.count(IMAGE_PLACEHOLDER)
            text_chars = len(joined) - placeholders * len(IMAGE_PLACEHOLDER)
            if placeholders > len(images):
                raise RecordError(key, f"{placeholders} '<image>' placeholders but {len(images)} image(s)")
            resolver = self.dataset.resolver
            if self.check_images or resolver.local_root is not None or resolver.url_prefix is not None:
                embedded = embedded or [""] * len(images)
                item.refs = [ref or resolver.resolve(name, key) for name, ref in zip(images, embedded)]
            item.images = images
            item.n_images = len(images)
            item.text_chars = text_chars
            item.task = self._task(record, images)
        except RecordError as err:
            item.reason = err.reason
        return item

    def _task(self, record: dict[str, Any], images: list[str]) -> str:
        if self.task_field:
            value = record.get(self.task_field)
            if value not in (None, ""):
                return str(value)
        if self.assign is not None:
            return str(self.assign(record, images, self.preset))
        if not images:
            return TEXT_ONLY_TASK
        first = images[0]
        if "\\" in first or first.startswith("//"):
            return infer_task(record, images, None)
        # infer_task's rule (the first directory of the first image), without building a path object
        parts = [part for part in first.split("/") if part and part != "."]
        return parts[0] if len(parts) > 1 else NO_DIRECTORY_TASK

    def finish_block(self, block: list[_Checked]) -> None:
        if self.check_images:
            self._check_block_images(block)
        dataset = self.dataset
        dataset._starts.extend([item.start for item in block])
        dataset._ends.extend([item.end for item in block])
        dataset._hashes.extend([item.hash40 for item in block])
        valid = block
        if any(item.reason is not None for item in block):
            for item in block:
                if item.reason is None:
                    continue
                if self.strict:
                    raise RecordError(item.key, f"{item.reason} ({dataset.path}, record {item.position})")
                dataset.rejected.append(Rejected(item.position, item.key, item.reason, item.id))
            valid = [item for item in block if item.reason is None]
        codes, names = dataset._task_codes, dataset._task_names
        for item in valid:
            if item.task not in codes:
                codes[item.task] = len(names)
                names.append(item.task)
        dataset._sample_positions.extend([item.position for item in valid])
        dataset._sample_tasks.extend([codes[item.task] for item in valid])
        dataset._sample_images.extend([item.n_images for item in valid])
        dataset._sample_chars.extend([item.text_chars for item in valid])

    def _check_block_images(self, block: list[_Checked]) -> None:
        jobs = [(item, ref, relative, blob) for item in block if item.reason is None and item.refs
                for ref, relative, blob in zip(item.refs, item.images, item.blobs or [None] * len(item.refs))]
        if not jobs:
            return
        if self.pool is None:
            self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="mmselect-images")
        results = self.pool.map(lambda job: self._check_one(*job), jobs)
        for (item, *_), reason in zip(jobs, results):
            if reason is not None and item.reason is None:  # the first bad image names the record
                item.reason = reason
        for item in block:
            item.blobs = None

    def _check_one(self, item: _Checked, ref: str, relative: str, blob: bytes | None) -> str | None:
        verify = "decode" if self.verify_images else ("structure" if self.strict else False)
        try:
            if blob is not None:
                check_image_bytes(blob, relative, item.key, verify=verify, max_pixels=self.max_pixels)
                return None
            self.dataset.resolver.check_contained(ref, relative, item.key)
            check_image(ref, relative, item.key, verify=verify, max_pixels=self.max_pixels)
        except RecordError as err:
            return err.reason
        return None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()

    def check_task_field(self) -> None:
        if self.task_field and not self.task_field_seen and self.dataset.n_records:
            known = ", ".join(sorted(self.fields)) or "(none)"
            raise DataFormatError(
                f"{self.dataset.path}: no record has a value for --task-field {self.task_field!r}; "
                f"the records' fields are: {known}"
            )


def _task_function(preset: str | None) -> Callable | None:
    if preset is None:
        return None
    try:
        from . import tasks
    except ImportError:  # pragma: no cover - tasks ships with the package
        tasks = None
    assign = getattr(tasks, "assign_task", None)
    if assign is None:
        raise DataFormatError(f"task presets are not available in this version of mmselect (asked for {preset!r})")
    return assign


class _Progress:
    """A records/s counter on stderr when it is a terminal (or when asked)."""

    def __init__(self, enabled: bool | None, description: str):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.description = description
        self.bar = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self.bar = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), MofNCompleteColumn(),
                                TextColumn("records"), TimeElapsedColumn(), transient=False)
            self.bar.__enter__()
            self.task = self.bar.add_task(self.description, total=None)
        return self

    def advance(self, n: int) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, n)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)


def read_dataset(
    path: str | os.PathLike,
    *,
    image_root: str | os.PathLike | None = None,
    task_field: str | None = None,
    task_preset: str | None = None,
    check_images: bool = True,
    verify_images: bool = False,
    strict: bool = False,
    max_image_pixels: int | None = None,
    split: str | None = None,
    image_workers: int | None = None,
    progress: bool | None = None,
) -> Dataset:
    """Read a dataset: a LLaVA / sharegpt / OpenAI / ms-swift JSON or JSONL file (``.gz``, ``.bz2``,
    ``.xz``, ``.zst`` too), a parquet file or folder, a ``datasets`` ``save_to_disk`` folder, or a
    Hugging Face hub id (``hf://org/name`` or ``org/name``; needs ``mmselect[hf]``).

    Records that cannot be used (missing, corrupt, oversized or escaping image, malformed
    conversation, unknown role) are collected in ``Dataset.rejected`` with a reason; with
    ``strict=True`` the first one raises :class:`RecordError` instead, and every image file is also
    read whole and its structure verified (truncation, PNG checksums) at read time, so a strict run
    stops here rather than hours into extraction. Image checks (existence, header, pixel count at
    most ``max_image_pixels``, default 40 MP or ``$MMSELECT_MAX_IMAGE_PIXELS``; real path inside a
    local ``image_root``) run on ``image_workers`` threads. ``verify_images=True`` decodes every
    image fully (slower). ``task_field`` must be a field some record has; ``task_preset`` names a
    task preset of :mod:`mmselect.data.tasks` used for records without ``task_field``; ``split``
    picks the split of a ``DatasetDict`` folder or hub dataset; ``progress`` (default: when stderr
    is a terminal) shows a records counter.
    """
    text_path = Path(path)
    resolver = ImageResolver(image_root)
    options = dict(task_field=task_field, task_preset=task_preset, check_images=check_images,
                   verify_images=verify_images, strict=strict, max_pixels=max_image_pixels,
                   workers=image_workers, progress=progress)
    if not text_path.is_file() or text_path.suffix.lower() in (".parquet", ".arrow"):
        from .rows import open_row_source

        source = open_row_source(path, split=split)
        dataset = Dataset(source.path, source.container, source, resolver)
        reader = _Reader(dataset, **options)
        try:
            _read_rows(reader, source)
        finally:
            reader.close()
        reader.check_task_field()
        return dataset

    with text_path.open("rb") as handle:
        head = handle.read(4096)
    data = decompress(text_path) if compression_of(text_path) else None
    container = detect_container(text_path, head if data is None else data[:4096])
    dataset = Dataset(text_path, container, TextSource(text_path, data), resolver)
    reader = _Reader(dataset, **options)
    scan = scan_json_array if container == "json" else scan_jsonl
    import io

    stream = io.BytesIO(data) if data is not None else text_path.open("rb")
    try:
        with stream, _Progress(progress, f"reading {text_path.name}") as bar:
            block: list[_Checked] = []
            for position, (start, end, record, has_float) in enumerate(scan(text_path, stream)):
                block.append(reader.validate(position, start, end, record, hash40=_hash40(record, has_float)))
                if len(block) >= BLOCK_RECORDS:
                    reader.finish_block(block)
                    bar.advance(len(block))
                    block = []
            reader.finish_block(block)
            bar.advance(len(block))
    finally:
        reader.close()
    reader.check_task_field()
    return dataset


def _read_rows(reader: _Reader, source) -> None:
    with _Progress(reader.progress, f"reading {source.path.name}") as bar:
        block: list[_Checked] = []
        for position, record, hash40, images in source.scan():
            block.append(reader.validate(position, 0, 0, record, hash40=hash40, row_images=images))
            if len(block) >= BLOCK_ROWS:
                reader.finish_block(block)
                bar.advance(len(block))
                block = []
        reader.finish_block(block)
        bar.advance(len(block))


def iter_records(dataset: Dataset, positions: list[int]) -> Iterator[str]:
    yield from dataset.iter_raw(positions)


def sample_positions(dataset: Dataset) -> np.ndarray:
    return np.frombuffer(dataset._sample_positions, dtype=np.int64).copy()
