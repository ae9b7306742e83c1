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
import os
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import MissingFeaturesError, MMSelectError, NonFiniteFeaturesError
from .rows import nonfinite_rows
from .store_files import (
    FeatureFormatError,
    as_column,
    column_from_arrow,
    column_to_arrow,
    first_line,
    is_map_of,
    load_npy,
    read_manifest_file,
)

SAMPLES_FILE = "samples.parquet"
MANIFEST_FILE = "manifest.json"
REQUIRED_COLUMNS = ("key", "task")


class FeatureConflictError(MMSelectError):
    """Features from another model or revision would be added to a features directory."""


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
            values = values if isinstance(values, np.ndarray) and values.dtype != object else as_column(values)
            if len(values) != n:
                raise FeatureFormatError(f"column {name!r} has {len(values)} rows, expected {n}")
            self._columns[name] = values
        self._arrays: dict[str, np.ndarray] = {}
        self._aux: dict[str, np.ndarray] = dict(aux or {})
        for name, values in (arrays or {}).items():
            if values.ndim != 2 or values.shape[0] != n:
                raise FeatureFormatError(f"array {name!r} has shape {values.shape}, expected ({n}, d)")
            self._arrays[name] = values
        self.manifest = dict(manifest or {})
        self.root = root
        self._row_of = {key: row for row, key in enumerate(self._columns["key"].tolist())}
        if len(self._row_of) != n:
            seen: set = set()
            repeated = next(k for k in self._columns["key"].tolist() if k in seen or seen.add(k))
            where = f"{root / SAMPLES_FILE}: " if root is not None else ""
            raise FeatureFormatError(
                f"{where}sample keys must be unique; key {repeated!r} appears {self._columns['key'].tolist().count(repeated)} times"
            )

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
        """Open a features directory. Every file that cannot be read (empty, cut short, not the
        format its name says, an object array) is an error naming the file; an array listed as a
        feature in the manifest must have one row per sample."""
        root = Path(path)
        table_path = root / SAMPLES_FILE
        if not root.is_dir():
            raise MissingFeaturesError(
                f"{root} is not a features directory: {'it is a file' if root.exists() else 'it does not exist'} "
                "(create one with `mmselect extract`, or see docs/features-format.md)"
            )
        if not table_path.is_file():
            raise MissingFeaturesError(
                f"{root} is not a features directory: {SAMPLES_FILE} is missing "
                "(create one with `mmselect extract`, or see docs/features-format.md)"
            )
        try:
            table = pq.read_table(table_path)
        except (OSError, pa.ArrowException) as err:
            raise FeatureFormatError(
                f"{table_path} cannot be read as parquet ({first_line(err)}); rerun `mmselect extract` into a new "
                "directory, or rewrite the file"
            ) from None
        try:
            columns = {name: column_from_arrow(table.column(name)) for name in table.column_names}
        except (pa.ArrowException, TypeError, ValueError) as err:
            raise FeatureFormatError(f"{table_path}: a column cannot be read ({first_line(err)})") from None
        n = table.num_rows
        manifest = read_manifest_file(root / MANIFEST_FILE)
        listed = manifest.get("feature_arrays")
        listed = {str(a) for a in listed} if isinstance(listed, list) else set()
        arrays, aux = {}, {}
        for npy in sorted(root.glob("*.npy")):
            values = load_npy(npy, mmap)
            aligned = values.ndim == 2 and values.shape[0] == n
            if npy.stem in listed and not aligned:
                raise FeatureFormatError(
                    f"{npy} has shape {values.shape}; as a feature array it needs 2 dimensions and one row per "
                    f"sample of {SAMPLES_FILE} ({n}). Rerun `mmselect extract` or rewrite the file"
                )
            (arrays if aligned else aux)[npy.stem] = values
        return cls(columns, arrays, manifest, root=root, aux=aux)

    @classmethod
    def read_manifest(cls, path: str | Path) -> dict:
        """The manifest of the features directory ``path`` (``{}`` when it has none)."""
        return read_manifest_file(Path(path) / MANIFEST_FILE)

    def save(self, path: str | Path) -> Path:
        """Write the directory. An array that is already the memory map of its own file there is
        left as it is; every file is written to a temporary name and renamed into place."""
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        table = pa.table({name: column_to_arrow(values) for name, values in self._columns.items()})
        tmp = root / f".{SAMPLES_FILE}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, root / SAMPLES_FILE)
        for name, values in {**self._aux, **self._arrays}.items():
            target = root / f"{name}.npy"
            if is_map_of(values, target):
                continue
            tmp = root / f".{name}.tmp.npy"
            np.save(tmp, np.ascontiguousarray(values), allow_pickle=False)
            os.replace(tmp, target)
        tmp = root / f".{MANIFEST_FILE}.tmp"
        tmp.write_text(json.dumps(self.manifest, indent=2, default=str))
        os.replace(tmp, root / MANIFEST_FILE)
        return root

    def added_to(self, path: str | Path) -> "FeatureSet":
        """These features together with those already in the features directory ``path``: its
        columns and arrays that this set lacks stay, those it has are replaced. Refused with
        :class:`FeatureConflictError` when the directory holds another model's or revision's
        features, or other records. Without a features directory at ``path``: this set."""
        root = Path(path)
        if not (root / SAMPLES_FILE).exists():
            return self
        old = FeatureSet.load(root)
        mine, theirs = _model_identity(self.manifest), _model_identity(old.manifest)
        if mine and theirs and mine != theirs:
            raise FeatureConflictError(
                f"{root} holds features of {_describe_identity(theirs)}; this extraction uses "
                f"{_describe_identity(mine)}. Features of two models do not mix in one directory: "
                "extract into another --out (or delete the old one)"
            )
        if set(old.keys.tolist()) != set(self.keys.tolist()):
            only_old = len(set(old.keys.tolist()) - set(self.keys.tolist()))
            only_new = len(set(self.keys.tolist()) - set(old.keys.tolist()))
            raise FeatureConflictError(
                f"{root} holds features of other records ({only_old:,} record(s) only there, {only_new:,} only in "
                "this extraction: another dataset, image root or --max-length?); extract into another --out"
            )
        rows = old.rows_for(self.keys.tolist())
        same_order = bool(np.array_equal(rows, np.arange(old.n)))
        columns = {name: (values if same_order else values[rows]) for name, values in old._columns.items()}
        columns.update(self._columns)
        arrays = {}
        for name, values in old._arrays.items():
            if name not in self._arrays:
                arrays[name] = values if same_order else np.array(values[rows])  # in memory: its file is rewritten
        arrays.update(self._arrays)
        aux = {**{k: np.array(v) for k, v in old._aux.items() if k in self._aux}, **self._aux}
        manifest = {**old.manifest, **self.manifest}
        for field in ("features", "feature_columns", "feature_arrays"):
            merged = [*(old.manifest.get(field) or []), *(self.manifest.get(field) or [])]
            if field in manifest:
                manifest[field] = list(dict.fromkeys(str(v) for v in merged))
        manifest["feature_arrays"] = list(arrays)
        manifest["feature_columns"] = list(columns)
        return FeatureSet(columns, arrays, manifest, root=self.root, aux=aux)

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
        if name not in self._arrays and name in self._aux:
            raise FeatureFormatError(self._misshapen(name))
        if name not in self._arrays:
            raise MissingFeaturesError(f"features have no array {name!r}.npy (have: {sorted(self._arrays)})")
        return self._arrays[name]

    def _misshapen(self, name: str) -> str:
        where = self.root / f"{name}.npy" if self.root is not None else f"{name}.npy"
        return (f"{where} has shape {self._aux[name].shape}; a feature array needs 2 dimensions and one row per "
                f"sample ({self.n} in {SAMPLES_FILE})")

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
            if need.kind != "column" and not self.has_array(need.name) and self.has_aux(need.name):
                raise FeatureFormatError(f"method '{method}' reads {need.name}.npy, but " + self._misshapen(need.name))
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


def _model_identity(manifest: Mapping) -> tuple | None:
    model = manifest.get("model")
    if not isinstance(model, dict) or not model.get("name"):
        return None
    return (model.get("name"), model.get("revision"))


def _describe_identity(identity: tuple) -> str:
    name, revision = identity
    return f"model {name}" + (f" at revision {revision}" if revision else "")
