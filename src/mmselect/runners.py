"""Where work runs. Methods and feature code never know; a runner maps work over shards.

``LocalRunner`` runs shards in this process, one after another. ``RayRunner`` maps them with Ray Data
over a pool of workers (one per GPU by default), on one machine or a cluster. Both skip shards that
already have a done-marker and write each finished shard with one, so either can resume the other's
interrupted run.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol, TypeVar

from .progress import progress_bar

T = TypeVar("T")


class Runner(Protocol):
    remote: bool  # True: work runs in other processes, which load their own model

    def run_shards(self, shards, *, name_of, store, work, progress: bool, total: int, description: str) -> list: ...


class LocalRunner:
    """Run every shard in this process; finished shards (done-marker present) are read back."""

    remote = False

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


class _Shard:
    """One shard's samples as a single opaque value in a Ray Dataset row."""

    def __init__(self, samples: list):
        self.samples = samples


class _ShardWorker:
    """A Ray Data actor: holds ``work`` (which loads its model once, on first use) and writes each
    finished shard to the shared ``store`` with its done-marker."""

    def __init__(self, work, store):
        self.work = work
        self.store = store

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        for name, shard in zip(batch["name"], batch["shard"]):
            if not self.store.done(name):  # another attempt may have finished it
                self.store.write(name, self.work(shard.samples, lambda n: None))
        return {"name": list(batch["name"]), "samples": [len(shard.samples) for shard in batch["shard"]]}


class RayRunner:
    """Map shards over Ray Data actors: ``workers`` of them (default: one per GPU of the cluster,
    else one), each with ``gpus_per_worker`` GPUs (default 1 when the cluster has GPUs, else 0).

    The work must be picklable (:class:`~mmselect.features.work.ShardWork` and the other work units); each worker loads the
    model itself. The cache directory must be on storage every worker sees (one machine, or a
    shared filesystem on a cluster): workers write finished shards there, and the driver reads them.
    ``address``: an existing cluster (``auto``, ``ray://host:10001``); default: start Ray locally.
    """

    remote = True

    def __init__(self, workers: int | None = None, gpus_per_worker: float | None = None, address: str | None = None,
                 init_kwargs: dict[str, Any] | None = None):
        self.workers = workers
        self.gpus_per_worker = gpus_per_worker
        self.address = address
        self.init_kwargs = init_kwargs or {}

    def start(self) -> RayRunner:
        """Connect to (or start) Ray and settle the worker count and GPUs per worker."""
        try:
            import ray
        except ImportError:
            from .errors import ConfigError

            raise ConfigError("--runner ray needs Ray Data: pip install 'mmselect[ray]'") from None
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, logging_level=logging.WARNING,
                     log_to_driver=False, **self.init_kwargs)
        cluster_gpus = int(ray.cluster_resources().get("GPU", 0))
        if self.gpus_per_worker is None:
            self.gpus_per_worker = 1.0 if cluster_gpus else 0.0
        if self.workers is None:
            self.workers = max(1, int(cluster_gpus // self.gpus_per_worker) if self.gpus_per_worker else 1)
        return self

    @property
    def uses_gpus(self) -> bool:
        return bool(self.start().gpus_per_worker)

    def run_shards(self, shards, *, name_of, store, work, progress=True, total=0, description="") -> list:
        import ray

        self.start()
        names = [name_of(shard) for shard in shards]
        todo = [i for i, name in enumerate(names) if not store.done(name)]
        with progress_bar(f"{description} [ray x{self.workers}]", total, progress) as advance:
            advance(total - sum(len(shards[i]) for i in todo))
            if todo:
                ray.data.DataContext.get_current().enable_progress_bars = False  # ours shows samples/s
                # Shards travel as Python objects (Ray says so in a warning we need not show).
                logging.getLogger("ray.data").setLevel(logging.ERROR)
                rows = ray.data.from_items([{"name": names[i], "shard": _Shard(shards[i])} for i in todo])
                resources = {"num_gpus": self.gpus_per_worker} if self.gpus_per_worker else {}
                finished = rows.map_batches(
                    _ShardWorker, fn_constructor_kwargs={"work": work, "store": store}, batch_size=1,
                    compute=ray.data.ActorPoolStrategy(size=self.workers), **resources,
                )
                for row in finished.iter_rows():
                    advance(int(row["samples"]))
        return [store.read(name) for name in names]


def make_runner(runner: str | Runner | None, **options) -> Runner:
    """``None``/``"local"``: :class:`LocalRunner`; ``"ray"``: :class:`RayRunner` (``options`` go to it)."""
    if runner is None or runner == "local":
        return LocalRunner()
    if runner == "ray":
        return RayRunner(**options)
    if isinstance(runner, str):
        from .errors import ConfigError

        raise ConfigError(f"unknown runner {runner!r}: local or ray")
    return runner
