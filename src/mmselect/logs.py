"""One logger for the whole package (``mmselect`` and its children), set up once by the CLI.

Levels: ``-q`` shows warnings and errors only; the default shows progress and information;
``-v`` adds debug messages and the download/loading bars of ``transformers`` (silenced otherwise).
``--log-file`` receives every record at the chosen level (at least INFO), with timestamps, whatever
the terminal shows. Progress reaches the log as plain lines (see :mod:`mmselect.progress`): on a
terminal the live bar replaces them on screen, elsewhere (a Slurm log) they are what you read.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

LOGGER_NAME = "mmselect"
QUIET, NORMAL, VERBOSE = -1, 0, 1

log = logging.getLogger(LOGGER_NAME)

_state = {"verbosity": NORMAL, "configured": False, "log_file": None}


class _NotOnTerminal(logging.Filter):
    """Drop progress lines on a stream that shows the live bar instead."""

    def __init__(self, stream):
        super().__init__()
        self.stream = stream

    def filter(self, record: logging.LogRecord) -> bool:
        return not (getattr(record, "progress", False) and _is_terminal(self.stream))


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (it may be replaced after set-up)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ assigns it; the current stderr is used instead
        pass


class _NotOnTerminalNow(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (getattr(record, "progress", False) and _is_terminal(sys.stderr))


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def verbosity() -> int:
    """``QUIET``, ``NORMAL`` or ``VERBOSE``, as the CLI set it (``NORMAL`` when never set)."""
    return _state["verbosity"]


def configure(verbosity: int = NORMAL, log_file: str | os.PathLike | None = None, stream=None) -> logging.Logger:
    """Set the ``mmselect`` logger's handlers: ``stream`` (default: the current stderr) at the level
    of ``verbosity``, and ``log_file`` (appended to) at INFO or below. Calling it again replaces
    them. Records still propagate to the root logger, for an application's own handlers."""
    level = {QUIET: logging.WARNING, NORMAL: logging.INFO, VERBOSE: logging.DEBUG}[max(QUIET, min(VERBOSE, verbosity))]
    for handler in list(log.handlers):
        log.removeHandler(handler)
        if isinstance(handler, logging.FileHandler):
            handler.close()
    console = _CurrentStderr() if stream is None else logging.StreamHandler(stream)
    console.setLevel(level)
    console.setFormatter(logging.Formatter("%(message)s" if level > logging.DEBUG else "%(levelname)s %(name)s: %(message)s"))
    console.addFilter(_NotOnTerminalNow() if stream is None else _NotOnTerminal(stream))
    log.addHandler(console)
    if log_file is not None:
        path = Path(log_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(path, encoding="utf-8")
        to_file.setLevel(min(level, logging.INFO))
        to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S"))
        log.addHandler(to_file)
    log.setLevel(min(level, logging.INFO) if log_file is not None else level)
    _state.update(verbosity=verbosity, configured=True, log_file=str(log_file) if log_file is not None else None)
    quiet_libraries(verbose=verbosity >= VERBOSE)
    return log


def quiet_libraries(verbose: bool = False) -> None:
    """Outside ``-v``: no ``Loading weights`` / download bars and no info chatter from
    ``transformers`` and the hub client, in every run; their warnings still show."""
    if verbose:
        return
    # transformers reads this when imported (its tqdm bars follow the hub's switch); importing it
    # here only to switch them off would cost every command a second of start-up.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "warning")
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def progress_bar_wanted() -> bool:
    """A live bar: not with ``-q``."""
    return verbosity() > QUIET


def progress_lines_wanted() -> bool:
    """Plain progress lines: shown unless ``-q``; with ``-q`` still written to a ``--log-file``."""
    return verbosity() > QUIET or _state.get("log_file") is not None


__all__ = ["LOGGER_NAME", "NORMAL", "QUIET", "VERBOSE", "configure", "log", "progress_bar_wanted", "progress_lines_wanted", "quiet_libraries", "verbosity"]
