"""mmselect: select the most valuable part of a visual-instruction dataset before fine-tuning an MLLM."""

from __future__ import annotations

__version__ = "0.1.0"

from typing import Any

from .budget import Budget
from .features.store import FeatureSet
from .methods import get_method, list_methods, register_method

# Loaded on first use, so `import mmselect` stays light (no torch, no transformers).
_LAZY = {
    "run": "mmselect.pipeline",
    "extract": "mmselect.pipeline",
    "select": "mmselect.pipeline",
    "ExtractOptions": "mmselect.features.context",
    "SelectOptions": "mmselect.select_options",
    "register_feature": "mmselect.features.registry",
    "Feature": "mmselect.features.registry",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mmselect' has no attribute {name!r}")


__all__ = ["Budget", "ExtractOptions", "Feature", "FeatureSet", "SelectOptions", "extract", "get_method", "list_methods",
           "register_feature", "register_method", "run", "select", "__version__"]
