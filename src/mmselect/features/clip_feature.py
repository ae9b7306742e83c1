"""``clip_score``: the cosine of a CLIP model's image and text embeddings (see :mod:`.clip_score`)."""

from __future__ import annotations

from typing import Sequence

from ..data.records import IMAGE_PLACEHOLDER, Sample
from .context import ExtractionContext
from .registry import Feature, FeatureOption, FeatureOutput
from .shards import ExtractionOutput, JsonCodec, ShardIndex, ShardStore, plan_shards, shard_name
from .work import ModelWork

TINY_CLIP = "tiny-clip"
DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"


def record_text(sample: Sample) -> str:
    """Text CLIP sees: the user turns (the questions), placeholders removed (DICS: image-question text)."""
    questions = [t.text.replace(IMAGE_PLACEHOLDER, "").strip() for t in sample.turns if t.role == "user"]
    return " ".join(q for q in questions if q)


class ClipWork(ModelWork):
    """CLIP scores of one shard; the CLIP model loads once per process."""

    def __init__(self, clip_model: str, device: str, batch_size: int):
        self.clip_model = clip_model
        self.device = device
        self.batch_size = batch_size

    def load(self):
        if self.clip_model == TINY_CLIP:
            from ..models.tiny_clip import build_tiny_clip

            return build_tiny_clip()
        from ..models.registry import resolve_device
        from .clip_score import load_clip

        return load_clip(self.clip_model, device=resolve_device(self.device))

    def __call__(self, shard: list, advance) -> ExtractionOutput:
        from .clip_score import clip_scores
        from .encode import load_image

        model, processor = self.loaded()
        images = [[load_image(p) for p in s.image_paths] or None for s in shard]
        scores = clip_scores(model, processor, images, [record_text(s) for s in shard], batch_size=self.batch_size)
        advance(len(shard))
        return ExtractionOutput([s.key for s in shard], {"clip_score": scores})


class ClipScoreFeature(Feature):
    """Cosine of CLIP image and text embeddings (NaN for text-only records)."""

    name = "clip_score"
    summary = "cosine of CLIP image and text embeddings (NaN for text-only records)"
    columns = ("clip_score",)
    needs = ("model",)  # only the samples the main pass kept
    model_options = ("model",)
    options = {
        "model": FeatureOption(DEFAULT_CLIP_MODEL, f"CLIP checkpoint (hub id or directory; {TINY_CLIP}: offline test model)"),
        "batch_size": FeatureOption(32, "images and texts per CLIP batch"),
    }

    def cache_spec(self, context: ExtractionContext) -> dict:
        return {"feature": self.name, "model": self.option("model"), "text": "user turns"}

    def run(self, samples: Sequence, context: ExtractionContext) -> FeatureOutput:
        clip_model = self.option("model")
        device = "auto" if context.remote else context.options.device
        outputs = context.runner.run_shards(
            plan_shards(samples, context.options.shard_size), name_of=shard_name,
            store=ShardStore.for_spec(context.cache_dir, "aux-", self.cache_spec(context), JsonCodec()),
            work=ClipWork(clip_model, device, int(self.option("batch_size"))),
            progress=context.progress, total=len(samples), description=self.name,
        )
        columns = ShardIndex(outputs).columns([s.key for s in samples])
        return FeatureOutput(columns=columns, info={"clip_model": clip_model})


__all__ = ["ClipScoreFeature", "ClipWork", "record_text"]
