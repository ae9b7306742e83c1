"""Record cards: a few records of each group (best and worst kept, best dropped, a sample of the dropped,
the rejected) with their text shortened and their images as small thumbnails."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.records import IMAGE_PLACEHOLDER, image_list, parse_turns
from ..errors import MMSelectError
from .sources import Output, Records
from .summaries import reason_group

CARDS_PER_GROUP = 8
THUMBNAIL_SIZE = 128
TEXT_PREVIEW_CHARS = 280


@dataclass
class Card:
    key: str
    task: str
    group: str
    score: float | None = None
    selected: bool | None = None
    values: dict[str, float] = field(default_factory=dict)
    record_id: str | None = None
    question: str | None = None
    answer: str | None = None
    thumbnails: list[str] = field(default_factory=list)  # data: URIs
    image_notes: list[str] = field(default_factory=list)
    reason: str | None = None


def _shorten(text: str, limit: int = TEXT_PREVIEW_CHARS) -> str:
    text = " ".join(text.replace(IMAGE_PLACEHOLDER, "").split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


_thumbnail_cache: dict[str, str | None] = {}


def thumbnail(path: str | Path, size: int = THUMBNAIL_SIZE) -> str | None:
    """A small JPEG of the image as a data: URI, or None when it cannot be read."""
    path = str(path)
    if path in _thumbnail_cache:
        return _thumbnail_cache[path]
    try:
        image = _open_image(path)
        image.thumbnail((size, size))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=80)
        uri = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    except Exception:  # noqa: BLE001 - missing, corrupt, truncated or oversized: the card says so instead
        uri = None
    if len(_thumbnail_cache) > 512:
        _thumbnail_cache.clear()
    _thumbnail_cache[path] = uri
    return uri


def _open_image(path: str):
    """RGB image; through the data layer's opener (archives, pixel limit) where it has one."""
    try:
        from ..data.images import open_image
    except ImportError:
        from PIL import Image

        with Image.open(path) as image:
            return image.convert("RGB")
    return open_image(path)


def _local_image(image_root: Any, relative: str) -> Path | None:
    """``relative`` under a local image root, or None when there is none or the path leaves it."""
    if image_root is None or not Path(str(image_root)).is_dir():
        return Path(relative) if Path(relative).is_absolute() else None
    root = Path(str(image_root)).resolve()
    candidate = (root / relative).resolve()
    return candidate if root in candidate.parents else None


def _add_thumbnails(card: Card, relatives: list[str], refs: list[str | None], max_images: int = 2) -> None:
    for relative, ref in list(zip(relatives, refs))[:max_images]:
        uri = thumbnail(ref) if ref else None
        if uri is None:
            card.image_notes.append(f"{relative} ({'cannot be read' if ref else 'not found under the image root'})")
        else:
            card.thumbnails.append(uri)
    if len(relatives) > max_images:
        card.image_notes.append(f"+{len(relatives) - max_images} more image(s)")


def _fill_text(card: Card, record: Any, turns: list | None) -> None:
    if isinstance(record, dict) and record.get("id") is not None:
        card.record_id = str(record.get("id"))
    try:
        turns = turns if turns is not None else parse_turns(record, card.key)
        dialogue = [t for t in turns if t.role != "system"]
        card.question = _shorten(dialogue[0].text)
        answer = next((t for t in dialogue if t.role == "assistant"), None)
        card.answer = _shorten(answer.text) if answer else None
    except (MMSelectError, AttributeError, TypeError, IndexError):
        card.question = _shorten(json.dumps(record, ensure_ascii=False))


def selection_cards(output: Output, records: Records, rows: np.ndarray, group: str, values: list[str]) -> list[Card]:
    cards = []
    by_key = records.by_key()
    for row in rows:
        key = str(output.columns["key"][row])
        card = Card(
            key=key,
            task=str(output.columns["task"][row]),
            group=group,
            score=float(output.columns["score"][row]),
            selected=bool(output.columns["selected"][row]),
            values={v: float(output.columns[v][row]) for v in values if v != "score"},
        )
        sample = by_key.get(key)
        if sample is not None:
            _fill_text(card, sample.record, sample.turns)
            refs = list(sample.image_paths)
            _add_thumbnails(card, list(sample.images), refs + [None] * (len(sample.images) - len(refs)))
        cards.append(card)
    return cards


def rejected_cards(output: Output, records: Records, limit: int = CARDS_PER_GROUP) -> list[Card]:
    """Rejected records, one per reason first so that every kind of problem shows."""
    chosen, seen = [], set()
    for item in output.rejected:
        group = reason_group(item.get("reason", ""))
        if group not in seen:
            seen.add(group)
            chosen.append(item)
    for item in output.rejected:
        if len(chosen) >= limit:
            break
        if item not in chosen:
            chosen.append(item)
    cards = []
    dataset = records.dataset
    for item in chosen[:limit]:
        card = Card(key=str(item.get("key")), task=str(item.get("stage", "")), group="rejected", reason=item.get("reason"))
        card.record_id = item.get("id")
        position = item.get("position")
        if dataset is not None and isinstance(position, int) and 0 <= position < dataset.n_records:
            try:
                record = json.loads(dataset.raw(position))
            except (json.JSONDecodeError, TypeError):
                record = None
            if record is not None:
                _fill_text(card, record, None)
                try:
                    relatives = image_list(record, card.key) if isinstance(record, dict) else []
                except MMSelectError as err:
                    card.image_notes.append(str(getattr(err, "reason", err)))
                    relatives = []
                refs = [_local_image(dataset.image_root, r) for r in relatives]
                _add_thumbnails(card, relatives, [str(r) if r and r.is_file() else None for r in refs])
        cards.append(card)
    return cards


def card_rows(output: Output, per_group: int = CARDS_PER_GROUP, seed: int = 0) -> dict[str, np.ndarray]:
    """Rows for each card group: best and worst kept, best dropped, a random sample of dropped."""
    scores = output.scores
    selected = output.selected
    finite = np.isfinite(scores)
    ranked = np.lexsort((np.arange(len(scores)), -np.where(finite, scores, -np.inf)))  # by score, NaN last
    kept_ranked = ranked[selected[ranked]]
    dropped_ranked = ranked[~selected[ranked]]
    kept_finite = kept_ranked[np.isfinite(scores[kept_ranked])]
    dropped = np.flatnonzero(~selected)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(dropped, size=min(per_group, len(dropped)), replace=False)) if len(dropped) else dropped
    return {
        "highest-scored kept": kept_ranked[:per_group],
        "lowest-scored kept": kept_finite[::-1][:per_group] if len(kept_finite) else kept_ranked[::-1][:per_group],
        "highest-scored dropped": dropped_ranked[:per_group],
        "random sample of dropped": sample,
    }

