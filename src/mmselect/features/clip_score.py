"""CLIP score per record: the cosine between the CLIP image embedding and the CLIP text embedding.

Used by the ``clip-score`` baseline (column ``clip_score``, ``mmselect extract --features
clip_score``). DICS computed it with ``openai/clip-vit-large-patch14`` on the image and the
question text; :data:`mmselect.models.tiny_clip.REAL_CLIP_MODEL` names that checkpoint.

* Both embeddings are the projected CLIP features (``get_image_features`` /
  ``get_text_features``), L2-normalised; the score is their dot product, in [-1, 1]. No
  ``100 *`` logit scale and no ``2.5 * max(cos, 0)`` rescaling.
* The text is truncated to the text tower's ``max_position_embeddings`` (77 for OpenAI CLIP).
* Text-only records (no image) get NaN.
* Multi-image records: the mean over the images of each image's cosine with the text
  [interpretation; CLIP sees one image at a time].
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch


def load_clip(name_or_path: str | Path, *, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"):
    """Load a CLIP checkpoint directory (or hub name) as ``(CLIPModel, CLIPProcessor)``.

    The image processor is the PIL backend (``CLIPImageProcessorPil``), which does not need
    torchvision.
    """
    from transformers import AutoTokenizer, CLIPModel, CLIPProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    kwargs = {"dtype": dtype} if dtype is not None else {}
    model = CLIPModel.from_pretrained(str(name_or_path), **kwargs).to(device).eval()
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessorPil.from_pretrained(str(name_or_path)),
        tokenizer=AutoTokenizer.from_pretrained(str(name_or_path)),
    )
    return model, processor


def _features(output) -> torch.Tensor:
    """``get_*_features`` returns a tensor (transformers 4.x) or an output with ``pooler_output`` (5.x)."""
    if isinstance(output, torch.Tensor):
        return output
    return output.pooler_output


def _image_list(entry) -> list:
    if entry is None:
        return []
    if isinstance(entry, (list, tuple)):
        return [image for image in entry if image is not None]
    return [entry]


def clip_scores(model, processor, images: Sequence, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
    """CLIP score of every record: ``cos(image embedding, text embedding)``.

    ``images[i]`` is a PIL image, ``None`` (text-only record: NaN) or a list of PIL images (the
    mean of the per-image cosines). ``texts[i]`` is the record's text. Returns float64 ``(n,)``.
    """
    if len(images) != len(texts):
        raise ValueError(f"{len(images)} image entries but {len(texts)} texts")
    n = len(texts)
    owners, flat = [], []
    for i, entry in enumerate(images):
        for image in _image_list(entry):
            owners.append(i)
            flat.append(image.convert("RGB") if getattr(image, "mode", "RGB") != "RGB" else image)
    scores = np.full(n, np.nan)
    if not flat:
        return scores
    owners = np.asarray(owners)
    with_image = np.unique(owners)
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    max_length = int(model.config.text_config.max_position_embeddings)
    text_embeddings = {}
    with torch.inference_mode():
        for start in range(0, len(with_image), batch_size):
            rows = with_image[start : start + batch_size]
            batch = processor.tokenizer(
                [str(texts[i]) for i in rows], padding=True, truncation=True, max_length=max_length,
                return_tensors="pt",
            )
            batch = {key: value.to(device) for key, value in batch.items() if key in ("input_ids", "attention_mask")}
            emb = torch.nn.functional.normalize(_features(model.get_text_features(**batch)).float(), dim=-1)
            for row, vector in zip(rows.tolist(), emb):
                text_embeddings[row] = vector
        sums = np.zeros(n)
        counts = np.zeros(n)
        for start in range(0, len(flat), batch_size):
            pixels = processor.image_processor(images=flat[start : start + batch_size], return_tensors="pt")["pixel_values"]
            emb = _features(model.get_image_features(pixel_values=pixels.to(device=device, dtype=dtype))).float()
            emb = torch.nn.functional.normalize(emb, dim=-1)
            batch_owners = owners[start : start + batch_size]
            text = torch.stack([text_embeddings[i] for i in batch_owners.tolist()])
            cos = (emb * text).sum(-1).double().cpu().numpy()
            np.add.at(sums, batch_owners, cos)
            np.add.at(counts, batch_owners, 1)
    scores[with_image] = sums[with_image] / counts[with_image]
    return scores
