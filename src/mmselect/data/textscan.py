"""Streaming scans of JSON-array and JSONL files: each record once, with its byte span.

Files are read in chunks, so memory holds one chunk (plus the record being parsed), never the file.
Spans are byte offsets into the (decompressed) file: a record is read again with one ``pread``.
Compressed files (``.gz``, ``.bz2``, ``.xz``, ``.zst``) are decompressed into memory, once.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import json
import lzma
import os
import re
from pathlib import Path
from typing import IO, Any, Iterator

from ..errors import DataFormatError



class _FloatWatch:
    """A JSON decoder that notes whether the record it read had a float, NaN or Infinity: those are
    the values another JSON library could write differently when the record's hash is computed."""

    def __init__(self):
        self.seen = False
        constants = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}

        def on_float(text: str) -> float:
            self.seen = True
            return float(text)

        def on_constant(name: str) -> float:
            self.seen = True
            return constants[name]

        self.decoder = json.JSONDecoder(parse_float=on_float, parse_constant=on_constant)

CHUNK_BYTES = 1 << 24
_SKIP_WS = re.compile(r"[ \t\n\r]*").match
_BOM = "\ufeff"
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".zstd")
# The end of a chunk can cut a record; a parse error this close to the end asks for more text.
_CUT_MARGIN = 16


def compression_of(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return suffix.lstrip(".") if suffix in COMPRESSED_SUFFIXES else None


def detect_container(path: Path, head: bytes) -> str:
    """``json`` (a list of records) or ``jsonl`` (one record a line), from the suffix, else the content."""
    name = path.name.lower()
    for suffix in COMPRESSED_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if name.endswith(".json"):
        return "json"
    return "json" if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"[") else "jsonl"


def decompress(path: Path) -> bytes:
    kind = compression_of(path)
    if kind == "gz":
        opener = gzip.open
    elif kind == "bz2":
        opener = bz2.open
    elif kind == "xz":
        opener = lzma.open
    else:
        try:
            import zstandard
        except ImportError:
            raise DataFormatError(f"{path}: reading .zst files needs the zstandard package (pip install zstandard)") from None
        try:
            with path.open("rb") as raw:
                return zstandard.ZstdDecompressor().stream_reader(raw).read()
        except zstandard.ZstdError as err:
            raise DataFormatError(f"{path}: cannot decompress ({err})") from None
    try:
        with opener(path, "rb") as handle:
            return handle.read()
    except (OSError, EOFError, lzma.LZMAError) as err:
        raise DataFormatError(f"{path}: cannot decompress ({err})") from None


def _position(path: Path, line: int, column: int, message: str) -> DataFormatError:
    return DataFormatError(f"{path}:{line}:{column}: invalid JSON: {message}")


def _too_deep(path: Path, line: int, column: int) -> DataFormatError:
    return DataFormatError(
        f"{path}:{line}:{column}: the record starting here is nested too deeply to parse; "
        "flatten it or remove it from the file"
    )


def _not_utf8(path: Path, line: int, err: UnicodeDecodeError) -> DataFormatError:
    return DataFormatError(f"{path}:{line}: not UTF-8 text ({err.reason} at byte {err.start} of the line); save the file as UTF-8")


def scan_jsonl(path: Path, stream: IO[bytes]) -> Iterator[tuple[int, int, Any, bool]]:
    """``(start, end, record, has_float)`` per non-blank line. Lines end at ``\\n`` only: U+2028,
    U+2029 and U+0085 are ordinary characters inside JSON strings."""
    watch = _FloatWatch()
    decode = watch.decoder.decode
    offset = 0
    line_number = 0
    pending = b""
    first = True
    while True:
        chunk = stream.read(CHUNK_BYTES)
        data = pending + chunk if pending else chunk
        if not chunk:
            lines, pending = ([data] if data else []), b""
        else:
            lines = data.split(b"\n")
            pending = lines.pop()
        for line in lines:
            line_number += 1
            start = offset
            offset += len(line) + 1
            if first:
                first = False
                if line.startswith(codecs.BOM_UTF8):
                    line = line[3:]
                    start += 3
            stripped = line.strip()
            if not stripped:
                continue
            lead = len(line) - len(line.lstrip())
            watch.seen = False
            try:
                record = decode(stripped.decode("utf-8"))
            except json.JSONDecodeError as err:
                if err.msg == "Extra data":
                    raise _position(path, line_number, lead + err.colno, "extra data after the record on this line") from None
                raise _position(path, line_number, lead + err.colno, err.msg) from None
            except UnicodeDecodeError as err:
                raise _not_utf8(path, line_number, err) from None
            except RecursionError:
                raise _too_deep(path, line_number, lead + 1) from None
            yield start + lead, start + lead + len(stripped), record, watch.seen
        if not chunk:
            return


