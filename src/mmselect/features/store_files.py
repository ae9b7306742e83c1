"""The files of a features directory, one at a time: ``.npy`` arrays and the manifest read with an
error that names the file and what to do, and columns converted between numpy and Arrow for
``samples.parquet``. :class:`~.store.FeatureSet` puts them together."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..errors import MMSelectError


class FeatureFormatError(MMSelectError):
    """A features directory's file cannot be read or does not fit the others (names the file and why)."""


def first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def load_npy(path: Path, mmap: bool) -> np.ndarray:
    try:
        with open(path, "rb") as handle:
            magic = handle.read(6)
    except OSError as err:
        raise FeatureFormatError(f"{path} cannot be read ({first_line(err)})") from None
    if not magic:
        raise FeatureFormatError(f"{path} cannot be read as a .npy array (the file is empty); rewrite it or remove it")
    if magic != b"\x93NUMPY":
        raise FeatureFormatError(f"{path} is not a valid .npy array (it lacks the .npy header); rewrite it with np.save")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as err:
        if "allow_pickle" in str(err) or "Object arrays" in str(err) or "Python objects" in str(err):
            raise FeatureFormatError(
                f"{path} holds Python objects (a pickle), which mmselect never loads; save a numeric array "
                "(np.save with a float dtype)"
            ) from None
        raise FeatureFormatError(f"{path} is not a valid .npy array ({first_line(err)}); rewrite it") from None
    except (OSError, EOFError) as err:
        size = path.stat().st_size if path.exists() else 0
        detail = "the file is empty" if size == 0 else first_line(err)
        raise FeatureFormatError(f"{path} cannot be read as a .npy array ({detail}); rewrite it or remove it") from None


def read_manifest_file(path: Path) -> dict:
    """The manifest as a dict; a free-form one (a list, a model given as a string) is kept, under
    keys the rest of mmselect can read."""
    if not path.exists():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise FeatureFormatError(f"{path} is not valid JSON ({first_line(err)}); fix it or remove it") from None
    if not isinstance(manifest, dict):
        return {"user": manifest}
    model = manifest.get("model")
    if model is not None and not isinstance(model, dict):
        manifest = {**manifest, "model": {"name": str(model)}}
    return manifest


def as_column(values) -> np.ndarray:
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


def column_from_arrow(column: pa.ChunkedArray) -> np.ndarray:
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


def column_to_arrow(values: np.ndarray) -> pa.Array:
    if values.dtype == object and len(values) and isinstance(values[0], (list, tuple, np.ndarray)):
        return pa.array([list(v) for v in values], type=pa.list_(pa.string()))
    if values.dtype == object:
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())
    return pa.array(values)


def is_map_of(values, path: Path) -> bool:
    filename = getattr(values, "filename", None)
    if not isinstance(values, np.memmap) or filename is None or not path.exists():
        return False
    return os.path.realpath(filename) == os.path.realpath(path)
