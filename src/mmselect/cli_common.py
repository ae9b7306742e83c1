"""What the CLI commands share: option definitions with their help, parsing of KEY=VALUE items,
the error exit, and the summary printed after a selection."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer

from .cli_app import console
from .errors import ConfigError

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
