"""One writer per output directory and cache, and a clear word when a run is interrupted.

Two runs into the same ``--out`` (or the same cache) would do the same extraction twice and write
each other's files; the second one stops at once with a message naming the directory and the
process that holds it. The lock is an advisory ``flock`` on ``<dir>/.mmselect.lock``: the kernel
drops it when its process dies, so a killed run (even ``kill -9``) leaves no stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import MMSelectError

LOCK_FILE = ".mmselect.lock"

# Directories this process holds (a run holds its --out, then extracts into --out/features).
_held: dict[str, int] = {}


class DirectoryBusyError(MMSelectError):
    """Another process is writing to the same output directory or cache."""


class RunInterrupted(MMSelectError, KeyboardInterrupt):
    """Ctrl-C during a run: says that rerunning the same command resumes (an ``MMSelectError`` for
    the CLI's one-line message, a ``KeyboardInterrupt`` for everything else)."""

    exit_code = 130


@contextlib.contextmanager
def directory_lock(directory: str | os.PathLike, *, what: str = "output directory") -> Iterator[None]:
    """Hold ``directory`` for this process; raise :class:`DirectoryBusyError` when another holds it.
    Re-entrant within one process. A path that is not a directory (an error reported elsewhere) is
    not locked."""
    path = Path(directory)
    if path.exists() and not path.is_dir():
        yield
        return
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        yield  # reported by the output checks
        return
    real = os.path.realpath(path)
    if real in _held:
        _held[real] += 1
        try:
            yield
        finally:
            _held[real] -= 1
        return
    lock_path = Path(real) / LOCK_FILE
    handle = open(lock_path, "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        raise DirectoryBusyError(
            f"another mmselect process{f' (pid {holder})' if holder else ''} is writing to the {what} {path}; "
            "wait for it to finish (rerunning the same command afterwards reuses its work) or choose another directory"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    _held[real] = 1
    try:
        yield
    finally:
        del _held[real]
        with contextlib.suppress(OSError):
            handle.seek(0)
            handle.truncate()
        # A run that stopped before writing anything leaves no directory it created behind.
        if created:
            with contextlib.suppress(OSError):
                if [p.name for p in Path(real).iterdir()] == [LOCK_FILE]:
                    lock_path.unlink()
                    Path(real).rmdir()
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()


def _cache_dir(kwargs: dict[str, Any]) -> Any:
    options = kwargs.get("options")
    return kwargs.get("cache_dir") or (getattr(options, "cache_dir", None) if options is not None else None)


def exclusive_run(function: Callable) -> Callable:
    """Decorate ``pipeline.extract``/``run``: hold ``out`` (and a cache directory given apart from it)
    while the function runs, and turn Ctrl-C into :class:`RunInterrupted`."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any):
        out = kwargs.get("out")
        if getattr(getattr(kwargs.get("options"), "runner", None), "num_shards", None):
            out = None  # the tasks of a job array write into one directory at once, by design
        try:
            with contextlib.ExitStack() as stack:
                if out is not None:
                    stack.enter_context(directory_lock(out))
                cache = _cache_dir(kwargs)
                if cache is not None and out is not None:
                    stack.enter_context(directory_lock(cache, what="cache directory"))
                return function(*args, **kwargs)
        except RunInterrupted:
            raise
        except KeyboardInterrupt:
            from .features.shards import finished_shards_written

            written = finished_shards_written()
            kept = f" ({written} shard(s) finished in this run are kept)" if written else ""
            raise RunInterrupted(
                f"interrupted{kept}; rerunning the same command resumes from the finished shards"
            ) from None

    return wrapper


__all__ = ["DirectoryBusyError", "LOCK_FILE", "RunInterrupted", "directory_lock", "exclusive_run"]
