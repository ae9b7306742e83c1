"""Conversation templates: render a sample as its training-format text, with answer spans.

The rendered text keeps the processor's image token where each image goes; the character spans of
the assistant answers (and of everything that is not an image) are returned so that token masks
can be derived from the tokenizer's offsets, without fixed offsets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..data.records import IMAGE_PLACEHOLDER, Sample

VICUNA_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
CHATML_SYSTEM = "You are a helpful assistant."


@dataclass
class Rendered:
    """Text of one model input and the character spans of its answers."""

    text: str
    answer_spans: list[tuple[int, int]] = field(default_factory=list)
    image_paths: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Template:
    """How a conversation becomes model input text.

    ``image_text`` replaces each ``<image>`` placeholder (it contains the processor's image
    token once; the processor expands it to the right number of tokens).
    """

    name: str
    system: str
    system_format: str
    user_format: str
    assistant_prefix: str
    assistant_suffix: str
    image_text: str

    def _user_text(self, text: str, images_left: int) -> tuple[str, int]:
        # LLaVA moves the image to the front of the first user turn when the text lacks a placeholder.
        count = text.count(IMAGE_PLACEHOLDER)
        body = text
        if count:
            body = text.replace(IMAGE_PLACEHOLDER + "\n", IMAGE_PLACEHOLDER).replace(
                IMAGE_PLACEHOLDER, self.image_text
            )
        return body, count

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
        label = label if label is not None else [True] * len(samples)
        parts: list[str] = []
        length = 0
        spans: list[tuple[int, int]] = []
        images: list[str] = []

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
            placed = 0
            for turn in sample.turns:
                if turn.role == "system":
                    continue
                if turn.role == "user":
                    if not include_user:
                        continue
                    text = turn.text
                    if include_images and placed == 0 and image_paths and IMAGE_PLACEHOLDER not in text:
                        text = IMAGE_PLACEHOLDER * len(image_paths) + "\n" + text
                    if not include_images:
                        text = text.replace(IMAGE_PLACEHOLDER + "\n", "").replace(IMAGE_PLACEHOLDER, "")
                    body, count = self._user_text(text, len(image_paths) - placed)
                    images.extend(image_paths[placed : placed + count])
                    placed += count
                    emit(self.user_format.format(text=body))
                else:
                    emit(self.assistant_prefix)
                    span = emit(turn.text)
                    emit(self.assistant_suffix)
                    if labelled:
                        spans.append(span)
        return Rendered("".join(parts), spans, images)


TEMPLATES: dict[str, Template] = {
    # LLaVA-1.5 training format (conv_vicuna_v1): "SYSTEM USER: q ASSISTANT: a</s>USER: ..."
    "vicuna_v1": Template(
        name="vicuna_v1",
        system=VICUNA_SYSTEM,
        system_format="{system} ",
        user_format="USER: {text} ",
        assistant_prefix="ASSISTANT: ",
        assistant_suffix="</s>",
        image_text="<image>\n",
    ),
    # Qwen2-VL / Qwen2.5-VL chat format.
    "qwen2_vl": Template(
        name="qwen2_vl",
        system=CHATML_SYSTEM,
        system_format="<|im_start|>system\n{system}<|im_end|>\n",
        user_format="<|im_start|>user\n{text}<|im_end|>\n",
        assistant_prefix="<|im_start|>assistant\n",
        assistant_suffix="<|im_end|>\n",
        image_text="<|vision_start|><|image_pad|><|vision_end|>",
    ),
    # LLaVA-OneVision (Qwen2 LLM, ChatML, "<image>" token).
    "chatml_image": Template(
        name="chatml_image",
        system=CHATML_SYSTEM,
        system_format="<|im_start|>system\n{system}<|im_end|>\n",
        user_format="<|im_start|>user\n{text}<|im_end|>\n",
        assistant_prefix="<|im_start|>assistant\n",
        assistant_suffix="<|im_end|>\n",
        image_text="<image>\n",
    ),
}
