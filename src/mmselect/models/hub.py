"""Where a model comes from, checked before transformers is asked to load it.

A mistyped id or a hub that cannot be reached otherwise surfaces as a long traceback after several
retries; here it is one line naming the id, what went wrong, and how to use a local directory.
``HF_HUB_OFFLINE=1`` is honoured: only the local cache is looked at.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from ..errors import ConfigError

T = TypeVar("T")

#: Seconds to wait for the hub's answer to the one request that checks an id.
HUB_TIMEOUT = 10.0

_LOCAL_HINT = ("download it where the hub is reachable (`hf download {id}`, then copy the directory) "
               "and pass --model /path/to/that/directory")


class ModelSourceError(ConfigError):
    """The model cannot be found: not a local directory, not reachable or not existing on the hub."""


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def looks_like_path(source: str) -> bool:
    """A name meant as a directory: ``./x``, ``/x``, ``~/x``, or more than ``owner/name``."""
    return source.startswith((".", "/", "~")) or source.count("/") > 1 or os.sep != "/" and os.sep in source


def check_model_source(source: str, revision: str | None = None) -> None:
    """Raise :class:`ModelSourceError` when ``source`` is neither a local directory nor a hub id
    that is cached or that the hub knows. A hub id already in the local cache passes without
    network access; otherwise one request (``HUB_TIMEOUT`` seconds) asks the hub."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelSourceError(f"model {source}: a file, not a model directory (it needs a config.json)")
        if not (path / "config.json").exists():
            raise ModelSourceError(f"model directory {source} has no config.json; is it a transformers model directory?")
        return
    if looks_like_path(source):
        raise ModelSourceError(f"model directory {source} does not exist")
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(source, "config.json", revision=revision)
    except Exception:  # an id the cache cannot even name (bad characters): the hub says more below
        cached = None
    if isinstance(cached, str):
        return
    hint = _LOCAL_HINT.format(id=source)
    if hub_offline():
        raise ModelSourceError(
            f"model {source!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set, so the hub "
            f"was not asked; unset HF_HUB_OFFLINE to download it, or {hint}"
        )
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        HfApi().model_info(source, revision=revision, timeout=HUB_TIMEOUT)
    except GatedRepoError:
        raise ModelSourceError(
            f"model {source!r} is gated on the Hugging Face hub: accept its terms on its page and log in "
            f"(`hf auth login`), or {hint}"
        ) from None
    except RevisionNotFoundError:
        raise ModelSourceError(f"model {source!r} has no revision {revision!r} on the Hugging Face hub") from None
    except (RepositoryNotFoundError, HFValidationError):
        raise ModelSourceError(
            f"model {source!r} does not exist on the Hugging Face hub (or is private: log in with `hf auth login`); "
            f"check the spelling (`mmselect models` lists the presets), or pass a local directory"
        ) from None
    except Exception as err:  # no connection, DNS, proxy, timeout, a hub error page
        raise ModelSourceError(
            f"model {source!r}: the Hugging Face hub could not be reached ({type(err).__name__}), and the model is "
            f"not in the local cache; check the connection, or {hint}"
        ) from None


@contextlib.contextmanager
def loading(source: str) -> Iterator[None]:
    """Turn what transformers raises for a model it cannot load into one line naming ``source``."""
    try:
        yield
    except ValueError as err:
        if "trust_remote_code" in str(err):
            raise ModelSourceError(
                f"model {source} ships its own Python code, which mmselect does not run unless asked: rerun with "
                "--trust-remote-code if you trust that repository"
            ) from None
        raise
    except OSError as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ModelSourceError(f"model {source} cannot be loaded: {first}") from None


def call_loading(source: str, function: Callable[..., T], *args, **kwargs) -> T:
    with loading(source):
        return function(*args, **kwargs)


__all__ = ["HUB_TIMEOUT", "ModelSourceError", "call_loading", "check_model_source", "hub_offline", "loading", "looks_like_path"]
