"""mmSSR prompts and reply parsing: what the official inference script builds and reads (see
:mod:`.mmssr_scoring` for the layout and the deliberate differences)."""

from __future__ import annotations

import math
import re
from typing import Sequence

# --- released models (loading is done by the models layer) ---------------------------------------
SCORER_MODEL = "mengyaolyu/mmssr-7b-scorer"
STYLER_MODEL = "mengyaolyu/mmssr-7b-styler"

SYSTEM_MESSAGE = "You are a helpful assistant."

#: Short name (used in column names ``score_<name>``) -> capability keyword put into the prompt.
#: The keywords are the 14 capabilities listed by the official README. The exact strings the
#: released scorer was trained with are not published; these are the README's wording.
CAPABILITIES: dict[str, str] = {
    "spatial": "object spatial understanding",
    "attribute": "attribute identification",
    "logic": "logical deduction",
    "scene": "scene understanding",
    "fine_grained": "fine-grained recognition",
    "generation": "language generation",
    "icl": "in-context learning",
    "comparison": "comparative analysis",
    "activity": "activity recognition",
    "causal": "causal reasoning",
    "humanities": "humanities",
    "stem": "stem knowledge",
    "data": "data understanding",
    "ocr": "optical character recognition",
}

#: The 9 interaction-style candidates, in the official order (``config/ss.py``).
STYLE_CANDIDATES: tuple[str, ...] = (
    "multi-choice",
    "coordinate",
    "yes/no",
    "word/short-phrase",
    "short description",
    "detailed description",
    "comparison",
    "chain-of-thought (step-by-step)",
    "specified style",
)

STYLE_TASK = "style"
CAPABILITY_QUERY = (
    "On a scale of 0 to 5, how do you rate the helpfulness of the VQA instance in training a "
    "Multimodal Large Language Model for {keyword}?"
)
STYLE_QUERY = "Interaction style candidates: [" + ", ".join(STYLE_CANDIDATES) + "]\nStyles: "
IMAGE_PLACEHOLDER = "<image>"
_QUESTION_PREFIX = "Question:"
_HINT_PREFIX = "Hint:"
_SCORE_RE = re.compile(r"\s*([0-9]+)\s*")
SCORE_MIN, SCORE_MAX = 0, 5


# --- prompts -------------------------------------------------------------------------------------
def strip_image_placeholders(text: str, placeholder: str = IMAGE_PLACEHOLDER) -> tuple[str, int]:
    """Remove every ``<image>`` placeholder (and the one newline that separates it from the
    text) from ``text``; return the text and the number of placeholders removed.

    ``"<image>\\nWhat is it?"`` -> ``"What is it?"``; ``"What is it?\\n<image>"`` -> ``"What is it?"``;
    ``"left <image> right"`` -> ``"left right"`` (pieces joined by one space, or by the newline
    that surrounded the placeholder).
    """
    if placeholder not in text:
        return text, 0
    pieces = text.split(placeholder)
    out = pieces[0]
    for piece in pieces[1:]:
        left_nl, right_nl = out.endswith("\n"), piece.startswith("\n")
        left = out[:-1] if left_nl else out
        right = piece[1:] if right_nl else piece
        if not left.strip() or not right.strip():
            out = left + right
        elif left_nl or right_nl:
            out = left + "\n" + right
        else:
            out = left.rstrip(" ") + " " + right.lstrip(" ")
    return out, len(pieces) - 1


def _question_text(text: str) -> str:
    """The question part of one QA item, as the official prompt has it (minus its bugs)."""
    text, _ = strip_image_placeholders(text)
    if text.startswith(_HINT_PREFIX):
        return text  # kept verbatim, like the official code
    body = text.strip()
    if body.startswith(_QUESTION_PREFIX):
        body = body[len(_QUESTION_PREFIX):].lstrip()
    return f"{_QUESTION_PREFIX} {body}"


