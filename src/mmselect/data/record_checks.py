"""Checking records as they are read: the conversation and placeholders, the task, then the images of
a block of records on a thread pool; what passes joins the dataset's columns, the rest its rejected."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from ..errors import DataFormatError, RecordError
from .dataset import Dataset
from .images import check_image, check_image_bytes, max_image_pixels
from .keys import format_key, record_hash40
from .records import IMAGE_PLACEHOLDER, conversation_text, image_list
from .rejected import RejectedRecord
from .tasks import NO_DIRECTORY_TASK, TEXT_ONLY_TASK, infer_task


class CheckedRecord:
    """One record after validation: what stays (hash, task, counts) and what the image check needs."""

    __slots__ = ("position", "start", "end", "hash40", "raw_id", "task", "n_images", "text_chars", "images", "refs",
                 "blobs", "reason")

    def __init__(self, position: int, start: int, end: int, hash40: int, record: Any):
        self.position, self.start, self.end, self.hash40 = position, start, end, hash40
        # Only the id is kept (a rejection names it): the record itself is freed as soon as it is
        # checked, while it is still in the CPU's cache, not with the whole block.
        self.raw_id = record.get("id") if isinstance(record, dict) else None
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
        return None if self.raw_id is None else str(self.raw_id)


class RecordChecker:
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
                 row_images: Any = None) -> CheckedRecord:
        if hash40 is None:
            hash40 = record_hash40(record)
        key = ""  # only a rejection needs it (item.key), and it is formatted then
        item = CheckedRecord(position, start, end, hash40, record)
        try:
            if not isinstance(record, dict):
                raise RecordError(key, "record is not a JSON object")
            if self.task_field and not self.task_field_seen:
                self.fields.update(record)
                self.task_field_seen = record.get(self.task_field) not in (None, "")
            joined = conversation_text(record, key)
            if row_images is None:
                images, embedded = image_list(record, key), None
            elif row_images.error:
                raise RecordError(key, row_images.error)
            else:
                images, embedded, item.blobs = row_images.names, row_images.refs, row_images.blobs
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
        head, _, rest = first.partition("/")
        if head and head != "." and rest and rest[0] not in "/.":
            return head  # the usual "coco/train2017/x.jpg"
        parts = [part for part in first.split("/") if part and part != "."]
        return parts[0] if len(parts) > 1 else NO_DIRECTORY_TASK

    def finish_block(self, block: list[CheckedRecord]) -> None:
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
                dataset.rejected.append(RejectedRecord(item.key, item.reason, "read", item.position, item.id))
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

    def _check_block_images(self, block: list[CheckedRecord]) -> None:
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

    def _check_one(self, item: CheckedRecord, ref: str, relative: str, blob: bytes | None) -> str | None:
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
