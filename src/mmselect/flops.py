"""Forward FLOPs of a vision-language model, counted from its config and the actual token counts.

Matmuls cost 2 FLOPs per weight a token passes through (biases, norms, activations and rotary
embeddings are left out); attention adds ``4 * d * seq**2`` per layer for each sequence (scores
``Q K^T`` and the weighted sum of values, ``d`` = heads x head size; counted in full, as the
fused kernels compute them). What the extraction pass runs:

- the vision tower over every image (every layer: transformers runs them all, then picks one);
- the projector (LLaVA) or patch merger (Qwen2-VL) per image token;
- the decoder layers that run (``layers_run``: the pass stops after the deepest hooked layer);
- the LM head only at the positions that go through it (``lm_head_tokens``: answer targets).

Supported: LLaVA-1.5 layouts (CLIP or SigLIP tower, one tile per image) and Qwen2-VL; other model
types raise :class:`NotImplementedError`. Used by ``benchmarks/extract.py`` for model FLOPs
utilisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class FlopCount:
    vision: float = 0.0  # matmuls of the vision tower (patch embedding included)
    projector: float = 0.0  # LLaVA projector / Qwen2-VL patch merger
    language: float = 0.0  # matmuls of the decoder layers that run
    attention: float = 0.0  # attention scores and values, vision tower and decoder
    lm_head: float = 0.0

    @property
    def total(self) -> float:
        return self.vision + self.projector + self.language + self.attention + self.lm_head

    def __add__(self, other: FlopCount) -> FlopCount:
        return FlopCount(*(getattr(self, f) + getattr(other, f) for f in ("vision", "projector", "language", "attention", "lm_head")))


def _get(config, *names, default=None):
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return default


def decoder_weights_per_layer(text) -> tuple[int, int]:
    """(weights a token passes through in one decoder layer, attention width heads x head size) of
    a Llama/Qwen2-style decoder (q, k, v, o projections and a gated MLP)."""
    d = text.hidden_size
    heads = text.num_attention_heads
    kv_heads = _get(text, "num_key_value_heads", default=heads)
    head_dim = _get(text, "head_dim", default=d // heads)
    width = heads * head_dim
    attention = d * width + 2 * d * kv_heads * head_dim + width * d
    mlp = 3 * d * text.intermediate_size  # gate, up, down
    return attention + mlp, width


def _vit_layer_weights(d: int, intermediate: int) -> int:
    """One ViT layer (CLIP, SigLIP): q, k, v, o and a two-matrix MLP."""
    return 4 * d * d + 2 * d * intermediate


def count_forward_flops(
    config,
    sequence_tokens: Sequence[int],
    image_tokens: Sequence[int] = (),
    *,
    layers_run: int | None = None,
    lm_head_tokens: int = 0,
) -> FlopCount:
    """FLOPs of one extraction forward pass over samples of ``sequence_tokens`` tokens each
    (padding excluded) holding images of ``image_tokens`` decoder tokens each (one entry per
    image, all samples together). ``layers_run``: decoder layers that run (default all)."""
    model_type = getattr(config, "model_type", "")
    text = getattr(config, "text_config", None) or config
    per_layer, width = decoder_weights_per_layer(text)
    layers = text.num_hidden_layers if layers_run is None else layers_run
    tokens = sum(sequence_tokens)
    count = FlopCount(
        language=2.0 * per_layer * layers * tokens,
        attention=4.0 * layers * width * sum(float(n) ** 2 for n in sequence_tokens),
        lm_head=2.0 * text.hidden_size * text.vocab_size * lm_head_tokens,
    )
    if image_tokens:
        if model_type == "llava":
            return count + _llava_vision(config, text, len(image_tokens))
        if model_type == "qwen2_vl":
            return count + _qwen2_vl_vision(config.vision_config, image_tokens)
        raise NotImplementedError(f"no FLOP count for the vision side of model type {model_type!r}")
    return count


def _llava_vision(config, text, n_images: int) -> FlopCount:
    vision = config.vision_config
    d, patch = vision.hidden_size, vision.patch_size
    patches = (vision.image_size // patch) ** 2
    with_class = getattr(vision, "model_type", "") == "clip_vision_model"  # SigLIP has no class token
    seq = patches + int(with_class)
    channels = _get(vision, "num_channels", default=3)
    per_image_vision = 2.0 * channels * patch * patch * d * patches + \
        2.0 * _vit_layer_weights(d, vision.intermediate_size) * vision.num_hidden_layers * seq
    attention = 4.0 * vision.num_hidden_layers * d * seq * seq
    strategy = getattr(config, "vision_feature_select_strategy", "default")
    image_tokens = patches if strategy == "default" or not with_class else seq
    layer = getattr(config, "vision_feature_layer", -2)
    in_dim = d * (len(layer) if isinstance(layer, (list, tuple)) else 1)
    projector = 2.0 * (in_dim * text.hidden_size + text.hidden_size * text.hidden_size) * image_tokens
    return FlopCount(vision=per_image_vision * n_images, projector=projector * n_images, attention=attention * n_images)


def _qwen2_vl_vision(vision, image_tokens: Sequence[int]) -> FlopCount:
    e = vision.embed_dim
    merge = vision.spatial_merge_size
    patch_in = _get(vision, "in_channels", "in_chans", default=3) * vision.temporal_patch_size * vision.patch_size ** 2
    per_patch = 2.0 * (patch_in * e + vision.depth * (4 * e * e + 2 * e * int(e * vision.mlp_ratio)))
    merged = e * merge * merge
    per_merged_token = 2.0 * (merged * merged + merged * vision.hidden_size)
    patches = [n * merge * merge for n in image_tokens]  # each image attends within itself
    return FlopCount(
        vision=per_patch * sum(patches),
        projector=per_merged_token * sum(image_tokens),
        attention=4.0 * vision.depth * e * sum(float(p) ** 2 for p in patches),
    )


#: Dense bf16 tensor-core peaks from the vendors' datasheets (TFLOP/s, without sparsity), by words
#: of the device name, most specific first.
DATASHEET_BF16_TFLOPS: list[tuple[tuple[str, ...], float]] = [
    (("H100", "PCIE"), 756.0),
    (("H100", "NVL"), 835.0),
    (("H100",), 989.0),  # SXM
    (("H200",), 989.0),
    (("GH200",), 989.0),
    (("B200",), 2250.0),
    (("A100",), 312.0),
    (("L40S",), 362.0),
    (("L4",), 121.0),
    (("A10",), 125.0),
]


def datasheet_peak_tflops(device_name: str) -> float | None:
    """The datasheet bf16 peak of a GPU from its name (``torch.cuda.get_device_name()``), if known."""
    words = device_name.upper().replace("-", " ").split()
    for keys, tflops in DATASHEET_BF16_TFLOPS:
        if all(key in words for key in keys):
            return tflops
    return None


__all__ = ["DATASHEET_BF16_TFLOPS", "FlopCount", "count_forward_flops", "datasheet_peak_tflops", "decoder_weights_per_layer"]
