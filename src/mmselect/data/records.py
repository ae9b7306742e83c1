"""One record of a dataset, normalised: turns with roles, image paths, task, stable key."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from operator import itemgetter
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
    """The record's conversation as validated turns (any layout :func:`conversation` reads)."""
    return [Turn(role, text) for role, text in conversation(record, key)]


def conversation(record: dict[str, Any], key: str) -> list[tuple[str, str]]:
    """Validated ``(role, text)`` turns of a record, roles normalised to system/user/assistant.

    Layouts: LLaVA ``conversations`` (from/value); sharegpt / OpenAI / TRL ``messages`` (role/content,
    content a string or a list of ``{"type": "text"|"image", ...}`` parts, an image part becoming an
    ``<image>`` placeholder); ms-swift ``conversation`` (``[{"human", "assistant"}]``) and
    query/response (``query``, ``response``, optional ``history`` of ``[query, response]`` pairs);
    ``system`` at the top level of the latter two.
    """
    roles, texts = conversation_columns(record, key)
    return list(zip(roles, texts))


def conversation_columns(record: dict[str, Any], key: str) -> tuple[list[str], list[str]]:
    """:func:`conversation` as two lists, roles and texts (the reader's fast path)."""
    if "conversations" in record:
        columns = _plain_columns(record["conversations"], "from", "value")
    elif "messages" in record:
        columns = _plain_columns(record["messages"], "role", "content")
    else:
        columns = None
    if columns is not None:
        return columns
    turns = _general_turns(record, key)
    return [role for role, _ in turns], [text for _, text in turns]


_USER_SPELLINGS = frozenset(name for name, role in ROLE_ALIASES.items() if role == "user")
_ASSISTANT_SPELLINGS = frozenset(name for name, role in ROLE_ALIASES.items() if role == "assistant")
_LAYOUT_GETTERS = {"conversations": (itemgetter("from"), itemgetter("value")),
                   "messages": (itemgetter("role"), itemgetter("content"))}


def conversation_text(record: dict[str, Any], key: str) -> str:
    """Every turn's text of :func:`conversation_columns` joined, raising the same errors. The reader's
    hot path: the usual record (user and assistant turns alternating, no system turn, no blank text)
    is checked without normalising its roles; anything else takes :func:`conversation_columns`."""
    for field_name, (get_role, get_text) in _LAYOUT_GETTERS.items():
        if field_name in record:
            raw_turns = record[field_name]
            if type(raw_turns) is list:
                try:
                    raw_roles = list(map(get_role, raw_turns))
                    texts = list(map(get_text, raw_turns))
                    joined = "".join(texts)  # a TypeError unless every text is a string
                    usual = (len(texts) >= 2 and _USER_SPELLINGS.issuperset(raw_roles[0::2])
                             and _ASSISTANT_SPELLINGS.issuperset(raw_roles[1::2]))
                except (KeyError, TypeError):
                    usual = False
                if usual and all(texts) and not any(map(str.isspace, texts)):
                    return joined
            break
    return "".join(conversation_columns(record, key)[1])


def _plain_columns(raw_turns: Any, role_field: str, text_field: str) -> tuple[list[str], list[str]] | None:
    """Roles and texts of a valid conversation in the usual layout, in a few C-level passes; None
    for anything else (content parts, other spellings, any problem), which the general path handles
    and reports."""
    if type(raw_turns) is not list or not raw_turns:
        return None
    try:
        roles = [ROLE_ALIASES[turn[role_field]] for turn in raw_turns]
        texts = [turn[text_field] for turn in raw_turns]
    except (KeyError, TypeError):
        return None
    if set(map(type, texts)) != {str}:
        return None
    dialogue_roles, dialogue_texts = roles, texts
    if "system" in roles:
        dialogue_roles = [r for r in roles if r != "system"]
        dialogue_texts = [t for r, t in zip(roles, texts) if r != "system"]
    if (len(dialogue_roles) < 2 or set(dialogue_roles[0::2]) != {"user"} or set(dialogue_roles[1::2]) != {"assistant"}
            or not all(map(str.strip, dialogue_texts))):
        return None
    return roles, texts


def _general_turns(record: dict[str, Any], key: str) -> list[tuple[str, str]]:
    if "conversations" in record:
        turns = _role_turns(record["conversations"], "conversations", "from", "value", key)
    elif "messages" in record:
        turns = _role_turns(record["messages"], "messages", "role", "content", key)
    elif "conversation" in record:
        turns = _swift_sharegpt(record, key)
    elif "query" in record and "response" in record:
        turns = _query_response(record, key)
    else:
        raise RecordError(key, "no 'conversations' or 'messages' field (nor ms-swift 'conversation' or 'query'/'response')")
    _check_dialogue(turns, key)
    return turns


