"""Where images come from and how they are checked: local roots, fsspec URLs, bytes in rows.

An image reference (``Sample.image_paths``) is a string: a local path, an fsspec URL (``zip://``,
``tar://``, ``https://``, ``s3://``, ``gs://`` ...), or a row reference for images stored as bytes in
a parquet / Arrow dataset (see :mod:`.rows`). :func:`open_image` opens any of them.

Checks at read time open the header only: existence, a decodable header, a pixel count within
``max_pixels`` (a 140 kB PNG can declare 144 megapixels and take gigabytes to decode), and for a
local ``--image-root``, a real path (symlinks resolved) inside it.
"""

from __future__ import annotations

import io
import os
import posixpath
import re
from pathlib import Path
from typing import IO

from PIL import Image

from ..errors import DataFormatError, RecordError

# Larger images are rejected from their header, before anything is decoded.
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
MAX_PIXELS_ENV = "MMSELECT_MAX_IMAGE_PIXELS"

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
ARCHIVE_SUFFIXES = {".zip": "zip", ".tar": "tar", ".tgz": "tar", ".tar.gz": "tar", ".tar.bz2": "tar", ".tar.xz": "tar"}

# Image roots in use (reference prefix -> suffix), so that messages name images relative to their root.
_ROOTS: set[tuple[str, str]] = set()


def max_image_pixels(value: int | None = None) -> int:
    """``value``, else ``$MMSELECT_MAX_IMAGE_PIXELS``, else 40 megapixels."""
    if value is not None:
        return int(value)
    env = os.environ.get(MAX_PIXELS_ENV)
    if env:
        try:
            return int(float(env))
        except ValueError:
            raise DataFormatError(f"${MAX_PIXELS_ENV}={env!r} is not a number of pixels") from None
    return DEFAULT_MAX_IMAGE_PIXELS


def is_url(text: str) -> bool:
    return bool(_URL.match(text))


def describe(ref: str) -> str:
    """``ref`` relative to the image root it lies under (as the record wrote it), else as is."""
    for prefix, suffix in sorted(_ROOTS, key=lambda item: -len(item[0]) - len(item[1])):
        if ref.startswith(prefix) and ref.endswith(suffix):
            return ref[len(prefix):len(ref) - len(suffix)]
    if ref.startswith("row://"):
        from .rows import describe_row_image

        return describe_row_image(ref)
    return ref


class ImageResolver:
    """Turns the image paths written in records into references under ``root``.

    ``root``: a local directory, a local ``.zip`` / ``.tar`` archive, or an fsspec URL (a directory
    URL such as ``s3://bucket/images``, or an archive such as ``zip://::https://host/images.zip``).
    Without a root, records must hold absolute paths or URLs.
    """

    def __init__(self, root: str | os.PathLike | None):
        self.local_root: Path | None = None
        self.real_root: str | None = None
        self.url_prefix: str | None = None  # images are url_prefix + relative (+ url_suffix)
        self.url_suffix = ""
        self.description = None if root is None else str(root)
        if root is None:
            return
        text = os.fspath(root)
        archive = _archive_protocol(text)
        if archive and not is_url(text):
            if not Path(text).is_file():
                raise DataFormatError(f"image root {text}: no such archive")
            self.url_prefix, self.url_suffix = f"{archive}://", f"::{Path(text).resolve()}"
        elif "::" in text:  # chained fsspec URL: zip://inner/dir::outer
            inner, outer = text.split("::", 1)
            protocol, _, inside = inner.partition("://")
            inside = inside.strip("/")
            self.url_prefix = f"{protocol}://{inside + '/' if inside else ''}"
            self.url_suffix = f"::{outer}"
        elif is_url(text) and not text.startswith("file://"):
            self.url_prefix = text.rstrip("/") + "/"
        else:
            local = Path(text[len("file://"):] if text.startswith("file://") else text)
            if not local.is_dir():
                raise DataFormatError(f"image root {local} is not a directory")
            self.local_root = local.resolve()
            self.real_root = os.path.realpath(local)
            _ROOTS.add((str(self.local_root) + os.sep, ""))
            return
        _ROOTS.add((self.url_prefix, self.url_suffix))

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)  # in a worker process: messages name images relative to the root there too
        if self.local_root is not None:
            _ROOTS.add((str(self.local_root) + os.sep, ""))
        elif self.url_prefix is not None:
            _ROOTS.add((self.url_prefix, self.url_suffix))

    def resolve(self, relative: str, key: str) -> str:
        """The reference of image ``relative``; a path leaving the root (lexically) is refused."""
        if self.local_root is None and self.url_prefix is None:
            if is_url(relative) or os.path.isabs(relative):
                return relative
            raise RecordError(key, f"image {relative!r} is relative but no --image-root was given")
        if is_url(relative) or relative.startswith(("/", "\\")):
            raise RecordError(key, f"image path {relative!r} escapes the image root")
        normal = posixpath.normpath(relative.replace("\\", "/"))
        if normal == ".." or normal.startswith("../"):
            raise RecordError(key, f"image path {relative!r} escapes the image root")
        if self.local_root is not None:
            return os.path.join(self.local_root, normal)
        return f"{self.url_prefix}{normal}{self.url_suffix}"

    def check_contained(self, ref: str, relative: str, key: str) -> None:
        """For a local root: the real path (symlinks resolved) must stay inside the root's real path."""
        if self.real_root is None:
            return
        real = os.path.realpath(ref)
        if real != self.real_root and not real.startswith(self.real_root.rstrip(os.sep) + os.sep):
            raise RecordError(key, f"image path {relative!r} leads outside the image root (through a symbolic link)")


