"""What ``mmselect features`` shows: every registered feature, what it writes, its options and the
methods that read it."""

from __future__ import annotations

from typing import Any


def methods_reading() -> dict[str, list[str]]:
    """feature name -> the methods whose default configuration needs it."""
    from ..methods import get_method, list_methods

    readers: dict[str, list[str]] = {}
    for method_name in list_methods():
        try:
            needed = get_method(method_name).extract_features()
        except Exception:  # noqa: BLE001 - a method whose optional dependency is missing
            continue
        for feature_name in needed:
            readers.setdefault(feature_name, []).append(method_name)
    return readers


def feature_table() -> list[dict[str, Any]]:
    from .registry import feature_class, feature_names

    readers = methods_reading()
    rows = []
    for name in feature_names():
        cls = feature_class(name)
        rows.append({
            "name": name,
            "summary": cls.summary,
            "writes": list(cls.columns) + [f"{a}.npy" for a in cls.arrays],
            "needs": [n for n in cls.needs if n != "model"],
            "models": [f"{name}.{option}" for option in cls.model_options],
            "options": {key: {"default": option.default, "help": option.help} for key, option in cls.options.items()},
            "methods": readers.get(name, []),
        })
    return rows


__all__ = ["feature_table", "methods_reading"]
