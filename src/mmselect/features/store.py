"""The features directory: the interchange format between extraction and selection.

Layout (documented in ``docs/features-format.md``)::

    FEATDIR/
      samples.parquet   one row per sample: key, task, rounds, n_tokens, n_images, scalar features
      <name>.npy        2-D arrays aligned with the rows of samples.parquet (float16 or float32)
      manifest.json     model, revision, feature specs, library versions

Arrays are opened memory-mapped, so a 27 GB embedding matrix is streamed, not loaded (with the
readers of :mod:`mmselect.features.rows`, which keep its pages out of the resident set).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import MissingFeaturesError, NonFiniteFeaturesError
from .rows import nonfinite_rows

SAMPLES_FILE = "samples.parquet"
MANIFEST_FILE = "manifest.json"
REQUIRED_COLUMNS = ("key", "task")


class FeatureSet:
    """Per-sample features, aligned by row, keyed by the stable sample key.

    ``columns`` are 1-D (scalars or strings per sample, stored in ``samples.parquet``);
    ``arrays`` are 2-D ``(n, d)`` matrices (stored as ``<name>.npy``); ``aux`` are ``.npy``
    files not aligned with the rows (e.g. ``cluster_centroids.npy``, one row per cluster).
    """

    def __init__(
        self,
        columns: Mapping[str, np.ndarray | list],
        arrays: Mapping[str, np.ndarray] | None = None,
        manifest: Mapping | None = None,
        root: Path | None = None,
        aux: Mapping[str, np.ndarray] | None = None,
    ):
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise MissingFeaturesError(f"features need the columns {missing} (one row per sample)")
        self._columns: dict[str, np.ndarray] = {}
        n = len(columns["key"])
        for name, values in columns.items():
            values = values if isinstance(values, np.ndarray) and values.dtype != object else _as_column(values)
            if len(values) != n:
                raise ValueError(f"column {name!r} has {len(values)} rows, expected {n}")
            self._columns[name] = values
        self._arrays: dict[str, np.ndarray] = {}
        self._aux: dict[str, np.ndarray] = dict(aux or {})
        for name, values in (arrays or {}).items():
            if values.ndim != 2 or values.shape[0] != n:
                raise ValueError(f"array {name!r} has shape {values.shape}, expected ({n}, d)")
            self._arrays[name] = values
        self.manifest = dict(manifest or {})
        self.root = root
        self._row_of = {key: row for row, key in enumerate(self._columns["key"].tolist())}
        if len(self._row_of) != n:
            raise ValueError("sample keys must be unique")

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def from_arrays(
        cls,
        *,
        keys: Iterable[str] | None = None,
        tasks: Iterable[str] | None = None,
        n: int | None = None,
        columns: Mapping[str, np.ndarray | list] | None = None,
        arrays: Mapping[str, np.ndarray] | None = None,
        manifest: Mapping | None = None,
        aux: Mapping[str, np.ndarray] | None = None,
    ) -> "FeatureSet":
        """Build in memory (tests, notebooks). Keys default to ``"0", "1", ...``; tasks to ``"all"``."""
        columns = dict(columns or {})
        if n is None:
            if keys is not None:
                n = len(list(keys)) if not hasattr(keys, "__len__") else len(keys)
            elif columns:
                n = len(next(iter(columns.values())))
            elif arrays:
                n = next(iter(arrays.values())).shape[0]
            else:
                raise ValueError("cannot infer the number of samples")
        columns["key"] = np.asarray([str(k) for k in keys] if keys is not None else [str(i) for i in range(n)], dtype=object)
        columns["task"] = np.asarray(
            [str(t) for t in tasks] if tasks is not None else ["all"] * n, dtype=object
        )
        return cls(columns, arrays or {}, manifest, aux=aux)

    @classmethod
    def load(cls, path: str | Path, mmap: bool = True) -> "FeatureSet":
        root = Path(path)
        table_path = root / SAMPLES_FILE
        if not table_path.exists():
            raise MissingFeaturesError(
                f"{root} is not a features directory: {SAMPLES_FILE} is missing "
                "(create one with `mmselect extract`, or see docs/features-format.md)"
            )
        table = pq.read_table(table_path)
        columns = {name: _from_arrow(table.column(name)) for name in table.column_names}
        n = table.num_rows
        arrays, aux = {}, {}
        for npy in sorted(root.glob("*.npy")):
            values = np.load(npy, mmap_mode="r" if mmap else None, allow_pickle=False)
            (arrays if values.ndim == 2 and values.shape[0] == n else aux)[npy.stem] = values
        manifest = {}
        if (root / MANIFEST_FILE).exists():
            manifest = json.loads((root / MANIFEST_FILE).read_text())
        return cls(columns, arrays, manifest, root=root, aux=aux)

    def save(self, path: str | Path) -> Path:
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        table = pa.table({name: _to_arrow(values) for name, values in self._columns.items()})
        pq.write_table(table, root / SAMPLES_FILE)
        for name, values in {**self._aux, **self._arrays}.items():
            np.save(root / f"{name}.npy", np.ascontiguousarray(values), allow_pickle=False)
        (root / MANIFEST_FILE).write_text(json.dumps(self.manifest, indent=2, default=str))
        return root

    # --- access -------------------------------------------------------------------------------
    @property
    def n(self) -> int:
        return len(self._columns["key"])

    def __len__(self) -> int:
        return self.n

    @property
    def keys(self) -> np.ndarray:
        return self._columns["key"]

    @property
    def row_of(self) -> dict[str, int]:
        """key -> row, built once with the feature set."""
        return self._row_of

    def rows_for(self, keys: Iterable[str]) -> np.ndarray:
        """Rows of ``keys`` (all present), in that order."""
        return np.array([self._row_of[str(k)] for k in keys], dtype=np.int64)

    @property
    def tasks(self) -> np.ndarray:
        return self._columns["task"]

    @property
    def column_names(self) -> list[str]:
        return list(self._columns)

    @property
    def array_names(self) -> list[str]:
        return list(self._arrays)

    def has_column(self, name: str) -> bool:
        return name in self._columns

    def has_array(self, name: str) -> bool:
        return name in self._arrays

    def column(self, name: str) -> np.ndarray:
        if name not in self._columns:
            raise MissingFeaturesError(f"features have no column {name!r} (have: {sorted(self._columns)})")
        return self._columns[name]

    def array(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            raise MissingFeaturesError(f"features have no array {name!r}.npy (have: {sorted(self._arrays)})")
        return self._arrays[name]

    def has_aux(self, name: str) -> bool:
        return name in self._aux

    def aux(self, name: str) -> np.ndarray:
        """A ``.npy`` that is not row-aligned (e.g. ``cluster_centroids``)."""
        if name not in self._aux:
            raise MissingFeaturesError(f"features have no file {name!r}.npy")
        return self._aux[name]

    def with_columns(self, **columns) -> "FeatureSet":
        merged = dict(self._columns)
        merged.update(columns)
        return FeatureSet(merged, self._arrays, self.manifest, self.root, self._aux)

    def with_arrays(self, **arrays) -> "FeatureSet":
        merged = dict(self._arrays)
        merged.update(arrays)
        return FeatureSet(self._columns, merged, self.manifest, self.root, self._aux)

    def subset(self, rows: np.ndarray) -> "FeatureSet":
        """Rows ``rows`` (indices or a boolean mask), arrays copied into memory."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        return FeatureSet(
            {k: v[rows] for k, v in self._columns.items()},
            {k: np.asarray(v[rows]) for k, v in self._arrays.items()},
            self.manifest,
        )

    # --- validation ---------------------------------------------------------------------------
    def require(self, needs: Iterable, method: str) -> None:
        """Raise :class:`MissingFeaturesError` naming every missing column/array and the extract option."""
        missing = []
        for need in needs:
            present = self.has_column(need.name) if need.kind == "column" else self.has_array(need.name)
            if not present:
                where = f"column '{need.name}' in {SAMPLES_FILE}" if need.kind == "column" else f"array '{need.name}.npy'"
                hint = f"`mmselect extract --features {need.produced_by}`" if need.produced_by else "your own data"
                missing.append(f"  - {where} (produced by {hint})")
        if missing:
            where = f" in {self.root}" if self.root else ""
            raise MissingFeaturesError(
                f"method '{method}' needs features that are missing{where}:\n" + "\n".join(missing)
            )

    def check_finite(self, needs: Iterable, block_rows: int | None = None) -> None:
        """Refuse NaN/inf in the numeric features a method reads, naming the offending keys.

        Every :class:`~mmselect.methods.base.FeatureNeed` with ``finite=True`` is checked: a
        column in memory, an array streamed in blocks of ``block_rows`` rows (default: about
        64 MiB each) with :func:`~mmselect.features.rows.nonfinite_rows`, which reads a
        memory-mapped ``.npy`` with ``pread`` so that its pages do not stay resident."""
        for need in needs:
            if not need.finite:
                continue
            if need.kind == "column":
                values = self.column(need.name)
                if values.dtype == object or not np.issubdtype(values.dtype, np.number):
                    continue
                bad = np.flatnonzero(~np.isfinite(values))
            else:
                bad = nonfinite_rows(self.array(need.name), block_rows)
            if len(bad):
                shown = ", ".join(map(str, self.keys[bad[:10]]))
                more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
                raise NonFiniteFeaturesError(
                    f"feature '{need.name}' has NaN or inf for {len(bad)} sample(s): {shown}{more}"
                )


