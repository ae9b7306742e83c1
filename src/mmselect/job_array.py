"""Extraction split over the tasks of a job array (Slurm ``--array``), without Ray.

Every task runs the same ``extract``/``run`` command with ``--num-shards N --shard-index I`` (or,
inside a Slurm array, ``--num-shards N`` alone: the index is ``SLURM_ARRAY_TASK_ID`` minus
``SLURM_ARRAY_TASK_MIN``) and the same ``--out``. The shards of the main model's pass are planned
deterministically from the data, so every task sees the same list; task I computes shards I, I+N,
I+2N, ... into the shared shard cache (with done-markers, as any run) and stops. A final command
without ``--shard-index`` (after the array, e.g. ``sbatch --dependency=afterok:<array job>``) finds
every shard finished and only assembles them, then runs the passes that build on the main pass
(CLIP score, CLIPPER pairs, mmSSR generations) and, for ``run``, selects. A shard a task did not
finish is computed by the final command.
"""

from __future__ import annotations

import os
from typing import Any

from .errors import ConfigError
from .runners import LocalRunner


class ArrayTaskDone(Exception):
    """Raised when an array task has written its shards: there is nothing more for it to do."""

    def __init__(self, index: int, num_shards: int, shards: int, samples: int, description: str):
        self.index, self.num_shards, self.shards, self.samples = index, num_shards, shards, samples
        super().__init__(
            f"array task {index} of {num_shards}: {shards} shard(s), {samples:,} samples of {description!r} in the "
            "cache; when every task is done, run the same command without --shard-index/--num-shards to assemble"
        )


class ArrayTaskRunner:
    """Run this task's share of the first pass's shards (``index``, ``index + num_shards``, ...) on
    ``inner`` (default: this process), then raise :class:`ArrayTaskDone`."""

    remote = False

    def __init__(self, num_shards: int, index: int, inner: Any = None):
        if num_shards < 1:
            raise ConfigError(f"--num-shards must be at least 1, got {num_shards}")
        if not 0 <= index < num_shards:
            raise ConfigError(f"--shard-index must be in 0..{num_shards - 1} (for --num-shards {num_shards}), got {index}")
        self.num_shards, self.index = num_shards, index
        self.inner = inner or LocalRunner()

    def mine(self, shards: list) -> list:
        return [shard for i, shard in enumerate(shards) if i % self.num_shards == self.index]

    def run_shards(self, shards, *, name_of, store, work, progress=True, total=0, description="") -> list:
        mine = self.mine(list(shards))
        samples = sum(len(shard) for shard in mine)
        self.inner.run_shards(mine, name_of=name_of, store=store, work=work, progress=progress, total=samples,
                              description=f"{description} [task {self.index}/{self.num_shards}]")
        raise ArrayTaskDone(self.index, self.num_shards, len(mine), samples, description)


def slurm_array_index(environ: dict[str, str] | None = None) -> int | None:
    """This task's 0-based index in a Slurm job array, or ``None`` outside one."""
    environ = os.environ if environ is None else environ
    task = environ.get("SLURM_ARRAY_TASK_ID")
    if task is None or not task.strip():
        return None
    try:
        return int(task) - int(environ.get("SLURM_ARRAY_TASK_MIN", "0") or 0)
    except ValueError:
        raise ConfigError(f"SLURM_ARRAY_TASK_ID={task!r} is not a number") from None


def array_runner(runner: Any, num_shards: int | None, shard_index: int | None,
                 environ: dict[str, str] | None = None) -> Any:
    """``runner`` as given when no sharding is asked; else an :class:`ArrayTaskRunner`."""
    if num_shards is None:
        if shard_index is not None:
            raise ConfigError("--shard-index needs --num-shards (the number of tasks in the array)")
        return runner
    if runner not in (None, "local"):
        raise ConfigError("--num-shards/--shard-index split the work without Ray; with --runner ray, Ray spreads it")
    if shard_index is None:
        shard_index = slurm_array_index(environ)
        if shard_index is None:
            raise ConfigError("--num-shards needs --shard-index I (0..N-1), or SLURM_ARRAY_TASK_ID in a Slurm job array")
    return ArrayTaskRunner(num_shards, shard_index)


__all__ = ["ArrayTaskDone", "ArrayTaskRunner", "array_runner", "slurm_array_index"]
