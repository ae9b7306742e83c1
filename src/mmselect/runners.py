"""Where work runs. Methods and feature code never know; a runner maps work over shards.

``LocalRunner`` runs shards in this process, one after another, skipping shards that already have a
done-marker. A Ray Data runner plugs in at the same seam (``run_shards``) for multi-GPU scale-out.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Protocol, TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

T = TypeVar("T")


class Runner(Protocol):
    def run_shards(self, shards, *, name_of, store, work, progress: bool, total: int, description: str) -> list: ...


class _RateColumn(TextColumn):
    def __init__(self, unit: str):
        super().__init__("")
        self.unit = unit

    def render(self, task):
        speed = task.finished_speed or task.speed
        from rich.text import Text

        return Text(f"{speed:,.1f} {self.unit}/s" if speed else f"- {self.unit}/s", style="progress.data.speed")


@contextmanager
def progress_bar(description: str, total: int, enabled: bool = True, unit: str = "samples") -> Iterator[Callable[[int], None]]:
    """A rich progress bar with a samples/s column; yields ``advance(n)``."""
    if not enabled:
        yield lambda n: None
        return
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        _RateColumn(unit),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


class LocalRunner:
    """Run every shard in this process; finished shards (done-marker present) are read back."""

    def run_shards(self, shards, *, name_of, store, work, progress=True, total=0, description="") -> list:
        outputs = []
        with progress_bar(description, total, progress) as advance:
            for shard in shards:
                name = name_of(shard)
                if store.done(name):
                    outputs.append(store.read(name))
                    advance(len(shard))
                    continue
                output = work(shard, advance)
                store.write(name, output)
                outputs.append(output)
        return outputs
