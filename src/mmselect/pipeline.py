"""The Python API behind the CLI: ``extract``, ``select`` and ``run``.

Every input record ends up exactly once as selected, not selected, or rejected, and the
manifest's counts add up. This layer names no method and no feature: methods say which features
they need (and the options they imply), the features registry says what each feature is.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from .budget import Budget
from .data.dataset import Dataset
from .data.readers import read_dataset
from .data.rejected import RejectedRecord
from .dedup import (
    expand_to_all_rows,
    find_duplicates,
    guard_features,
    pool_features,
)
from .errors import ConfigError, MMSelectError
from .export import (
    build_manifest,
    read_rejected_records,
    write_rejected,
)
from .features.context import ExtractOptions
from .models.templates import count_moved_placeholders
from .features.alignment import align_to_dataset
from .features.store import FeatureSet
from .locking import exclusive_run
from .select_options import SelectOptions
from .validation import FEATURE_OUTPUTS, after_extraction, before_model, check_budgets, check_extract_options, check_output_dir, \
    check_model_available, stop_if_nothing_usable
from .methods import get_method
from .methods.base import SelectionResult
from .runners import make_runner
from .select_outputs import check_budget_after_guard, parse_budgets, write_selection
from .trainer_formats import EXPORT_FORMATS


def _read_rejects(dataset: Dataset) -> list[RejectedRecord]:
    return list(dataset.rejected)


def _extract_options(options: ExtractOptions | None, fields: dict[str, Any]) -> ExtractOptions:
    """``options`` (default: the defaults) with the keyword ``fields`` that are given; the former
    per-feature keywords (``clip_model=...``) become feature options."""
    from .features.registry import LEGACY_OPTIONS, legacy_feature_params, merge_feature_params

    legacy = {k: fields.pop(k) for k in list(fields) if k in LEGACY_OPTIONS}
    options = (options or ExtractOptions()).replace(**fields)
    if legacy:
        options = options.replace(feature_params=merge_feature_params(legacy_feature_params(**legacy), options.feature_params))
    return options


@exclusive_run
def extract(
    data: str | os.PathLike,
    *,
    out: str | os.PathLike,
    features: list[str] | None = None,
    methods: list[str] | None = None,
    image_root: str | os.PathLike | None = None,
    task_field: str | None = None,
    task_preset: str | None = None,
    strict: bool = False,
    dataset: Dataset | None = None,
    options: ExtractOptions | None = None,
    max_rejected: float | None = None,
    **option_fields: Any,
) -> FeatureSet:
    """Read ``data``, run the model once, write a features directory to ``out``.

    ``features``: feature names (``mmselect features``); ``methods`` adds the features those
    methods need, with the options they imply, so several methods share one pass. How to extract
    is ``options`` (:class:`~mmselect.features.context.ExtractOptions`); its fields may also be
    given as keywords (``model=``, ``batch_size=``, ``device=``, ``feature_params=``, ...), which
    take precedence. With ``runner="ray"`` this process describes the model without loading its
    weights (the workers load them), and the cache directory must be visible to every worker.
    ``task_preset``: how records get their task when no ``task_field`` names it
    (:mod:`mmselect.data.tasks`); default: the model preset's when a method that splits by task asks
    for it (LLaVA-1.5 presets: ``llava-665k`` for DataTailor), else the image directory.
    """
    from .features.extract import run_features
    from .features.context import ExtractionContext
    from .features.registry import merge_feature_params, resolve_features

    options = _extract_options(options, option_fields)
    names = list(features or [])
    implied: dict[str, dict[str, Any]] = {}
    selectors = [get_method(method_name) for method_name in methods or []]
    for method in selectors:
        names += [n for n in method.extract_features() if n not in names]
        implied = merge_feature_params(implied, method.feature_params())
    options = options.replace(feature_params=merge_feature_params(implied, options.feature_params))
    resolve_features(names, options.feature_params)  # unknown names and options fail before any work
    check_extract_options(options)
    out = check_output_dir(out, FEATURE_OUTPUTS)
    if dataset is None and names:
        check_model_available(options.model, options.revision)
    started = time.time()
    if dataset is None:
        task_preset = default_task_preset(task_field, task_preset, selectors, options.model)
        dataset = read_dataset(data, image_root=image_root, task_field=task_field, task_preset=task_preset, strict=strict)
    before_model(dataset, _read_rejects(dataset), out=out, model=options.model if names else None, max_rejected=max_rejected)
    runner = make_runner(options.runner, **(options.runner_options or {}))
    bundle = _main_model(options, runner) if names else None  # a method that reads no feature needs no model
    context = ExtractionContext(options, runner, Path(options.cache_dir or out / "cache"), bundle)
    featureset, extraction_rejects = run_features(dataset.samples, names, context)
    if strict and extraction_rejects:
        first = extraction_rejects[0]
        raise MMSelectError(f"record {first.key}: {first.reason} ({dataset.path})")
    rejected = _read_rejects(dataset) + extraction_rejects
    after_extraction(dataset, rejected, max_rejected=max_rejected, cache=context.cache_dir)
    featureset.manifest.update(
        build_manifest(
            started=started,
            counts={"input_records": dataset.n_records, "rejected": len(rejected), "extracted": featureset.n},
            data=str(dataset.path),
            image_root=str(image_root) if image_root else None,
            model=bundle.manifest_entry() if bundle is not None else None,
            task_preset=task_preset,
            placeholders_moved=(count_moved_placeholders(bundle.template, featureset_samples(dataset, featureset))
                                if bundle is not None else 0),
            features=names,
            feature_columns=featureset.column_names,
            feature_arrays=featureset.array_names,
            runner=type(runner).__name__,
        )
    )
    featureset = featureset.added_to(out)  # a second extraction adds its features to the directory
    featureset.save(out)
    write_rejected(sorted(rejected, key=lambda r: r.position), out)
    featureset.root = out
    return featureset


def default_task_preset(task_field: str | None, task_preset: str | None, selectors, model: str) -> str | None:
    """The user's ``task_preset``; else, when no ``task_field`` is given and a method splits its
    budget by task (``uses_preset_tasks``), the model preset's task preset; else ``None``."""
    if task_preset is not None or task_field is not None:
        return task_preset
    if any(getattr(s, "uses_preset_tasks", False) for s in selectors):
        from .models.registry import PRESETS

        preset = PRESETS.get(model)
        return getattr(preset, "task_preset", None)
    return None


