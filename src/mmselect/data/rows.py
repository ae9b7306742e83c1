"""Row formats: parquet files or folders, ``datasets`` ``save_to_disk`` folders, Hugging Face hub ids.

Rows are read in pyarrow record batches, so a 10M-row dataset never has to fit in memory. A row's
images are either paths (a string or list of strings, or ``{"bytes": null, "path": ...}`` structs)
or bytes embedded in the row (``{"bytes": ..., "path": ...}`` structs, as LLaVA-OneVision-Data ships
them); embedded images are referenced as ``row://FILE?row=N&column=C&item=I`` and read back from the
file when decoded. A row's key is its position and the content hash of the row, image bytes
included (hashed). :meth:`RowSource.write_rows` writes selected rows unchanged: same columns, same
schema metadata, same image bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from bisect import bisect_right
from itertools import accumulate
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, quote, unquote, urlparse

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import DataFormatError

IMAGE_COLUMNS = ("image", "images")
BATCH_ROWS = 1024
_FILE_SUFFIXES = {".json", ".jsonl", ".ndjson", ".parquet", ".arrow", ".txt", ".csv"}
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zstd")
_HUB_ID = re.compile(r"^(hf:/+(datasets/)?)?[A-Za-z0-9][\w.-]*/[\w.-]+$")  # hf:/ once a Path had it


def _bytes_digest(value: bytes) -> dict[str, str]:
    return {"blake2b": hashlib.blake2b(value, digest_size=16).hexdigest()}


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _bytes_digest(bytes(value))
    return str(value)  # dates, decimals: their text


def row_hash40(row: dict[str, Any]) -> int:
    """Content hash of a row: canonical JSON (sorted keys) with each bytes value replaced by its hash."""
    canonical = json.dumps(row, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=_json_default)
    return int.from_bytes(hashlib.blake2b(canonical.encode("utf-8"), digest_size=5).digest(), "big")


class _File:
    """One parquet or Arrow file: row count, random access by row (a small cache of decoded groups)."""

    def __init__(self, path: Path, kind: str):
        self.path = path
        self.kind = kind
        self._groups: OrderedDict[int, pa.Table] = OrderedDict()
        self._table: pa.Table | None = None
        self._lock = threading.Lock()  # image loading threads share the cache
        if kind == "parquet":
            self.parquet = pq.ParquetFile(path)
            self.schema = self.parquet.schema_arrow
            sizes = [self.parquet.metadata.row_group(i).num_rows for i in range(self.parquet.num_row_groups)]
            self.group_starts = list(accumulate([0] + sizes[:-1])) if sizes else []
            self.n_rows = sum(sizes)
        else:
            table = self._arrow_table()
            self.schema = table.schema
            self.n_rows = table.num_rows

    def _arrow_table(self) -> pa.Table:
        if self._table is None:
            source = pa.memory_map(str(self.path))  # zero-copy: pages are read when touched
            try:
                self._table = pa.ipc.open_stream(source).read_all()
            except pa.ArrowInvalid:
                self._table = pa.ipc.open_file(pa.memory_map(str(self.path))).read_all()
        return self._table

    def batches(self) -> Iterator[pa.RecordBatch]:
        if self.kind == "parquet":
            yield from self.parquet.iter_batches(batch_size=BATCH_ROWS)
        else:
            yield from self._arrow_table().to_batches(max_chunksize=BATCH_ROWS)

    def row_table(self, row: int) -> pa.Table:
        with self._lock:
            return self._row_table(row)

    def _row_table(self, row: int) -> pa.Table:
        if self.kind != "parquet":
            return self._arrow_table().slice(row, 1)
        group = bisect_right(self.group_starts, row) - 1
        table = self._groups.get(group)
        if table is None:
            table = self._groups[group] = self.parquet.read_row_group(group)
            while len(self._groups) > 2:
                self._groups.popitem(last=False)
        self._groups.move_to_end(group)
        return table.slice(row - self.group_starts[group], 1)

    def row(self, row: int) -> dict[str, Any]:
        return self.row_table(row).to_pylist()[0]


_FILES: dict[tuple[str, str], _File] = {}
_FILES_LOCK = threading.Lock()


def _file(path: Path, kind: str) -> _File:
    key = (str(path), kind)
    with _FILES_LOCK:
        if key not in _FILES:
            _FILES[key] = _File(path, kind)
        return _FILES[key]


def _image_values(value: Any) -> list[Any]:
    if value is None or value == "" or value == []:
        return []
    return list(value) if isinstance(value, list) else [value]


class RowImages:
    """A row's images: ``names`` as written (paths, or ``column[i]`` for unnamed embedded images),
    ``refs`` (a row reference for embedded bytes, ``""`` for a path), ``blobs`` (the embedded bytes)."""

    def __init__(self, row: dict[str, Any], file: Path, row_in_file: int):
        self.names: list[str] = []
        self.refs: list[str] = []
        self.blobs: list[bytes | None] = []
        self.error: str | None = None
        column = next((c for c in IMAGE_COLUMNS if row.get(c) not in (None, "", [])), None)
        if column is None:
            return
        for item, value in enumerate(_image_values(row[column])):
            if isinstance(value, dict) and value.get("bytes") is not None:
                self.names.append(value.get("path") or f"{column}[{item}]")
                self.refs.append(f"row://{quote(str(file))}?row={row_in_file}&column={column}&item={item}")
                self.blobs.append(value["bytes"])
            elif isinstance(value, dict) and isinstance(value.get("path"), str) and value["path"]:
                self.names.append(value["path"])
                self.refs.append("")
                self.blobs.append(None)
            elif isinstance(value, str) and value:
                self.names.append(value)
                self.refs.append("")
                self.blobs.append(None)
            else:
                self.error = f"'{column}' item {item} is neither a path nor an image struct with bytes"
                return


def _parse_ref(ref: str) -> tuple[Path, int, str, int]:
    parsed = urlparse(ref)
    query = parse_qs(parsed.query)
    return Path(unquote(parsed.netloc + parsed.path)), int(query["row"][0]), query["column"][0], int(query["item"][0])


def row_image_bytes(ref: str) -> bytes:
    path, row, column, item = _parse_ref(ref)
    kind = "parquet" if path.suffix.lower() == ".parquet" else "arrow"
    value = _image_values(_file(path, kind).row_table(row).column(column).to_pylist()[0])[item]
    return value["bytes"]


def describe_row_image(ref: str) -> str:
    path, row, column, item = _parse_ref(ref)
    return f"{path.name} row {row} {column}[{item}]"


class RowSource:
    """The files of a row-format dataset, in order; positions run across them."""

    def __init__(self, path: Path, files: list[Path], kind: str):
        if not files:
            raise DataFormatError(f"{path}: no {kind} files found")
        self.path = path
        self.container = kind
        self.kind = kind
        self.file_paths = files
        self._starts: list[int] | None = None

    def __getstate__(self):
        return {"path": self.path, "files": self.file_paths, "kind": self.kind}

    def __setstate__(self, state):
        self.__init__(state["path"], state["files"], state["kind"])

    def _file_starts(self) -> list[int]:
        """Position of each file's first row, then the total."""
        if self._starts is None:
            starts, total = [], 0
            for path in self.file_paths:
                starts.append(total)
                total += _file(path, self.kind).n_rows
            self._starts = starts + [total]
        return self._starts

    @property
    def n_rows(self) -> int:
        return self._file_starts()[-1]

    def _locate(self, position: int) -> tuple[_File, int]:
        starts = self._file_starts()
        index = bisect_right(starts, position, hi=len(starts) - 1) - 1
        return _file(self.file_paths[index], self.kind), position - starts[index]

    def scan(self) -> Iterator[tuple[int, dict[str, Any], int, RowImages]]:
        """``(position, row, hash, images)`` for every row."""
        position = 0
        for path in self.file_paths:
            row_in_file = 0
            for batch in _file(path, self.kind).batches():
                for row in batch.to_pylist():
                    yield position, row, row_hash40(row), RowImages(row, path, row_in_file)
                    position += 1
                    row_in_file += 1

    def record(self, position: int) -> dict[str, Any]:
        file, row = self._locate(position)
        return file.row(row)

    def images(self, position: int) -> RowImages:
        file, row = self._locate(position)
        return RowImages(file.row(row), file.path, row)

    def write_rows(self, positions: list[int], path: Path) -> Path:
        """Rows at ``positions`` (sorted), unchanged, into one parquet file with the source schema."""
        schema = _file(self.file_paths[0], self.kind).schema
        wanted = iter(positions)
        target = next(wanted, None)
        with pq.ParquetWriter(path, schema) as writer:
            offset = 0
            for file_path in self.file_paths:
                for batch in _file(file_path, self.kind).batches():
                    picks = []
                    while target is not None and target < offset + batch.num_rows:
                        picks.append(target - offset)
                        target = next(wanted, None)
                    if picks:
                        writer.write_table(pa.Table.from_batches([batch.take(pa.array(picks))], schema=schema))
                    offset += batch.num_rows
                    if target is None:
                        break
                if target is None:
                    break
        return path


