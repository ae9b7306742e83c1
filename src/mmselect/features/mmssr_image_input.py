"""How the mmSSR scorer and styler see an image: one crop at the vision tower's base resolution.

The official inference (``llava/eval/model_ss.py`` of the mmSSR repository, LLaVA-NeXT code) gives
the released LLaVA-OneVision scorer and styler each image as **one crop**: the image processor's
``preprocess`` resizes the whole image straight to the tower's base resolution (384 x 384 for
SigLIP-so400m; no aspect ratio kept, no padding), rescales and normalises it, and the model encodes
that single crop. In ``prepare_inputs_labels_for_multimodal`` an image with one crop takes the
"single image" branch: its tower features go through the projector, and under
``mm_patch_merge_type="spatial_unpad"`` (the released models') the learned ``image_newline`` vector
is appended once. The image therefore becomes ``(image_size / patch_size)**2 + 1`` embeddings
(729 + 1 = 730 for SigLIP-so400m/14 at 384), although the models were fine-tuned with
``anyres_max_9`` tiles.

The transformers LLaVA-OneVision classes cannot be told to do this for a sample with one image:
the processor always counts the any-resolution tile tokens, and the model always unpacks the tiles.
:func:`generate_from_base_crops` therefore builds the input itself, with the model's own parts:

1. :func:`base_crop_pixel_values`: the model's image processor makes the crop. Asked for a tile
   grid of exactly one base-resolution tile, its first patch is the whole image resized straight to
   the base resolution, the official crop.
2. :func:`base_crop_features`: vision tower -> the configured feature layer -> projector -> the
   ``image_newline`` row, as the official single-crop branch (and the transformers model's own
   one-crop branch for multi-image samples) computes it.
3. The prompt gets exactly that many image placeholder tokens, the placeholder positions of the
   token embeddings are replaced by the features, and ``generate`` runs on ``inputs_embeds``.

Only LLaVA-OneVision takes the base crop. A LLaVA-1.5 model has no tiles: its processor's single
crop already is its base crop, so it keeps its processor silently. Any other family (Qwen2-VL's
dynamic resolution has no base crop) keeps its processor, with a warning once per family.
"""

from __future__ import annotations

import logging
from typing import Sequence

log = logging.getLogger("mmselect.features.mmssr_image_input")

#: ``image_input`` values: the official single base crop, or the model's own processor (tiles).
IMAGE_INPUTS = ("base_crop", "processor")
#: ``config.model_type`` of the families that take the base crop.
BASE_CROP_MODEL_TYPES = ("llava_onevision",)
#: Families whose processor already gives one crop at the base resolution (no tiles).
SINGLE_CROP_MODEL_TYPES = ("llava",)

_warned_fallbacks: set[str] = set()


def check_image_input(image_input: str) -> str:
    """``image_input`` itself, or a :class:`~mmselect.errors.ConfigError` naming the choices."""
    if image_input not in IMAGE_INPUTS:
        from ..errors import ConfigError

        raise ConfigError(f"image_input must be one of {list(IMAGE_INPUTS)}, got {image_input!r}")
    return image_input


def _model_type(model) -> str:
    return str(getattr(getattr(model, "config", None), "model_type", "") or "")


def effective_image_input(model, image_input: str = "base_crop") -> str:
    """The image input ``model`` gets when ``image_input`` is asked for.

    ``"processor"`` stays. ``"base_crop"`` stays for LLaVA-OneVision; any other family gets
    ``"processor"``: silently for LLaVA-1.5 (its processor's one crop is its base crop), with a
    warning (once per family) for the others.
    """
    check_image_input(image_input)
    model_type = _model_type(model)
    if image_input == "processor" or model_type in BASE_CROP_MODEL_TYPES:
        return image_input
    if model_type not in SINGLE_CROP_MODEL_TYPES and model_type not in _warned_fallbacks:
        _warned_fallbacks.add(model_type)
        log.warning(
            "mmssr-scores: image_input='base_crop' applies to LLaVA-OneVision models (the released mmSSR "
            "scorer and styler); a %s model gets its processor's image input instead",
            model_type or type(model).__name__,
        )
    return "processor"


def base_resolution(image_processor) -> tuple[int, int]:
    """(height, width) of the image processor's base crop."""
    size = image_processor.size
    read = size.get if isinstance(size, dict) else lambda key: getattr(size, key, None)
    if read("height") and read("width"):
        return int(read("height")), int(read("width"))
    if read("shortest_edge"):
        return int(read("shortest_edge")), int(read("shortest_edge"))
    raise ValueError(f"cannot read a base resolution from {type(image_processor).__name__}.size = {size!r}")


