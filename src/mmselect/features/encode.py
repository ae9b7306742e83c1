"""Turn rendered conversations into model inputs plus token masks (image, answer, padding).

Image tokens are located in the processor's output; answer tokens come from the tokenizer's
character offsets on the same text, after expanding each image token to the count the processor
used. Nothing relies on fixed offsets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from ..models.registry import ModelBundle
from ..models.templates import Rendered


class EncodeError(Exception):
    """A sample that cannot be encoded (unreadable image, too long); carries the reason."""


@dataclass
class EncodedBatch:
    inputs: dict[str, torch.Tensor]
    attention: torch.Tensor  # (B, T) bool
    image: torch.Tensor  # (B, T) bool
    answer: torch.Tensor  # (B, T) bool: tokens inside answer spans (targets of the NLL)
    # (B, T) bool: the assistant turns' stripped text only (no turn-end marker), and the user turns'
    # text; read by ScalSelect, whose query tokens are defined by them.
    answer_content: torch.Tensor | None = None
    user_text: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.attention.shape[0]

    def _map(self, fn) -> "EncodedBatch":
        return EncodedBatch(
            {k: fn(v) if torch.is_tensor(v) else v for k, v in self.inputs.items()},
            fn(self.attention),
            fn(self.image),
            fn(self.answer),
            None if self.answer_content is None else fn(self.answer_content),
            None if self.user_text is None else fn(self.user_text),
        )

    def to(self, device, non_blocking: bool = False) -> "EncodedBatch":
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "EncodedBatch":
        """Page-locked copies, so the copy to a GPU can overlap the previous batch's compute."""
        return self._map(torch.Tensor.pin_memory)


def load_image(path: str) -> Image.Image:
    """Any image reference of the data layer (path, fsspec URL, bytes in a row), within its pixel limit."""
    from ..data.images import describe, open_image

    try:
        return open_image(path)
    except Exception as err:
        shown = describe(path)
        raise EncodeError(f"unreadable image {shown}: {type(err).__name__}: {str(err).replace(path, shown)}") from None


def image_token_info(bundle: ModelBundle) -> tuple[str, int]:
    processor = bundle.processor
    token = getattr(processor, "image_token", None) or "<image>"
    token_id = getattr(processor, "image_token_id", None)
    if token_id is None:
        token_id = bundle.tokenizer.convert_tokens_to_ids(token)
    return token, int(token_id)


def _runs(ids: list[int], token_id: int) -> list[int]:
    runs, current = [], 0
    for value in ids:
        if value == token_id:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    if current:
        runs.append(current)
    return runs


def _shifted(spans: list[tuple[int, int]], shifts: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Character spans moved by the characters the expanded image tokens add before each end."""
    return [(start + sum(extra for at, extra in shifts if at < start), end + sum(extra for at, extra in shifts if at < end))
            for start, end in spans]


def _tokens_in_spans(offsets: list[tuple[int, int]], spans: list[tuple[int, int]], text: str) -> list[bool]:
    """Which tokens (character ``offsets``) fall in ``spans`` (sorted, disjoint). Byte-level BPE
    glues the leading space to the first answer word: a token counts when it lies inside a span
    (newlines and the turn-end marker of an answer span included, as in the training loss) or its
    overlap with one holds more than whitespace. Offsets only move forward, so one pointer walks
    the spans."""
    inside, first = [], 0
    for begin, finish in offsets:
        while first < len(spans) and spans[first][1] <= begin:
            first += 1
        hit = False
        for s, e in spans[first:]:
            if s >= finish:
                break
            if (begin >= s and finish <= e) or text[max(begin, s) : min(finish, e)].strip():
                hit = True
                break
        inside.append(hit)
    return inside


def encode(bundle: ModelBundle, rendered: list[Rendered], images: list[list[Image.Image]], max_length: int) -> EncodedBatch:
    """Encode one batch. ``images[i]`` are the loaded images of ``rendered[i]``, in order."""
    processor, tokenizer = bundle.processor, bundle.tokenizer
    tokenizer.padding_side = "right"
    token, token_id = image_token_info(bundle)
    texts = [r.text for r in rendered]
    flat_images = [image for group in images for image in group]
    kwargs = {"text": texts, "return_tensors": "pt", "padding": True}
    if flat_images:
        kwargs["images"] = flat_images
    inputs = dict(processor(**kwargs))
    if flat_images and "pixel_values" not in inputs:
        raise RuntimeError(
            f"the processor ({type(processor).__name__}) returned no pixel_values: it is not an image processor"
        )
    input_ids = inputs["input_ids"]
    attention = inputs["attention_mask"].bool()
    answer = torch.zeros_like(attention)
    answer_content, user_text = torch.zeros_like(attention), torch.zeros_like(attention)
    for row, item in enumerate(rendered):
        ids = input_ids[row][attention[row]].tolist()
        counts = _runs(ids, token_id)
        expanded, cursor, run = [], 0, 0
        # Expand each image token to the processor's count, shifting the answer spans accordingly.
        text = item.text
        position = text.find(token)
        offsets_shift: list[tuple[int, int]] = []
        while position != -1 and run < len(counts):
            expanded.append(text[cursor:position])
            expanded.append(token * counts[run])
            offsets_shift.append((position, len(token) * (counts[run] - 1)))
            cursor = position + len(token)
            run += 1
            position = text.find(token, cursor)
        expanded.append(text[cursor:])
        expanded_text = "".join(expanded)
        masks = [(mask, _shifted(spans, offsets_shift)) for mask, spans in
                 ((answer, item.answer_spans), (answer_content, item.content_spans), (user_text, item.user_spans))]
        encoding = tokenizer(expanded_text, return_offsets_mapping=True)
        if encoding["input_ids"] != ids:
            raise RuntimeError(
                "token mismatch between the processor and the tokenizer on the same text; "
                f"cannot locate answer tokens (template {bundle.template.name})"
            )
        for mask, mask_spans in masks:
            mask[row, : len(ids)] = torch.tensor(_tokens_in_spans(encoding["offset_mapping"], mask_spans, expanded_text))
    image = (input_ids == token_id) & attention
    if input_ids.shape[1] > max_length:
        kept_images = image[:, :max_length].sum(dim=1)
        if bool((kept_images != image.sum(dim=1)).any()):
            raise EncodeError(f"image tokens extend past max_length={max_length}")
        for name in ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids"):
            if name in inputs:
                inputs[name] = inputs[name][:, :max_length]
        attention, image, answer = attention[:, :max_length], image[:, :max_length], answer[:, :max_length]
        answer_content, user_text = answer_content[:, :max_length], user_text[:, :max_length]
    return EncodedBatch(inputs, attention, image, answer, answer_content, user_text)
