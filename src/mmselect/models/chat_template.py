"""The processor's own chat template as a :class:`~mmselect.models.templates.Template`: for model
families without a hand-written template, or when ``--template chat_template`` asks for it."""

from __future__ import annotations

from typing import Any

from ..data.records import IMAGE_PLACEHOLDER, Sample
from ..errors import ConfigError
from .templates import CHAT_TEMPLATE, TEMPLATES, Rendered, Template


class ProcessorChatTemplate(Template):
    """The processor's (or tokenizer's) own ``apply_chat_template``.

    Images go where the record's placeholders are (first when it has none), as content parts of the
    user turn. Each answer's span covers its text and the turn-end marker the template writes after
    it (``<|im_end|>``, ``</s>``, ``<end_of_turn>``, ...; trailing whitespace excluded), found by
    rendering the conversation up to that answer.
    """

    name = CHAT_TEMPLATE
    revision = "1"

    def __init__(self, processor: Any):
        owner = processor if getattr(processor, "chat_template", None) else getattr(processor, "tokenizer", None)
        if owner is None or not getattr(owner, "chat_template", None):
            raise ConfigError(
                f"{type(processor).__name__} has no chat template; pass a template by name "
                f"(--template {'/'.join(TEMPLATES)})"
            )
        self.owner = owner

    def _apply(self, messages: list[dict], **kwargs) -> str:
        return self.owner.apply_chat_template(messages, tokenize=False, **kwargs)

    @staticmethod
    def _user_content(text: str, n_unplaced: int, include_images: bool) -> list[dict]:
        content: list[dict] = [{"type": "image"}] * (n_unplaced if include_images else 0)
        pieces = text.split(IMAGE_PLACEHOLDER)
        for i, piece in enumerate(pieces):
            if i and include_images:
                content.append({"type": "image"})
            if piece.strip():
                content.append({"type": "text", "text": piece.strip()})
        return content

    def _messages(self, samples, label, include_user, include_images):
        messages: list[dict] = []
        answers: list[tuple[int, str, bool]] = []  # (message index, answer text, labelled)
        images: list[str] = []
        added = False
        system = next((t.text for s in samples for t in s.turns if t.role == "system"), None)
        if system:
            messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
        for sample, labelled in zip(samples, label):
            image_paths = list(sample.image_paths or sample.images)
            has_placeholders = any(IMAGE_PLACEHOLDER in t.text for t in sample.turns if t.role == "user")
            unplaced = len(image_paths) if not has_placeholders else 0
            placed = 0
            for turn in sample.turns:
                if turn.role == "user" and include_user:
                    count = unplaced + turn.text.count(IMAGE_PLACEHOLDER)
                    added = added or (bool(unplaced) and include_images)
                    messages.append({"role": "user", "content": self._user_content(turn.text, unplaced, include_images)})
                    if include_images:
                        images.extend(image_paths[placed : placed + count])
                    placed += count
                    unplaced = 0
                elif turn.role == "assistant":
                    answers.append((len(messages), turn.text, labelled))
                    messages.append({"role": "assistant", "content": [{"type": "text", "text": turn.text}]})
        return messages, answers, images, added

    def render(
        self,
        samples: list[Sample],
        *,
        label: list[bool] | None = None,
        include_user: bool = True,
        include_images: bool = True,
    ) -> Rendered:
        label = label if label is not None else [True] * len(samples)
        messages, answers, images, added = self._messages(samples, label, include_user, include_images)
        try:
            text = self._apply(messages)
        except Exception:
            if include_user:
                raise
            # Templates that insist on alternating roles: an empty instruction before each answer.
            filled: list[dict] = []
            for message in messages:
                if message["role"] == "assistant":
                    filled.append({"role": "user", "content": [{"type": "text", "text": ""}]})
                filled.append(message)
            index = {id(m): i for i, m in enumerate(filled)}
            answers = [(index[id(messages[i])], answer, labelled) for i, answer, labelled in answers]
            messages = filled
            text = self._apply(messages)
        spans: list[tuple[int, int]] = []
        content_spans: list[tuple[int, int]] = []
        cursor = 0
        for index, answer, labelled in answers:
            body = answer.strip()
            start = text.find(body, cursor)
            if start < 0:
                raise ConfigError(
                    f"the chat template of {type(self.owner).__name__} does not write answer {answer[:40]!r} "
                    "verbatim; pass a hand-written template (--template " + "/".join(TEMPLATES) + ")"
                )
            end = start + len(body)
            content_spans.append((start, end))
            prefix = self._apply(messages[: index + 1])
            if text.startswith(prefix) and len(prefix) >= end:
                # The turn-end marker the template writes after this answer, without trailing whitespace.
                end += len(prefix[end:].rstrip())
            cursor = end
            if labelled:
                spans.append((start, end))
        user_spans = self._user_spans(text, messages, [i for i, _, _ in answers], content_spans)
        return Rendered(text, spans, images, 0, added, content_spans, user_spans)

    @staticmethod
    def _user_spans(text: str, messages: list[dict], answer_messages: list[int],
                    content_spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """The character span of each text part of the user messages, found in message order (an
        answer's end moves the search past it, so a question is not found inside an earlier one)."""
        ends = dict(zip(answer_messages, (end for _, end in content_spans)))
        spans, cursor = [], 0
        for index, message in enumerate(messages):
            if index in ends:
                cursor = max(cursor, ends[index])
            elif message["role"] == "user":
                for part in message["content"]:
                    start = text.find(part["text"], cursor) if part["type"] == "text" and part["text"] else -1
                    if start >= 0:
                        spans.append((start, start + len(part["text"])))
                        cursor = start + len(part["text"])
        return spans


__all__ = ["ProcessorChatTemplate"]
