"""mmSSR scoring: prompts, reply parsing and batched greedy generation with a scorer/styler model.

mmSSR rates every sample 0-5 on 14 vision-language capabilities with a fine-tuned scorer and
tags its interaction styles with a fine-tuned styler (one generation per capability plus one
for the styles). This module builds the prompts the official inference script builds, runs the
generations in batches and parses the replies; it writes nothing to disk (caching and resuming
belong to the extraction engine, which calls :func:`score_samples` on one shard at a time).

Prompt layout (official ``llava/eval/model_ss.py`` + ``config/ss.py``)::

    system: You are a helpful assistant.
    user:   <image(s)>Question: <q1> Answer: <a1>
            Question: <q2> Answer: <a2>
            ...
            <tail>

* A user turn that starts with ``Hint:`` (after the image placeholder is removed) is kept
  verbatim, without the ``Question:`` prefix, as the official code does.
* ``<tail>`` is ``On a scale of 0 to 5, how do you rate the helpfulness of the VQA instance in
  training a Multimodal Large Language Model for <capability>?`` for a capability, and
  ``Interaction style candidates: [<9 styles>]\\nStyles: `` for the styles.

Differences from the official script (deliberate):

* The official ``conv.strip('Question: ')`` removes a *set of characters* from both ends of the
  question ("...station" becomes "...sta"). Here only surrounding whitespace and a literal leading
  ``Question:`` prefix are removed.
* The ``<image>`` placeholder is removed from the text (as a placeholder, not a character set) and
  the images are passed as image items at the start of the user message, in the chat format of
  the Hugging Face processors. The official script leaves the placeholder where the data has it,
  which for LLaVA-style data is right after the ``Question: `` prefix of the first question.
* Images are converted to RGB; generation is batched (left padding) instead of one sample at a
  time; ``max_new_tokens`` defaults to 16 for scores and 64 for styles instead of 1024 (a score is
  one integer, the styles a short list; a longer reply would be unparsable anyway).
* A score reply is accepted only if it is a bare integer in 0..5 (the official ``int(reply)``
  also accepts e.g. ``"7"`` or ``"1_0"``); everything else is NaN and counted.

Image input as in the official script (by default): a LLaVA-OneVision scorer sees each image as one
crop at its vision tower's base resolution, without the any-resolution tiles its processor would
add (:mod:`.mmssr_image_input`; ``image_input="processor"`` for the tiles).
"""

from __future__ import annotations

import copy
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..progress import progress_bar

# Prompts and parsing live in mmssr_prompts; public here too (one import for the whole feature).
from .mmssr_prompts import (  # noqa: F401
    CAPABILITIES,
    CAPABILITY_QUERY,
    IMAGE_PLACEHOLDER,
    SCORER_MODEL,
    STYLE_CANDIDATES,
    STYLE_QUERY,
    STYLE_TASK,
    STYLER_MODEL,
    SYSTEM_MESSAGE,
    build_messages,
    build_prompt_text,
    capability_keyword,
    capability_name,
    format_conversation,
    parse_score,
    parse_styles,
    strip_image_placeholders,
    task_query,
)

# --- generation ----------------------------------------------------------------------------------
def _tokenizer_of(processor):
    return getattr(processor, "tokenizer", processor)


def _check_processor(processor, needs_images: bool) -> None:
    if not hasattr(processor, "apply_chat_template") or not getattr(processor, "chat_template", None):
        raise ValueError(
            "the processor has no chat_template; set one (processor.chat_template = '...') before generating"
        )
    if needs_images and getattr(processor, "image_processor", None) is None:
        raise ValueError(
            f"{type(processor).__name__} cannot process images (AutoProcessor returns a bare tokenizer for "
            "some saved Qwen2-VL directories); load the multimodal processor class"
        )


def _greedy_config(model, max_new_tokens: int, tokenizer):
    config = copy.deepcopy(getattr(model, "generation_config", None))
    if config is None:
        from transformers import GenerationConfig

        config = GenerationConfig()
    config.do_sample = False
    config.num_beams = 1
    config.temperature = None
    config.top_p = None
    config.top_k = None
    config.max_new_tokens = int(max_new_tokens)
    config.max_length = None
    if config.pad_token_id is None:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        config.pad_token_id = pad
    return config


