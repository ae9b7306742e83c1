"""Progress display: one rich bar per pass on a terminal, periodic plain lines everywhere else.

Every pass also logs ``description: done/total (pct) rate ETA`` lines through the ``mmselect``
logger, every ``MMSELECT_PROGRESS_SECONDS`` seconds (default 30) and when it ends: they are what a
Slurm/sbatch log or ``--log-file`` shows. On a terminal the live bar replaces them on screen.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.console import Console
from rich.text import Text

from .logs import log, progress_bar_wanted, progress_lines_wanted

DEFAULT_INTERVAL = 30.0


class _RateColumn(TextColumn):
    def __init__(self, unit: str):
        super().__init__("")
        self.unit = unit

    def render(self, task):
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f} {self.unit}/s" if speed else f"- {self.unit}/s", style="progress.data.speed")


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get("MMSELECT_PROGRESS_SECONDS", DEFAULT_INTERVAL)))
    except ValueError:
        return DEFAULT_INTERVAL


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class ProgressLines:
    """Plain progress lines: ``done/total``, percent, rate and ETA, logged at most every
    ``interval`` seconds (and always at the end). The rate is over the time since the previous
    line, so shards read back from the cache at the start of a resumed run inflate one line only."""

    def __init__(self, description: str, total: int, unit: str = "samples", interval: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.description, self.total, self.unit = description.strip(), int(total), unit
        self.interval = _interval() if interval is None else interval
        self.clock = clock
        self.started = self.last = clock()
        self.done = self.done_at_last = 0

    def line(self) -> str:
        now = self.clock()
        percent = f" ({100 * self.done / self.total:.1f}%)" if self.total else ""
        text = f"{self.description}: {int(self.done):,}/{self.total:,}{percent}"
        if self.done >= self.total - 1e-6:
            return text + f", done in {format_duration(now - self.started)}"
        window = now - self.last
        rate = (self.done - self.done_at_last) / window if window > 0 else 0.0
        if rate <= 0:
            return text + f", - {self.unit}/s, ETA -"
        return text + f", {rate:,.1f} {self.unit}/s, ETA {format_duration((self.total - self.done) / rate)}"

    def advance(self, n: int) -> None:
        self.done += n
        if self.clock() - self.last >= self.interval and self.done < self.total:
            log.info(self.line(), extra={"progress": True})
            self.last, self.done_at_last = self.clock(), self.done

    def finish(self) -> None:
        log.info(self.line(), extra={"progress": True})


@contextmanager
def progress_bar(description: str, total: int, enabled: bool = True, unit: str = "samples") -> Iterator[Callable[[int], None]]:
    """Progress of one pass; yields ``advance(n)``. A rich bar when stderr is a terminal (not with
    ``-q``), plain log lines always (shown where there is no bar; with ``-q`` only in the log file);
    nothing with ``enabled=False``."""
    if not enabled:
        yield lambda n: None
        return
    lines = ProgressLines(description, total, unit) if progress_lines_wanted() else None
    if not (progress_bar_wanted() and sys.stderr.isatty()):
        yield lines.advance if lines is not None else (lambda n: None)
        if lines is not None:
            lines.finish()
        return
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        _RateColumn(unit),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, transient=False, console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=total)

        def advance(n: int) -> None:
            bar.advance(task, n)
            if lines is not None:
                lines.advance(n)

        yield advance
    if lines is not None:
        lines.finish()


__all__ = ["ProgressLines", "format_duration", "progress_bar"]
