"""Writing results: the subset in the input's format, scores for every sample, rejected records, manifest."""

from __future__ import annotations

import json
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .data.dataset import Dataset
from .data.rejected import RejectedRecord

SELECTION_FILE = "selection.parquet"
REJECTED_FILE = "rejected.jsonl"
MANIFEST_FILE = "manifest.json"


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("mmselect", "numpy", "scipy", "torch", "transformers", "accelerate", "pyarrow", "scikit-learn", "fastcluster",
                 "faiss-cpu", "faiss-gpu", "ray"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def write_subset(dataset: Dataset, positions: Iterable[int], out_dir: Path) -> Path:
    """The selected records exactly as they appear in the source, in source order."""
    if dataset.container in ("parquet", "arrow"):  # row formats: the selected rows, unchanged
        return dataset.write_rows(positions, out_dir / "subset.parquet")
    positions = sorted(int(p) for p in positions)
    raws = [dataset.raw(p) for p in positions]
    if dataset.container == "jsonl":
        path = out_dir / "subset.jsonl"
        path.write_text("".join(raw + "\n" for raw in raws), encoding="utf-8")
    else:
        path = out_dir / "subset.json"
        body = ",\n".join(raws)
        path.write_text("[\n" + body + ("\n" if raws else "") + "]\n", encoding="utf-8")
    return path


def write_rejected(rejected: "Iterable[RejectedRecord | dict[str, Any]]", out_dir: Path) -> Path:
    path = out_dir / REJECTED_FILE
    with path.open("w", encoding="utf-8") as handle:
        for item in rejected:
            handle.write(json.dumps(RejectedRecord.from_json(item).to_json(), ensure_ascii=False) + "\n")
    return path


def read_rejected_records(directory: Path) -> list[RejectedRecord]:
    return [RejectedRecord.from_json(item) for item in read_rejected(directory)]


def read_rejected(directory: Path) -> list[dict[str, Any]]:
    path = directory / REJECTED_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_selection_table(
    keys: np.ndarray,
    tasks: np.ndarray,
    selected: np.ndarray,
    scores: np.ndarray,
    values: dict[str, np.ndarray],
    out_dir: Path,
    positions: np.ndarray | None = None,
    order: np.ndarray | None = None,
) -> Path:
    columns: dict[str, Any] = {"key": pa.array([str(k) for k in keys], pa.string())}
    if positions is not None:
        columns["position"] = pa.array(np.asarray(positions, dtype=np.int64))
    columns["task"] = pa.array([str(t) for t in tasks], pa.string())
    columns["selected"] = pa.array(np.asarray(selected, dtype=bool))
    columns["score"] = pa.array(np.asarray(scores, dtype=np.float64))
    if order is not None:
        pick = np.full(len(keys), -1, dtype=np.int64)
        pick[np.asarray(order, dtype=np.int64)] = np.arange(len(order))
        columns["pick_order"] = pa.array(pick)
    for name, column in values.items():
        column = np.asarray(column)
        if column.ndim != 1 or len(column) != len(keys):
            continue
        if column.dtype == object:
            columns[name] = pa.array([None if v is None else str(v) for v in column], pa.string())
        else:
            columns[name] = pa.array(column)
    path = out_dir / SELECTION_FILE
    pq.write_table(pa.table(columns), path)
    return path


def build_manifest(*, started: float, counts: dict[str, int], **fields: Any) -> dict[str, Any]:
    """The manifest of an extraction or a selection: ``fields``, the record counts, the seconds
    since ``started``, the library versions, the accelerator (GPU, CUDA, driver) and, from the CLI,
    the resolved options (the command is added when written)."""
    from .config import current_invocation
    from .provenance import accelerator, input_checksum

    manifest = {**fields, "counts": counts, "versions": library_versions(), "accelerator": accelerator(),
                "seconds": round(time.time() - started, 3)}
    inputs = {name: input_checksum(fields[name]) for name in ("data", "scores") if isinstance(fields.get(name), (str, Path))}
    invocation = current_invocation()
    if invocation is not None:
        manifest.setdefault("config", invocation)
        for name, checksum in (invocation.get("input_files") or {}).items():
            inputs.setdefault(name, checksum)
    if any(inputs.values()):
        manifest["inputs"] = {name: value for name, value in inputs.items() if value}
    return manifest


def write_manifest(manifest: dict[str, Any], out_dir: Path) -> Path:
    manifest = dict(manifest)
    manifest.setdefault("command", " ".join(sys.argv))
    manifest.setdefault("versions", library_versions())
    path = out_dir / MANIFEST_FILE
    path.write_text(json.dumps(manifest, indent=2, default=_json_default) + "\n")
    return path


def _json_default(value):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return str(value)