def featureset_samples(dataset: Dataset, featureset: FeatureSet):
    """The dataset's samples that have a feature row."""
    return (s for s in dataset.samples if s.key in featureset.row_of)


def _main_model(options: ExtractOptions, runner):
    from .models.registry import load_model, resolve_device

    device, dtype = resolve_device(options.device), options.dtype
    if getattr(runner, "remote", False):
        # The workers compute; this process only describes the model (no weights), in their dtype.
        if dtype == "auto":
            dtype = "bfloat16" if runner.uses_gpus else "float32"
        device = "meta"
    return load_model(options.model, revision=options.revision, device=device, dtype=dtype,
                      trust_remote_code=options.trust_remote_code, template=options.template,
                      device_map=options.device_map)


def _account_for_dataset(featureset: FeatureSet, dataset: Dataset, by_key: dict, rejected: list[RejectedRecord]) -> list[RejectedRecord]:
    """Every record of ``dataset`` without a feature row, and every record the reader rejected,
    among the rejected (once each), in source order. ``by_key``: the dataset's samples by key."""
    unknown = [k for k in featureset.keys if k not in by_key]
    if unknown:
        raise MMSelectError(
            f"{len(unknown)} feature row(s) match no record of {dataset.path} (first: {unknown[0]}); "
            "were the features extracted from another version of this file?"
        )
    already = {r.key for r in rejected}
    rejected = list(rejected)
    for sample in dataset.samples:
        if sample.key not in featureset.row_of and sample.key not in already:
            rejected.append(RejectedRecord.for_sample(sample, "no features for this record", "select"))
    rejected.extend(item for item in dataset.rejected if item.key not in already)
    return sorted(rejected, key=lambda r: r.position or 0)