def generate_replies(
    model,
    processor,
    requests: Sequence[tuple[list[dict], list]],
    *,
    batch_size: int = 8,
    max_new_tokens: int = 16,
    progress: bool = True,
    description: str = "generating",
    image_input: str = "base_crop",
) -> list[str]:
    """Greedy replies, one per request, in request order.

    ``requests``: ``(messages, images)`` pairs; ``messages`` in the Hugging Face chat format
    (``[{"role": ..., "content": [{"type": "image"}, {"type": "text", "text": ...}]}]``), ``images`` the
    PIL images for the image items of that request. Works with any processor that has a
    ``chat_template`` and accepts ``text=``/``images=`` (LLaVA, Qwen2-VL, Qwen2.5-VL).

    Requests are batched by prompt length (shortest first, to limit padding), left-padded, and
    generated greedily; each reply is the decoded new tokens without special tokens, stripped.

    ``image_input``: ``"base_crop"`` (default) gives a LLaVA-OneVision model each image as one crop
    at the vision tower's base resolution, as the official mmSSR inference does
    (:mod:`.mmssr_image_input`); ``"processor"`` sends the images through the model's own processor
    (any-resolution tiles for OneVision). Other families always get their processor's input.
    """
    import torch

    from .mmssr_image_input import effective_image_input, generate_from_base_crops

    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    n = len(requests)
    if n == 0:
        return []
    needs_images = any(len(images) for _, images in requests)
    _check_processor(processor, needs_images)
    base_crops = needs_images and effective_image_input(model, image_input) == "base_crop"
    tokenizer = _tokenizer_of(processor)
    texts = [processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) for messages, _ in requests]
    # Batch similar lengths together; a stable sort keeps the order among equal lengths.
    lengths = [len(t) + 256 * len(images) for t, (_, images) in zip(texts, requests)]
    order = sorted(range(n), key=lambda i: lengths[i])
    config = _greedy_config(model, max_new_tokens, tokenizer)
    try:
        device = next(model.parameters()).device
        dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    except StopIteration:  # pragma: no cover - parameterless model
        device, dtype = torch.device("cpu"), torch.float32
    replies: list[str | None] = [None] * n
    old_side = getattr(tokenizer, "padding_side", "right")
    try:
        tokenizer.padding_side = "left"
        # progress: a bool (a bar of its own) or the caller's advance(n), called per batch
        with (nullcontext(progress) if callable(progress) else progress_bar(description, n, progress)) as advance:
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                batch_images = [image for i in idx for image in requests[i][1]]
                if base_crops:
                    new_tokens = generate_from_base_crops(
                        model, processor, [texts[i] for i in idx], [requests[i][1] for i in idx], config
                    )
                else:
                    new_tokens = _generate_with_processor(model, processor, [texts[i] for i in idx], batch_images,
                                                          config, device, dtype)
                decoded = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
                for i, text in zip(idx, decoded):
                    replies[i] = text.strip()
                advance(len(idx))
    finally:
        tokenizer.padding_side = old_side
    return [r if r is not None else "" for r in replies]


def _generate_with_processor(model, processor, texts: list[str], images: list, config, device, dtype):
    """New tokens of one batch whose images go through the model's own processor."""
    import torch

    kwargs: dict[str, Any] = {"text": texts, "return_tensors": "pt", "padding": True}
    if images:
        kwargs["images"] = images
    inputs = processor(**kwargs)
    if images and "pixel_values" not in inputs:
        raise ValueError(f"{type(processor).__name__} returned no pixel_values for a batch with images")
    inputs = {
        k: (v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device)) if hasattr(v, "to") else v
        for k, v in inputs.items()
    }
    with torch.inference_mode():
        output = model.generate(**inputs, generation_config=config)
    return output[:, inputs["input_ids"].shape[1] :]


# --- scoring -------------------------------------------------------------------------------------
@dataclass
class ScoringOutput:
    """What :func:`score_samples` returns for one shard.

    ``columns``: ``score_<capability>`` (float, NaN where the reply is unparsable) and ``styles``
    (object array of lists of strings, first style first), one row per sample of the shard, ready
    for ``samples.parquet``. ``stats``: counts of unparsable replies, unknown styles and image
    errors. ``replies``: the raw replies per task (``<capability>`` or ``"style"``), for caching.
    """

    columns: dict[str, np.ndarray]
    stats: dict[str, Any]
    replies: dict[str, list[str]] = field(default_factory=dict)


def resolve_capabilities(capabilities: Iterable[str] | Mapping[str, str] | None) -> dict[str, str]:
    """name -> prompt keyword, in order. ``None``: the 14 official capabilities."""
    if capabilities is None:
        return dict(CAPABILITIES)
    if isinstance(capabilities, Mapping):
        return {str(name): str(keyword) for name, keyword in capabilities.items()}
    if isinstance(capabilities, str):
        capabilities = [capabilities]
    resolved: dict[str, str] = {}
    for capability in capabilities:
        resolved[capability_name(capability)] = capability_keyword(capability)
    return resolved


def _load_image(image):
    from PIL import Image

    if isinstance(image, (str, Path)):
        with Image.open(image) as opened:
            return opened.convert("RGB")
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    raise TypeError(f"expected a PIL image or a path, got {type(image).__name__}")


