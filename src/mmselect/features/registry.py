"""Feature registry: every extract option is a :class:`Feature` registered under its name.

A feature declares what it needs (``"model"``: the main model's pass; other feature names: their
values must exist first; ``model_options``: options naming a second model), the columns/arrays it writes, its options (with defaults and a one-line
meaning), and runs as ``run(samples, context)`` through the context's runner. Built-in features are
listed lazily (name -> module:attribute), so importing mmselect imports no model code; other
packages add features with :func:`register_feature` or the ``mmselect.features`` entry-point group.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

import numpy as np

from ..errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from .context import ExtractionContext


@dataclass(frozen=True)
class FeatureOption:
    """One option of a feature: its default and what it means (shown by ``mmselect features``)."""

    default: Any
    help: str


@dataclass
class FeatureOutput:
    """What a feature's pass produced: per-sample columns and arrays in the order of the samples it
    was given, and information for the manifest."""

    columns: dict[str, np.ndarray] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


class Feature:
    """Base class. Subclasses set the class attributes and implement :meth:`run`.

    ``params`` holds only the options the user (or a method) gave; :meth:`option` falls back to the
    default, so adding an option with a default keeps existing cache keys.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    columns: ClassVar[tuple[str, ...]] = ()
    arrays: ClassVar[tuple[str, ...]] = ()
    needs: ClassVar[tuple[str, ...]] = ("model",)
    #: Options that name a second model this feature loads (through ``context.model``).
    model_options: ClassVar[tuple[str, ...]] = ()
    options: ClassVar[dict[str, FeatureOption]] = {}
    #: Features with the same (non-empty) pass name run together in one pass (the main model's hooks).
    shared_pass: ClassVar[str | None] = None

    def __init__(self, **params: Any):
        unknown = sorted(set(params) - set(self.options))
        if unknown:
            known = ", ".join(self.options) or "none"
            raise ConfigError(f"feature {self.name!r} has no option(s) {unknown}; its options: {known}")
        self.params = dict(params)

    def option(self, key: str) -> Any:
        return self.params[key] if key in self.params else self.options[key].default

    def feature_needs(self) -> list[str]:
        """Other features whose values this one reads (they run first)."""
        return [n for n in self.needs if n != "model"]

    def cache_spec(self, context: "ExtractionContext") -> dict[str, Any]:
        """What the cached shards of this feature depend on (the cache directory is its digest)."""
        return {"feature": self.name, "params": self.params}

    def run(self, samples: Sequence, context: "ExtractionContext") -> FeatureOutput:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.params!r})"


# name -> "module:attribute" of the Feature class
_BUILTIN: dict[str, str] = {
    **{name: f"mmselect.features.hook_features:{name}" for name in (
        "tokens", "last_token", "mean_embed", "last_token_final", "mean_embed_final", "spectrum", "visual_mean",
        "coincide", "answer_nll", "el2n", "aum", "ifd", "scalselect",
    )},
    "clipper": "mmselect.features.clipper_pass:ClipperFeature",
    "clip_score": "mmselect.features.clip_feature:ClipScoreFeature",
    "mmssr-scores": "mmselect.features.mmssr_feature:MMSSRScoresFeature",
    "user-scores": "mmselect.features.user_scores:UserScoresFeature",
}
_REGISTERED: dict[str, type[Feature]] = {}
_ENTRY_POINTS_LOADED = False


def register_feature(cls: type[Feature] | None = None, *, name: str | None = None):
    """Register a :class:`Feature` subclass under ``name`` (default ``cls.name``); usable as a
    decorator. A name that is taken (built in or registered) is refused."""

    def decorator(feature_cls: type[Feature]) -> type[Feature]:
        feature_name = name or feature_cls.name
        if not feature_name:
            raise ConfigError(f"{feature_cls.__name__} has no name")
        if feature_name in _BUILTIN or feature_name in _REGISTERED:
            raise ConfigError(f"feature name {feature_name!r} is taken")
        feature_cls.name = feature_name
        _REGISTERED[feature_name] = feature_cls
        return feature_cls

    return decorator(cls) if cls is not None else decorator


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    for ep in entry_points(group="mmselect.features"):
        if ep.name not in _REGISTERED and ep.name not in _BUILTIN:
            _REGISTERED[ep.name] = ep.load()