def select(
    features: FeatureSet | str | os.PathLike,
    *,
    method: str,
    budget: str | int | float | Budget | list,
    out: str | os.PathLike,
    params: dict[str, Any] | None = None,
    data: str | os.PathLike | None = None,
    image_root: str | os.PathLike | None = None,
    task_field: str | None = None,
    dataset: Dataset | None = None,
    rejected: list[RejectedRecord | dict[str, Any]] | None = None,
    extra_manifest: dict[str, Any] | None = None,
    options: SelectOptions | None = None,
    scores: str | os.PathLike | None = None,
    allow_missing_scores: bool | None = None,
    dedup: str | None = None,
    dedup_threshold: float | None = None,
    dedup_embedding: str | None = None,
    export_format: str | None = None,
) -> SelectionResult | list[SelectionResult]:
    """Select from a features directory (or an in-memory :class:`FeatureSet`) and export.

    With ``data`` (or ``dataset``) the subset is written in the input's format (and, with
    ``export_format``, in a trainer's format too) and every input record is accounted for; without
    it, only ``selection.parquet`` and the manifest are written. How to select is ``options``
    (:class:`~mmselect.select_options.SelectOptions`: your own ``scores`` file, the duplicate
    guard, the export format); its fields may also be given as keywords, which take precedence.

    The duplicate guard (``dedup``: ``exact`` by default, ``near``, ``none``) sets repeated records
    aside before the method sees any record; the budget applies to the records left. ``budget``
    may be a list (or ``"0.1,0.2"``): the method is fitted once and each budget is written to
    ``out/budget-<budget>/``; a list of results is returned.
    """
    started = time.time()
    options = (options or SelectOptions()).replace(
        scores=scores, allow_missing_scores=allow_missing_scores, dedup=dedup, dedup_threshold=dedup_threshold,
        dedup_embedding=dedup_embedding, export_format=export_format,
    )
    budgets = parse_budgets(budget)
    featureset = features if isinstance(features, FeatureSet) else FeatureSet.load(features)
    if options.scores is not None:
        from .features.user_scores import merge_user_scores

        featureset = merge_user_scores(featureset, options.scores, allow_missing=options.allow_missing_scores)
    if options.export_format not in EXPORT_FORMATS:
        raise ConfigError(f"--export-format must be one of {', '.join(EXPORT_FORMATS)}, got {options.export_format!r}")
    out = check_output_dir(out)
    selector = get_method(method, **dict(params or {}))
    if rejected is None:
        rejected = read_rejected_records(featureset.root) if featureset.root is not None else []
    rejected = [RejectedRecord.from_json(r) for r in rejected]
    if dataset is None and data is not None:
        dataset = read_dataset(data, image_root=image_root, task_field=task_field, check_images=False)
    by_key = dataset.by_key() if dataset is not None else {}
    featureset = align_to_dataset(featureset, dataset, by_key) if dataset is not None else featureset
    if dataset is not None:
        rejected = _account_for_dataset(featureset, dataset, by_key, rejected)
    guard = find_duplicates(featureset, options.dedup, threshold=options.dedup_threshold,
                            embedding=options.dedup_embedding, seed=selector.get_params().get("seed") or 1234)
    needed_arrays = [need.name for need in selector.feature_needs() if need.kind == "array"]
    pool = pool_features(featureset, guard, needed_arrays, out / ".dedup-pool")
    for one in budgets:
        check_budget_after_guard(one, pool.n, guard)
    selector.fit(pool)
    results = []
    for one in budgets:
        target = out if len(budgets) == 1 else out / f"budget-{one}"
        target.mkdir(parents=True, exist_ok=True)
        result = expand_to_all_rows(selector.select_budget(one), guard)
        write_selection(
            target, result, featureset=featureset, selector=selector, method=method, budget=one, guard=guard,
            dataset=dataset, by_key=by_key, rejected=rejected, export_format=options.export_format,
            started=started, extra_manifest=extra_manifest,
        )
        results.append(result)
    shutil.rmtree(out / ".dedup-pool", ignore_errors=True)
    return results[0] if len(budgets) == 1 and not isinstance(budget, (list, tuple)) else results