def score_samples(
    model,
    processor,
    samples: Sequence[tuple[Sequence[tuple[str, str]], Sequence]],
    capabilities: Iterable[str] | Mapping[str, str] | None = None,
    *,
    styles: bool = True,
    styler_model=None,
    styler_processor=None,
    batch_size: int = 8,
    max_new_tokens: int = 16,
    style_max_new_tokens: int = 64,
    progress: bool = True,
    image_input: str = "base_crop",
) -> ScoringOutput:
    """Score one shard of samples: one generation per capability, one for the styles.

    ``samples``: ``(turns, images)`` per sample, ``turns`` a list of ``(role, text)`` and ``images``
    PIL images or image paths (opened and converted to RGB here). ``capabilities``: short names or
    keywords (default: the 14), or a ``{name: keyword}`` mapping for a custom scorer. The style
    pass uses ``styler_model``/``styler_processor`` when given (the released styler is a separate
    model), else ``model``/``processor``; ``styles=False`` skips it. ``image_input``: see
    :func:`generate_replies` (``"base_crop"``, the official input, or ``"processor"``).

    Nothing here depends on other shards, so the extraction engine can run shards independently
    and concatenate the columns. Unparsable replies and unreadable images never raise: the
    sample's value is NaN (scores) or ``[]`` (styles) and the count is in ``stats``.
    """
    caps = resolve_capabilities(capabilities)
    n = len(samples)
    loaded: list[list] = []
    image_errors: list[dict[str, Any]] = []
    for position, (_, images) in enumerate(samples):
        try:
            loaded.append([_load_image(image) for image in images])
        except Exception as error:  # noqa: BLE001 - an unreadable image must not stop the shard
            loaded.append(None)  # type: ignore[arg-type]
            image_errors.append({"position": position, "error": f"{type(error).__name__}: {error}"})
    usable = [i for i in range(n) if loaded[i] is not None]

    def run(task: str, mdl, proc, limit: int) -> list[str]:
        requests = [(build_messages(samples[i][0], len(loaded[i]), task), loaded[i]) for i in usable]
        replies = generate_replies(
            mdl, proc, requests, batch_size=batch_size, max_new_tokens=limit, progress=progress,
            description=f"mmssr {task}", image_input=image_input,
        )
        full = [""] * n
        for i, reply in zip(usable, replies):
            full[i] = reply
        return full

    columns: dict[str, np.ndarray] = {}
    replies: dict[str, list[str]] = {}
    unparsable: dict[str, int] = {}
    started = time.perf_counter()
    for name, keyword in caps.items():
        task_replies = run(keyword, model, processor, max_new_tokens)
        values = np.array([parse_score(r) for r in task_replies], dtype=float)
        values[[i for i in range(n) if loaded[i] is None]] = np.nan
        columns[f"score_{name}"] = values
        replies[name] = task_replies
        unparsable[name] = int(np.isnan(values).sum())
    stats: dict[str, Any] = {
        "n_samples": n,
        "capabilities": caps,
        "unparsable_scores": unparsable,
        "unparsable_scores_total": int(sum(unparsable.values())),
        "image_errors": len(image_errors),
        "image_error_examples": image_errors[:10],
    }
    if styles:
        mdl = styler_model if styler_model is not None else model
        proc = styler_processor if styler_processor is not None else processor
        style_replies = run(STYLE_TASK, mdl, proc, style_max_new_tokens)
        parsed = np.empty(n, dtype=object)
        unknown_total, empty = 0, 0
        unknown_examples: list[str] = []
        for i, reply in enumerate(style_replies):
            sample_styles, unknown = (parse_styles(reply) if loaded[i] is not None else ([], 0))
            parsed[i] = sample_styles
            unknown_total += unknown
            empty += not sample_styles
            for style in sample_styles:
                if style not in STYLE_CANDIDATES and style not in unknown_examples and len(unknown_examples) < 10:
                    unknown_examples.append(style)
        columns["styles"] = parsed
        replies[STYLE_TASK] = style_replies
        stats.update(
            {"styles_empty": int(empty), "unknown_styles": int(unknown_total), "unknown_style_examples": unknown_examples}
        )
    stats["seconds"] = round(time.perf_counter() - started, 3)
    return ScoringOutput(columns=columns, stats=stats, replies=replies)


__all__ = [
    "CAPABILITIES",
    "CAPABILITY_QUERY",
    "SCORER_MODEL",
    "STYLER_MODEL",
    "STYLE_CANDIDATES",
    "STYLE_QUERY",
    "SYSTEM_MESSAGE",
    "ScoringOutput",
    "build_messages",
    "build_prompt_text",
    "capability_keyword",
    "capability_name",
    "format_conversation",
    "generate_replies",
    "parse_score",
    "parse_styles",
    "resolve_capabilities",
    "score_samples",
    "strip_image_placeholders",
    "task_query",
]