def _role_turns(raw_turns: Any, name: str, role_field: str, text_field: str, key: str) -> list[tuple[str, str]]:
    if not isinstance(raw_turns, list):
        raise RecordError(key, f"'{name}' is not a list")
    if not raw_turns:
        raise RecordError(key, "empty conversation")
    turns = []
    aliases = ROLE_ALIASES
    for i, turn in enumerate(raw_turns):
        if type(turn) is not dict and not isinstance(turn, dict):
            raise RecordError(key, f"turn {i} is not an object")
        role = turn.get(role_field)
        if role is None:
            role = turn.get("role", turn.get("from"))
        text = turn.get(text_field)
        if text is None:
            text = turn.get("content", turn.get("value"))
        if role is None or text is None:
            raise RecordError(key, f"turn {i} lacks '{role_field}' or '{text_field}'")
        if type(text) is not str:
            if isinstance(text, list):
                text = _content_parts_text(text, i, key)
            elif not isinstance(text, str):
                raise RecordError(key, f"turn {i}: text is not a string")
        normalised = aliases.get(role) if type(role) is str else None
        if normalised is None:
            normalised = aliases.get(str(role).lower())
            if normalised is None:
                raise RecordError(key, f"turn {i}: unknown role {role!r}")
        turns.append((normalised, text))
    return turns


IMAGE_PART_TYPES = ("image", "image_url")


def _content_parts_text(parts: list[Any], i: int, key: str) -> str:
    """OpenAI / TRL content parts -> text, each image part as an ``<image>`` placeholder."""
    pieces = []
    for part in parts:
        if not isinstance(part, dict) or "type" not in part:
            raise RecordError(key, f"turn {i}: a content part is not an object with a 'type'")
        if part["type"] == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise RecordError(key, f"turn {i}: a text part has no string 'text'")
            pieces.append(text)
        elif part["type"] in IMAGE_PART_TYPES:
            pieces.append(IMAGE_PLACEHOLDER)
        else:
            raise RecordError(key, f"turn {i}: unsupported content part type {part['type']!r}")
    # An image part followed by a text part reads as LLaVA's "<image>\nquestion".
    return "\n".join(pieces)


def _system_turn(record: dict[str, Any], key: str) -> list[tuple[str, str]]:
    system = record.get("system")
    if system in (None, ""):
        return []
    if not isinstance(system, str):
        raise RecordError(key, "'system' is not a string")
    return [("system", system)]


def _swift_sharegpt(record: dict[str, Any], key: str) -> list[tuple[str, str]]:
    rounds = record["conversation"]
    if not isinstance(rounds, list):
        raise RecordError(key, "'conversation' is not a list")
    if not rounds:
        raise RecordError(key, "empty conversation")
    turns = _system_turn(record, key)
    for i, exchange in enumerate(rounds):
        if not isinstance(exchange, dict) or not isinstance(exchange.get("human"), str) or not isinstance(exchange.get("assistant"), str):
            raise RecordError(key, f"round {i} is not an object with string 'human' and 'assistant'")
        turns += [("user", exchange["human"]), ("assistant", exchange["assistant"])]
    return turns


def _query_response(record: dict[str, Any], key: str) -> list[tuple[str, str]]:
    turns = _system_turn(record, key)
    history = record.get("history") or []
    if not isinstance(history, list):
        raise RecordError(key, "'history' is not a list")
    for i, pair in enumerate(history):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(isinstance(t, str) for t in pair):
            raise RecordError(key, f"history entry {i} is not a [query, response] pair of strings")
        turns += [("user", pair[0]), ("assistant", pair[1])]
    if not isinstance(record["query"], str) or not isinstance(record["response"], str):
        raise RecordError(key, "'query' and 'response' must be strings")
    return turns + [("user", record["query"]), ("assistant", record["response"])]


def _check_dialogue(turns: list[tuple[str, str]], key: str) -> None:
    # One quick pass for the usual, valid case; on any problem, the checks in reporting order.
    previous = None
    answered = False
    for role, text in turns:
        if role == "system":
            continue
        if (previous is None and role != "user") or role == previous or not text.strip():
            break
        answered = answered or role == "assistant"
        previous = role
    else:
        if answered:
            return
    _report_dialogue_problem(turns, key)


def _report_dialogue_problem(turns: list[tuple[str, str]], key: str) -> None:
    dialogue = [t for t in turns if t[0] != "system"]
    if not dialogue:
        raise RecordError(key, "conversation has no user or assistant turn")
    if not any(role == "assistant" for role, _ in dialogue):
        raise RecordError(key, "conversation has no answer (assistant) turn")
    if dialogue[0][0] != "user":
        raise RecordError(key, "conversation does not start with a user turn")
    for previous, current in zip(dialogue, dialogue[1:]):
        if previous[0] == current[0]:
            raise RecordError(key, f"two consecutive {current[0]} turns")
    if any(not text.strip() for _, text in dialogue):
        raise RecordError(key, "empty turn text")


def image_list(record: dict[str, Any], key: str) -> list[str]:
    """Image paths of a record: ``image`` (LLaVA: absent / str / list) or ``images`` (sharegpt,
    TRL, ms-swift); else the paths or URLs carried by OpenAI-style image parts of ``messages``."""
    value = record.get("image", record.get("images"))
    if value is None or value == "" or value == []:
        return _part_images(record, key)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) and v for v in value):
        return list(value)
    raise RecordError(key, "'image' must be a path or a list of paths")


def _part_images(record: dict[str, Any], key: str) -> list[str]:
    messages = record.get("messages")
    if not isinstance(messages, list):
        return []
    found = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in IMAGE_PART_TYPES:
                continue
            source = part.get("image", part.get("image_url", part.get("path", part.get("url"))))
            if isinstance(source, dict):
                source = source.get("url", source.get("path"))
            if isinstance(source, str) and source:
                found.append(source)
            elif source is not None:
                raise RecordError(key, "an image part's image is not a path or URL")
    return found
