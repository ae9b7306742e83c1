"""The reference model: a small LLaVA (CLIP-style vision tower + Llama-style text model) with a
word-level tokenizer, trained and evaluated on the arena's world.

Training sequences are rendered with the same conversation template mmselect uses when it extracts
features from a LLaVA model (``vicuna_v1``), so the features describe the model on the text it was
trained on. Pixels are normalised in numpy exactly as the saved processor does (checked in the tests),
so the training loop needs no processor call.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from ..data.records import Sample
from ..models.templates import TEMPLATES
from .config import TrainingConfig
from .scenes import IMAGE_SIZE, vocabulary

SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>", "<image>")
IMAGE_TOKEN = "<image>"
PATCH_SIZE = 8
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2  # the CLS token is dropped ("default" strategy)
TEMPLATE = TEMPLATES["vicuna_v1"]  # what mmselect's loader picks for a local LLaVA directory
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def build_tokenizer():
    """Word-level tokenizer over the world's closed vocabulary; adds ``<s>`` like a LLaMA tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = [w for w in vocabulary() if w not in SPECIAL_TOKENS]
    vocab = {token: index for index, token in enumerate([*SPECIAL_TOKENS, *words])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.add_special_tokens(list(SPECIAL_TOKENS))
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        additional_special_tokens=[IMAGE_TOKEN],
    )


def build_processor(tokenizer):
    from transformers import LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    return LlavaProcessor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
            image_mean=CLIP_MEAN.tolist(), image_std=CLIP_STD.tolist(),
        ),
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token: (32/8)^2 + 1 - 1 = 16 image tokens
        image_token=IMAGE_TOKEN,
    )


def build_model(tokenizer, training: TrainingConfig, seed: int = 0):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = training.vision_hidden
    text = training.text_hidden
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=vision, intermediate_size=2 * vision, num_hidden_layers=2, num_attention_heads=4,
            image_size=IMAGE_SIZE, patch_size=PATCH_SIZE,
        ),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=text, intermediate_size=2 * text,
            num_hidden_layers=training.text_layers, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=256, tie_word_embeddings=True,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=IMAGE_TOKENS,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return LlavaForConditionalGeneration(config)


def save_reference(model, processor, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


# --- tensors ---------------------------------------------------------------------------------------
def pixels(path: str) -> np.ndarray:
    """CHW float32, normalised like the processor (rescale 1/255, CLIP mean/std; images are 32x32)."""
    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return ((array - CLIP_MEAN) / CLIP_STD).transpose(2, 0, 1).copy()


@dataclass
class Encoded:
    """Token ids, training labels (-100 outside the answers and their end-of-turn token), one image or none."""

    ids: np.ndarray
    labels: np.ndarray
    image: np.ndarray | None


def encode_sample(sample: Sample, tokenizer, image_cache: dict[str, np.ndarray] | None = None) -> Encoded:
    rendered = TEMPLATE.render([sample])
    text, spans, shift = rendered.text, [], 0
    expanded = text.replace(IMAGE_TOKEN, IMAGE_TOKEN * IMAGE_TOKENS)
    extra = len(IMAGE_TOKEN) * (IMAGE_TOKENS - 1)
    image_at = [i for i in range(len(text)) if text.startswith(IMAGE_TOKEN, i)]
    for start, end in rendered.answer_spans:
        shift = extra * sum(1 for at in image_at if at < start)
        spans.append((start + shift, end + shift))
    encoding = tokenizer(expanded, return_offsets_mapping=True)
    ids = np.asarray(encoding["input_ids"], dtype=np.int64)
    labels = np.full_like(ids, -100)
    eos = tokenizer.eos_token_id
    for start, end in spans:
        inside = [i for i, (a, b) in enumerate(encoding["offset_mapping"]) if a < end and b > start]
        for i in inside:
            labels[i] = ids[i]
        after = inside[-1] + 1 if inside else None
        if after is not None and after < len(ids) and ids[after] == eos:
            labels[after] = eos  # the model must also stop: exact match of the full answer
    image = None
    if rendered.image_paths:
        path = rendered.image_paths[0]
        if image_cache is not None and path in image_cache:
            image = image_cache[path]
        else:
            image = pixels(path)
            if image_cache is not None:
                image_cache[path] = image
    return Encoded(ids, labels, image)


def collate(items: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    length = max(len(e.ids) for e in items)
    ids = np.full((len(items), length), pad_id, dtype=np.int64)
    labels = np.full((len(items), length), -100, dtype=np.int64)
    mask = np.zeros((len(items), length), dtype=np.int64)
    for row, item in enumerate(items):
        ids[row, : len(item.ids)] = item.ids
        labels[row, : len(item.labels)] = item.labels
        mask[row, : len(item.ids)] = 1
    batch = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask), "labels": torch.from_numpy(labels)}
    images = [item.image for item in items if item.image is not None]
    if images:
        batch["pixel_values"] = torch.from_numpy(np.stack(images))
    return batch


