"""Command line: a thin layer over :mod:`mmselect.pipeline`.

Examples::

    mmselect run data.json --image-root images/ --method datatailor --budget 0.15 --model llava-1.5-7b --out out/
    mmselect extract data.json --image-root images/ --model qwen2-vl-2b --features spectrum,last_token --out feats/
    mmselect select --features feats/ --method datatailor --budget 5000 --out out/ --data data.json
    mmselect methods
    mmselect features
    mmselect models
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from .cli_app import app, console
from .cli_common import (
    AllowMissingScoresOpt,
    BUDGET_HELP,
    DedupEmbeddingOpt,
    DedupOpt,
    DedupThresholdOpt,
    DeviceMapOpt,
    DeviceOpt,
    ExportFormatOpt,
    FeatureParamOpt,
    MaxLengthOpt,
    MaxRejectedOpt,
    ModelOpt,
    NumShardsOpt,
    NumWorkersOpt,
    PARAM_HELP,
    RayAddressOpt,
    RunnerOpt,
    SCORES_HELP,
    ShardIndexOpt,
    TaskPresetOpt,
    TemplateOpt,
    WorkersOpt,
    _extract_options,
    _fail,
    _offline_if_tiny,
    _parse_params,
    _runner_options,
    _split,
    _summary,
)
from .config import ConfigOpt, ConfiguredCommand
from .errors import ConfigError, MMSelectError
from .job_array import ArrayTaskDone, array_runner


@app.command(cls=ConfiguredCommand)
def run(
    data: Path = typer.Argument(..., help="LLaVA JSON/JSONL or sharegpt file."),
    method: str = typer.Option(..., "--method", help="Selection method (`mmselect methods`)."),
    budget: str = typer.Option(..., "--budget", "-b", help=BUDGET_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory."),
    image_root: Optional[str] = typer.Option(None, "--image-root", help="Directory (or .zip/.tar, or fsspec URL: s3://, zip://::URL) the records' image paths are relative to."),
    model: str = ModelOpt,
    param: Optional[list[str]] = typer.Option(None, "--param", "-p", help=PARAM_HELP),
    task_field: Optional[str] = typer.Option(None, "--task-field", help="Record field holding the task/source label (default: first directory of the image path; 'text' for text-only)."),
    strict: bool = typer.Option(False, "--strict", help="Fail on the first bad record instead of rejecting it."),
    max_rejected: float = MaxRejectedOpt,
    device: str = DeviceOpt,
    device_map: Optional[str] = DeviceMapOpt,
    dtype: str = typer.Option("auto", "--dtype", help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16."),
    batch_size: int = typer.Option(8, "--batch-size", help="Samples per forward pass."),
    num_workers: Optional[int] = NumWorkersOpt,
    max_length: Optional[int] = MaxLengthOpt,
    revision: Optional[str] = typer.Option(None, "--revision", help="Model revision (commit, tag, branch)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow the model repository's own code to run."),
    runner: str = RunnerOpt,
    ray_address: Optional[str] = RayAddressOpt,
    workers: Optional[int] = WorkersOpt,
    feature_param: Optional[list[str]] = FeatureParamOpt,
    shard_size: int = typer.Option(256, "--shard-size", help="Samples per resumable shard."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress (a bar, or lines in a log)."),
    scores: Optional[Path] = typer.Option(None, "--scores", help=SCORES_HELP),
    allow_missing_scores: bool = AllowMissingScoresOpt,
    dedup: str = DedupOpt,
    dedup_threshold: float = DedupThresholdOpt,
    dedup_embedding: Optional[str] = DedupEmbeddingOpt,
    export_format: str = ExportFormatOpt,
    task_preset: Optional[str] = TaskPresetOpt,
    template: Optional[str] = TemplateOpt,
    num_shards: Optional[int] = NumShardsOpt,
    shard_index: Optional[int] = ShardIndexOpt,
    config: Optional[Path] = ConfigOpt,
):
    """Read, extract the features the method needs, select, export: the whole job.

    Several budgets (--budget 0.1,0.2) fit the method once and write OUT/budget-<b>/ each."""
    from . import pipeline

    _offline_if_tiny(model)
    try:
        options = _extract_options(
            model=model, device=device, device_map=device_map, dtype=dtype, batch_size=batch_size, shard_size=shard_size,
            max_length=max_length, revision=revision, trust_remote_code=trust_remote_code, progress=progress,
            num_workers=num_workers,
            runner=array_runner(runner, num_shards, shard_index),
            runner_options=_runner_options(runner, ray_address, workers), feature_param=feature_param,
            template=template,
        )
        result = pipeline.run(
            data, method=method, budget=budget, out=out, params=_parse_params(param), image_root=image_root,
            task_field=task_field, strict=strict, options=options, scores=scores, max_rejected=max_rejected,
            allow_missing_scores=allow_missing_scores, dedup=dedup, dedup_threshold=dedup_threshold,
            dedup_embedding=dedup_embedding, export_format=export_format, task_preset=task_preset,
        )
    except ArrayTaskDone as done:
        console.print(f"[green]{done}[/]")
        return
    except MMSelectError as err:
        _fail(err)
    _summary(out, result)


@app.command(cls=ConfiguredCommand)
def extract(
    data: Path = typer.Argument(..., help="LLaVA JSON/JSONL or sharegpt file."),
    out: Path = typer.Option(..., "--out", "-o", help="Features directory to write (see docs/features-format.md)."),
    features: Optional[str] = typer.Option(None, "--features", "-f", help="Comma-separated features (`mmselect features` lists them)."),
    methods: Optional[str] = typer.Option(None, "--for-methods", help="Comma-separated methods whose features to extract in the same pass."),
    image_root: Optional[str] = typer.Option(None, "--image-root", help="Directory (or .zip/.tar, or fsspec URL) the records' image paths are relative to."),
    model: str = ModelOpt,
    task_field: Optional[str] = typer.Option(None, "--task-field", help="Record field holding the task/source label (default: first directory of the image path)."),
    strict: bool = typer.Option(False, "--strict", help="Fail on the first bad record instead of rejecting it."),
    max_rejected: float = MaxRejectedOpt,
    device: str = DeviceOpt,
    device_map: Optional[str] = DeviceMapOpt,
    dtype: str = typer.Option("auto", "--dtype", help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16."),
    batch_size: int = typer.Option(8, "--batch-size", help="Samples per forward pass."),
    num_workers: Optional[int] = NumWorkersOpt,
    shard_size: int = typer.Option(256, "--shard-size", help="Samples per resumable shard."),
    max_length: Optional[int] = MaxLengthOpt,
    array_dtype: str = typer.Option("float32", "--array-dtype", help="float32 or float16 for the .npy arrays."),
    feature_param: Optional[list[str]] = FeatureParamOpt,
    # Deprecated spellings of feature options (hidden; --feature-param replaces them).
    layers: Optional[str] = typer.Option(None, "--coincide-layers", hidden=True),
    visual_layer: Optional[int] = typer.Option(None, "--visual-layer", hidden=True),
    clip_model: Optional[str] = typer.Option(None, "--clip-model", hidden=True),
    scorer_model: Optional[str] = typer.Option(None, "--scorer-model", hidden=True),
    styler_model: Optional[str] = typer.Option(None, "--styler-model", hidden=True),
    capabilities: Optional[str] = typer.Option(None, "--capabilities", hidden=True),
    revision: Optional[str] = typer.Option(None, "--revision", help="Model revision (commit, tag, branch)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow the model repository's own code to run."),
    runner: str = RunnerOpt,
    ray_address: Optional[str] = RayAddressOpt,
    workers: Optional[int] = WorkersOpt,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress (a bar, or lines in a log)."),
    num_shards: Optional[int] = NumShardsOpt,
    shard_index: Optional[int] = ShardIndexOpt,
    task_preset: Optional[str] = TaskPresetOpt,
    template: Optional[str] = TemplateOpt,
    config: Optional[Path] = ConfigOpt,
):
    """Run the model once over DATA and write a features directory.

    `mmselect features` lists the features, what they write, their options and which methods read
    them. Rerunning the same command after an interruption resumes from the finished shards.
    """
    from . import pipeline
    from .features.registry import legacy_feature_params, merge_feature_params

    _offline_if_tiny(model)
    try:
        names, method_names = _split(features), _split(methods)
        if not names and not method_names:
            raise ConfigError("give --features and/or --for-methods")
        options = _extract_options(
            model=model, device=device, device_map=device_map, dtype=dtype, batch_size=batch_size, shard_size=shard_size,
            max_length=max_length, array_dtype=array_dtype, revision=revision, num_workers=num_workers,
            trust_remote_code=trust_remote_code, progress=progress, runner=array_runner(runner, num_shards, shard_index),
            runner_options=_runner_options(runner, ray_address, workers), feature_param=feature_param,
            template=template,
        )
        deprecated = legacy_feature_params(
            coincide_layers=[int(x) for x in _split(layers)] or None, visual_layer=visual_layer, clip_model=clip_model,
            scorer_model=scorer_model, styler_model=styler_model, capabilities=_split(capabilities) or None,
        )
        options = options.replace(feature_params=merge_feature_params(deprecated, options.feature_params))
        featureset = pipeline.extract(
            data, out=out, features=names, methods=method_names, image_root=image_root,
            task_field=task_field, task_preset=task_preset, strict=strict, options=options,
            max_rejected=max_rejected,
        )
    except ArrayTaskDone as done:
        console.print(f"[green]{done}[/]")
        return
    except MMSelectError as err:
        _fail(err)
    counts = featureset.manifest["counts"]
    console.print(
        f"[green]extracted {counts['extracted']:,}[/] of {counts['input_records']:,} records "
        f"({counts['rejected']:,} rejected) -> {out}"
    )


@app.command(cls=ConfiguredCommand)
def select(
    features: Path = typer.Option(..., "--features", help="Features directory (from `mmselect extract`, or your own)."),
    method: str = typer.Option(..., "--method", help="Selection method (`mmselect methods`)."),
    budget: str = typer.Option(..., "--budget", "-b", help=BUDGET_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory."),
    data: Optional[Path] = typer.Option(None, "--data", help="The dataset the features came from; writes the subset in its format."),
    param: Optional[list[str]] = typer.Option(None, "--param", "-p", help=PARAM_HELP),
    task_field: Optional[str] = typer.Option(None, "--task-field", help="Record field holding the task/source label (with --data)."),
    scores: Optional[Path] = typer.Option(None, "--scores", help=SCORES_HELP),
    allow_missing_scores: bool = AllowMissingScoresOpt,
    dedup: str = DedupOpt,
    dedup_threshold: float = DedupThresholdOpt,
    dedup_embedding: Optional[str] = DedupEmbeddingOpt,
    export_format: str = ExportFormatOpt,
    config: Optional[Path] = ConfigOpt,
):
    """Select from a features directory; no model needed.

    Several budgets (--budget 0.1,0.15,0.2) fit the method once and write OUT/budget-<b>/ each."""
    from . import pipeline

    try:
        result = pipeline.select(
            features, method=method, budget=budget, out=out, params=_parse_params(param), data=data,
            task_field=task_field, scores=scores, allow_missing_scores=allow_missing_scores, dedup=dedup,
            dedup_threshold=dedup_threshold, dedup_embedding=dedup_embedding, export_format=export_format,
        )
    except MMSelectError as err:
        _fail(err)
    _summary(out, result)


# The listing and tool commands register after run/extract/select, so `--help` lists these first.
from . import cli_tools  # noqa: E402,F401


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
