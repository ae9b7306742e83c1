"""One forward pass per batch, hooks that reduce on the device, shards with done-markers.

Shards are fixed groups of samples (bucketed by length, so batches pad little). Each finished shard
is written with a done-marker, keyed by (model, revision, feature spec) in its directory name and by
the sample keys in its file name; rerunning after an interruption, even ``kill -9``, skips finished
shards and ends with the same features as an uninterrupted run.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from ..data.records import Sample
from ..models.registry import ModelBundle
from ..models.templates import Rendered
from .encode import EncodedBatch, EncodeError, encode, load_image
from .reducers import CoincideEmbed, FeatureDef, answer_token_stats, make_features
from .store import FeatureSet

CACHE_FORMAT = 1


class _StopForward(Exception):
    """Raised by the last hook needed, so layers nobody reads are not run."""


@dataclass
class ExtractionOutput:
    keys: list[str]
    values: dict[str, np.ndarray]
    rejected: list[dict[str, Any]] = field(default_factory=list)


def decoder_layers(model) -> torch.nn.ModuleList:
    for path in ("model.language_model.layers", "language_model.model.layers", "language_model.layers", "model.layers"):
        module = model
        try:
            for part in path.split("."):
                module = getattr(module, part)
        except AttributeError:
            continue
        if isinstance(module, torch.nn.ModuleList):
            return module
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is not None and hasattr(decoder, "layers"):
        return decoder.layers
    raise RuntimeError(f"cannot find the decoder layers of {type(model).__name__}")


def _module_for(layers, point) -> torch.nn.Module:
    kind, index = point
    if kind == "block":
        return layers[index]
    if kind == "o_proj":
        attention = getattr(layers[index], "self_attn", None)
        if attention is None or not hasattr(attention, "o_proj"):
            raise RuntimeError(f"layer {index} has no self_attn.o_proj")
        return attention.o_proj
    raise ValueError(point)


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


@dataclass
class PreparedBatch:
    kept: list[int]  # rows of the batch that rendered and loaded
    rejected: list[tuple[int, str]]
    rendered: list[Rendered]
    images: list[list]
    batch: EncodedBatch | None  # None: the kept rows could not be encoded together
    error: str | None = None  # why not


def _release_device_memory(device: torch.device) -> None:
    gc.collect()  # tensors of the failed pass still held in reference cycles
    if device.type == "cuda":
        torch.cuda.empty_cache()


class Extractor:
    """Runs the model over samples and collects the requested features.

    ``prefetch``: batches prepared ahead (rendering, image decoding, tokenization) in one background
    thread while the device runs the current one; ``None`` = 2 on a GPU, 0 on the CPU (where both
    halves compete for the same cores). ``max_length``: tokens per sample, default the model's
    context length (longer samples lose their tail; a sample whose image tokens do not fit is
    rejected).
    """

    def __init__(
        self,
        bundle: ModelBundle,
        features: list[FeatureDef],
        *,
        batch_size: int = 8,
        max_length: int | None = None,
        array_dtype: str = "float32",
        prefetch: int | None = None,
    ):
        self.bundle = bundle
        self.prefetch = prefetch if prefetch is not None else (2 if bundle.device.type != "cpu" else 0)
        self.features = features
        self.batch_size = batch_size
        self.max_length = int(max_length or bundle.context_length)
        self.array_dtype = array_dtype
        self.layers = decoder_layers(bundle.model)
        self.n_layers = len(self.layers)

    # --- description --------------------------------------------------------------------------
    def spec(self) -> dict[str, Any]:
        return {
            "format": CACHE_FORMAT,
            "model": self.bundle.describe(),
            "features": {f.name: {"params": f.params, "points": self._points_of(f)} for f in self.features},
            "max_length": self.max_length,
            "array_dtype": self.array_dtype,
        }

    def spec_hash(self) -> str:
        return hashlib.sha1(json.dumps(self.spec(), sort_keys=True, default=str).encode()).hexdigest()[:16]

    def _points_of(self, feature: FeatureDef) -> list:
        return [list(p) for p in feature.points(self.n_layers)]

    # --- one view = one forward kind ----------------------------------------------------------
    def _render(self, sample: Sample, view: str) -> Rendered:
        template = self.bundle.template
        if isinstance(sample, PairSample):
            return template.render([sample.demo, sample.query], label=[False, True])
        if view == "answer_only":
            return template.render([sample], include_user=False, include_images=False)
        return template.render([sample])

    def prepare(self, samples: list[Sample], view: str) -> PreparedBatch:
        """The CPU half of a batch: render, load images, tokenize. Runs ahead of the forward passes
        in a background thread (see ``prefetch``)."""
        rendered, images, kept, rejected = [], [], [], []
        for row, sample in enumerate(samples):
            try:
                item = self._render(sample, view)
                loaded = [load_image(p) for p in item.image_paths]
            except EncodeError as err:
                rejected.append((row, str(err)))
                continue
            rendered.append(item)
            images.append(loaded)
            kept.append(row)
        batch, error = self._encode(rendered, images) if kept else (None, None)
        if batch is not None and self.bundle.device.type == "cuda":
            batch = batch.pin_memory()
        return PreparedBatch(kept, rejected, rendered, images, batch, error)

    def _encode(self, rendered, images) -> tuple[EncodedBatch | None, str | None]:
        try:
            return encode(self.bundle, rendered, images, self.max_length), None
        except EncodeError as err:
            return None, str(err)

    def forward_prepared(self, prepared: PreparedBatch) -> tuple[list[int], dict[str, np.ndarray], list[tuple[int, str]]]:
        """The device half: one forward pass; returns (kept row indices, values, [(row, reason)] rejected).

        A batch that cannot be encoded as a whole is run sample by sample (the ones that cannot be
        encoded are rejected with the reason); a batch that runs out of device memory is run in two
        halves, down to single samples, which are rejected if they still do not fit."""
        kept, rejected = prepared.kept, list(prepared.rejected)
        if not kept:
            return [], {}, rejected
        if prepared.batch is None:
            if len(kept) == 1:
                return [], {}, rejected + [(kept[0], prepared.error or "cannot be encoded")]
            return self._forward_groups(prepared, [[i] for i in range(len(kept))], rejected)
        try:
            rows, values, sub_rejected = self._forward(prepared.batch)
        except torch.OutOfMemoryError:
            # Retry outside this block: until it ends, the traceback keeps the failed pass's tensors alive.
            out_of_memory = True
        else:
            out_of_memory = False
        if out_of_memory:
            _release_device_memory(self.bundle.device)
            if len(kept) == 1:
                tokens = int(prepared.batch.attention.sum())
                return [], {}, rejected + [(kept[0], f"out of device memory at {tokens} tokens (lower --max-length)")]
            half = (len(kept) + 1) // 2
            return self._forward_groups(prepared, [list(range(half)), list(range(half, len(kept)))], rejected)
        rejected.extend((kept[r], reason) for r, reason in sub_rejected)
        return [kept[r] for r in rows], values, rejected

    def _forward_groups(self, prepared: PreparedBatch, groups: list[list[int]], rejected: list) -> tuple:
        """Run ``groups`` (positions in ``prepared.kept``) as batches of their own, merged in order."""
        rows, parts = [], []
        for group in groups:
            rendered = [prepared.rendered[i] for i in group]
            images = [prepared.images[i] for i in group]
            batch, error = self._encode(rendered, images)
            sub = PreparedBatch([prepared.kept[i] for i in group], [], rendered, images, batch, error)
            sub_rows, values, sub_rejected = self.forward_prepared(sub)
            rejected.extend(sub_rejected)
            if sub_rows:
                rows.extend(sub_rows)
                parts.append(values)
        return rows, _concat(parts), rejected

    def _forward(self, batch: EncodedBatch):
        model = self.bundle.model
        batch = batch.to(self.bundle.device, non_blocking=True)
        out: dict[str, Any] = {}
        handles = []
        by_point: dict[tuple, list[FeatureDef]] = {}
        for feature in self.features:
            for point in feature.points(self.n_layers):
                by_point.setdefault(tuple(point), []).append(feature)
        needs_final = ("final", None) in by_point
        hooked = [p for p in by_point if p[0] != "final"]
        last_point = max(hooked, key=lambda p: (p[1], p[0] == "block")) if hooked else None

        def make_hook(point):
            def hook(module, args, output):
                hidden = output[0] if isinstance(output, (tuple, list)) else output
                for feature in by_point[point]:
                    feature.reduce(point, hidden, batch, out, model)
                if not needs_final and point == last_point:
                    raise _StopForward

            return hook

        for point in hooked:
            handles.append(_module_for(self.layers, point).register_forward_hook(make_hook(point)))
        try:
            with torch.inference_mode():
                inner = getattr(model, "model", None)
                try:
                    if not by_point:  # token counts only: no forward pass needed
                        raise _StopForward
                    if inner is not None and hasattr(model, "lm_head"):
                        result = inner(**batch.inputs, use_cache=False)
                        final_hidden = result.last_hidden_state
                    else:  # pragma: no cover - architectures without the usual split
                        result = model(**batch.inputs, output_hidden_states=True, use_cache=False)
                        final_hidden = result.hidden_states[-1]
                except _StopForward:
                    final_hidden = None
                if needs_final:
                    wanted = {f.stat for f in by_point[("final", None)]}
                    stats = answer_token_stats(final_hidden, batch, model, wanted)
                    for feature in by_point[("final", None)]:
                        out[feature.columns[0]] = stats[feature.stat]
                    out["n_answer_tokens"] = stats["n_answer_tokens"]
        finally:
            for handle in handles:
                handle.remove()
        for feature in self.features:
            if isinstance(feature, CoincideEmbed):
                feature.finish(out)
        values = {k: v.detach().float().cpu().numpy() for k, v in out.items()}
        values["n_tokens"] = batch.attention.sum(dim=1).cpu().numpy()
        rows, rejected = list(range(batch.batch_size)), []
        if any(f.needs_answers for f in self.features):
            answers = batch.answer[:, 1:].sum(dim=1).cpu().numpy()
            rows = [r for r in range(batch.batch_size) if answers[r] > 0]
            rejected = [(r, f"no answer tokens within max_length={self.max_length}") for r in range(batch.batch_size) if answers[r] == 0]
            values = {k: v[rows] for k, v in values.items()}
        return rows, values, rejected


def _length_estimate(sample: Sample) -> int:
    return sample.text_chars // 4 + 600 * sample.n_images


def plan_shards(samples: list[Sample], shard_size: int) -> list[list[Sample]]:
    """Deterministic shards of similar-length samples (stable sort by estimated length, then key)."""
    ordered = sorted(samples, key=lambda s: (_length_estimate(s), s.position))
    return [ordered[i : i + shard_size] for i in range(0, len(ordered), shard_size)]


def _shard_name(samples: list[Sample]) -> str:
    digest = hashlib.sha1("\n".join(s.key for s in samples).encode()).hexdigest()[:16]
    return f"shard-{digest}"


class ShardStore:
    """Finished shards on disk: ``<name>.npz`` + ``<name>.json`` + ``<name>.done``."""

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def done(self, name: str) -> bool:
        return (self.directory / f"{name}.done").exists()

    def write(self, name: str, output: ExtractionOutput) -> None:
        tmp_npz = self.directory / f"{name}.tmp.npz"
        np.savez(tmp_npz, **output.values)
        os.replace(tmp_npz, self.directory / f"{name}.npz")
        meta = {"keys": output.keys, "rejected": output.rejected}
        tmp_json = self.directory / f"{name}.json.tmp"
        tmp_json.write_text(json.dumps(meta))
        os.replace(tmp_json, self.directory / f"{name}.json")
        (self.directory / f"{name}.done").write_text("done\n")

    def read(self, name: str) -> ExtractionOutput:
        meta = json.loads((self.directory / f"{name}.json").read_text())
        with np.load(self.directory / f"{name}.npz", allow_pickle=False) as data:
            values = {k: data[k] for k in data.files}
        return ExtractionOutput(meta["keys"], values, meta["rejected"])


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    names = [k for k in parts[0]] if parts else []
    return {k: np.concatenate([p[k] for p in parts]) for k in names}


def prefetched(items: list, prepare, depth: int) -> Iterator:
    """``prepare(item)`` for each item, in order, computed up to ``depth`` items ahead in one
    background thread (one thread: the tokenizer is not safe to share between threads)."""
    if depth <= 0:
        yield from map(prepare, items)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmselect-prepare") as pool:
        pending = deque(pool.submit(prepare, item) for item in items[:depth])
        upcoming = iter(items[depth:])
        while pending:
            ready = pending.popleft().result()
            following = next(upcoming, _END)
            if following is not _END:
                pending.append(pool.submit(prepare, following))
            yield ready


_END = object()


def extract_shard(extractor: Extractor, shard: list[Sample], progress=None) -> ExtractionOutput:
    rejected: list[dict[str, Any]] = []
    # The full view always runs: it decodes every image and counts tokens, even with no feature.
    views = ["full"] + sorted({f.view for f in extractor.features} - {"full", "pairs"})
    per_view: dict[str, tuple[list[str], dict[str, np.ndarray]]] = {}
    for view in views:
        saved_features = extractor.features
        extractor.features = [f for f in saved_features if f.view == view]
        view_keys, view_parts = [], []
        batches = [shard[start : start + extractor.batch_size] for start in range(0, len(shard), extractor.batch_size)]
        prepared = prefetched(batches, lambda batch, view=view: extractor.prepare(batch, view), extractor.prefetch)
        for batch, ready in zip(batches, prepared):
            rows, values, bad = extractor.forward_prepared(ready)
            view_keys.extend(batch[r].key for r in rows)
            if rows:
                view_parts.append(values)
            rejected.extend({"key": batch[r].key, "reason": reason} for r, reason in bad)
            if progress is not None and view == views[0]:
                progress(len(batch))
        extractor.features = saved_features
        per_view[view] = (view_keys, _concat(view_parts))
    # Keep the samples every view produced, in shard order.
    rejected_keys = {r["key"] for r in rejected}
    keys = [s.key for s in shard if s.key not in rejected_keys]
    values: dict[str, np.ndarray] = {}
    for view, (view_keys, view_values) in per_view.items():
        index = {k: i for i, k in enumerate(view_keys)}
        take = np.array([index[k] for k in keys], dtype=int)
        for name, array in view_values.items():
            if view != "full" and name in ("n_tokens", "n_answer_tokens"):
                continue
            values[name] = array[take] if len(take) else array[:0]
    return ExtractionOutput(keys, values, rejected)


class ShardWork:
    """``work(shard, advance)``: extraction of one shard, in the form a runner can ship to other
    processes or machines. Pickling drops the model; a worker loads it again from
    ``bundle.load_args`` on first use, on its own device, and checks that it describes the same
    extraction (model, revision, dtype, features) as the one the shards are stored under."""

    def __init__(self, extractor: Extractor, feature_names: list[str], feature_params: dict | None):
        self.load_args = extractor.bundle.load_args
        self.feature_names = list(feature_names)
        self.feature_params = feature_params or {}
        self.options = {"batch_size": extractor.batch_size, "max_length": extractor.max_length,
                        "array_dtype": extractor.array_dtype}
        self.spec_hash = extractor.spec_hash()
        self._extractor: Extractor | None = extractor

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_extractor": None}

    def __call__(self, shard: list, advance) -> ExtractionOutput:
        if self._extractor is None:
            from ..models.registry import load_model

            bundle = load_model(**self.load_args, device="auto")
            extractor = Extractor(bundle, make_features(self.feature_names, self.feature_params), **self.options)
            if extractor.spec_hash() != self.spec_hash:
                raise RuntimeError(
                    f"this worker's extraction differs from the driver's (spec {extractor.spec_hash()} != "
                    f"{self.spec_hash}): {json.dumps(extractor.spec()['model'], default=str)}"
                )
            self._extractor = extractor
        return extract_shard(self._extractor, shard, advance)


def extract_features(
    samples: list[Sample],
    bundle: ModelBundle,
    feature_names: list[str],
    *,
    feature_params: dict[str, dict[str, Any]] | None = None,
    cache_dir: str | os.PathLike,
    batch_size: int = 8,
    shard_size: int = 256,
    max_length: int | None = None,
    array_dtype: str = "float32",
    progress: bool = True,
    runner=None,
    prefetch: int | None = None,
) -> tuple[FeatureSet, list[dict[str, Any]]]:
    """Extract ``feature_names`` for ``samples``; returns the features (rows in ``samples`` order,
    rejected samples left out) and the rejected samples with reasons. ``prefetch``: see
    :class:`Extractor`."""
    from ..runners import LocalRunner

    feature_names = list(dict.fromkeys(feature_names))
    pair_feature = None
    if "clipper" in feature_names:
        # The one-shot stage needs the zero-shot NLL of every query: one more feature of the main pass.
        pair_feature = make_features(["clipper"], feature_params)[0]
        feature_names = [n for n in feature_names if n != "clipper"]
        if "answer_nll" not in feature_names:
            feature_names.append("answer_nll")
    features = make_features(feature_names, feature_params)
    extractor = Extractor(bundle, features, batch_size=batch_size, max_length=max_length, array_dtype=array_dtype,
                          prefetch=prefetch)
    store = ShardStore(Path(cache_dir) / extractor.spec_hash())
    (store.directory / "spec.json").write_text(json.dumps(extractor.spec(), indent=2, sort_keys=True, default=str))
    runner = runner or LocalRunner()
    outputs = runner.run_shards(
        plan_shards(samples, shard_size),
        name_of=_shard_name,
        store=store,
        work=ShardWork(extractor, feature_names, feature_params),
        progress=progress,
        total=len(samples),
        description=f"extract {'+'.join(feature_names)}",
    )
    by_key: dict[str, tuple[int, int]] = {}
    rejected: list[dict[str, Any]] = []
    for shard_index, output in enumerate(outputs):
        for row, key in enumerate(output.keys):
            by_key[key] = (shard_index, row)
        rejected.extend(output.rejected)
    kept = [s for s in samples if s.key in by_key]
    columns: dict[str, Any] = {
        "key": np.array([s.key for s in kept], dtype=object),
        "position": np.array([s.position for s in kept], dtype=np.int64),
        "task": np.array([s.task for s in kept], dtype=object),
        "rounds": np.array([s.rounds for s in kept], dtype=np.int64),
        "n_images": np.array([s.n_images for s in kept], dtype=np.int64),
        "n_text_chars": np.array([s.text_chars for s in kept], dtype=np.int64),
    }
    arrays: dict[str, np.ndarray] = {}
    value_names = list(outputs[0].values) if outputs else []
    for name in value_names:
        stacked = np.concatenate([o.values[name] for o in outputs]) if outputs else np.empty(0)
        offsets = np.cumsum([0] + [len(o.keys) for o in outputs])
        take = np.array([offsets[by_key[s.key][0]] + by_key[s.key][1] for s in kept], dtype=int)
        values = stacked[take] if len(take) else stacked[:0]
        if values.ndim == 2:
            arrays[name] = values.astype(array_dtype)
        elif name in ("n_tokens", "n_answer_tokens"):
            columns[name] = values.astype(np.int64)
        else:
            columns[name] = values.astype(np.float64)
    manifest = {"extraction": extractor.spec(), "cache": str(store.directory), "n_rejected": len(rejected)}
    if pair_feature is not None:
        columns.update(
            _one_shot_stage(kept, columns["answer_nll"], bundle, pair_feature, extractor, Path(cache_dir), runner,
                            shard_size, progress)
        )
        manifest["clipper"] = pair_feature.params
    return FeatureSet(columns, arrays, manifest), rejected


def feature_names_for(methods: Iterable) -> list[str]:
    names: list[str] = []
    for method in methods:
        for name in method.extract_features():
            if name not in names:
                names.append(name)
    return names


def _one_shot_stage(samples, zero_shot_nll, bundle, pair_feature, main, cache_dir, runner, shard_size, progress):
    """CLIPPER's second stage: answer NLL of each query with one demonstration in front
    (an interpretation of the paper, see docs/methods/clipper.md)."""
    from .pairs import aggregate_pairs, clipper_pairs
    from .reducers import make_features

    params = {"m": 4, "pairing": "random", "seed": 0, **pair_feature.params}
    query_idx, demo_idx = clipper_pairs(
        len(samples), [s.task for s in samples], m=int(params["m"]), pairing=params["pairing"], seed=int(params["seed"])
    )
    pairs = [PairSample(samples[d], samples[q]) for q, d in zip(query_idx, demo_idx)]
    extractor = Extractor(bundle, make_features(["answer_nll"]), batch_size=main.batch_size, max_length=main.max_length,
                          prefetch=main.prefetch)
    spec = {"main": main.spec_hash(), "clipper": params, "keys": hashlib.sha1("".join(s.key for s in samples).encode()).hexdigest()}
    store = ShardStore(cache_dir / ("pairs-" + hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]))
    outputs = runner.run_shards(
        plan_shards(pairs, shard_size),
        name_of=_shard_name,
        store=store,
        work=ShardWork(extractor, ["answer_nll"], None),
        progress=progress,
        total=len(pairs),
        description=f"one-shot pairs (m={params['m']})",
    )
    one_shot = {}
    for output in outputs:
        if output.keys:
            one_shot.update(zip(output.keys, output.values["answer_nll"].tolist()))
    one_shot_nll = np.array([one_shot.get(p.key, np.nan) for p in pairs], dtype=float)
    icl_answer_nll, demo_gain = aggregate_pairs(len(samples), query_idx, demo_idx, np.asarray(zero_shot_nll, float), one_shot_nll)
    return {"icl_answer_nll": icl_answer_nll, "demo_gain": demo_gain}
