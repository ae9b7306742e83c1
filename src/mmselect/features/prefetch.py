"""Preparing work ahead of the device in one background thread."""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

_END = object()


def prefetched(items: list, prepare, depth: int) -> Iterator:
    """``prepare(item)`` for each item, in order, computed up to ``depth`` items ahead in one
    background thread (one thread: the tokenizer is not safe to share between threads)."""
    if depth <= 0:
        yield from map(prepare, items)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmselect-prepare") as pool:
        pending = deque(pool.submit(prepare, item) for item in items[:depth])
        upcoming = iter(items[depth:])
        while pending:
            ready = pending.popleft().result()
            following = next(upcoming, _END)
            if following is not _END:
                pending.append(pool.submit(prepare, following))
            yield ready


__all__ = ["prefetched"]