@exclusive_run
def run(
    data: str | os.PathLike,
    *,
    method: str,
    budget: str | int | float | Budget,
    out: str | os.PathLike,
    params: dict[str, Any] | None = None,
    image_root: str | os.PathLike | None = None,
    task_field: str | None = None,
    strict: bool = False,
    features_dir: str | os.PathLike | None = None,
    options: ExtractOptions | None = None,
    model: str | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    progress: bool | None = None,
    feature_params: dict[str, dict[str, Any]] | None = None,
    task_preset: str | None = None,
    select_options: SelectOptions | None = None,
    scores: str | os.PathLike | None = None,
    allow_missing_scores: bool | None = None,
    dedup: str | None = None,
    dedup_threshold: float | None = None,
    dedup_embedding: str | None = None,
    export_format: str | None = None,
    max_rejected: float | None = None,
) -> SelectionResult | list[SelectionResult]:
    """Read, extract what ``method`` needs, select, export: the whole job.

    How to extract is ``options``; ``model``, ``batch_size``, ``device``, ``progress`` and
    ``feature_params``, when given, replace its fields. The method's implied feature options
    (e.g. only the capabilities it samples) apply unless ``feature_params`` sets them. How to
    select is ``select_options`` (:class:`~mmselect.select_options.SelectOptions`); ``scores``,
    ``dedup*`` and ``export_format``, when given, replace its fields. They and a list of budgets
    work as in :func:`select`; ``dedup="near"`` extracts the guard's embedding too when the method
    reads none.
    """
    from .features.registry import merge_feature_params

    options = (options or ExtractOptions()).replace(model=model, batch_size=batch_size, device=device, progress=progress)
    select_options = (select_options or SelectOptions()).replace(
        scores=scores, allow_missing_scores=allow_missing_scores, dedup=dedup, dedup_threshold=dedup_threshold,
        dedup_embedding=dedup_embedding, export_format=export_format,
    )
    out = check_output_dir(out)
    selector = get_method(method, **(params or {}))
    if selector.extract_features():
        check_model_available(options.model, options.revision)  # before the dataset is read
    parse_budgets(budget)  # a malformed budget fails before any work
    task_preset = default_task_preset(task_field, task_preset, [selector], options.model)
    dataset = read_dataset(data, image_root=image_root, task_field=task_field, task_preset=task_preset, strict=strict)
    before_model(dataset, _read_rejects(dataset), out=features_dir or out / "features", model=None, max_rejected=max_rejected)
    check_budgets(parse_budgets(budget), len(dataset.samples), dataset.path)
    stop_if_nothing_usable(dataset, _read_rejects(dataset), out, method=method, n_usable=len(dataset.samples))
    options = options.replace(
        feature_params=merge_feature_params(selector.feature_params(), options.feature_params, feature_params)
    )
    feature_dir = Path(features_dir) if features_dir else out / "features"
    feature_names = selector.extract_features()
    feature_names += guard_features(select_options.dedup, select_options.dedup_embedding, feature_names)
    featureset = extract(
        data,
        out=feature_dir,
        features=feature_names,
        image_root=image_root,
        task_field=task_field,
        task_preset=task_preset,
        strict=strict,
        dataset=dataset,
        options=options,
        max_rejected=max_rejected,
    )
    stop_if_nothing_usable(dataset, read_rejected_records(feature_dir), out, method=method, n_usable=featureset.n)
    return select(
        featureset,
        method=method,
        budget=budget,
        out=out,
        params=params,
        dataset=dataset,
        rejected=read_rejected_records(feature_dir),
        extra_manifest={"feature_dir": str(feature_dir)},
        options=select_options,
    )


__all__ = ["ExtractOptions", "SelectOptions", "extract", "run", "select"]
