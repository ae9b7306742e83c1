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

import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from .config import ConfigOpt, ConfiguredCommand
from .errors import ConfigError, MMSelectError
from .job_array import ArrayTaskDone, array_runner

app = typer.Typer(
    help="Select the most valuable part of a visual-instruction dataset before fine-tuning a multimodal LLM.\n\n"
    "Typical flow: `mmselect run` does everything; or `mmselect extract` once (the slow, GPU part) and "
    "`mmselect select` as often as you like with different methods and budgets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click layout: fits 80 columns without cutting option names, flags show no value placeholder.
    rich_markup_mode=None,
)
console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"mmselect {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug messages, and transformers' loading bars."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Warnings and errors only; no progress."),
    log_file: Optional[Path] = typer.Option(None, "--log-file", help="Also append every message and progress line, with timestamps, to this file."),
):
    """Select the most valuable part of a visual-instruction dataset before fine-tuning a multimodal LLM.

    Typical flow: `mmselect run` does everything; or `mmselect extract` once (the slow, GPU part) and
    `mmselect select` as often as you like with different methods and budgets. Options go before the
    command: `mmselect -q --log-file job.log run ...`.
    """
    from .logs import NORMAL, QUIET, VERBOSE, configure

    if verbose and quiet:
        raise typer.BadParameter("--verbose and --quiet exclude each other")
    configure(VERBOSE if verbose else QUIET if quiet else NORMAL, log_file)

BUDGET_HELP = "How much to keep: a fraction of the usable records (0.15, or 15%) or a count (5000)."
PARAM_HELP = (
    "Method parameter as KEY=VALUE, repeatable (e.g. -p normalize=minmax -p lam=0.1). "
    "VALUE is read as JSON when it parses (numbers, true/false, lists), else as a string. "
    "`mmselect methods --verbose` lists each method's parameters."
)