def format_conversation(turns: Sequence[tuple[str, str]]) -> str:
    """Serialise the turns as ``"Question: <q> Answer: <a>"`` lines.

    ``turns``: ``(role, text)`` with role in ``{"system", "user", "assistant"}``. System turns are
    ignored (the scorer has its own system message). Each user turn opens a QA item; the assistant
    turn right after it is its answer (``"Answer: "`` with nothing after it when there is none, as in
    the official code). An assistant turn not preceded by a user turn gets an item with an empty
    question.
    """
    items: list[str] = []
    pending: str | None = None
    for role, text in turns:
        text = "" if text is None else str(text)
        if role == "system":
            continue
        if role == "user":
            if pending is not None:
                items.append(pending + " Answer: ")
            pending = _question_text(text)
        elif role == "assistant":
            question = pending if pending is not None else f"{_QUESTION_PREFIX} "
            items.append(question + " Answer: " + strip_image_placeholders(text)[0])
            pending = None
        else:
            raise ValueError(f"unknown role {role!r}: expected 'system', 'user' or 'assistant'")
    if pending is not None:
        items.append(pending + " Answer: ")
    return "\n".join(items)


def capability_keyword(capability: str) -> str:
    """Prompt keyword for a capability given by short name (``"ocr"``) or by keyword itself."""
    if capability in CAPABILITIES:
        return CAPABILITIES[capability]
    return capability


def capability_name(capability: str) -> str:
    """Short name used in the column ``score_<name>`` (keywords of the 14 map back to their short
    names; any other keyword is turned into a lower-case identifier)."""
    if capability in CAPABILITIES:
        return capability
    for name, keyword in CAPABILITIES.items():
        if keyword == capability:
            return name
    slug = re.sub(r"[^0-9a-zA-Z]+", "_", capability.strip().lower()).strip("_")
    if not slug:
        raise ValueError(f"invalid capability {capability!r}")
    return slug


def task_query(task: str) -> str:
    """The prompt tail: the style query for ``"style"``, else the capability question."""
    if task == STYLE_TASK:
        return STYLE_QUERY
    return CAPABILITY_QUERY.format(keyword=capability_keyword(task))


def build_prompt_text(turns: Sequence[tuple[str, str]], task: str) -> str:
    """The user-message text: serialised conversation, newline, task tail."""
    return format_conversation(turns) + "\n" + task_query(task)


def build_messages(turns: Sequence[tuple[str, str]], n_images: int, task: str) -> list[dict]:
    """Chat messages (Hugging Face chat format) asking ``task`` about one sample.

    ``task``: a capability (short name or keyword) or ``"style"``. The ``n_images`` image items
    come first in the user message, then the text.
    """
    if n_images < 0:
        raise ValueError("n_images must be >= 0")
    content: list[dict] = [{"type": "image"} for _ in range(n_images)]
    content.append({"type": "text", "text": build_prompt_text(turns, task)})
    return [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM_MESSAGE}]},
        {"role": "user", "content": content},
    ]


# --- parsing -------------------------------------------------------------------------------------
def parse_score(reply: str | None) -> float:
    """A bare integer 0..5 (surrounding whitespace allowed) -> float; anything else -> NaN."""
    if reply is None:
        return math.nan
    match = _SCORE_RE.fullmatch(str(reply))
    if not match:
        return math.nan
    value = int(match.group(1))
    if not SCORE_MIN <= value <= SCORE_MAX:
        return math.nan
    return float(value)


def parse_styles(reply: str | None) -> tuple[list[str], int]:
    """Split a styler reply on commas; return (styles, number of unknown styles).

    Pieces are stripped, empty pieces dropped and duplicates removed (first occurrence kept, so
    the first style stays first). Styles outside :data:`STYLE_CANDIDATES` are kept (the official
    sampler bins them like any other) but counted.
    """
    if reply is None:
        return [], 0
    styles: list[str] = []
    for piece in str(reply).split(","):
        piece = piece.strip()
        if piece and piece not in styles:
            styles.append(piece)
    unknown = sum(1 for s in styles if s not in STYLE_CANDIDATES)
    return styles, unknown
