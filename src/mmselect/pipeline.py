"""The Python API behind the CLI: ``extract``, ``select`` and ``run``.

Every input record ends up exactly once as selected, not selected, or rejected, and the
manifest's counts add up.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from .budget import Budget
from .data.readers import Dataset, read_dataset
from .errors import MMSelectError
from .export import (
    library_versions,
    read_rejected,
    write_manifest,
    write_rejected,
    write_selection_table,
    write_subset,
)
from .features.store import FeatureSet
from .methods import get_method
from .methods.base import SelectionResult
from .report import write_html_report, write_report
from .runners import Runner, make_runner


def _data_rejects(dataset: Dataset) -> list[dict[str, Any]]:
    return [dict(r.to_json(), stage="read") for r in dataset.rejected]


def extract(
    data: str | os.PathLike,
    *,
    out: str | os.PathLike,
    model: str = "tiny-llava",
    features: list[str] | None = None,
    methods: list[str] | None = None,
    image_root: str | os.PathLike | None = None,
    task_field: str | None = None,
    strict: bool = False,
    revision: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    batch_size: int = 8,
    shard_size: int = 256,
    max_length: int | None = None,
    array_dtype: str = "float32",
    feature_params: dict[str, dict[str, Any]] | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    dataset: Dataset | None = None,
    clip_model: str = "openai/clip-vit-large-patch14",
    scorer_model: str | None = None,
    styler_model: str | None = None,
    capabilities: list[str] | None = None,
    runner: str | Runner | None = None,
    runner_options: dict[str, Any] | None = None,
) -> FeatureSet:
    """Read ``data``, run the model once, write a features directory to ``out``.

    ``runner``: ``local`` (default: this process, on ``device``) or ``ray`` (Ray Data workers, one
    per GPU by default; ``runner_options`` go to :class:`~mmselect.runners.RayRunner`). With Ray,
    this process describes the model without loading its weights (the workers load them), and the
    cache directory must be visible to every worker.

    ``features`` are extract options (see ``mmselect extract --help``); ``methods`` adds the
    options those methods need, so several methods share one pass. ``clip_score`` uses
    ``clip_model``; ``mmssr-scores`` generates with ``scorer_model``/``styler_model`` (default: the
    extraction model itself).
    """
    from .features.extract import extract_features
    from .features.reducers import FEATURES
    from .models.registry import load_model, resolve_device

    device = resolve_device(device)
    names = list(features or [])
    for method_name in methods or []:
        for name in get_method(method_name).extract_features():
            if name not in names:
                names.append(name)
    from .features.auxiliary import AUXILIARY_FEATURES

    names = [n for n in names if n in FEATURES or n in AUXILIARY_FEATURES or _raise_unknown_feature(n)]
    auxiliary = [n for n in names if n in AUXILIARY_FEATURES]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    if dataset is None:
        dataset = read_dataset(data, image_root=image_root, task_field=task_field, strict=strict)
    runner = make_runner(runner, **(runner_options or {}))
    model_device = device
    if getattr(runner, "remote", False):
        # The workers compute; this process only describes the model (no weights), in their dtype.
        if dtype == "auto":
            dtype = "bfloat16" if runner.uses_gpus else "float32"
        model_device = "meta"
    bundle = load_model(model, revision=revision, device=model_device, dtype=dtype, trust_remote_code=trust_remote_code)
    featureset, extraction_rejects = extract_features(
        dataset.samples,
        bundle,
        [n for n in names if n not in auxiliary],
        feature_params=feature_params,
        cache_dir=cache_dir or out / "cache",
        batch_size=batch_size,
        shard_size=shard_size,
        max_length=max_length,
        array_dtype=array_dtype,
        progress=progress,
        runner=runner,
    )
    if strict and extraction_rejects:
        first = extraction_rejects[0]
        raise MMSelectError(f"record {first['key']}: {first['reason']} ({dataset.path})")
    by_key = dataset.by_key()
    kept = [by_key[k] for k in featureset.keys]
    auxiliary_info: dict[str, Any] = {}
    if "clip_score" in auxiliary:
        from .features.auxiliary import clip_score_columns

        columns, info = clip_score_columns(
            kept, clip_model=clip_model, cache_dir=cache_dir or out / "cache", device=device, progress=progress
        )
        featureset = featureset.with_columns(**columns)
        auxiliary_info.update(info)
    if "mmssr-scores" in auxiliary:
        from .features.auxiliary import mmssr_score_columns

        if scorer_model or bundle.device.type == "meta":  # generation needs weights here
            scorer = load_model(scorer_model or model, revision=None if scorer_model else bundle.load_args["revision"],
                                device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        else:
            scorer = bundle
        styler = None if not styler_model else load_model(
            styler_model, device=device, dtype=dtype, trust_remote_code=trust_remote_code
        )
        columns, info = mmssr_score_columns(
            kept, scorer=scorer, styler=styler, cache_dir=cache_dir or out / "cache", capabilities=capabilities,
            batch_size=batch_size, shard_size=shard_size, progress=progress,
        )
        featureset = featureset.with_columns(**columns)
        auxiliary_info.update(info)
    rejected = _data_rejects(dataset) + [
        {"key": r["key"], "position": by_key[r["key"]].position, "id": by_key[r["key"]].id, "reason": r["reason"], "stage": "extract"}
        for r in extraction_rejects
    ]
    featureset.manifest.update(
        {
            "data": str(dataset.path),
            "image_root": str(image_root) if image_root else None,
            "model": bundle.describe(),
            "features": names,
            "feature_columns": [c for c in featureset.column_names],
            "feature_arrays": featureset.array_names,
            "versions": library_versions(),
            "counts": {
                "input_records": dataset.n_records,
                "rejected": len(rejected),
                "extracted": featureset.n,
            },
            "seconds": round(time.time() - started, 3),
            "runner": type(runner).__name__,
            **auxiliary_info,
        }
    )
    featureset.save(out)
    write_rejected(sorted(rejected, key=lambda r: r["position"]), out)
    featureset.root = out
    return featureset


def _raise_unknown_feature(name: str) -> bool:
    from .errors import ConfigError
    from .features.reducers import FEATURES

    raise ConfigError(f"unknown feature {name!r}; known: {', '.join(FEATURES)}")


def select(
    features: FeatureSet | str | os.PathLike,
    *,
    method: str,
    budget: str | int | float | Budget,
    out: str | os.PathLike,
    params: dict[str, Any] | None = None,
    data: str | os.PathLike | None = None,
    image_root: str | os.PathLike | None = None,
    task_field: str | None = None,
    dataset: Dataset | None = None,
    rejected: list[dict[str, Any]] | None = None,
    extra_manifest: dict[str, Any] | None = None,
    scores: str | os.PathLike | None = None,
) -> SelectionResult:
    """Select from a features directory (or an in-memory :class:`FeatureSet`) and export.

    With ``data`` (or ``dataset``) the subset is written in the input's format and every input
    record is accounted for; without it, only ``selection.parquet`` and the manifest are written.
    ``scores``: a file of your own ``score_<capability>`` / ``styles`` columns (CSV, JSONL or
    parquet, keyed by ``key`` or ``position``), merged in before selection (mmSSR without generation).
    """
    started = time.time()
    featureset = features if isinstance(features, FeatureSet) else FeatureSet.load(features)
    if scores is not None:
        from .methods.mmssr import load_user_scores

        featureset = featureset.with_columns(**load_user_scores(scores, featureset))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    params = dict(params or {})
    selector = get_method(method, **params)
    budget = Budget.parse(budget)
    if rejected is None:
        rejected = read_rejected(featureset.root) if featureset.root is not None else []
    if dataset is None and data is not None:
        dataset = read_dataset(data, image_root=image_root, task_field=task_field, check_images=False)
    if dataset is not None:
        known = dataset.by_key()
        unknown = [k for k in featureset.keys if k not in known]
        if unknown:
            raise MMSelectError(
                f"{len(unknown)} feature row(s) match no record of {dataset.path} (first: {unknown[0]}); "
                "were the features extracted from another version of this file?"
            )
        featured = set(featureset.keys.tolist())
        already = {r["key"] for r in rejected}
        for sample in dataset.samples:
            if sample.key not in featured and sample.key not in already:
                rejected.append({"key": sample.key, "position": sample.position, "id": sample.id, "reason": "no features for this record", "stage": "select"})
        for item in dataset.rejected:
            if item.key not in already:
                rejected.append(dict(item.to_json(), stage="read"))
        rejected.sort(key=lambda r: r.get("position", 0))
    result = selector.select(featureset, budget)
    positions = featureset.column("position") if featureset.has_column("position") else None
    write_selection_table(
        featureset.keys, featureset.tasks, result.selected, result.scores, result.values, out, positions, result.order
    )
    write_rejected(rejected, out)
    subset_path = None
    counts = {
        "input_records": dataset.n_records if dataset is not None else featureset.n + len(rejected),
        "selected": result.n_selected,
        "not_selected": int(featureset.n - result.n_selected),
        "rejected": len(rejected),
    }
    if counts["selected"] + counts["not_selected"] + counts["rejected"] != counts["input_records"]:
        raise MMSelectError(f"records unaccounted for: {counts}")
    if dataset is not None:
        key_to_position = {s.key: s.position for s in dataset.samples}
        subset_path = write_subset(dataset, [key_to_position[k] for k in featureset.keys[result.selected]], out)
    manifest = {
        "method": method,
        "params": selector.get_params(),
        "budget": str(budget),
        "budget_samples": result.info.get("budget", result.n_selected),
        "seed": selector.get_params().get("seed"),
        "data": str(dataset.path) if dataset is not None else None,
        "image_root": str(dataset.image_root) if dataset is not None and dataset.image_root else None,
        "features": str(featureset.root) if featureset.root is not None else None,
        "model": featureset.manifest.get("model"),
        "counts": counts,
        "outputs": {
            "subset": subset_path.name if subset_path else None,
            "selection": "selection.parquet",
            "rejected": "rejected.jsonl",
            "report": "report.md",
        },
        "method_info": result.info,
        "seconds": round(time.time() - started, 3),
    }
    manifest.update(extra_manifest or {})
    write_manifest(manifest, out)
    model_name = (featureset.manifest.get("model") or {}).get("name")
    write_report(
        out,
        method=method,
        params=selector.get_params(),
        budget=str(budget),
        counts=counts,
        tasks=featureset.tasks,
        selected=result.selected,
        scores=result.scores,
        rejected=rejected,
        info=result.info,
        model=model_name,
    )
    write_html_report(out, dataset=dataset, features=featureset)
    return result


def run(
    data: str | os.PathLike,
    *,
    method: str,
    budget: str | int | float | Budget,
    out: str | os.PathLike,
    model: str = "tiny-llava",
    params: dict[str, Any] | None = None,
    image_root: str | os.PathLike | None = None,
    task_field: str | None = None,
    strict: bool = False,
    features_dir: str | os.PathLike | None = None,
    **extract_options: Any,
) -> SelectionResult:
    """Read, extract what ``method`` needs, select, export: the whole job."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = read_dataset(data, image_root=image_root, task_field=task_field, strict=strict)
    selector = get_method(method, **(params or {}))
    if method == "mmssr" and (params or {}).get("capabilities"):
        extract_options.setdefault("capabilities", params["capabilities"])  # score only what is sampled
    feature_dir = Path(features_dir) if features_dir else out / "features"
    featureset = extract(
        data,
        out=feature_dir,
        model=model,
        features=selector.extract_features(),
        image_root=image_root,
        task_field=task_field,
        strict=strict,
        dataset=dataset,
        **extract_options,
    )
    return select(
        featureset,
        method=method,
        budget=budget,
        out=out,
        params=params,
        dataset=dataset,
        rejected=read_rejected(feature_dir),
        extra_manifest={"feature_dir": str(feature_dir)},
    )


__all__ = ["extract", "run", "select"]
