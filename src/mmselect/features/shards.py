"""Shards: deterministic groups of samples, and the store that keeps finished ones on disk.

Every pass (the main model's hooks, CLIPPER's pairs, CLIP score, mmSSR generations) writes its
shards through :class:`ShardStore`, under one protocol: the payload files are written to a
temporary name and renamed into place, and the ``<name>.done`` marker is written last. A shard
without its marker does not exist, so a run killed at any point (even ``kill -9``) resumes by
skipping the marked shards and redoing the rest. Codecs differ only in the payload:
``npz`` (numeric arrays, ``<name>.npz`` + ``<name>.json``) and ``json`` (values that may be strings
or lists, ``<name>.json``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

DONE_SUFFIX = ".done"

log = logging.getLogger(__name__)

# Errors that mean a shard's files are damaged (truncated, emptied, overwritten), not a bug.
_DAMAGE = (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile, json.JSONDecodeError)

# Shards reused from an earlier run and shards written by this one, per process (reported by the
# pipeline: "resumed: reused N shards", and on Ctrl-C).
_counts = {"reused": 0, "written": 0, "recomputed": 0}


def reset_shard_counts() -> None:
    _counts.update(reused=0, written=0, recomputed=0)


def reused_shards() -> int:
    """Finished shards read back from the cache since :func:`reset_shard_counts`."""
    return _counts["reused"]


def finished_shards_written() -> int:
    """Shards written since :func:`reset_shard_counts`."""
    return _counts["written"]


def recomputed_shards() -> int:
    """Cached shards found damaged (and so recomputed) since :func:`reset_shard_counts`."""
    return _counts["recomputed"]


@dataclass
class ExtractionOutput:
    """One shard's result: the kept keys, per-sample values in key order, the rejected samples
    (``{"key", "reason"}``) and counters (``info``) summed over shards by the pass that wrote them."""

    keys: list[str]
    values: dict[str, np.ndarray]
    rejected: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


def _length_estimate(sample) -> int:
    return sample.text_chars // 4 + 600 * sample.n_images


def plan_shards(samples: Sequence, shard_size: int) -> list[list]:
    """Deterministic shards of similar-length samples (stable sort by estimated length, then position)."""
    ordered = sorted(samples, key=lambda s: (_length_estimate(s), s.position))
    return [ordered[i : i + shard_size] for i in range(0, len(ordered), shard_size)]


def shard_name(samples: Sequence) -> str:
    digest = hashlib.sha1("\n".join(s.key for s in samples).encode()).hexdigest()[:16]
    return f"shard-{digest}"


def spec_digest(spec: Any) -> str:
    return hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _replace_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class NpzCodec:
    """Numeric per-sample values: ``<name>.npz`` (arrays) + ``<name>.json`` (keys, rejected)."""

    def write(self, directory: Path, name: str, output: ExtractionOutput) -> None:
        tmp_npz = directory / f"{name}.tmp.npz"
        np.savez(tmp_npz, **output.values)
        os.replace(tmp_npz, directory / f"{name}.npz")
        meta: dict[str, Any] = {"keys": output.keys, "rejected": output.rejected}
        if output.info:
            meta["info"] = output.info
        _replace_text(directory / f"{name}.json", json.dumps(meta))

    def read(self, directory: Path, name: str) -> ExtractionOutput:
        meta = json.loads((directory / f"{name}.json").read_text())
        with np.load(directory / f"{name}.npz", allow_pickle=False) as data:
            values = {k: data[k] for k in data.files}
        return ExtractionOutput(meta["keys"], values, meta["rejected"], meta.get("info", {}))


class JsonCodec:
    """Per-sample values that may be strings or lists (NaN stored as null): ``<name>.json``."""

    def write(self, directory: Path, name: str, output: ExtractionOutput) -> None:
        payload: dict[str, Any] = {
            "keys": output.keys,
            "rejected": output.rejected,
            "values": {k: [_jsonable(v) for v in values] for k, values in output.values.items()},
        }
        if output.info:
            payload["info"] = output.info
        _replace_text(directory / f"{name}.json", json.dumps(payload))

    def read(self, directory: Path, name: str) -> ExtractionOutput:
        payload = json.loads((directory / f"{name}.json").read_text())
        values = {}
        for key, items in payload["values"].items():
            if items and isinstance(items[0], list):
                column = np.empty(len(items), dtype=object)
                column[:] = items
                values[key] = column
            else:
                values[key] = np.array([np.nan if v is None else v for v in items], dtype=float)
        return ExtractionOutput(payload["keys"], values, payload["rejected"], payload.get("info", {}))


def _jsonable(value):
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(v) for v in value]
    value = float(value)
    return None if math.isnan(value) else value


class ShardStore:
    """Finished shards of one pass in ``directory``; see the module docstring for the protocol."""

    def __init__(self, directory: Path, codec: NpzCodec | JsonCodec | None = None):
        self.directory = Path(directory)
        self.codec = codec or NpzCodec()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._checked: dict[str, ExtractionOutput] = {}

    def done(self, name: str) -> bool:
        """Whether ``name`` is finished and readable. A marked shard whose files are damaged (a
        full disk, a copy cut short) is reported, removed and so computed again."""
        if not (self.directory / f"{name}{DONE_SUFFIX}").exists():
            return False
        if name in self._checked:
            return True
        try:
            output = self.codec.read(self.directory, name)
            _check_output(output)
        except _DAMAGE as err:
            log.warning("cached shard %s is damaged (%s: %s); computing it again",
                        self.directory / name, type(err).__name__, err)
            self.discard(name)
            _counts["recomputed"] += 1
            return False
        self._checked[name] = output
        _counts["reused"] += 1
        return True

    def __getstate__(self):
        # A store travels to a runner's workers: without the outputs read here.
        return {**self.__dict__, "_checked": {}}

    def discard(self, name: str) -> None:
        """Remove ``name``'s marker first (it no longer exists), then its files."""
        for path in [self.directory / f"{name}{DONE_SUFFIX}", *self.directory.glob(f"{name}.*")]:
            try:
                path.unlink()
            except FileNotFoundError:
                pass

    def write(self, name: str, output: ExtractionOutput) -> None:
        self.codec.write(self.directory, name, output)
        (self.directory / f"{name}{DONE_SUFFIX}").write_text("done\n")  # last: the shard now exists
        _counts["written"] += 1

    def read(self, name: str) -> ExtractionOutput:
        output = self._checked.pop(name, None)
        if output is None:
            output = self.codec.read(self.directory, name)
            _check_output(output)
        return output

    @classmethod
    def for_spec(cls, cache_dir: str | os.PathLike, prefix: str, spec: dict[str, Any],
                 codec: NpzCodec | JsonCodec | None = None) -> "ShardStore":
        """The store of one pass: ``<cache_dir>/<prefix><digest of spec>/`` with ``spec.json``."""
        store = cls(Path(cache_dir) / f"{prefix}{spec_digest(spec)}", codec)
        (store.directory / "spec.json").write_text(json.dumps(spec, indent=2, sort_keys=True, default=str))
        return store