def _parse_params(items: list[str] | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"parameter {item!r} is not KEY=VALUE")
        key, value = item.split("=", 1)
        try:
            params[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            params[key.strip()] = value
    return params


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _runner_options(runner: str, address: str | None, workers: int | None) -> dict[str, Any]:
    if runner != "ray":
        if address or workers:
            raise typer.BadParameter("--ray-address and --workers need --runner ray")
        return {}
    return {"address": address, "workers": workers}


def _fail(err: Exception) -> None:
    console.print(f"[bold red]error:[/] {err}")
    raise typer.Exit(code=getattr(err, "exit_code", 2))  # 2: a user error; 130: interrupted


def _offline_if_tiny(model: str) -> None:
    if model.startswith("tiny-"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _summary(out: Path, result) -> None:
    if isinstance(result, list):  # several budgets: one output directory each
        for directory in sorted(p for p in out.glob("budget-*") if (p / "manifest.json").exists()):
            _summary(directory, None)
        return
    manifest = json.loads((out / "manifest.json").read_text())
    counts = manifest["counts"]
    duplicates = f", {counts['duplicates']:,} of them duplicates" if counts.get("duplicates") else ""
    console.print(
        f"[green]selected {counts['selected']:,}[/] of {counts['input_records']:,} records "
        f"({counts['not_selected']:,} not selected{duplicates}, {counts['rejected']:,} rejected) -> {out}"
    )
    if manifest["outputs"].get("subset"):
        console.print(f"  subset:    {out / manifest['outputs']['subset']}")
    for name in manifest["outputs"].get("trainer_subset") or []:
        console.print(f"  trainer:   {out / name}")
    console.print(f"  scores:    {out / 'selection.parquet'}")
    console.print(f"  report:    {out / 'report.html'} (and report.md)")
    if counts["rejected"]:
        console.print(f"  rejected:  {out / 'rejected.jsonl'}")


DeviceMapOpt = typer.Option(
    None, "--device-map",
    help="auto: spread a model larger than one GPU over all GPUs (needs `pip install 'mmselect[multi-gpu]'`); "
    "replaces --device.",
)
MaxRejectedOpt = typer.Option(
    0.1, "--max-rejected", help="Stop when more than this share of the records is rejected (e.g. a wrong --image-root); "
    "1 goes on with whatever is usable.")
DeviceOpt = typer.Option("auto", "--device", help="auto (the first CUDA GPU if there is one, else cpu), cpu, cuda, cuda:1, ...")
MaxLengthOpt = typer.Option(None, "--max-length", help="Tokens per sample (default: the model's context length); longer samples lose their text tail, a sample whose image tokens do not fit is rejected.")
NumWorkersOpt = typer.Option(
    None, "--num-workers", min=0,
    help="Processes preparing batches (chat template, images, tokenizer) ahead of the model; default "
    "min(8, CPUs - 1) on a GPU, 0 on the CPU. The features do not depend on it.")
RunnerOpt = typer.Option("local", "--runner", help="local (this process) or ray (Ray Data workers, one per GPU; `pip install 'mmselect[ray]'`).")
RayAddressOpt = typer.Option(None, "--ray-address", help="Ray cluster to use (auto, ray://host:10001); default: start Ray on this machine.")
WorkersOpt = typer.Option(None, "--workers", help="Ray workers (default: one per GPU of the cluster).")
ModelOpt = typer.Option("tiny-llava", "--model", "-m", help="Preset name (`mmselect models`), Hugging Face id, or local directory. The default, tiny-llava, is a random-weight test model: its selections carry no meaning.")
FEATURE_PARAM_HELP = (
    "Feature option as NAME.KEY=VALUE, repeatable (e.g. --feature-param coincide.layers=[3,7,11] "
    "--feature-param clip_score.model=openai/clip-vit-large-patch14). VALUE is read as JSON when it parses. "
    "`mmselect features` lists each feature's options."
)
FeatureParamOpt = typer.Option(None, "--feature-param", help=FEATURE_PARAM_HELP)
NumShardsOpt = typer.Option(
    None, "--num-shards", min=1,
    help="Split the extraction over N tasks of a job array (no Ray): each computes its share of the shards "
    "into the shared cache under --out, then stops; the same command without --num-shards assembles.",
)
ShardIndexOpt = typer.Option(
    None, "--shard-index", min=0,
    help="This task's index, 0..N-1 (default inside a Slurm array: SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN).",
)
SCORES_HELP = ("Your own score_<capability>/styles file (CSV, JSONL, parquet; keyed by key or position), "
               "e.g. mmSSR scores computed elsewhere.")
AllowMissingScoresOpt = typer.Option(
    False, "--allow-missing-scores",
    help="Samples without a row in --scores get NaN scores instead of failing.",
)


DedupOpt = typer.Option(
    "exact", "--dedup",
    help="Duplicate guard before selecting: exact (identical records keep their first occurrence), near "
    "(also same-task records within --dedup-threshold cosine of an earlier kept one), none (each "
    "method's official behaviour). Duplicates are not selected; the budget counts the rest.",
)
DedupThresholdOpt = typer.Option(0.95, "--dedup-threshold", help="Cosine similarity at or above which --dedup near marks a duplicate.")
DedupEmbeddingOpt = typer.Option(None, "--dedup-embedding", help="Embedding --dedup near compares (default: last_token, else mean_embed, else visual_mean).")
ExportFormatOpt = typer.Option(
    "same", "--export-format",
    help="Also write the subset for a trainer: llava-json, sharegpt (LLaMA-Factory, ms-swift; with a "
    "dataset_info.json entry), hf (parquet for TRL). same: only the input's own format.",
)
TaskPresetOpt = typer.Option(None, "--task-preset", help="How records get their task without --task-field: image-dir, llava-665k (LLaVA-1.5's ten sources; the default for DataTailor with the LLaVA-1.5 presets).")
TemplateOpt = typer.Option(None, "--template", help="Chat template: vicuna_v1, qwen2_vl, chatml_image, chat_template (the processor's own); default: the preset's or the model family's.")


def _extract_options(**fields: Any):
    """An :class:`ExtractOptions` from the command's values (``feature_param``: NAME.KEY=VALUE items)."""
    from .features.context import ExtractOptions
    from .features.registry import check_feature_params, parse_feature_params

    feature_params = parse_feature_params(fields.pop("feature_param", None))
    check_feature_params(feature_params)
    return ExtractOptions(feature_params=feature_params, **fields)


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


@app.command()
def methods(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also each method's parameters (meaning, default, allowed values) and the features it reads."),
    name: Optional[str] = typer.Argument(None, help="Only this method (implies --verbose)."),
):
    """List the registered selection methods."""
    from .methods import get_method, list_methods

    listed = list_methods()
    if name is not None:
        if name not in listed:
            _fail(ConfigError(f"unknown method {name!r}; methods: {', '.join(listed)}"))
        listed, verbose = {name: listed[name]}, True
    out = Console()
    if not verbose:
        table = Table(show_header=True, header_style="bold")
        table.add_column("method", no_wrap=True)
        table.add_column("what it does")
        for method_name, summary in listed.items():
            table.add_row(method_name, summary)
        out.print(table)
        return
    for method_name, summary in listed.items():
        out.print(f"[bold]{method_name}[/]: {summary}", highlight=False)
        try:
            instance = get_method(method_name)
        except Exception as err:  # noqa: BLE001 - a method whose optional dependency is missing
            out.print(f"  unavailable: {err}\n", highlight=False)
            continue
        out.print(f"  features: {', '.join(instance.extract_features()) or '- (none: no model needed)'}", highlight=False)
        table = Table(box=None, show_header=True, header_style="bold", padding=(0, 1, 0, 2))
        table.add_column("parameter", no_wrap=True)
        table.add_column("default", overflow="fold")
        table.add_column("meaning (allowed values)", ratio=1)
        for param, default, meaning, allowed in type(instance).describe_params():
            table.add_row(param, repr(default), f"{meaning or '-'} ({allowed})")
        if table.row_count:
            out.print(table)
        out.print()


@app.command()
def features():
    """List the features `extract --features` computes: what each writes, its options
    (--feature-param NAME.KEY=VALUE) and which methods read it."""
    from .features.listing import feature_table

    rows = feature_table()
    table = Table(show_header=True, header_style="bold", show_lines=True, expand=True)
    table.add_column("feature", no_wrap=True)
    table.add_column("what it is / writes", ratio=3)
    table.add_column("options: default, meaning", ratio=3)
    table.add_column("read by", ratio=1)
    for row in rows:
        reads = f"\nreads: {', '.join(row['needs'])}" if row["needs"] else ""
        reads += f"\nloads the model named by {' and '.join(row['models'])}" if row["models"] else ""
        table.add_row(row["name"], f"{row['summary']}\nwrites: {', '.join(row['writes']) or '-'}{reads}",
                      "\n".join(f"{k}={v['default']!r}: {v['help']}" for k, v in row["options"].items()) or "-",
                      ", ".join(row["methods"]) or "-")
    Console(width=max(Console().width, 140)).print(table)


@app.command()
def models():
    """List the model presets (any other Hugging Face id or local directory works too)."""
    from .models.registry import PRESETS, describe_revision, list_models

    table = Table(show_header=True, header_style="bold")
    table.add_column("preset", no_wrap=True)
    table.add_column("model")
    table.add_column("revision", no_wrap=True)
    for name, description in list_models().items():
        table.add_row(name, description, describe_revision(PRESETS[name]))
    Console().print(table)


@app.command("assemble-stage1")
def assemble_stage1(
    out: Path = typer.Option(..., "--out", "-o", help="New directory for the assembled model (then: --model OUT)."),
    llm: Optional[str] = typer.Option(None, "--llm", help="Language model directory or hub id (default: lmsys/vicuna-7b-v1.5)."),
    vision: Optional[str] = typer.Option(None, "--vision", help="CLIP directory or hub id (default: openai/clip-vit-large-patch14-336)."),
    projector: Optional[str] = typer.Option(
        None, "--projector",
        help="Stage-1 mm_projector.bin: a file or owner/name[:file] (default: liuhaotian/llava-v1.5-mlp2x-336px-pretrain-vicuna-7b-v1.5).",
    ),
    dtype: str = typer.Option("bfloat16", "--dtype", help="Weights dtype of the saved model."),
):
    """Build LLaVA-1.5-7B after stage 1 (DataTailor's feature model) from its public parts, as a normal
    transformers directory (LlavaForConditionalGeneration + processor)."""
    from .models.stage1 import RECIPES, assemble_stage1 as assemble

    recipe = RECIPES["llava-1.5-7b-stage1"]
    try:
        path = assemble(llm or recipe.llm, vision or recipe.vision, projector or recipe.projector, out, dtype=dtype)
    except MMSelectError as err:
        _fail(err)
    console.print(f"[green]stage-1 model[/] -> {path} (use --model {path})")


@app.command()
def report(
    out: Path = typer.Argument(..., help="Output directory of `mmselect run` / `mmselect select`."),
    data: Optional[Path] = typer.Option(None, "--data", help="The dataset, when it has moved since the run (default: the manifest's)."),
    image_root: Optional[Path] = typer.Option(None, "--image-root", help="Image root, when it has moved since the run."),
):
    """Write OUT/report.html (counts, composition, score distributions, record cards, diagnostics)."""
    from .report import write_html_report

    try:
        path = write_html_report(out, data=data, image_root=image_root)
    except MMSelectError as err:
        _fail(err)
    console.print(f"[green]report[/] -> {path}")


@app.command()
def compare(
    outs: list[Path] = typer.Argument(..., help="Two or more output directories to compare."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for compare.html and compare.md."),
):
    """Compare selections: overlap (Jaccard), composition by task, records only one kept, rank agreement."""
    from .report import compare as compare_outputs

    try:
        path = compare_outputs(outs, out)
    except MMSelectError as err:
        _fail(err)
    console.print(f"[green]comparison[/] -> {path} (and {path.with_name('compare.md')})")


@app.command()
def arena(
    out: Path = typer.Option(..., "--out", "-o", help="Arena directory (rerunning resumes what is missing)."),
    config: Optional[Path] = typer.Option(None, "--config", help="World/training config (TOML, JSON or YAML; default: the default arena)."),
    methods: Optional[str] = typer.Option(None, "--methods", help="Comma-separated methods (default: every registered method)."),
    budgets: str = typer.Option("0.2", "--budgets", help="Comma-separated budgets, e.g. 0.1,0.2."),
    seeds: int = typer.Option(1, "--seeds", help="Seeds 0..N-1 for every condition."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda (bigger worlds)."),
):
    """Train a small LLaVA on every method's selection of a world with known pathologies; write results.{json,md}."""
    from .arena import run_arena

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        summary = run_arena(out, config=config, methods=_split(methods) if methods else None,
                            budgets=_split(budgets), seeds=seeds, device=device)
    except MMSelectError as err:
        _fail(err)
    console.print(f"[green]arena[/] {summary['runs_done']} runs -> {out / 'results.md'}")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