def open_row_source(spec: str | os.PathLike, split: str | None = None) -> RowSource:
    """A parquet file or folder, an Arrow file, a ``save_to_disk`` folder (a ``DatasetDict`` one
    takes ``split``, default ``train``), or a hub id (``hf://datasets/org/name``, ``org/name``)."""
    path = Path(spec)
    if path.is_file():
        kind = "parquet" if path.suffix.lower() == ".parquet" else "arrow"
        return RowSource(path, [path], kind)
    if path.is_dir():
        if (path / "dataset_dict.json").is_file():
            splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
            chosen = split or ("train" if "train" in splits else (splits[0] if len(splits) == 1 else None))
            if chosen not in splits:
                raise DataFormatError(f"{path}: a dataset with splits {', '.join(splits)}; choose one (split=...)")
            path = path / chosen
        if (path / "state.json").is_file():
            state = json.loads((path / "state.json").read_text())
            files = [path / f["filename"] for f in state.get("_data_files", [])]
            return RowSource(path, files, "arrow")
        files = sorted(path.rglob("*.parquet"))
        if files:
            return RowSource(path, files, "parquet")
        arrows = sorted(path.rglob("*.arrow"))
        if arrows:
            return RowSource(path, arrows, "arrow")
        raise DataFormatError(f"{path}: a folder without parquet files or a saved dataset (state.json)")
    text = os.fspath(spec)
    explicit = text.startswith("hf:/")
    looks_like_file = Path(text).suffix.lower() in _FILE_SUFFIXES or Path(text).name.lower().endswith(_COMPRESSED)
    if _HUB_ID.match(text) and (explicit or not looks_like_file):
        return _hub_source(text, split, explicit)
    raise DataFormatError(f"{path}: no such file")


def _hub_source(name: str, split: str | None, explicit: bool) -> RowSource:
    try:
        import datasets
    except ImportError:
        if not explicit:
            raise DataFormatError(f"{name}: no such file (as a Hugging Face dataset id it needs pip install 'mmselect[hf]')") from None
        raise DataFormatError(f"{name}: reading a Hugging Face dataset needs the hf extra (pip install 'mmselect[hf]')") from None
    repo = re.sub(r"^hf:/+(datasets/)?", "", name)
    try:
        loaded = datasets.load_dataset(repo, split=split or "train")
    except Exception as err:  # network, authentication, unknown dataset: the library says which
        raise DataFormatError(f"{name}: cannot load the dataset ({type(err).__name__}: {err})") from None
    files = [Path(f["filename"]) for f in loaded.cache_files]
    return RowSource(Path(repo), files, "arrow")
