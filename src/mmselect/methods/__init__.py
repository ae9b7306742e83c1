"""Method registry.

Built-in methods are listed lazily (name -> module path and one-line summary), so importing
mmselect does not import every method's dependencies. Third-party packages add methods through
the ``mmselect.methods`` entry-point group, or at run time with :func:`register_method`.
"""

from __future__ import annotations

import importlib
import inspect
from importlib.metadata import entry_points
from typing import Any

from ..errors import ConfigError
from .base import FeatureNeed, Param, SelectionMethod, SelectionResult, top_k_mask

# name -> (module:Class, one-line summary)
_BUILTIN: dict[str, tuple[str, str]] = {
    "random": ("mmselect.methods.random_sample:RandomSelection", "uniform random subset (seeded)"),
    "length": ("mmselect.methods.length:LengthSelection", "longest responses first (answer tokens)"),
    "perplexity": (
        "mmselect.methods.perplexity:PerplexitySelection",
        "keep a low / mid / high band of answer perplexity",
    ),
    "datatailor": (
        "mmselect.methods.datatailor:DataTailor",
        "informativeness (singular-value entropy) + uniqueness + representativeness, task budgets",
    ),
    "coincide": (
        "mmselect.methods.coincide:Coincide",
        "cluster transferability/density budget split, greedy MMD inside clusters",
    ),
    "prism": ("mmselect.methods.prism:Prism", "lowest mean centred correlation of pooled visual features"),
    "mmssr": ("mmselect.methods.mmssr:MMSSR", "capability scores round-robin over style x source bins"),
    "clipper": (
        "mmselect.methods.clipper:Clipper",
        "(interpretation) zero-/one-shot perplexity, coreset mirroring the perplexity histogram",
    ),
    "ifd": ("mmselect.methods.ifd:IFD", "instruction-following difficulty: loss(a|q) / loss(a)"),
    "el2n": ("mmselect.methods.el2n:EL2N", "answer-token error L2 norm, keep a band"),
    "semdedup": ("mmselect.methods.semdedup:SemDeDup", "k-means + within-cluster cosine dedup, eps searched for the budget"),
    "d2-pruning": ("mmselect.methods.d2_pruning:D2Pruning", "kNN graph message passing + greedy reverse passing"),
    "clip-score": ("mmselect.methods.clip_score:ClipScore", "image-text cosine from a CLIP model, keep the highest"),
    "scalselect": (
        "mmselect.methods.scalselect:ScalSelect",
        "rank-k leverage of attention-pooled early visual features, keep the highest",
    ),
}

_REGISTERED: dict[str, type[SelectionMethod]] = {}
_ENTRY_POINTS_LOADED = False


def register_method(name: str):
    """Class decorator: make a :class:`SelectionMethod` available under ``name``.

    A name already taken (a built-in method, one registered before or one from an entry point)
    is refused with a :class:`ConfigError`."""
    _load_entry_points()
    if name in _BUILTIN or name in _REGISTERED:
        owner = "a built-in method" if name in _BUILTIN else f"{_REGISTERED[name].__module__}.{_REGISTERED[name].__qualname__}"
        raise ConfigError(f"method name {name!r} is already taken by {owner}; register the method under another name")

    def decorator(cls: type[SelectionMethod]) -> type[SelectionMethod]:
        if not (isinstance(cls, type) and issubclass(cls, SelectionMethod)):
            raise ConfigError(f"register_method({name!r}) decorates a SelectionMethod subclass, got {cls!r}")
        cls.name = name
        _REGISTERED[name] = cls
        return cls

    return decorator


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    for ep in entry_points(group="mmselect.methods"):
        if ep.name not in _REGISTERED and ep.name not in _BUILTIN:
            _REGISTERED[ep.name] = ep.load()


def method_class(name: str) -> type[SelectionMethod]:
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name in _BUILTIN:
        module_name, class_name = _BUILTIN[name][0].split(":")
        cls = getattr(importlib.import_module(module_name), class_name)
        cls.name = name
        _REGISTERED[name] = cls
        return cls
    _load_entry_points()
    if name in _REGISTERED:
        return _REGISTERED[name]
    raise ConfigError(f"unknown method {name!r}; known methods: {', '.join(sorted(list_methods()))}")


def get_method(name: str, **params: Any) -> SelectionMethod:
    """Instantiate method ``name`` with ``params``. Unknown parameters and values outside a
    parameter's declared constraints are a :class:`ConfigError`, raised before any work."""
    cls = method_class(name)
    allowed = cls.param_names()
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ConfigError(f"method {name!r} has no parameter(s) {unknown}; parameters: {allowed}")
    return cls(**params)


def list_methods() -> dict[str, str]:
    """name -> one-line summary, without importing the methods."""
    _load_entry_points()
    listing = {name: summary for name, (_, summary) in _BUILTIN.items()}
    for name, cls in _REGISTERED.items():
        listing.setdefault(name, cls.summary or (inspect.getdoc(cls) or "").split("\n")[0])
    return listing


__all__ = [
    "FeatureNeed",
    "Param",
    "SelectionMethod",
    "SelectionResult",
    "get_method",
    "list_methods",
    "method_class",
    "register_method",
    "top_k_mask",
]
