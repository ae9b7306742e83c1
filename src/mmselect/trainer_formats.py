"""The subset in the format a trainer reads: LLaVA JSON, sharegpt (LLaMA-Factory, ms-swift) or a
Hugging Face parquet dataset (TRL).

``same`` (the default, written by :func:`mmselect.export.write_subset`) keeps every record byte for
byte as the input had it; the formats here rebuild each selected record from its parsed turns and
images, so fields a trainer does not read (``id`` aside) are dropped. Image paths are written
absolute (resolved under ``--image-root``), so the file works from any directory: LLaMA-Factory and
ms-swift use an absolute path as it is, without ``media_dir``. Images that are not local files
(bytes embedded in parquet rows, as LLaVA-OneVision-Data ships them, or fsspec URLs) are written to
``OUT/images/<key>-<n>.<ext>`` for the JSON formats and embedded as bytes in the ``hf`` format.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Iterable

from .data.records import IMAGE_PLACEHOLDER, Sample
from .errors import ConfigError

EXPORT_FORMATS = ("same", "llava-json", "sharegpt", "hf")
LLAMA_FACTORY_NAME = "mmselect_subset"
_LLAVA_ROLES = {"user": "human", "assistant": "gpt", "system": "system"}


def _image_paths(sample: Sample, media: "_Media | None" = None) -> list[str]:
    """Absolute paths of the sample's images; images that are not local files (bytes in a
    parquet row, an fsspec URL) are written under ``media`` first."""
    paths = []
    for i, ref in enumerate(sample.image_paths or sample.images):
        if Path(ref).is_file():
            paths.append(str(Path(ref).resolve()))
        elif media is not None:
            paths.append(media.write(sample, i, ref))
        else:
            paths.append(str(ref))
    return paths


class _Media:
    """Images that are not local files, written once under ``OUT/images``."""

    def __init__(self, directory: Path):
        self.directory = directory

    def write(self, sample: Sample, index: int, ref: str) -> str:
        from PIL import Image

        from .data.images import read_image_bytes

        data = read_image_bytes(ref)
        with Image.open(io.BytesIO(data)) as image:
            suffix = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif"}.get(image.format or "", ".img")
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{sample.key}-{index}{suffix}"
        path.write_bytes(data)
        return str(path.resolve())


def _with_placeholders(sample: Sample) -> list[tuple[str, str]]:
    """(role, text) per turn; a record with images but no ``<image>`` in its text gets the
    placeholders at the start of its first user turn, as LLaVA's preprocessing treats it."""
    turns = [(t.role, t.text) for t in sample.turns]
    written = sum(text.count(IMAGE_PLACEHOLDER) for _, text in turns)
    if sample.n_images and written == 0:
        first_user = next(i for i, (role, _) in enumerate(turns) if role == "user")
        role, text = turns[first_user]
        turns[first_user] = (role, IMAGE_PLACEHOLDER * sample.n_images + "\n" + text)
    return turns


def llava_record(sample: Sample, media: _Media | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {"id": sample.id if sample.id is not None else sample.key}
    images = _image_paths(sample, media)
    if len(images) == 1:
        record["image"] = images[0]
    elif images:
        record["image"] = images
    record["conversations"] = [{"from": _LLAVA_ROLES[role], "value": text} for role, text in _with_placeholders(sample)]
    return record


def sharegpt_record(sample: Sample, media: _Media | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {"messages": [{"role": role, "content": text} for role, text in _with_placeholders(sample)]}
    images = _image_paths(sample, media)
    if images:
        record["images"] = images
    return record


def content_list_messages(sample: Sample) -> list[dict[str, Any]]:
    """OpenAI/TRL messages: ``content`` is a list of ``{"type": "image"}`` and ``{"type": "text"}`` parts."""
    messages = []
    for role, text in _with_placeholders(sample):
        parts: list[dict[str, Any]] = []
        for i, piece in enumerate(text.split(IMAGE_PLACEHOLDER)):
            if i > 0:
                parts.append({"type": "image"})
            if piece.strip():
                parts.append({"type": "text", "text": piece.strip("\n")})
        messages.append({"role": role, "content": parts})
    return messages


def llama_factory_entry(file_name: str) -> dict[str, Any]:
    """The ``dataset_info.json`` entry for a sharegpt subset (LLaMA-Factory's documented schema)."""
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                 "assistant_tag": "assistant", "system_tag": "system"},
    }


def write_trainer_subset(samples: Iterable[Sample], out_dir: Path, export_format: str) -> list[Path]:
    """Write the selected ``samples`` (in source order) as ``export_format``; returns the files written."""
    if export_format not in EXPORT_FORMATS or export_format == "same":
        raise ConfigError(f"--export-format must be one of {', '.join(EXPORT_FORMATS)}, got {export_format!r}")
    samples = sorted(samples, key=lambda s: s.position)
    out_dir = Path(out_dir)
    if export_format == "llava-json":
        path = out_dir / "subset.llava.json"
        _write_json_array(path, (llava_record(s, _Media(out_dir / "images")) for s in samples))
        return [path]
    if export_format == "sharegpt":
        path = out_dir / "subset.sharegpt.json"
        _write_json_array(path, (sharegpt_record(s, _Media(out_dir / "images")) for s in samples))
        info = out_dir / "dataset_info.json"
        info.write_text(json.dumps({LLAMA_FACTORY_NAME: llama_factory_entry(path.name)}, indent=2) + "\n")
        return [path, info]
    return [_write_hf_parquet(samples, out_dir / "subset.parquet")]


def _write_json_array(path: Path, records: Iterable[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        handle.write("[\n")
        for i, record in enumerate(records):
            handle.write((",\n" if i else "") + json.dumps(record, ensure_ascii=False))
        handle.write("\n]\n")


def _write_hf_parquet(samples: list[Sample], path: Path) -> Path:
    """A parquet file ``datasets.load_dataset("parquet", ...)`` reads as ``messages`` (content
    lists) and ``images`` (a list of ``Image`` features with the bytes embedded): TRL's
    vision-language SFT layout."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .data.images import read_image_bytes

    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    part_type = pa.struct([("type", pa.string()), ("text", pa.string())])
    message_type = pa.struct([("role", pa.string()), ("content", pa.list_(part_type))])
    messages, images = [], []
    for sample in samples:
        messages.append([
            {"role": m["role"], "content": [{"type": p["type"], "text": p.get("text")} for p in m["content"]]}
            for m in content_list_messages(sample)
        ])
        images.append([{"bytes": read_image_bytes(ref), "path": Path(str(ref)).name}
                       for ref in (sample.image_paths or sample.images)])
    features = {
        "messages": [{"role": {"dtype": "string", "_type": "Value"},
                      "content": [{"type": {"dtype": "string", "_type": "Value"},
                                   "text": {"dtype": "string", "_type": "Value"}}]}],
        "images": [{"_type": "Image"}],
    }
    schema = pa.schema(
        [("messages", pa.list_(message_type)), ("images", pa.list_(image_type))],
        metadata={"huggingface": json.dumps({"info": {"features": features}})},
    )
    pq.write_table(pa.table({"messages": messages, "images": images}, schema=schema), path)
    return path


__all__ = ["EXPORT_FORMATS", "LLAMA_FACTORY_NAME", "llama_factory_entry", "write_trainer_subset"]