class _TextWindow:
    """A window of decoded text over a byte stream, with byte offsets and line/column bookkeeping."""

    def __init__(self, path: Path, stream: IO[bytes]):
        self.path = path
        self.stream = stream
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.text = ""
        self.byte_base = 0  # file offset of text[0]
        self.ascii = True
        self.cursor_char = 0  # text[:cursor_char] is cursor_byte bytes long (non-ASCII windows)
        self.cursor_byte = 0
        self.line_base = 1  # line number of text[0]
        self.column_base = 1  # column of text[0]
        self.eof = False
        self.lines_read = 1

    def fill(self) -> bool:
        if self.eof:
            return False
        data = self.stream.read(CHUNK_BYTES)
        try:
            more = self.decoder.decode(data, final=not data)
        except UnicodeDecodeError as err:
            line = self.line_base + self.text.count("\n")
            raise _not_utf8(self.path, line, err) from None
        if not data:
            self.eof = True
        if self.byte_base == 0 and not self.text and more.startswith(_BOM):
            more = more[1:]
            self.byte_base = 3
        self.ascii = self.ascii and more.isascii()
        self.text += more
        return True

    def byte_offset(self, pos: int) -> int:
        if self.ascii:
            return self.byte_base + pos
        if pos < self.cursor_char:
            self.cursor_char, self.cursor_byte = 0, 0
        self.cursor_byte += len(self.text[self.cursor_char:pos].encode("utf-8"))
        self.cursor_char = pos
        return self.byte_base + self.cursor_byte

    def line_column(self, pos: int) -> tuple[int, int]:
        newlines = self.text.count("\n", 0, pos)
        if not newlines:
            return self.line_base, self.column_base + pos
        return self.line_base + newlines, pos - self.text.rfind("\n", 0, pos)

    def error(self, pos: int, message: str) -> DataFormatError:
        line, column = self.line_column(pos)
        return _position(self.path, line, column, message)

    def drop_before(self, pos: int) -> int:
        """Forget text before ``pos`` (once it is large); returns where ``pos`` now is."""
        if pos < CHUNK_BYTES:
            return pos
        byte = self.byte_offset(pos)
        self.line_base, self.column_base = self.line_column(pos)
        self.text = self.text[pos:]
        self.byte_base = byte
        self.ascii = self.text.isascii()
        self.cursor_char, self.cursor_byte = 0, 0
        return 0

    def skip_ws(self, pos: int) -> int:
        while True:
            pos = _SKIP_WS(self.text, pos).end()
            if pos < len(self.text) or not self.fill():
                return pos


def scan_json_array(path: Path, stream: IO[bytes]) -> Iterator[tuple[int, int, Any, bool]]:
    """``(start, end, record, has_float)`` per element of the file's top-level JSON list."""
    window = _TextWindow(path, stream)
    watch = _FloatWatch()
    decoder = watch.decoder
    pos = window.skip_ws(0)
    if pos >= len(window.text) or window.text[pos] != "[":
        raise window.error(pos, "expected a list of records ('[' ...)")
    pos = window.skip_ws(pos + 1)
    if pos < len(window.text) and window.text[pos] == "]":
        _expect_end(window, pos + 1)
        return
    while True:
        while True:
            watch.seen = False
            try:
                record, end = decoder.raw_decode(window.text, pos)
            except json.JSONDecodeError as err:
                cut = err.pos >= len(window.text) - _CUT_MARGIN or err.msg.startswith("Unterminated string")
                if cut and window.fill():
                    continue
                raise window.error(err.pos, err.msg) from None
            except RecursionError:
                raise _too_deep(path, *window.line_column(pos)) from None
            if end >= len(window.text) and window.fill():
                continue  # a number or literal may go on in the next chunk
            break
        yield window.byte_offset(pos), window.byte_offset(end), record, watch.seen
        pos = window.skip_ws(end)
        if pos >= len(window.text):
            raise window.error(pos, "unexpected end of file, expected ',' or ']'")
        if window.text[pos] == "]":
            _expect_end(window, pos + 1)
            return
        if window.text[pos] != ",":
            raise window.error(pos, "expected ',' or ']' after a record")
        pos = window.drop_before(window.skip_ws(pos + 1))


def _expect_end(window: _TextWindow, pos: int) -> None:
    tail = window.skip_ws(pos)
    if tail < len(window.text):
        raise window.error(tail, "extra data after the list")


class TextSource:
    """Reads records back from a JSON / JSONL file by byte span (``pread``; no file held in memory).

    Compressed files keep their decompressed bytes in memory. Picklable: a worker process reopens
    the file."""

    def __init__(self, path: Path, data: bytes | None = None):
        self.path = Path(path)
        self.data = data
        self._fd: int | None = None
        self._pid = None

    def __getstate__(self):
        return {"path": self.path, "data": self.data}

    def __setstate__(self, state):
        self.__init__(state["path"], state["data"])

    def read(self, start: int, end: int) -> bytes:
        if self.data is not None:
            return self.data[start:end]
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            self._pid = os.getpid()
        if hasattr(os, "pread"):
            return os.pread(self._fd, end - start, start)
        with open(self.path, "rb") as handle:  # pragma: no cover - platforms without pread
            handle.seek(start)
            return handle.read(end - start)

    def __del__(self):
        if self._fd is not None and self._pid == os.getpid():
            try:
                os.close(self._fd)
            except OSError:
                pass
