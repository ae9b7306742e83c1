"""Tiny, randomly initialised test models: ``tiny-llava`` and ``tiny-qwen2-vl``.

They are built from config objects with a fixed seed and a tokenizer trained on the fly, saved to
a directory and loaded back through the same ``from_pretrained`` path as a real model, so the
whole pipeline runs offline. Their weights are random: selections made with them carry no meaning.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

# Re-exported: the production processor fallbacks live in processors.py.
from .processors import (  # noqa: F401
    image_only_llava_onevision_processor,
    image_only_qwen2_5_vl_processor,
    image_only_qwen2_vl_processor,
)

TINY_VERSION = "2"  # bump when the recipe changes, so cached copies are rebuilt

_CORPUS = [
    "USER: what is in the picture? ASSISTANT: a cat on a red mat.",
    "What digit is shown? The digit is 7. How many shapes are there? There are three shapes.",
    "Read the word in the image. The word is hello. Which bar is the highest? The blue bar.",
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the human's questions.",
    "You are a helpful assistant. system user assistant 0 1 2 3 4 5 6 7 8 9 red green blue yellow",
]


# Jinja chat templates for generation (message content: a string or a list of image/text parts).
_CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}{{ image_text }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_VICUNA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{% set prefix = '' %}"
    "{% elif message['role'] == 'user' %}{% set prefix = 'USER: ' %}{% else %}{% set prefix = 'ASSISTANT: ' %}{% endif %}"
    "{{ prefix }}{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}</s>{% else %} {% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def _tokenizer(special_tokens: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=640,
        special_tokens=["<pad>", "<unk>", "<s>", "</s>", *special_tokens],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS * 50, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        additional_special_tokens=list(special_tokens),
    )


def build_llava(
    directory: Path, *, text: dict, vision: dict, image_size: int, patch_size: int,
    device: str = "cpu", dtype: torch.dtype = torch.float32,
) -> None:
    """A LLaVA-1.5-style model (CLIP vision tower, Llama decoder) with random weights and a tokenizer
    trained on the fly; ``text``/``vision`` are config sizes. Building on a GPU is much faster for
    full-size architectures (benchmarks)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tokenizer = _tokenizer(["<image>"])
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
        ),
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=_VICUNA_TEMPLATE,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(image_size=image_size, patch_size=patch_size, **vision),
        text_config=LlamaConfig(
            **{"vocab_size": len(tokenizer), **text},
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=(image_size // patch_size) ** 2,
        vision_feature_layer=-2,
    )
    with torch.device(device):
        model = LlavaForConditionalGeneration(config).to(dtype).eval()
    model.save_pretrained(directory)
    processor.save_pretrained(directory)


def build_qwen2_vl(
    directory: Path, *, text: dict, vision: dict, min_pixels: int, max_pixels: int,
    device: str = "cpu", dtype: torch.dtype = torch.float32, version: str = "2",
) -> None:
    """A Qwen2-VL (``version="2"``) or Qwen2.5-VL (``"2.5"``, windowed-attention vision tower) model
    with random weights, a tokenizer trained on the fly and an image-only processor;
    ``text``/``vision`` are config sizes (``text`` includes ``rope_parameters``)."""
    import transformers
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    prefix, processor_class = {
        "2": ("Qwen2VL", image_only_qwen2_vl_processor),
        "2.5": ("Qwen2_5_VL", image_only_qwen2_5_vl_processor),
    }[version]
    special = ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|im_start|>", "<|im_end|>"]
    tokenizer = _tokenizer(special)
    ids = dict(
        zip(
            ["image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"],
            tokenizer.convert_tokens_to_ids(special[:4]),
        )
    )
    processor = processor_class()(
        Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels),
        tokenizer,
        chat_template=_CHATML_TEMPLATE.replace("{{ image_text }}", "<|vision_start|><|image_pad|><|vision_end|>"),
    )
    config = getattr(transformers, f"{prefix}Config")(
        text_config={
            "vocab_size": len(tokenizer),
            **text,
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        },
        vision_config=vision,
        **ids,
    )
    with torch.device(device):
        model = getattr(transformers, f"{prefix}ForConditionalGeneration")(config).to(dtype).eval()
    model.save_pretrained(directory)
    processor.save_pretrained(directory)


def build_llava_onevision(
    directory: Path, *, text: dict, vision: dict, image_size: int, patch_size: int, grid: int = 2,
    device: str = "cpu", dtype: torch.dtype = torch.float32,
) -> None:
    """A LLaVA-OneVision model (SigLIP tower, Qwen2 decoder, any-resolution tiles up to ``grid`` x
    ``grid``; the released models use 6) with random weights."""
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    tokenizer = _tokenizer(["<image>", "<video>", "<|im_start|>", "<|im_end|>"])
    pinpoints = [[image_size * h, image_size * w] for h in range(1, grid + 1) for w in range(1, grid + 1)]
    processor = image_only_llava_onevision_processor()(
        LlavaOnevisionImageProcessorPil(size={"height": image_size, "width": image_size}, image_grid_pinpoints=pinpoints),
        tokenizer,
        num_image_tokens=(image_size // patch_size) ** 2,
        vision_feature_select_strategy="full",
        chat_template=_CHATML_TEMPLATE.replace("{{ image_text }}", "<image>\n"),
    )
    config = LlavaOnevisionConfig(
        vision_config={"model_type": "siglip_vision_model", "image_size": image_size, "patch_size": patch_size,
                       "vision_use_head": False, **vision},
        text_config={"model_type": "qwen2", "vocab_size": len(tokenizer), **text,
                     "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
                     "eos_token_id": tokenizer.eos_token_id},
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=pinpoints,
    )
    with torch.device(device):
        model = LlavaOnevisionForConditionalGeneration(config).to(dtype).eval()
    model.save_pretrained(directory)
    processor.save_pretrained(directory)


# Config sizes: the tiny test models, and real architectures for benchmarks (random weights have the
# real model's FLOPs). Real sizes follow the published configs.
_CLIP_L_336 = dict(vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16),
                   image_size=336, patch_size=14)
