"""Conversation templates: render a sample as the text its model family was trained on, with answer spans.

Each hand-written template follows its family's official training preprocessing (see
docs/templates.md): where the ``<image>`` placeholder goes, the system prompt, the role tags, and
which characters the training loss covers. The rendered text keeps the processor's image token
where each image goes; the character spans of the loss targets (each answer with the turn-end
marker the training loss covers) are returned so that token masks can be derived from the
tokenizer's offsets, without fixed offsets.

:class:`~mmselect.models.chat_template.ProcessorChatTemplate` renders through the processor's own
``apply_chat_template`` for model families without a hand-written template.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..data.records import IMAGE_PLACEHOLDER, Sample
from ..errors import ConfigError

log = logging.getLogger(__name__)

VICUNA_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
CHATML_SYSTEM = "You are a helpful assistant."

# Where the <image> placeholders of a user turn go (official preprocessing of each family):
# "front": LLaVA-1.5 -- every placeholder is removed, the text stripped, the image put first ("<image>\n").
# "front_if_single": LLaVA-NeXT / OneVision -- moved to the front only when the turn has exactly one.
# "in_place": Qwen2-VL fine-tuning -- the text is split at the placeholders, pieces stripped, empty
#   pieces dropped, images kept where they are, nothing between the parts.
PLACEMENTS = ("front", "front_if_single", "in_place")


@dataclass
class Rendered:
    """Text of one model input, the character spans of its loss targets, and its images in order.

    ``placeholders_moved``: user turns whose ``<image>`` placeholder the template moved to the front
    (the family's official preprocessing does this; the record had it after or inside the text).
    ``placeholders_added``: the record had images but no placeholder; they were put first.
    ``content_spans``: every assistant turn's stripped text, without the turn-end marker (labelled
    or not); ``user_spans``: the user turns' text, each piece between images stripped. Both are
    character spans, read by features that tell instructions from answers (ScalSelect).
    """

    text: str
    answer_spans: list[tuple[int, int]] = field(default_factory=list)
    image_paths: list[str] = field(default_factory=list)
    placeholders_moved: int = 0
    placeholders_added: bool = False
    content_spans: list[tuple[int, int]] = field(default_factory=list)
    user_spans: list[tuple[int, int]] = field(default_factory=list)

    @property
    def moved_placeholder(self) -> bool:
        return self.placeholders_moved > 0


def _leading_placeholders(text: str) -> int:
    """How many placeholders open the text (whitespace between them allowed)."""
    rest, count = text.lstrip(), 0
    while rest.startswith(IMAGE_PLACEHOLDER):
        rest = rest[len(IMAGE_PLACEHOLDER) :].lstrip()
        count += 1
    return count


class Template:
    """How a conversation becomes model input text. Subclasses implement :meth:`render`."""

    name: str
    revision: str  # bumped when the rendering changes, so cached features are not reused

    def render(
        self,
        samples: list[Sample],
        *,
        label: list[bool] | None = None,
        include_user: bool = True,
        include_images: bool = True,
    ) -> Rendered:
        """Render one or more samples as one sequence (several = in-context demonstrations first).

        ``label[i]`` says whether sample i's answers are answer spans (scored tokens).
        ``include_user=False`` drops the instructions and images (the answer alone, for IFD).
        """
        raise NotImplementedError


@dataclass(frozen=True)
class FormatTemplate(Template):
    """A hand-written template: format strings plus the family's placeholder placement.

    ``answer_end`` follows every answer and is part of its span (the training loss covers it:
    ``</s>`` for LLaVA-1.5, ``<|im_end|>\\n`` for the Qwen2 ChatML models). ``image_text`` replaces
    each placeholder (it holds the processor's image token once; the processor expands it).
    """

    name: str
    system: str
    system_format: str
    user_format: str
    assistant_prefix: str
    answer_end: str
    image_text: str
    placement: str
    source: str = ""
    revision: str = "2"

    def __post_init__(self):
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {self.placement!r}")

    # --- one user turn ---------------------------------------------------------------------------
    def place_images(self, text: str, n_unplaced: int) -> tuple[str, int, bool]:
        """The user text with placeholders where the family's training puts them.

        ``n_unplaced`` images (a record without any placeholder) are put first. Returns the text
        (placeholders still as ``<image>``), the number of placeholders, and whether they moved.
        """
        count = text.count(IMAGE_PLACEHOLDER)
        if n_unplaced:
            lead = IMAGE_PLACEHOLDER if self.placement == "in_place" else IMAGE_PLACEHOLDER + "\n"
            return lead * n_unplaced + text, n_unplaced, False
        if not count:
            return text, 0, False
        if self.placement == "front":
            moved = _leading_placeholders(text) < count
            body = text.replace(IMAGE_PLACEHOLDER, "").strip()
            return (IMAGE_PLACEHOLDER + "\n") * count + body, count, moved
        if self.placement == "front_if_single":
            if count == 1 and not text.startswith(IMAGE_PLACEHOLDER):
                body = text.replace(IMAGE_PLACEHOLDER, "").strip()
                return (IMAGE_PLACEHOLDER + "\n" + body).strip(), 1, True
            return text, count, False
        pieces = [piece.strip() for piece in text.split(IMAGE_PLACEHOLDER)]
        out = [pieces[0]]
        for piece in pieces[1:]:
            out += [IMAGE_PLACEHOLDER, piece]
        return "".join(out), count, False

    def render(
        self,
        samples: list[Sample],
        *,
        label: list[bool] | None = None,
        include_user: bool = True,
        include_images: bool = True,
    ) -> Rendered:
        label = label if label is not None else [True] * len(samples)
        parts: list[str] = []
        length = 0
        spans: list[tuple[int, int]] = []
        content_spans: list[tuple[int, int]] = []
        user_spans: list[tuple[int, int]] = []
        images: list[str] = []
        moved, added = 0, False

        def emit(piece: str) -> tuple[int, int]:
            nonlocal length
            start = length
            parts.append(piece)
            length += len(piece)
            return start, length

        system = next((t.text for s in samples for t in s.turns if t.role == "system"), self.system)
        if system:
            emit(self.system_format.format(system=system))
        for sample, labelled in zip(samples, label):
            image_paths = list(sample.image_paths or sample.images)
            has_placeholders = any(IMAGE_PLACEHOLDER in t.text for t in sample.turns if t.role == "user")
            unplaced = len(image_paths) if include_images and not has_placeholders else 0
            placed = 0
            for turn in sample.turns:
                if turn.role == "system":
                    continue
                if turn.role == "user":
                    if not include_user:
                        continue
                    text = turn.text
                    if not include_images:
                        text = text.replace(IMAGE_PLACEHOLDER + "\n", "").replace(IMAGE_PLACEHOLDER, "")
                    text, count, was_moved = self.place_images(text, unplaced)
                    added = added or bool(unplaced)
                    unplaced = 0
                    moved += was_moved
                    images.extend(image_paths[placed : placed + count])
                    placed += count
                    placed_text = text.replace(IMAGE_PLACEHOLDER, self.image_text)
                    start, _ = emit(self.user_format.format(text=placed_text))
                    offset = start + len(self.user_format.split("{text}")[0])
                    for piece in placed_text.split(self.image_text):  # the words, not the images around them
                        if piece.strip():
                            lead = len(piece) - len(piece.lstrip())
                            user_spans.append((offset + lead, offset + len(piece.rstrip())))
                        offset += len(piece) + len(self.image_text)
                else:
                    emit(self.assistant_prefix)
                    span = emit(turn.text + self.answer_end)
                    lead = len(turn.text) - len(turn.text.lstrip())
                    content_spans.append((span[0] + lead, span[0] + len(turn.text.rstrip())))
                    if labelled:
                        spans.append(span)
        return Rendered("".join(parts), spans, images, moved, added, content_spans, user_spans)


TEMPLATES: dict[str, FormatTemplate] = {
    # LLaVA-1.5 (conv_vicuna_v1 + preprocess_multimodal/preprocess_v1 of the LLaVA training code):
    # "SYSTEM USER: <image>\nq ASSISTANT: a</s>USER: ..."; the loss covers each answer and its </s>.
    "vicuna_v1": FormatTemplate(
        name="vicuna_v1",
        system=VICUNA_SYSTEM,
        system_format="{system} ",
        user_format="USER: {text} ",
        assistant_prefix="ASSISTANT: ",
        answer_end="</s>",
        image_text=IMAGE_PLACEHOLDER,
        placement="front",
        source="haotian-liu/LLaVA llava/train/train.py (preprocess_multimodal, preprocess_v1), "
        "llava/conversation.py (conv_vicuna_v1)",
    ),
    # Qwen2-VL / Qwen2.5-VL (the model's chat template; the official fine-tuning code keeps images in
    # place and puts <|im_end|>\n of every answer in the loss).
    "qwen2_vl": FormatTemplate(
        name="qwen2_vl",
        system=CHATML_SYSTEM,
        system_format="<|im_start|>system\n{system}<|im_end|>\n",
        user_format="<|im_start|>user\n{text}<|im_end|>\n",
        assistant_prefix="<|im_start|>assistant\n",
        answer_end="<|im_end|>\n",
        image_text="<|vision_start|><|image_pad|><|vision_end|>",
        placement="in_place",
        source="QwenLM/Qwen2.5-VL qwen-vl-finetune/qwenvl/data/data_processor.py; the Qwen2-VL chat template",
    ),
    # LLaVA-OneVision (LLaVA-NeXT training code, conversation qwen_1_5, preprocess_qwen): ChatML with
    # the literal "<image>" token; a single placeholder moves to the front.
    "chatml_image": FormatTemplate(
        name="chatml_image",
        system=CHATML_SYSTEM,
        system_format="<|im_start|>system\n{system}<|im_end|>\n",
        user_format="<|im_start|>user\n{text}<|im_end|>\n",
        assistant_prefix="<|im_start|>assistant\n",
        answer_end="<|im_end|>\n",
        image_text=IMAGE_PLACEHOLDER,
        placement="front_if_single",
        source="LLaVA-VL/LLaVA-NeXT llava/train/train.py (preprocess_multimodal, preprocess_qwen), "
        "llava/conversation.py (conv_qwen)",
    ),
}

CHAT_TEMPLATE = "chat_template"  # the --template name of the processor's own chat template


# Hand-written template of each model family; other families use the processor's chat template.
FAMILY_TEMPLATES = {
    "llava": "vicuna_v1",
    "qwen2-vl": "qwen2_vl",
    "qwen2.5-vl": "qwen2_vl",
    "llava-onevision": "chatml_image",
}


def template_names() -> list[str]:
    return [*TEMPLATES, CHAT_TEMPLATE]


def resolve_template(name: str | None, *, family: str, processor: Any = None) -> Template:
    """The template called ``name`` (``--template``), else the family's hand-written one, else the
    processor's chat template (with a warning naming it)."""
    if name is not None:
        if name in TEMPLATES:
            return TEMPLATES[name]
        if name == CHAT_TEMPLATE:
            from .chat_template import ProcessorChatTemplate

            return ProcessorChatTemplate(processor)
        raise ConfigError(f"unknown template {name!r}; known: {', '.join(template_names())}")
    if family in FAMILY_TEMPLATES:
        return TEMPLATES[FAMILY_TEMPLATES[family]]
    from .chat_template import ProcessorChatTemplate  # it reads this module's templates

    template = ProcessorChatTemplate(processor)
    log.warning(
        "model family %r has no hand-written template; rendering with the processor's chat template "
        "(--template %s). Check that it matches the model's training format, or pass --template %s.",
        family, CHAT_TEMPLATE, "/".join(TEMPLATES),
    )
    return template


def count_moved_placeholders(template: Template, samples: Iterable[Sample]) -> int:
    """Records whose ``<image>`` placeholder the template moves to the front (for the manifest).

    Equals counting ``template.render([s]).moved_placeholder``, without rendering whole records.
    """
    if not isinstance(template, FormatTemplate) or template.placement == "in_place":
        return 0
    return sum(
        any(template.place_images(t.text, 0)[2] for t in sample.turns if t.role == "user" and IMAGE_PLACEHOLDER in t.text)
        for sample in samples
    )