def base_crop_pixel_values(image_processor, images: Sequence):
    """``(n, channels, height, width)``: each image resized straight to the base resolution, then
    rescaled and normalised, by the model's own image processor.

    With a tile grid of exactly one base-resolution tile the processor makes two patches per image:
    first the whole image resized to the base resolution (the crop kept here), then the one tile.
    """
    height, width = base_resolution(image_processor)
    processed = image_processor(images=list(images), image_grid_pinpoints=[[height, width]], return_tensors="pt")
    pixel_values = processed["pixel_values"]
    if pixel_values.dim() != 5 or pixel_values.shape[-2:] != (height, width):
        raise ValueError(
            f"{type(image_processor).__name__} returned pixel values of shape {tuple(pixel_values.shape)}; "
            f"expected (images, patches, channels, {height}, {width})"
        )
    return pixel_values[:, 0]


def base_crop_features(model, pixel_values):
    """``(n, tokens, hidden)``: the language-model embeddings of ``n`` base crops.

    Vision tower, the configured feature layer(s) (``vision_feature_layer``; the class token dropped
    under the ``"default"`` strategy), projector, then the ``image_newline`` row appended once per
    image. ``tokens`` is ``(image_size / patch_size)**2 + 1`` under the ``"full"`` strategy.
    """
    import torch

    core = model.model
    config = model.config
    tower_parameter = next(core.vision_tower.parameters())
    outputs = core.vision_tower(
        pixel_values.to(device=tower_parameter.device, dtype=tower_parameter.dtype),
        output_hidden_states=True, return_dict=True,
    )
    layer = config.vision_feature_layer
    if isinstance(layer, int):
        selected = outputs.hidden_states[layer]
    else:
        selected = torch.cat([outputs.hidden_states[index] for index in layer], dim=-1)
    if config.vision_feature_select_strategy == "default":
        selected = selected[:, 1:]
    projected = core.multi_modal_projector(selected)
    newline = core.image_newline.to(projected)[None, None, :].expand(projected.shape[0], 1, -1)
    return torch.cat([projected, newline], dim=1)


def base_crop_inputs(model, processor, texts: Sequence[str], images_per_text: Sequence[Sequence]) -> dict:
    """Model inputs for a batch of prompts whose images are base crops.

    ``texts``: prompts rendered by the chat template, one image placeholder (``processor.image_token``)
    per image; ``images_per_text``: the RGB images of each prompt, in placeholder order. Returns
    ``inputs_embeds`` (placeholder positions carrying the image features), ``attention_mask`` and
    ``input_ids`` (placeholders expanded to one token per image embedding), padded on the left.
    """
    import torch

    image_token = getattr(processor, "image_token", None) or "<image>"
    image_token_id = model.config.image_token_id
    images = [image for group in images_per_text for image in group]
    features = None
    per_image = 0
    if images:
        with torch.inference_mode():
            features = base_crop_features(model, base_crop_pixel_values(processor.image_processor, images))
        per_image = features.shape[1]
    expanded = []
    for text, group in zip(texts, images_per_text):
        parts = text.split(image_token)
        if len(parts) - 1 != len(group):
            raise ValueError(f"a prompt has {len(parts) - 1} image placeholders {image_token!r} for {len(group)} images")
        expanded.append((image_token * per_image).join(parts))
    # The processor tokenizes its expanded text with these tokenizer defaults too; generation needs
    # the padding on the left.
    encoded = processor.tokenizer(expanded, return_tensors="pt", padding=True, padding_side="left")
    embeddings = model.get_input_embeddings()
    input_ids = encoded["input_ids"].to(embeddings.weight.device)
    attention_mask = encoded["attention_mask"].to(embeddings.weight.device)
    with torch.inference_mode():
        inputs_embeds = embeddings(input_ids)
        if features is not None:
            placeholders = input_ids == image_token_id
            if int(placeholders.sum()) != features.shape[0] * per_image:
                raise ValueError(
                    f"{int(placeholders.sum())} image placeholder tokens for {features.shape[0]} images of "
                    f"{per_image} embeddings each"
                )
            flat = features.reshape(-1, features.shape[-1]).to(inputs_embeds.device, inputs_embeds.dtype)
            inputs_embeds = inputs_embeds.masked_scatter(placeholders[..., None], flat)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "inputs_embeds": inputs_embeds}


def generate_from_base_crops(model, processor, texts: Sequence[str], images_per_text: Sequence[Sequence],
                             generation_config):
    """The new tokens, ``(batch, new)``, generated from ``inputs_embeds`` built by
    :func:`base_crop_inputs` (``generate`` given only embeddings returns only the new tokens)."""
    import torch

    inputs = base_crop_inputs(model, processor, texts, images_per_text)
    with torch.inference_mode():
        return model.generate(
            inputs_embeds=inputs["inputs_embeds"], attention_mask=inputs["attention_mask"],
            generation_config=generation_config,
        )


__all__ = [
    "BASE_CROP_MODEL_TYPES",
    "IMAGE_INPUTS",
    "base_crop_features",
    "base_crop_inputs",
    "base_crop_pixel_values",
    "base_resolution",
    "check_image_input",
    "effective_image_input",
    "generate_from_base_crops",
]