def _as_column(values) -> np.ndarray:
    if isinstance(values, (list, tuple)) and values and isinstance(values[0], (list, tuple)):
        column = np.empty(len(values), dtype=object)  # one list per sample (e.g. mmSSR styles)
        column[:] = [list(v) for v in values]
        return column
    array = np.asarray(values)
    if array.dtype.kind in "US":
        return array.astype(object)
    if array.dtype == object and len(array) and not isinstance(array[0], (str, list, tuple, np.ndarray)):
        try:
            return array.astype(float)
        except (TypeError, ValueError):
            return array
    return array


def _from_arrow(column: pa.ChunkedArray) -> np.ndarray:
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return np.asarray(column.to_pylist(), dtype=object)
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        values = np.empty(len(column), dtype=object)
        values[:] = [list(v) if v is not None else [] for v in column.to_pylist()]
        return values
    if pa.types.is_boolean(column.type):
        return column.to_numpy(zero_copy_only=False).astype(bool)
    if pa.types.is_integer(column.type) and column.null_count == 0:
        return column.to_numpy()
    return column.to_numpy(zero_copy_only=False).astype(float)


def _to_arrow(values: np.ndarray) -> pa.Array:
    if values.dtype == object and len(values) and isinstance(values[0], (list, tuple, np.ndarray)):
        return pa.array([list(v) for v in values], type=pa.list_(pa.string()))
    if values.dtype == object:
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())
    return pa.array(values)