def feature_class(name: str) -> type[Feature]:
    if name not in _REGISTERED and name in _BUILTIN:
        module_name, attribute = _BUILTIN[name].split(":")
        _REGISTERED[name] = getattr(importlib.import_module(module_name), attribute)
    if name not in _REGISTERED:
        _load_entry_points()
    if name not in _REGISTERED:
        raise ConfigError(f"unknown feature {name!r}; known features: {', '.join(feature_names())}")
    return _REGISTERED[name]


def feature_names() -> list[str]:
    """Every feature name, built-in first, without importing the features."""
    _load_entry_points()
    return list(_BUILTIN) + [n for n in _REGISTERED if n not in _BUILTIN]


def get_feature(name: str, **params: Any) -> Feature:
    return feature_class(name)(**params)


def check_feature_params(feature_params: Mapping[str, Mapping[str, Any]] | None) -> None:
    """Refuse options for features that do not exist, or keys a feature does not have."""
    for name, params in (feature_params or {}).items():
        cls = feature_class(name)
        cls(**dict(params))


def resolve_features(names: Sequence[str], feature_params: Mapping[str, Mapping[str, Any]] | None = None) -> list[Feature]:
    """The features to run for ``names``: unknown names and options fail here, before any model
    loads; features another one reads are added; every feature comes after the ones it reads."""
    feature_params = feature_params or {}
    check_feature_params(feature_params)
    ordered: list[Feature] = []
    visiting: list[str] = []

    def visit(name: str) -> None:
        if any(f.name == name for f in ordered):
            return
        if name in visiting:
            raise ConfigError(f"features read each other in a cycle: {' -> '.join(visiting + [name])}")
        visiting.append(name)
        feature = get_feature(name, **dict(feature_params.get(name, {})))
        for needed in feature.feature_needs():
            visit(needed)
        visiting.pop()
        ordered.append(feature)

    for name in dict.fromkeys(names):
        visit(name)
    return ordered


def merge_feature_params(*layers: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Later layers win, key by key (methods' implied options first, then the user's)."""
    merged: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for name, params in (layer or {}).items():
            merged.setdefault(name, {}).update(params)
    return merged


def parse_feature_param(item: str) -> tuple[str, str, Any]:
    """``NAME.KEY=VALUE`` -> (name, key, value); VALUE is read as JSON when it parses."""
    import json

    target, sep, value = item.partition("=")
    name, dot, key = target.strip().rpartition(".")
    if not sep or not dot or not name or not key:
        raise ConfigError(f"feature option {item!r} is not NAME.KEY=VALUE (e.g. coincide.layers=[3,7])")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return name, key.strip(), parsed


def parse_feature_params(items: Sequence[str] | None) -> dict[str, dict[str, Any]]:
    params: dict[str, dict[str, Any]] = {}
    for item in items or []:
        name, key, value = parse_feature_param(item)
        params.setdefault(name, {})[key] = value
    return params


#: Former per-feature options -> (feature, option); kept as deprecated aliases.
LEGACY_OPTIONS: dict[str, tuple[str, str]] = {
    "clip_model": ("clip_score", "model"),
    "scorer_model": ("mmssr-scores", "scorer"),
    "styler_model": ("mmssr-scores", "styler"),
    "capabilities": ("mmssr-scores", "capabilities"),
    "coincide_layers": ("coincide", "layers"),
    "visual_layer": ("visual_mean", "layer"),
}


def legacy_feature_params(**values: Any) -> dict[str, dict[str, Any]]:
    """Feature options from the former per-feature keywords (``None`` values are left out)."""
    params: dict[str, dict[str, Any]] = {}
    for keyword, value in values.items():
        if value is None:
            continue
        if keyword not in LEGACY_OPTIONS:
            raise TypeError(f"unexpected keyword argument {keyword!r}")
        name, key = LEGACY_OPTIONS[keyword]
        params.setdefault(name, {})[key] = value
    return params


__all__ = [
    "Feature",
    "FeatureOption",
    "FeatureOutput",
    "feature_class",
    "feature_names",
    "get_feature",
    "merge_feature_params",
    "parse_feature_params",
    "register_feature",
    "resolve_features",
]
