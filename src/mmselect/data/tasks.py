"""Task (source) label of a record: an explicit field, else the image path's first directory."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

TEXT_ONLY_TASK = "text"
NO_DIRECTORY_TASK = "default"


def infer_task(record: dict[str, Any], images: list[str], task_field: str | None = None) -> str:
    """``task_field`` if given and present; else the first directory of the first image path
    (``coco/train2017/x.jpg`` -> ``coco``); ``text`` for text-only records."""
    if task_field:
        value = record.get(task_field)
        if value not in (None, ""):
            return str(value)
    if not images:
        return TEXT_ONLY_TASK
    parts = PurePosixPath(images[0].replace("\\", "/")).parts
    parts = [p for p in parts if p not in ("", ".", "/")]
    return parts[0] if len(parts) > 1 else NO_DIRECTORY_TASK
