"""What a report reads: an output directory (manifest, selection table, rejected records), the dataset
behind it and its features directory, each opened lazily so that large runs stay cheap to report on."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..data.dataset import Dataset
from ..data.readers import read_dataset
from ..errors import MMSelectError
from ..export import MANIFEST_FILE, SELECTION_FILE, read_rejected

# Columns of selection.parquet that are bookkeeping, not values to plot.
BOOKKEEPING_COLUMNS = ("key", "position", "task", "selected", "pick_order")


class ReportError(MMSelectError):
    """An output directory cannot be reported on."""


class Columns(Mapping):
    """Columns of a parquet table as numpy arrays, converted when first read (string columns of
    665k rows take a while, and most pages need only a few rows of them)."""

    def __init__(self, table: pa.Table):
        self.table = table
        self._arrays: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            if name not in self.table.column_names:
                raise KeyError(name)
            self._arrays[name] = self.table.column(name).to_numpy(zero_copy_only=False)
        return self._arrays[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.table.column_names)

    def __len__(self) -> int:
        return self.table.num_columns


@dataclass
class Output:
    """One output directory: its manifest, the selection table's columns, its rejected records."""

    path: Path
    manifest: dict[str, Any]
    columns: Columns
    rejected: list[dict[str, Any]]
    task_names: list[str] = field(default_factory=list)
    task_codes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self):
        encoded = self.columns.table.column("task").combine_chunks().cast(pa.string()).dictionary_encode()
        self.task_names = [str(t) for t in encoded.dictionary.to_pylist()]
        self.task_codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)

    @property
    def n(self) -> int:
        return len(self.columns["key"])

    @property
    def selected(self) -> np.ndarray:
        return self.columns["selected"].astype(bool)

    @property
    def scores(self) -> np.ndarray:
        return self.columns["score"].astype(np.float64)

    @property
    def label(self) -> str:
        return f"{self.manifest.get('method', '?')} {self.manifest.get('budget', '')}".strip()

    def value_columns(self) -> list[str]:
        """``score`` and the method's numeric columns (DataTailor's informativeness, ...)."""
        schema = self.columns.table.schema
        names = [
            f.name for f in schema
            if f.name not in BOOKKEEPING_COLUMNS and f.name not in ("cluster", "score") and pa.types.is_floating(f.type)
        ]
        return ["score"] + names


def load_output(out_dir: str | Path) -> Output:
    path = Path(out_dir)
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ReportError(
            f"{manifest_path} not found: give the --out directory of `mmselect run` or `mmselect select`"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ReportError(f"{manifest_path}: invalid JSON ({err}); rerun the selection to rewrite it") from None
    selection_path = path / SELECTION_FILE
    if not selection_path.is_file():
        raise ReportError(f"{selection_path} not found: rerun the selection to write it")
    table = pq.read_table(selection_path)
    missing = [c for c in ("key", "task", "selected", "score") if c not in table.column_names]
    if missing:
        raise ReportError(f"{selection_path} lacks the column(s) {', '.join(missing)}; rerun the selection")
    return Output(path, manifest, Columns(table), read_rejected(path))

# --- records --------------------------------------------------------------------------------------


@dataclass
class Records:
    """The dataset behind an output, or why it is not available."""

    dataset: Dataset | None
    note: str | None = None
    _by_key: dict[str, Any] | None = None

    def by_key(self) -> dict[str, Any]:
        if self._by_key is None:
            self._by_key = self.dataset.by_key() if self.dataset is not None else {}
        return self._by_key


def _existing(path: str | Path | None, base: Path) -> Path | None:
    if not path:
        return None
    for candidate in (Path(path), base / path):
        if candidate.exists():
            return candidate
    return None


def find_records(
    output: Output, dataset: Dataset | None = None, data: str | Path | None = None, image_root: str | Path | None = None
) -> Records:
    """The given dataset, else the one the manifest names (read again, images not opened)."""
    if dataset is not None:
        return Records(dataset)
    manifest = output.manifest
    recorded = data or manifest.get("data")
    if not recorded:
        return Records(None, "the selection was run without the dataset (`--data`), so there are no record cards")
    path = _existing(recorded, output.path)
    if path is None or not path.is_file():
        return Records(None, f"dataset {recorded} not found; pass --data to show record cards")
    root_recorded = image_root or manifest.get("image_root") or feature_manifest(output).get("image_root")
    root = _existing(root_recorded, output.path)
    try:
        loaded = read_dataset(path, image_root=root if root and root.is_dir() else None, check_images=False)
    except MMSelectError as err:
        return Records(None, f"dataset {path} could not be read: {err}")
    note = None if root or not root_recorded else f"image root {root_recorded} not found: no thumbnails"
    index = loaded.by_key()
    keys = output.columns["key"][: min(output.n, 1000)].tolist()
    if keys and not any(k in index for k in keys):
        return Records(None, f"{path} is not the dataset of this selection (no key matches); pass --data")
    return Records(loaded, note)



# --- features -------------------------------------------------------------------------------------


def feature_manifest(output: Output) -> dict[str, Any]:
    directory = _feature_dir(output)
    if directory is None or not (directory / MANIFEST_FILE).is_file():
        return {}
    try:
        return json.loads((directory / MANIFEST_FILE).read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return {}


def _feature_dir(output: Output) -> Path | None:
    for name in ("feature_dir", "features"):
        value = output.manifest.get(name)
        if isinstance(value, str):
            path = _existing(value, output.path)
            if path is not None and path.is_dir():
                return path
    return None


class FeatureView:
    """What a report reads of a features directory (docs/features-format.md): single columns of
    ``samples.parquet`` and memory-mapped ``.npy`` arrays, each only when asked for."""

    def __init__(self, root: Path):
        self.root = root
        self._schema = pq.read_schema(root / "samples.parquet")
        self._rows = pq.ParquetFile(root / "samples.parquet").metadata.num_rows
        self._columns: dict[str, np.ndarray] = {}
        manifest_path = root / MANIFEST_FILE
        try:
            self.manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else {}
        except json.JSONDecodeError:
            self.manifest = {}

    @property
    def keys(self) -> np.ndarray:
        return self.column("key")

    def has_column(self, name: str) -> bool:
        return name in self._schema.names

    def column(self, name: str) -> np.ndarray:
        if name not in self._columns:
            table = pq.read_table(self.root / "samples.parquet", columns=[name])
            self._columns[name] = table.column(name).to_numpy(zero_copy_only=False)
        return self._columns[name]

    @property
    def array_names(self) -> list[str]:
        names = []
        for path in sorted(self.root.glob("*.npy")):
            try:
                values = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError):
                continue
            if values.ndim == 2 and values.shape[0] == self._rows:
                names.append(path.stem)
        return names

    def array(self, name: str) -> np.ndarray:
        return np.load(self.root / f"{name}.npy", mmap_mode="r", allow_pickle=False)


def load_features(output: Output, features: Any = None):
    """The features given (a FeatureSet, or a directory), else the manifest's features directory."""
    if features is not None and not isinstance(features, (str, Path)):
        return features  # a FeatureSet in memory
    directory = Path(features) if features is not None else _feature_dir(output)
    if directory is None or not (directory / "samples.parquet").is_file():
        return None
    return FeatureView(directory)
