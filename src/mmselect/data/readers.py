"""Readers for LLaVA JSON / JSONL and LLaMA-Factory sharegpt files.

Each record's exact source text is kept (as offsets into the file), so the exported subset holds
the user's records byte for byte. A file that is not valid JSON stops the run with the file, line
and column; a record that is unusable is rejected with its key and the reason, and the run goes on.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from PIL import Image

from ..errors import DataFormatError, RecordError
from .records import IMAGE_PLACEHOLDER, Sample, image_list, parse_turns, sample_key
from .tasks import infer_task

_WHITESPACE = " \t\n\r"


@dataclass
class Rejected:
    position: int
    key: str
    reason: str
    id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "position": self.position, "id": self.id, "reason": self.reason}


@dataclass
class Dataset:
    """A parsed dataset: valid samples and rejected records, both in source order."""

    path: Path
    container: str  # "json" | "jsonl"
    text: str
    spans: list[tuple[int, int]]
    samples: list[Sample] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    image_root: Path | None = None

    @property
    def n_records(self) -> int:
        return len(self.spans)

    def raw(self, position: int) -> str:
        """The exact source text of record ``position``."""
        start, end = self.spans[position]
        return self.text[start:end]

    def by_key(self) -> dict[str, Sample]:
        return {s.key: s for s in self.samples}


def _json_error(path: Path, text: str, pos: int, message: str) -> DataFormatError:
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return DataFormatError(f"{path}:{line}:{column}: invalid JSON: {message}")


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WHITESPACE:
        pos += 1
    return pos


def scan_json_array(path: Path, text: str) -> list[tuple[int, int]]:
    """Spans of the elements of a top-level JSON array, with positioned errors."""
    decoder = json.JSONDecoder()
    pos = _skip_ws(text, 0)
    if pos >= len(text) or text[pos] != "[":
        raise _json_error(path, text, pos, "expected a list of records ('[' ...)")
    pos = _skip_ws(text, pos + 1)
    spans: list[tuple[int, int]] = []
    if pos < len(text) and text[pos] == "]":
        return spans
    while True:
        try:
            _, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise _json_error(path, text, err.pos, err.msg) from None
        spans.append((pos, end))
        pos = _skip_ws(text, end)
        if pos >= len(text):
            raise _json_error(path, text, pos, "unexpected end of file, expected ',' or ']'")
        if text[pos] == "]":
            tail = _skip_ws(text, pos + 1)
            if tail != len(text):
                raise _json_error(path, text, tail, "extra data after the list")
            return spans
        if text[pos] != ",":
            raise _json_error(path, text, pos, "expected ',' or ']' after a record")
        pos = _skip_ws(text, pos + 1)


def scan_jsonl(path: Path, text: str) -> list[tuple[int, int]]:
    decoder = json.JSONDecoder()
    spans = []
    line_start = 0
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped:
            start = line_start + (len(line) - len(line.lstrip()))
            try:
                _, end = decoder.raw_decode(text, start)
            except json.JSONDecodeError as err:
                raise _json_error(path, text, err.pos, err.msg) from None
            if text[end:line_start + len(line)].strip():
                raise _json_error(path, text, end, "extra data after the record on this line")
            spans.append((start, end))
        line_start += len(line)
    return spans


def detect_container(path: Path, text: str) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".json":
        return "json"
    return "json" if text.lstrip().startswith("[") else "jsonl"


def resolve_image(image_root: Path | None, relative: str, key: str) -> Path:
    """Resolve ``relative`` under ``image_root`` and refuse paths that escape it."""
    if image_root is None:
        candidate = Path(relative)
        if not candidate.is_absolute():
            raise RecordError(key, f"image {relative!r} is relative but no --image-root was given")
        return candidate
    root = image_root.resolve()
    candidate = Path(os.path.normpath(root / relative))
    if candidate != root and root not in candidate.parents:
        raise RecordError(key, f"image path {relative!r} escapes the image root")
    return candidate


def check_image(path: Path, relative: str, key: str, verify: bool) -> None:
    if not path.is_file():
        raise RecordError(key, f"image not found: {relative}")
    try:
        with Image.open(path) as image:
            if verify:
                image.load()
            elif image.width <= 0 or image.height <= 0:
                raise OSError("empty image")
    except RecordError:
        raise
    except Exception as err:  # PIL raises many types for corrupt files
        raise RecordError(key, f"unreadable image {relative}: {type(err).__name__}: {err}") from None


def _parse_record(
    position: int,
    record: Any,
    image_root: Path | None,
    task_field: str | None,
    check_images: bool,
    verify_images: bool,
) -> Sample:
    key = sample_key(position, record)
    if not isinstance(record, dict):
        raise RecordError(key, "record is not a JSON object")
    turns = parse_turns(record, key)
    images = image_list(record, key)
    placeholders = sum(t.text.count(IMAGE_PLACEHOLDER) for t in turns)
    if placeholders > len(images):
        raise RecordError(key, f"{placeholders} '<image>' placeholders but {len(images)} image(s)")
    resolved = []
    for relative in images:
        if image_root is None and not check_images:
            resolved.append(relative)  # selection only: images are not opened
            continue
        path = resolve_image(image_root, relative, key)
        if check_images:
            check_image(path, relative, key, verify_images)
        resolved.append(str(path))
    raw_id = record.get("id")
    return Sample(
        position=position,
        key=key,
        record=record,
        turns=turns,
        images=images,
        task=infer_task(record, images, task_field),
        id=None if raw_id is None else str(raw_id),
        image_paths=resolved,
    )


def read_dataset(
    path: str | os.PathLike,
    *,
    image_root: str | os.PathLike | None = None,
    task_field: str | None = None,
    check_images: bool = True,
    verify_images: bool = False,
    strict: bool = False,
) -> Dataset:
    """Read a LLaVA / sharegpt JSON or JSONL file.

    Records that cannot be used (missing, corrupt or escaping image, malformed conversation,
    unknown role) are collected in ``Dataset.rejected`` with a reason; with ``strict=True`` the
    first one raises :class:`RecordError` instead. ``verify_images=True`` decodes every image
    fully (slower); by default only the header is read here and decoding errors are caught at
    extraction time.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataFormatError(f"{path}: not UTF-8 text ({err})") from None
    container = detect_container(path, text)
    spans = scan_json_array(path, text) if container == "json" else scan_jsonl(path, text)
    root = Path(image_root) if image_root is not None else None
    if root is not None and not root.is_dir():
        raise DataFormatError(f"image root {root} is not a directory")
    dataset = Dataset(path=path, container=container, text=text, spans=spans, image_root=root)
    for position, (start, end) in enumerate(spans):
        record = json.loads(text[start:end])
        try:
            dataset.samples.append(
                _parse_record(position, record, root, task_field, check_images, verify_images)
            )
        except RecordError as err:
            if strict:
                raise RecordError(err.key, f"{err.reason} ({path}, record {position})") from None
            raw_id = record.get("id") if isinstance(record, dict) else None
            dataset.rejected.append(Rejected(position, err.key, err.reason, None if raw_id is None else str(raw_id)))
    return dataset


def iter_records(dataset: Dataset, positions: list[int]) -> Iterator[str]:
    for position in positions:
        yield dataset.raw(position)
