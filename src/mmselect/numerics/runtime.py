"""Thread-count control and per-stage timing shared by the methods."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with torch's intra-op thread count set to ``n`` (restored afterwards).

    One thread suits small LAPACK calls and many small matrices computed side by side: a
    multi-threaded 144 x 144 eigendecomposition can take 100x longer on a busy 2-core machine."""
    import torch

    previous = torch.get_num_threads()
    if n != previous:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def single_threaded():
    """:func:`torch_threads` with one thread."""
    return torch_threads(1)


class Stopwatch:
    """Accumulates wall-clock seconds per named stage (``timings`` keeps the stage order)."""

    def __init__(self):
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start

    def rounded(self) -> dict[str, float]:
        return {name: round(seconds, 3) for name, seconds in self.timings.items()}
