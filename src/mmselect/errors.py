"""Exceptions with messages meant for the person running mmselect."""

from __future__ import annotations


class MMSelectError(Exception):
    """Base class: the CLI prints the message and exits non-zero, without a traceback."""


class DataFormatError(MMSelectError):
    """The input file cannot be parsed (names the file and the position)."""


class RecordError(MMSelectError):
    """One record is unusable; carries the record's key and the reason."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"record {key}: {reason}")
        self.key = key
        self.reason = reason


class MissingFeaturesError(MMSelectError):
    """A features directory lacks what a method needs."""


class NonFiniteFeaturesError(MMSelectError):
    """NaN or inf in features a method reads."""


class BudgetError(MMSelectError):
    """The budget cannot be met or parsed."""


class ConfigError(MMSelectError):
    """An unknown name or an invalid parameter."""
