"""``--config FILE``: a command's options from a YAML or TOML file; flags on the command line win.

Keys are option names, with dashes or underscores (``batch-size = 16``, ``feature_param =
["coincide.layers=[3,7]"]``), the positional argument under its own name (``data``); paths are
relative to the current directory, as on the command line. Keys at the
top level apply to every command that has that option; a table named after a command (``[run]``,
``[extract]``, ``[select]``) applies to that command only and overrides the top level, so one file
can hold a whole two-step job. A key no command knows is an error naming it.

The resolved options of the invocation (file values, overridden by flags, and defaults) are what
the manifest records under ``config``.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import typer
import typer.core

from .errors import ConfigError

COMMANDS_WITH_CONFIG = ("run", "extract", "select")

_invocation: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("mmselect_invocation", default=None)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a ``.toml``, ``.yaml``/``.yml`` or ``.json`` file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover - Python 3.10
                import tomli as tomllib
            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"--config {path}: use a .toml, .yaml/.yml or .json file")
    except ConfigError:
        raise
    except Exception as err:  # each parser has its own error type; the message names the line
        raise ConfigError(f"--config {path}: cannot parse: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: the file must hold a mapping of option names to values")
    return data


def _name(key: str) -> str:
    return str(key).strip().lstrip("-").replace("-", "_")


def _param_names(command: Any) -> set[str]:
    return {p.name for p in command.params if p.name and p.expose_value}


def command_defaults(data: dict[str, Any], command: Any, command_name: str,
                     known_elsewhere: set[str] = frozenset(), source: str = "config") -> dict[str, Any]:
    """The option values ``data`` gives ``command`` (top level, then its own table over it).

    A top-level key that is another command's table or option (``known_elsewhere``) is left to
    that command; any other unknown key is an error."""
    own = _param_names(command)
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = _name(key)
        if isinstance(value, dict) and key in COMMANDS_WITH_CONFIG:
            continue
        if name in own:
            values[name] = value
        elif name not in known_elsewhere:
            raise ConfigError(f"{source}: unknown option {key!r} (options of {command_name}: "
                              f"{', '.join(sorted(n.replace('_', '-') for n in own))})")
    section = data.get(command_name)
    if isinstance(section, dict):
        for key, value in section.items():
            name = _name(key)
            if name not in own:
                raise ConfigError(f"{source} [{command_name}]: unknown option {key!r} (options: "
                                  f"{', '.join(sorted(n.replace('_', '-') for n in own))})")
            values[name] = value
    repeatable = {p.name for p in command.params if getattr(p, "multiple", False)}
    # a repeatable option given one value in the file (param = "seed=3") is a list of one
    return {name: [value] if name in repeatable and isinstance(value, str) else value for name, value in values.items()}


def _known_to_other_commands(ctx: Any) -> set[str]:
    commands = getattr(ctx.parent.command, "commands", {}) if ctx.parent is not None else {}
    names: set[str] = set()
    for other in COMMANDS_WITH_CONFIG:
        command = commands.get(other)
        if command is not None and other != ctx.info_name:
            names |= _param_names(command)
    return names


def apply_config(ctx: typer.Context, param: typer.CallbackParam, value: Path | None) -> Path | None:
    """``--config`` callback: read before the other options (it is eager), so the file's values
    become the defaults that the command line overrides."""
    if not value or ctx.resilient_parsing:
        return value
    try:
        data = read_config_file(value)
        defaults = command_defaults(data, ctx.command, ctx.info_name or "", _known_to_other_commands(ctx), f"--config {value}")
    except ConfigError as err:
        raise typer.BadParameter(str(err)) from None
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    ctx.meta["mmselect_config_file"] = str(value)
    return value


ConfigOpt = typer.Option(
    None, "--config", is_eager=True, callback=apply_config,
    help="YAML or TOML file of this command's options (keys: the option names); flags given here win.",
)


class ConfiguredCommand(typer.core.TyperCommand):
    """A command that records its resolved options (``--config`` file, then flags) for the manifest."""

    def invoke(self, ctx: Any) -> Any:
        token = _invocation.set(resolved_invocation(ctx))
        try:
            return super().invoke(ctx)
        finally:
            _invocation.reset(token)


def resolved_invocation(ctx: Any) -> dict[str, Any]:
    """The command, its resolved options, the checksums of the files they name and, when one was
    given, the config file and its digest."""
    from .provenance import input_checksum

    options = {k: _plain(v) for k, v in ctx.params.items() if k != "config"}
    record: dict[str, Any] = {"command": ctx.info_name, "options": options}
    # every file an option names (the data, a scores file): its checksum; folders are not hashed
    files = {k: input_checksum(v) for k, v in options.items() if isinstance(v, str) and v and Path(v).is_file()}
    if files:
        record["input_files"] = files
    path = ctx.meta.get("mmselect_config_file")
    if path:
        record["file"] = path
        record["sha256"] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return record


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def current_invocation() -> dict[str, Any] | None:
    """The resolved options of the CLI command running now (``None`` from the Python API)."""
    return _invocation.get()


__all__ = ["ConfigOpt", "ConfiguredCommand", "apply_config", "command_defaults", "current_invocation", "read_config_file", "resolved_invocation"]
