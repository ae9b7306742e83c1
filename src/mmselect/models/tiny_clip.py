"""A tiny, randomly initialised CLIP for tests, and the name of the real CLIP the baselines use.

The tiny model is built from a ``CLIPConfig`` with a fixed seed and a byte-level BPE tokenizer
trained on the fly, so it needs no download. Its weights are random: its scores mean nothing.
"""

from __future__ import annotations

REAL_CLIP_MODEL = "openai/clip-vit-large-patch14"  # CLIP-Score baseline in DICS (ViT-L/14, 224 px)

TINY_CLIP_MAX_POSITIONS = 24
_CORPUS = [
    "a photo of a cat on a red mat",
    "What is in the picture? Describe the image in detail.",
    "How many people are there? Which color is the bus? Read the text in the image.",
    "0 1 2 3 4 5 6 7 8 9 red green blue yellow dog car tree sky",
]


def _tiny_clip_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<pad>", "<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS * 50, trainer)
    # CLIP's text tower pools the hidden state at the end-of-text token: always add it
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        special_tokens=[("<s>", tokenizer.token_to_id("<s>")), ("</s>", tokenizer.token_to_id("</s>"))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        model_max_length=TINY_CLIP_MAX_POSITIONS,
    )


def build_tiny_clip(seed: int = 0):
    """``(CLIPModel, CLIPProcessor)``: 2-layer towers of width 32, 32 px images in 8 px patches,
    16-d projections, text up to 24 positions. Same seed, same weights."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tokenizer = _tiny_clip_tokenizer()
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=TINY_CLIP_MAX_POSITIONS,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            image_size=32, patch_size=8,
        ),
        projection_dim=16,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config).eval()
    return model, processor
