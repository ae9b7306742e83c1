"""Features computed by a second model: CLIP score (``clip_score``) and the mmSSR scorer/styler
generations (``mmssr-scores``). Same shards and done-markers as the main extraction."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..data.records import IMAGE_PLACEHOLDER, Sample
from .extract import ExtractionOutput, ShardStore, _shard_name, plan_shards

AUXILIARY_FEATURES = {
    "clip_score": "cosine of CLIP image and text embeddings (--clip-model; NaN for text-only records)",
    "mmssr-scores": "mmSSR capability scores 0-5 and interaction styles by generation (--scorer-model, --styler-model)",
}
TINY_CLIP = "tiny-clip"


class JsonShardStore(ShardStore):
    """Shards of per-sample values that may be strings or lists: ``<name>.json`` + ``<name>.done``."""

    def write(self, name: str, output: ExtractionOutput) -> None:
        payload = {
            "keys": output.keys,
            "rejected": output.rejected,
            "values": {k: [_jsonable(v) for v in values] for k, values in output.values.items()},
        }
        tmp = self.directory / f"{name}.json.tmp"
        tmp.write_text(json.dumps(payload))
        os.replace(tmp, self.directory / f"{name}.json")
        (self.directory / f"{name}.done").write_text("done\n")

    def read(self, name: str) -> ExtractionOutput:
        payload = json.loads((self.directory / f"{name}.json").read_text())
        values = {}
        for key, items in payload["values"].items():
            if items and isinstance(items[0], list):
                column = np.empty(len(items), dtype=object)
                column[:] = items
                values[key] = column
            else:
                values[key] = np.array([np.nan if v is None else v for v in items], dtype=float)
        return ExtractionOutput(payload["keys"], values, payload["rejected"])


def _jsonable(value):
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(v) for v in value]
    value = float(value)
    return None if math.isnan(value) else value


def _store(cache_dir: Path, spec: dict[str, Any]) -> JsonShardStore:
    digest = hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]
    store = JsonShardStore(Path(cache_dir) / f"aux-{digest}")
    (store.directory / "spec.json").write_text(json.dumps(spec, indent=2, sort_keys=True, default=str))
    return store


def _collect(samples: list[Sample], outputs: list[ExtractionOutput]) -> dict[str, np.ndarray]:
    by_key: dict[str, tuple[int, int]] = {}
    for index, output in enumerate(outputs):
        for row, key in enumerate(output.keys):
            by_key[key] = (index, row)
    names = next((list(o.values) for o in outputs if o.values), [])
    columns = {}
    for name in names:
        values = [outputs[by_key[s.key][0]].values[name][by_key[s.key][1]] for s in samples]
        if values and isinstance(values[0], (list, np.ndarray)):
            column = np.empty(len(values), dtype=object)
            column[:] = [list(v) for v in values]
        else:
            column = np.asarray(values, dtype=float)
        columns[name] = column
    return columns


def _record_text(sample: Sample) -> str:
    """Text CLIP sees: the user turns (the questions), placeholders removed (DICS: image-question text)."""
    questions = [t.text.replace(IMAGE_PLACEHOLDER, "").strip() for t in sample.turns if t.role == "user"]
    return " ".join(q for q in questions if q)


def clip_score_columns(samples, *, clip_model: str, cache_dir, device="cpu", batch_size=32, shard_size=256, progress=True, runner=None):
    from ..runners import LocalRunner
    from .clip_score import clip_scores, load_clip
    from .encode import load_image

    if clip_model == TINY_CLIP:
        from ..models.tiny_clip import build_tiny_clip

        model, processor = build_tiny_clip()
    else:
        model, processor = load_clip(clip_model, device=device)
    store = _store(cache_dir, {"feature": "clip_score", "model": clip_model, "text": "user turns"})

    def work(shard, advance):
        images = [[load_image(p) for p in s.image_paths] or None for s in shard]
        scores = clip_scores(model, processor, images, [_record_text(s) for s in shard], batch_size=batch_size)
        advance(len(shard))
        return ExtractionOutput([s.key for s in shard], {"clip_score": scores})

    outputs = (runner or LocalRunner()).run_shards(
        plan_shards(samples, shard_size), name_of=_shard_name, store=store, work=work,
        progress=progress, total=len(samples), description="clip_score",
    )
    return _collect(samples, outputs), {"clip_model": clip_model}


def mmssr_score_columns(samples, *, scorer, styler=None, cache_dir, capabilities=None, batch_size=8, shard_size=256,
                        max_new_tokens=16, progress=True, runner=None):
    """``scorer``/``styler``: loaded :class:`ModelBundle` objects (the styler defaults to the scorer)."""
    from ..runners import LocalRunner
    from .mmssr_scoring import resolve_capabilities, score_samples

    caps = resolve_capabilities(capabilities)
    spec = {
        "feature": "mmssr-scores",
        "scorer": scorer.describe(),
        "styler": (styler or scorer).describe(),
        "capabilities": caps,
        "max_new_tokens": max_new_tokens,
    }
    store = _store(cache_dir, spec)
    stats: dict[str, Any] = {"unparsable_scores_total": 0, "styles_empty": 0, "image_errors": 0}

    def work(shard, advance):
        inputs = [([(t.role, t.text) for t in s.turns], list(s.image_paths)) for s in shard]
        result = score_samples(
            scorer.model, scorer.processor, inputs, caps,
            styler_model=(styler or scorer).model, styler_processor=(styler or scorer).processor,
            batch_size=batch_size, max_new_tokens=max_new_tokens, progress=False,
        )
        for key in stats:
            stats[key] += int(result.stats.get(key, 0))
        advance(len(shard))
        return ExtractionOutput([s.key for s in shard], result.columns)

    outputs = (runner or LocalRunner()).run_shards(
        plan_shards(samples, shard_size), name_of=_shard_name, store=store, work=work,
        progress=progress, total=len(samples), description=f"mmssr scoring ({len(caps)} capabilities + styles)",
    )
    columns = _collect(samples, outputs)
    # Counted over every shard, read back ones included, so the numbers hold after a resume.
    stats["unparsable_scores_total"] = int(sum(np.isnan(v).sum() for k, v in columns.items() if k.startswith("score_")))
    stats["styles_empty"] = int(sum(1 for v in columns.get("styles", []) if not v))
    return columns, {"mmssr": {"capabilities": caps, **stats}}
