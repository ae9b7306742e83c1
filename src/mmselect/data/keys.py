"""Sample keys: the record's position and a 40-bit content hash of its canonical JSON (sorted keys,
compact separators), the same bytes whichever JSON library writes them."""

from __future__ import annotations

import hashlib
import json
from typing import Any

try:  # optional: the same canonical bytes, 5-10x faster (see record_hash40)
    import orjson
except ImportError:  # pragma: no cover - exercised by forcing the fallback in tests
    orjson = None

_ENCODE_CANONICAL = json.encoder.c_make_encoder(  # json.dumps(sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    None, json.JSONEncoder().default, json.encoder.encode_basestring, None, ":", ",", True, False, True
) if json.encoder.c_make_encoder is not None else None
# orjson writes floats differently from Python (1e-05 vs 0.00001, NaN as null): records with floats
# (the scan notes them) are written by json; orjson refuses integers beyond 64 bits by itself.


def _canonical_json(record: Any) -> bytes:
    if _ENCODE_CANONICAL is not None:
        text = "".join(_ENCODE_CANONICAL(record, 0))
    else:  # pragma: no cover - Pythons without the C accelerator
        text = json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8", "surrogatepass")


def _fast_canonical(record: Any) -> bytes | None:
    """orjson's sorted compact output (for a record without floats it is byte for byte what json
    writes), or None when orjson is missing or refuses the record."""
    if orjson is None:
        return None
    try:
        return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        return None


def record_hash40(record: Any, has_float: bool = True) -> int:
    """The content hash of :func:`~.records.content_hash` (blake2b, 5 bytes), as an integer."""
    canonical = None if has_float else _fast_canonical(record)
    if canonical is None:
        canonical = _canonical_json(record)
    return int.from_bytes(hashlib.blake2b(canonical, digest_size=5).digest(), "big")


def format_key(position: int, hash40: int) -> str:
    return f"{position:07d}-{hash40:010x}"