# SigLIP-so400m/14 at 384 px without its last layer, tiles up to 6 x 6 (LLaVA-OneVision).
_SIGLIP_384 = dict(vision=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=26, num_attention_heads=16),
                   image_size=384, patch_size=14, grid=6)
_QWEN2_VL_ROPE = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}
_QWEN2_VL_IMAGES = dict(min_pixels=56 * 56, max_pixels=28 * 28 * 1280)
ARCHITECTURES: dict[str, tuple] = {
    "tiny-llava": (build_llava, dict(
        vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4),
        text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=2048),
        image_size=32, patch_size=8,
    )),
    "tiny-qwen2-vl": (build_qwen2_vl, dict(
        vision=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=4, mlp_ratio=2),
        text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=4096,
                  rope_parameters={"rope_type": "default", "rope_theta": 1e4, "mrope_section": [2, 3, 3]}),
        min_pixels=56 * 56, max_pixels=112 * 112,
    )),
    "tiny-qwen2.5-vl": (build_qwen2_vl, dict(
        vision=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=64,
                    window_size=56, fullatt_block_indexes=[1]),
        text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=4096,
                  rope_parameters={"rope_type": "default", "rope_theta": 1e4, "mrope_section": [2, 3, 3]}),
        min_pixels=56 * 56, max_pixels=112 * 112, version="2.5",
    )),
    "tiny-llava-onevision": (build_llava_onevision, dict(
        vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4),
        text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=4096),
        image_size=32, patch_size=8,
    )),
    "llava-1.5-7b-like": (build_llava, dict(
        text=dict(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096),
        **_CLIP_L_336,
    )),
    "llava-1.5-13b-like": (build_llava, dict(
        text=dict(vocab_size=32064, hidden_size=5120, intermediate_size=13824, num_hidden_layers=40,
                  num_attention_heads=40, num_key_value_heads=40, max_position_embeddings=4096),
        **_CLIP_L_336,
    )),
    "llava-onevision-0.5b-like": (build_llava, dict(
        vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
        text=dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                  num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=4096),
        image_size=224, patch_size=16,
    )),
    "llava-onevision-qwen2-0.5b-like": (build_llava_onevision, dict(
        text=dict(vocab_size=152000, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                  num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768),
        **_SIGLIP_384,
    )),
    "llava-onevision-qwen2-7b-like": (build_llava_onevision, dict(
        text=dict(vocab_size=152128, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                  num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768),
        **_SIGLIP_384,
    )),
    "qwen2-vl-2b-like": (build_qwen2_vl, dict(
        vision=dict(depth=32, embed_dim=1280, hidden_size=1536, num_heads=16, mlp_ratio=4),
        text=dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                  num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=32768,
                  rope_parameters=_QWEN2_VL_ROPE),
        **_QWEN2_VL_IMAGES,
    )),
    "qwen2-vl-7b-like": (build_qwen2_vl, dict(
        vision=dict(depth=32, embed_dim=1280, hidden_size=3584, num_heads=16, mlp_ratio=4),
        text=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                  num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768,
                  rope_parameters=_QWEN2_VL_ROPE),
        **_QWEN2_VL_IMAGES,
    )),
}


def build_architecture(name: str, directory: Path, device: str = "cpu", dtype: torch.dtype = torch.float32) -> None:
    """Write architecture ``name`` (see ``ARCHITECTURES``) with random weights to ``directory``."""
    builder, sizes = ARCHITECTURES[name]
    builder(Path(directory), device=device, dtype=dtype, **sizes)


TINY_MODELS = ("tiny-llava", "tiny-qwen2-vl", "tiny-qwen2.5-vl", "tiny-llava-onevision")


def tiny_cache_dir() -> Path:
    base = os.environ.get("MMSELECT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "mmselect")
    return Path(base) / "tiny-models"


def build_tiny_model(name: str, directory: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """Write tiny model ``name`` to ``directory`` (default: the mmselect cache) and return the path.

    Building is deterministic (fixed seed); an existing complete copy is reused.
    """
    if name not in TINY_MODELS:
        raise KeyError(f"unknown tiny model {name!r}; known: {list(TINY_MODELS)}")
    target = Path(directory) if directory is not None else tiny_cache_dir() / f"{name}-v{TINY_VERSION}-s{seed}"
    marker = target / ".complete"
    if marker.exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        build_architecture(name, target)
    finally:
        torch.random.set_rng_state(state)
    marker.write_text("ok\n")
    return target