def _archive_protocol(text: str) -> str | None:
    lower = text.lower()
    for suffix, protocol in ARCHIVE_SUFFIXES.items():
        if lower.endswith(suffix):
            return protocol
    return None


def _open_binary(ref: str) -> IO[bytes]:
    if ref.startswith("row://"):
        from .rows import row_image_bytes

        return io.BytesIO(row_image_bytes(ref))
    if is_url(ref):
        import fsspec

        # Read whole: a file inside an archive closes with its OpenFile; images are small.
        with fsspec.open(ref, "rb") as handle:
            return io.BytesIO(handle.read())
    return open(ref, "rb")


def read_image_bytes(ref: str) -> bytes:
    """The encoded bytes of an image reference (local path, fsspec URL or row reference)."""
    with _open_binary(ref) as handle:
        return handle.read()


def exists(ref: str) -> bool:
    if ref.startswith("row://"):
        return True
    if is_url(ref):
        import fsspec

        try:
            fs, path = fsspec.core.url_to_fs(ref)
            return fs.isfile(path)
        except (FileNotFoundError, OSError):
            return False
    return os.path.isfile(ref)


def check_image(ref: str, relative: str, key: str, *, verify: str | bool = False, max_pixels: int | None = None) -> None:
    """Raise :class:`RecordError` (naming ``relative``) if the image is missing, has no readable
    header, declares more than ``max_pixels`` pixels, or fails ``verify``: ``"structure"`` reads the
    whole file and checks its structure without decoding pixels (PIL's ``verify``: PNG chunks and
    checksums, truncation), ``"decode"`` (or True) decodes it in full."""
    if not exists(ref):
        raise RecordError(key, f"image not found: {relative}")
    try:
        with _open_binary(ref) as handle:
            _check_header(handle, relative, key, verify, max_image_pixels(max_pixels))
    except RecordError:
        raise
    except Exception as err:  # PIL raises many types for corrupt files
        raise RecordError(key, f"unreadable image {relative}: {_error_text(err, ref, relative)}") from None


def check_image_bytes(data: bytes, name: str, key: str, *, verify: str | bool = False, max_pixels: int | None = None) -> None:
    """:func:`check_image` for an image held as bytes (embedded in a row)."""
    try:
        _check_header(io.BytesIO(data), name, key, verify, max_image_pixels(max_pixels))
    except RecordError:
        raise
    except Exception as err:
        message = re.sub(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "(embedded bytes)", str(err))
        raise RecordError(key, f"unreadable image {name}: {type(err).__name__}: {message}") from None


def _check_header(handle: IO[bytes], relative: str, key: str, verify: str | bool, limit: int) -> None:
    with Image.open(handle) as image:
        width, height = image.size
        if width <= 0 or height <= 0:
            raise OSError("empty image")
        if width * height > limit:
            raise RecordError(key, _too_large(relative, width, height, limit))
        if verify == "structure":
            image.verify()
        elif verify:
            image.load()


def open_image(ref: str, *, max_pixels: int | None = None) -> Image.Image:
    """Decode image ``ref`` to RGB; refuses one whose header declares more than ``max_pixels``."""
    limit = max_image_pixels(max_pixels)
    with _open_binary(ref) as handle, Image.open(handle) as image:
        width, height = image.size
        if width * height > limit:
            raise ValueError(_too_large(describe(ref), width, height, limit))
        return image.convert("RGB")


def _too_large(relative: str, width: int, height: int, limit: int) -> str:
    return (f"image {relative} is {width}x{height} = {width * height:,} pixels, above the limit of {limit:,} "
            f"(set ${MAX_PIXELS_ENV} or max_image_pixels to allow it)")


def _error_text(err: Exception, ref: str, relative: str) -> str:
    return f"{type(err).__name__}: {err}".replace(repr(ref), repr(relative)).replace(ref, relative)


__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "ImageResolver",
    "check_image",
    "check_image_bytes",
    "describe",
    "max_image_pixels",
    "open_image",
]
