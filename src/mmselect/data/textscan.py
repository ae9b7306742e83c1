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
_SEPARATOR = re.compile(r"[ \t\n\r]*,[ \t\n\r]*").match
_BOM = "\ufeff"
_UTF8_CONTINUATION = bytes(range(0x80, 0xC0))
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".zstd")
# The end of a chunk can cut a record; a parse error this close to the end asks for more text.
_CUT_MARGIN = 16
# A record starting closer than this to the window's end waits for the next chunk first.
_RECORD_ROOM = 1 << 20


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
    """A window of decoded text over a byte stream, with byte offsets.

    Consumed text is dropped whenever a chunk is appended, so the window stays about one chunk long.
    Line and column are only needed for an error message, so they are computed then, by counting
    the file's bytes again up to the error, rather than tracked for every chunk."""

    def __init__(self, path: Path, stream: IO[bytes]):
        self.path = path
        self.stream = stream
        self.pending = b""  # the start of a UTF-8 sequence cut by the chunk's end
        self.text = ""
        self.byte_base = 0  # file offset of text[0]
        self.bytes_read = 0
        self.ascii = True
        self.cursor_char = 0  # text[:cursor_char] is cursor_byte bytes long (non-ASCII windows)
        self.cursor_byte = 0
        self.eof = False

    def refill(self, pos: int) -> tuple[int, bool]:
        """Drop the text before ``pos`` and append the next chunk: ``(pos in the new text, whether
        text was added)``."""
        if self.eof:
            return pos, False
        data = self.stream.read(CHUNK_BYTES)
        chunk_start = self.bytes_read - len(self.pending)
        self.bytes_read += len(data)
        if self.pending:
            data = self.pending + data
        try:
            more, used = codecs.utf_8_decode(data, "strict", not data)
        except UnicodeDecodeError as err:
            raise self._not_utf8(chunk_start + err.start, err.reason) from None
        self.pending = data[used:]
        if not data:
            self.eof = True
        if self.byte_base == 0 and not self.text and more.startswith(_BOM):
            more = more[1:]
            self.byte_base = 3
        if pos:
            self.byte_base = self.byte_offset(pos)
            kept = self.text[pos:]
            self.ascii = kept.isascii()
            self.cursor_char, self.cursor_byte = 0, 0
            self.text = kept + more
        else:
            self.text += more
        self.ascii = self.ascii and more.isascii()
        return 0, True

    def byte_offset(self, pos: int) -> int:
        if self.ascii:
            return self.byte_base + pos
        if pos < self.cursor_char:
            self.cursor_char, self.cursor_byte = 0, 0
        self.cursor_byte += len(self.text[self.cursor_char:pos].encode("utf-8"))
        self.cursor_char = pos
        return self.byte_base + self.cursor_byte

    def _locate(self, offset: int) -> tuple[int, int, int]:
        """``(line, byte offset where that line starts, characters of the line before offset)`` of
        a byte offset, counted by reading the file again in chunks (only for an error message)."""
        self.stream.seek(0)
        line, line_start, chars, done = 1, 0, 0, 0
        while done < offset:
            chunk = self.stream.read(min(CHUNK_BYTES, offset - done))
            if not chunk:
                break
            last_newline = chunk.rfind(b"\n")
            if last_newline >= 0:
                line += chunk.count(b"\n")
                line_start = done + last_newline + 1
                chars = 0
            # characters = bytes that do not continue a UTF-8 sequence
            chars += len(chunk[last_newline + 1:].translate(None, _UTF8_CONTINUATION))
            done += len(chunk)
        if line == 1 and offset >= 3:  # a BOM is not a character of the text
            self.stream.seek(0)
            if self.stream.read(3) == codecs.BOM_UTF8:
                chars -= 1
        return line, line_start, chars

    def line_column(self, pos: int) -> tuple[int, int]:
        line, _, chars = self._locate(self.byte_offset(pos))
        return line, chars + 1

    def _not_utf8(self, offset: int, reason: str) -> DataFormatError:
        line, line_start, _ = self._locate(offset)
        return DataFormatError(f"{self.path}:{line}: not UTF-8 text ({reason} at byte {offset - line_start} of the "
                               "line); save the file as UTF-8")

    def error(self, pos: int, message: str) -> DataFormatError:
        line, column = self.line_column(pos)
        return _position(self.path, line, column, message)

    def skip_ws(self, pos: int) -> int:
        while True:
            pos = _SKIP_WS(self.text, pos).end()
            if pos < len(self.text):
                return pos
            pos, added = self.refill(pos)
            if not added:
                return pos


def scan_json_array(path: Path, stream: IO[bytes]) -> Iterator[tuple[int, int, Any, bool]]:
    """``(start, end, record, has_float)`` per element of the file's top-level JSON list."""
    window = _TextWindow(path, stream)
    watch = _FloatWatch()
    decoder = watch.decoder
    # Records start at least this far before the window's end, so a record is rarely cut by a chunk
    # (a cut costs a failed parse of the window); records longer than this still read whole.
    room = min(_RECORD_ROOM, CHUNK_BYTES)
    pos = window.skip_ws(0)
    if pos >= len(window.text) or window.text[pos] != "[":
        raise window.error(pos, "expected a list of records ('[' ...)")
    pos = window.skip_ws(pos + 1)
    if pos < len(window.text) and window.text[pos] == "]":
        _expect_end(window, pos + 1)
        return
    while True:
        if len(window.text) - pos < room:
            pos, _ = window.refill(pos)
        while True:
            watch.seen = False
            try:
                record, end = decoder.raw_decode(window.text, pos)
            except json.JSONDecodeError as err:
                cut = err.pos >= len(window.text) - _CUT_MARGIN or err.msg.startswith("Unterminated string")
                if cut:
                    pos, added = window.refill(pos)
                    if added:
                        continue
                raise window.error(err.pos, err.msg) from None
            except RecursionError:
                raise _too_deep(path, *window.line_column(pos)) from None
            if end >= len(window.text):
                pos, added = window.refill(pos)
                if added:
                    continue  # a number or literal may go on in the next chunk
            break
        yield window.byte_offset(pos), window.byte_offset(end), record, watch.seen
        separator = _SEPARATOR(window.text, end)
        if separator is not None and separator.end() < len(window.text):
            pos = separator.end()  # the usual case: a comma, the next record in the window
            continue
        pos = window.skip_ws(end)
        if pos >= len(window.text):
            raise window.error(pos, "unexpected end of file, expected ',' or ']'")
        if window.text[pos] == "]":
            _expect_end(window, pos + 1)
            return
        if window.text[pos] != ",":
            raise window.error(pos, "expected ',' or ']' after a record")
        pos = window.skip_ws(pos + 1)


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
