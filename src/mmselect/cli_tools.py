"""The CLI's listing and tool commands: methods, features, models, assemble-stage1, report, compare, arena."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .cli_app import app, console
from .cli_common import _fail, _split
from .errors import ConfigError, MMSelectError

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
    dedup: str = typer.Option("exact", "--dedup", help="Duplicate guard of random's and the methods' selections "
                              "(none, exact, near). Another guard than exact writes results-dedup-<mode>.{json,md} "
                              "beside results.{json,md}, reusing the world, reference model, features and references."),
):
    """Train a small LLaVA on every method's selection of a world with known pathologies; write results.{json,md}."""
    from .arena import run_arena

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        summary = run_arena(out, config=config, methods=_split(methods) if methods else None,
                            budgets=_split(budgets), seeds=seeds, device=device, dedup=dedup)
    except MMSelectError as err:
        _fail(err)
    from .arena.results import results_stem

    console.print(f"[green]arena[/] {summary['runs_done']} runs -> {out / (results_stem(dedup) + '.md')}")
