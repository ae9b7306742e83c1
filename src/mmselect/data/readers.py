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

import contextlib
import gc
import io
import os
from pathlib import Path

from ..progress import progress_bar
from .dataset import Dataset
from .images import ImageResolver
from .keys import record_hash40
from .record_checks import CheckedRecord, RecordChecker
from .textscan import TextSource, compression_of, decompress, detect_container, scan_json_array, scan_jsonl

# Records are validated, and their images checked (in parallel), a block at a time.
BLOCK_RECORDS = 4096
BLOCK_ROWS = 256  # rows carry their image bytes until checked


@contextlib.contextmanager
def _collector_paused():
    """Pause Python's cyclic garbage collector while records stream by: parsed records hold no
    cycles (they are freed by reference counting), yet their many small containers trigger
    thousands of collections that each walk the block in hand (about an eighth of a 665k read)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class _ByteProgress:
    """Progress through a text file in whole megabytes (the record count is not known ahead)."""

    def __init__(self, advance, total_mb: int):
        self.advance, self.total_mb, self.reported = advance, total_mb, 0

    def reached(self, offset: int) -> None:
        done = min(offset // 1_000_000, self.total_mb)
        if done > self.reported:
            self.advance(done - self.reported)
            self.reported = done

    def finish(self) -> None:
        self.advance(self.total_mb - self.reported)
        self.reported = self.total_mb


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
    picks the split of a ``DatasetDict`` folder or hub dataset; ``progress`` (default on;
    ``False``: silent) shows a bar on a terminal and logs plain ``done/total`` lines through the
    ``mmselect`` logger (what a Slurm log shows), in megabytes of a JSON / JSONL file or in rows.
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
        reader = RecordChecker(dataset, **options)
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
    reader = RecordChecker(dataset, **options)
    scan = scan_json_array if container == "json" else scan_jsonl
    stream = io.BytesIO(data) if data is not None else text_path.open("rb")
    size = len(data) if data is not None else text_path.stat().st_size
    total_mb = max(1, -(-size // 1_000_000))
    try:
        with stream, _collector_paused(), \
                progress_bar(f"reading {text_path.name}", total_mb, enabled=progress is not False, unit="MB") as advance:
            bar = _ByteProgress(advance, total_mb)
            block: list[CheckedRecord] = []
            for position, (start, end, record, has_float) in enumerate(scan(text_path, stream)):
                block.append(reader.validate(position, start, end, record, hash40=record_hash40(record, has_float)))
                if len(block) >= BLOCK_RECORDS:
                    reader.finish_block(block)
                    bar.reached(end)
                    block = []
            reader.finish_block(block)
            bar.finish()
    finally:
        reader.close()
    reader.check_task_field()
    return dataset


def _read_rows(reader: RecordChecker, source) -> None:
    with _collector_paused(), progress_bar(f"reading {source.path.name}", source.n_rows,
                                           enabled=reader.progress is not False, unit="rows") as advance:
        block: list[CheckedRecord] = []
        for position, record, hash40, images in source.scan():
            block.append(reader.validate(position, 0, 0, record, hash40=hash40, row_images=images))
            if len(block) >= BLOCK_ROWS:
                reader.finish_block(block)
                advance(len(block))
                block = []
        reader.finish_block(block)
        advance(len(block))
