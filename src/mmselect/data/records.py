"""One record of a dataset, normalised: turns with roles, image paths, task, stable key."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import RecordError

IMAGE_PLACEHOLDER = "<image>"

# Spellings of roles found in LLaVA (`from`) and sharegpt/OpenAI-style (`role`) records.
ROLE_ALIASES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "system": "system",
}


@dataclass(frozen=True)
class Turn:
    role: str  # "system" | "user" | "assistant"
    text: str


@dataclass
class Sample:
    """A validated record. ``record`` is the user's dict, untouched; ``images`` are paths as written."""

    position: int
    key: str
    record: dict[str, Any]
    turns: list[Turn]
    images: list[str]
    task: str
    id: str | None = None
    image_paths: list[str] = field(default_factory=list)  # resolved under the image root

    @property
    def rounds(self) -> int:
        """Number of human/assistant exchanges (assistant turns)."""
        return sum(1 for t in self.turns if t.role == "assistant")

    @property
    def n_images(self) -> int:
        return len(self.images)

    @property
    def text_chars(self) -> int:
        return sum(len(t.text.replace(IMAGE_PLACEHOLDER, "")) for t in self.turns)


def content_hash(record: Any) -> str:
    """Short hash of the record's content, independent of key order and whitespace."""
    canonical = json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(canonical.encode("utf-8"), digest_size=5).hexdigest()


def sample_key(position: int, record: Any) -> str:
    """Stable key: position in the source + content hash (``0000042-3fa1c09e2b``).

    The dataset's own ``id`` is never used: real datasets contain duplicate ids.
    """
    return f"{position:07d}-{content_hash(record)}"


def parse_turns(record: dict[str, Any], key: str) -> list[Turn]:
    """Normalise ``conversations`` (LLaVA: from/value) or ``messages`` (sharegpt: role/content)."""
    if "conversations" in record:
        raw_turns, role_field, text_field = record["conversations"], "from", "value"
    elif "messages" in record:
        raw_turns, role_field, text_field = record["messages"], "role", "content"
    else:
        raise RecordError(key, "no 'conversations' or 'messages' field")
    if not isinstance(raw_turns, list):
        raise RecordError(key, f"'{'conversations' if role_field == 'from' else 'messages'}' is not a list")
    if not raw_turns:
        raise RecordError(key, "empty conversation")
    turns = []
    for i, turn in enumerate(raw_turns):
        if not isinstance(turn, dict):
            raise RecordError(key, f"turn {i} is not an object")
        role = turn.get(role_field, turn.get("role", turn.get("from")))
        text = turn.get(text_field, turn.get("content", turn.get("value")))
        if role is None or text is None:
            raise RecordError(key, f"turn {i} lacks '{role_field}' or '{text_field}'")
        if not isinstance(text, str):
            raise RecordError(key, f"turn {i}: text is not a string")
        normalised = ROLE_ALIASES.get(str(role).lower())
        if normalised is None:
            raise RecordError(key, f"turn {i}: unknown role {role!r}")
        turns.append(Turn(normalised, text))
    dialogue = [t for t in turns if t.role != "system"]
    if not dialogue:
        raise RecordError(key, "conversation has no user or assistant turn")
    if not any(t.role == "assistant" for t in dialogue):
        raise RecordError(key, "conversation has no answer (assistant) turn")
    if dialogue[0].role != "user":
        raise RecordError(key, "conversation does not start with a user turn")
    for previous, current in zip(dialogue, dialogue[1:]):
        if previous.role == current.role:
            raise RecordError(key, f"two consecutive {current.role} turns")
    if any(not t.text.strip() for t in dialogue):
        raise RecordError(key, "empty turn text")
    return turns


def image_list(record: dict[str, Any], key: str) -> list[str]:
    """Image paths of a record: ``image`` (LLaVA: absent / str / list) or ``images`` (sharegpt)."""
    value = record.get("image", record.get("images"))
    if value is None or value == "" or value == []:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) and v for v in value):
        return list(value)
    raise RecordError(key, "'image' must be a path or a list of paths")
