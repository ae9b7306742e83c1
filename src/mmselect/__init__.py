"""mmselect: select the most valuable part of a visual-instruction dataset before fine-tuning an MLLM."""

from __future__ import annotations

__version__ = "0.1.0"

from .budget import Budget
from .features.store import FeatureSet
from .methods import get_method, list_methods, register_method

__all__ = ["Budget", "FeatureSet", "get_method", "list_methods", "register_method", "__version__"]
