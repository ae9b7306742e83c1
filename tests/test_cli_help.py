"""Every command's --help at 80 columns: whole option names, no value placeholder on flags, help
text for every option."""

import re

import pytest
import typer.main
from typer.testing import CliRunner

from mmselect.cli import app

GROUP = typer.main.get_command(app)
COMMANDS = sorted(GROUP.commands)


def _help(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "80", "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    return result.output


def _visible_options(command):
    return [p for p in command.params if getattr(p, "param_type_name", "") == "option" and not getattr(p, "hidden", False)]


def test_the_commands_are_all_checked():
    assert {"run", "extract", "select", "methods", "features", "models", "report", "compare"} <= set(COMMANDS)


@pytest.mark.parametrize("name", [None, *COMMANDS])
def test_help_fits_80_columns_and_names_every_option_whole(name):
    text = _help(*([name] if name else []))
    assert max(len(line) for line in text.splitlines()) <= 80, text
    assert "<bool>" not in text
    assert "…" not in text  # no name or value cut with an ellipsis
    command = GROUP.commands[name] if name else GROUP
    for option in _visible_options(command):
        for spelling in [*option.opts, *option.secondary_opts]:
            # the whole spelling, followed by a separator (not the start of a longer, cut word)
            assert re.search(re.escape(spelling) + r"(?=[\s,/]|$)", text, re.M), (name, spelling, text)


@pytest.mark.parametrize("name", [None, *COMMANDS])
def test_every_option_has_help(name):
    command = GROUP.commands[name] if name else GROUP
    missing = [p.name for p in _visible_options(command) if not (getattr(p, "help", None) or "").strip()]
    assert missing == [], f"{name}: {missing}"


def test_flags_take_no_value_in_help():
    text = _help("run")
    # a flag's name is followed directly by its help, an option's by its value placeholder
    assert re.search(r"^\s+--strict\s{2,}Fail on the first", text, re.M), text
    assert re.search(r"^\s+--trust-remote-code\s{2,}Allow", text, re.M), text
    assert re.search(r"^\s+--batch-size [<A-Z]\S*\s", text, re.M), text  # <int> or INTEGER, by typer version


def test_extract_help_points_only_at_options_that_exist():
    text = _help("extract")
    for command, option in re.findall(r"`mmselect (\w+) (--[\w-]+)", text):
        assert option in _help(command), (command, option)
    assert "methods --features" not in text