# --- training --------------------------------------------------------------------------------------
def wsd_lambda(steps: int, warmup: float, decay: float) -> Callable[[int], float]:
    """Warmup-stable-decay: linear warmup, constant, linear decay to zero over the last ``decay`` share."""
    warm = max(1, int(round(warmup * steps)))
    decay_start = steps - int(round(decay * steps))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if step >= decay_start:
            return max(0.0, (steps - step) / max(1, steps - decay_start))
        return 1.0

    return factor


def train(
    model,
    data: list[Encoded],
    *,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    warmup: float,
    decay: float,
    weight_decay: float,
    pad_id: int,
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """``steps`` AdamW steps over ``data`` in seeded epochs of shuffled batches; returns loss figures."""
    if not data:
        raise ValueError("no training records")
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, wsd_lambda(steps, warmup, decay))
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    batch_size = min(batch_size, len(data))
    started, recent = time.time(), []
    first_loss = None
    for step in range(steps):
        if len(order) < batch_size:
            order += torch.randperm(len(data), generator=generator).tolist()
        rows, order = order[:batch_size], order[batch_size:]
        batch = {k: v.to(device) for k, v in collate([data[r] for r in rows], pad_id).items()}
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        value = float(loss.detach())
        first_loss = value if first_loss is None else first_loss
        recent.append(value)
        if log is not None and ((step + 1) % 50 == 0 or step + 1 == steps):
            log(f"step {step + 1}/{steps} loss {np.mean(recent[-50:]):.4f} lr {scheduler.get_last_lr()[0]:.2e} "
                f"{time.time() - started:.1f}s")
    model.eval()
    return {"first_loss": first_loss, "final_loss": float(np.mean(recent[-50:])), "seconds": time.time() - started}


@torch.no_grad()
def evaluate(model, data: list[Encoded], tasks: list[str], pad_id: int, device: str = "cpu", batch_size: int = 256) -> dict[str, float]:
    """Exact match per task: every answer token and the end-of-turn token is the argmax under teacher
    forcing (for a single answer this is exactly greedy decoding's exact match)."""
    model.to(device).eval()
    correct = np.zeros(len(data), dtype=bool)
    for start in range(0, len(data), batch_size):
        chunk = data[start : start + batch_size]
        batch = {k: v.to(device) for k, v in collate(chunk, pad_id).items()}
        labels = batch.pop("labels")
        logits = model(**batch).logits
        predicted = logits[:, :-1].argmax(-1)
        target = labels[:, 1:]
        scored = target != -100
        right = ((predicted == target) | ~scored).all(dim=1)
        correct[start : start + len(chunk)] = right.cpu().numpy()
    scores = {}
    tasks_array = np.asarray(tasks)
    for task in dict.fromkeys(tasks):
        scores[task] = float(correct[tasks_array == task].mean())
    scores["macro_mean"] = float(np.mean([scores[t] for t in dict.fromkeys(tasks)]))
    return scores


def parameter_count(model) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def steps_for(training: TrainingConfig, n_records: int) -> int:
    """Fixed steps (compute-matched), or ``epochs`` passes over the subset (epoch-matched)."""
    if training.epochs > 0:
        return max(1, math.ceil(training.epochs * n_records / training.batch_size))
    return training.steps
