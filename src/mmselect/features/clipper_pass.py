"""CLIPPER's one-shot pass: the answer NLL of each query with one demonstration in front.

An interpretation of the paper (see docs/methods/clipper.md): each usable sample is a query
paired with ``m`` demonstrations (:func:`~mmselect.features.pairs.clipper_pairs`); one pair is one
sequence, the demonstration whole and unscored, then the query, whose answers are scored. The
zero-shot NLL comes from the main pass (``answer_nll``), which this feature reads.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..data.records import Sample
from .context import ExtractionContext
from .extractor import Extractor
from .reducers import make_features
from .registry import Feature, FeatureOption, FeatureOutput
from .shards import ShardStore, plan_shards, shard_name
from .work import ShardWork

_ZERO_SHOT = "answer_nll"


@dataclass
class PairSample:
    """A one-shot input: ``demo`` (a whole sample, not scored) followed by ``query`` (scored)."""

    demo: Sample
    query: Sample

    @property
    def key(self) -> str:
        return f"{self.demo.key}>{self.query.key}"

    @property
    def position(self) -> int:
        return self.query.position

    @property
    def text_chars(self) -> int:
        return self.demo.text_chars + self.query.text_chars

    @property
    def n_images(self) -> int:
        return self.demo.n_images + self.query.n_images

    @property
    def parts(self) -> tuple[Sample, Sample]:
        return (self.demo, self.query)

    @property
    def labels(self) -> tuple[bool, bool]:
        return (False, True)


class ClipperFeature(Feature):
    """One-shot answer NLL with m demonstrations per query (CLIPPER)."""

    name = "clipper"
    summary = "one-shot answer NLL with m demonstrations per query (CLIPPER)"
    columns = ("icl_answer_nll", "demo_gain")
    needs = ("model", _ZERO_SHOT)
    options = {
        "m": FeatureOption(4, "demonstrations per query"),
        "pairing": FeatureOption("random", "where demonstrations come from: random or same-task"),
        "seed": FeatureOption(0, "seed of the pairing"),
    }

    def run(self, samples: Sequence, context: ExtractionContext) -> FeatureOutput:
        from .pairs import aggregate_pairs, clipper_pairs

        params = {key: self.option(key) for key in self.options}
        query_idx, demo_idx = clipper_pairs(len(samples), [s.task for s in samples], m=int(params["m"]),
                                            pairing=params["pairing"], seed=int(params["seed"]))
        pairs = [PairSample(samples[d], samples[q]) for q, d in zip(query_idx, demo_idx)]
        options = context.options
        extractor = Extractor(context.bundle, make_features([_ZERO_SHOT]), batch_size=options.batch_size,
                              max_length=options.max_length, prefetch=options.prefetch, num_workers=options.num_workers)
        spec = {"main": context.main_spec, "clipper": params,
                "keys": hashlib.sha1("".join(s.key for s in samples).encode()).hexdigest()}
        outputs = context.runner.run_shards(
            plan_shards(pairs, options.shard_size), name_of=shard_name,
            store=ShardStore.for_spec(context.cache_dir, "pairs-", spec),
            work=ShardWork(extractor, [_ZERO_SHOT], None), progress=options.progress, total=len(pairs),
            description=f"one-shot pairs (m={params['m']})",
        )
        one_shot = {}
        for output in outputs:
            if output.keys:
                one_shot.update(zip(output.keys, output.values[_ZERO_SHOT].tolist()))
        one_shot_nll = np.array([one_shot.get(p.key, np.nan) for p in pairs], dtype=float)
        zero_shot = np.asarray(context.columns[_ZERO_SHOT], float)
        icl_answer_nll, demo_gain = aggregate_pairs(len(samples), query_idx, demo_idx, zero_shot, one_shot_nll)
        return FeatureOutput(columns={"icl_answer_nll": icl_answer_nll, "demo_gain": demo_gain},
                             info={self.name: params})


__all__ = ["ClipperFeature", "PairSample"]
