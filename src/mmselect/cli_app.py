"""The ``mmselect`` Typer application, its global options (-v/-q/--log-file/--version) and console."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

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
