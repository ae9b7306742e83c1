"""The main model's features: hooks on one forward pass (see :mod:`.reducers` for what each
reduces), registered as features that share that pass.

The main pass always runs, with or without hook features: it renders and tokenizes every sample
(``n_tokens``) and decides which samples are usable; every other feature runs on the samples it
kept. Its shards live under ``<cache>/<spec digest>/`` (the spec: model, revision, dtype, hook
points, max_length, array dtype).
"""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np

from ..data.rejected import RejectedRecord
from .context import ExtractionContext
from .extractor import Extractor
from .reducers import FEATURES
from .registry import Feature, FeatureOption, FeatureOutput
from .shards import ShardIndex, ShardStore, plan_shards, shard_name
from .work import ShardWork

MAIN_PASS = "main"

#: Per-sample metadata columns every features directory has, from the samples themselves.
SAMPLE_COLUMNS = ("key", "position", "task", "rounds", "n_images", "n_text_chars")
_COUNT_COLUMNS = ("n_tokens", "n_answer_tokens", "scalselect_vision_tokens", "scalselect_kept_tokens",
                  "scalselect_query_tokens")


class HookFeature(Feature):
    """A feature computed by hooks during the main model's forward pass."""

    shared_pass = MAIN_PASS

    def run(self, samples: Sequence, context: ExtractionContext) -> FeatureOutput:
        """This feature alone; the engine runs every hook feature in one :func:`main_pass` instead."""
        return main_pass(samples, [self], context)[0]


_OPTIONS = {
    "visual_mean": {"layer": FeatureOption(None, "decoder layer to read (default: 1/8 of the depth)")},
    "coincide": {"layers": FeatureOption(None, "decoder layers to read (default: the official 3,7,11,15,19 of 24, scaled to the depth)")},
    **{name: {"layer": FeatureOption("last", "hidden states read: last (the last block's output, before the final norm), "
                                             "penultimate (the block before it), final (after the final norm) or a block index")}
       for name in ("spectrum", "last_token", "mean_embed")},
    "scalselect": {
        "query": FeatureOption("official", "query tokens whose attention ranks the vision tokens: official (every "
                                           "non-vision token except the answers' content) or user_text"),
        "mass": FeatureOption(0.9, "keep the fewest top vision tokens holding more than this share of the attention"),
        "layer": FeatureOption(0, "decoder layer whose attention and output are read"),
    },
}
_EXTRA_COLUMNS = {"tokens": ("n_tokens", "n_answer_tokens"), "answer_nll": ("n_answer_tokens",), "el2n": ("n_answer_tokens",),
                  "aum": ("n_answer_tokens",), "ifd": ("n_answer_tokens",)}


def _hook_feature_class(name: str) -> type[HookFeature]:
    factory = FEATURES[name]
    attributes = {
        "name": name,
        "summary": factory.description,
        "columns": tuple(factory.columns) + _EXTRA_COLUMNS.get(name, ()),
        "arrays": tuple(factory.arrays),
        "options": _OPTIONS.get(name, {}),
        "__doc__": factory.description,
    }
    return type(f"HookFeature[{name}]", (HookFeature,), attributes)


_HOOK_CLASSES = {name: _hook_feature_class(name) for name in FEATURES}
globals().update(_HOOK_CLASSES)  # the registry finds each class as mmselect.features.hook_features:<name>


def sample_columns(samples: Sequence) -> dict[str, np.ndarray]:
    return {
        "key": np.array([s.key for s in samples], dtype=object),
        "position": np.array([s.position for s in samples], dtype=np.int64),
        "task": np.array([s.task for s in samples], dtype=object),
        "rounds": np.array([s.rounds for s in samples], dtype=np.int64),
        "n_images": np.array([s.n_images for s in samples], dtype=np.int64),
        "n_text_chars": np.array([s.text_chars for s in samples], dtype=np.int64),
    }


def main_pass(samples: Sequence, features: list[Feature], context: ExtractionContext) -> tuple[FeatureOutput, list, list[RejectedRecord]]:
    """Run the hook features over ``samples`` in one pass; returns (their values for the kept
    samples, the kept samples in input order, the rejected samples with reasons)."""
    from .reducers import make_features

    options = context.options
    names = [f.name for f in features]
    params = {f.name: f.params for f in features if f.params}
    extractor = Extractor(context.bundle, make_features(names, params), batch_size=options.batch_size,
                          max_length=options.max_length, array_dtype=options.array_dtype, prefetch=options.prefetch,
                          num_workers=options.num_workers)
    store = ShardStore(context.cache_dir / extractor.spec_hash())
    (store.directory / "spec.json").write_text(json.dumps(extractor.spec(), indent=2, sort_keys=True, default=str))
    outputs = context.runner.run_shards(
        plan_shards(samples, options.shard_size), name_of=shard_name, store=store,
        work=ShardWork(extractor, names, params), progress=options.progress, total=len(samples),
        description=f"extract {'+'.join(names)}",
    )
    index = ShardIndex(outputs)
    kept = [s for s in samples if s.key in index]
    keys = [s.key for s in kept]
    output = FeatureOutput(columns=sample_columns(kept))
    for name in index.names():
        values = index.gather(name, keys)
        if values.ndim == 2:
            output.arrays[name] = values.astype(options.array_dtype)
        elif name in _COUNT_COLUMNS:
            output.columns[name] = values.astype(np.int64)
        else:
            output.columns[name] = values.astype(np.float64)
    by_key = {s.key: s for s in samples}
    rejected = [RejectedRecord.for_sample(by_key[r["key"]], r["reason"], "extract") for r in index.rejected]
    output.info = {"extraction": extractor.spec(), "cache": str(store.directory), "n_rejected": len(rejected)}
    context.main_spec = extractor.spec_hash()
    return output, kept, rejected


__all__ = ["HookFeature", "MAIN_PASS", "SAMPLE_COLUMNS", "main_pass", "sample_columns"]