def _check_output(output: ExtractionOutput) -> None:
    """A shard's values have one row per kept key (else its files do not belong together)."""
    n = len(output.keys)
    for name, values in output.values.items():
        if len(values) != n:
            raise ValueError(f"value {name!r} has {len(values)} rows for {n} keys")


class ShardIndex:
    """key -> (shard, row) over a pass's outputs, built once, to gather values in any sample order."""

    def __init__(self, outputs: list[ExtractionOutput]):
        self.outputs = outputs
        self.offsets = np.cumsum([0] + [len(o.keys) for o in outputs])
        self.row_of: dict[str, int] = {}
        for index, output in enumerate(outputs):
            base = int(self.offsets[index])
            for row, key in enumerate(output.keys):
                self.row_of[key] = base + row

    def __contains__(self, key: str) -> bool:
        return key in self.row_of

    @property
    def rejected(self) -> list[dict[str, Any]]:
        return [r for o in self.outputs for r in o.rejected]

    def names(self) -> list[str]:
        return next((list(o.values) for o in self.outputs if o.values), [])

    def gather(self, name: str, keys: Sequence[str]) -> np.ndarray:
        """Values of ``name`` for ``keys`` (all present), in that order."""
        parts = [o.values[name] for o in self.outputs if len(o.keys)]
        take = np.array([self.row_of[k] for k in keys], dtype=int)
        if not parts:
            return np.empty(0)
        if any(p.dtype == object for p in parts):
            stacked = np.empty(sum(len(p) for p in parts), dtype=object)
            stacked[:] = [item for p in parts for item in p]
        else:
            stacked = np.concatenate(parts)
        return stacked[take] if len(take) else stacked[:0]

    def columns(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """Every value of the pass for ``keys``: float columns, or object columns of lists."""
        columns = {}
        for name in self.names():
            values = self.gather(name, keys)
            if values.dtype == object:
                column = np.empty(len(values), dtype=object)
                column[:] = [list(v) for v in values]
                columns[name] = column
            else:
                columns[name] = np.asarray(values, dtype=float)
        return columns

    def summed_info(self) -> dict[str, Any]:
        total: dict[str, Any] = {}
        for output in self.outputs:
            for key, value in output.info.items():
                total[key] = total.get(key, 0) + value
        return total


__all__ = ["ExtractionOutput", "JsonCodec", "NpzCodec", "ShardIndex", "ShardStore", "finished_shards_written",
           "plan_shards", "recomputed_shards", "reset_shard_counts", "reused_shards", "shard_name", "spec_digest"]
