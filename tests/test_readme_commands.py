"""Every `mmselect` command shown in the README's Usage section runs, on the bundled example.

The commands are read from the README itself, so the README cannot drift from the CLI. Paths are
mapped onto a small copy of `examples/mini` (a parquet copy with embedded images stands in for the
OneVision-style file), models onto `tiny-llava`, counts larger than the example onto 20, and every
output directory into a temporary directory. Lines with a literal `...` are patterns, not commands;
the Slurm job-array lines are exercised in tests/test_operation.py.
"""

import json
import re
import shlex
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mmselect.cli import app

REPO = Path(__file__).resolve().parents[1]
MINI = REPO / "examples" / "mini"
PATH_OPTIONS = {"--out", "-o", "--features", "--log-file"}


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    usage = text[text.index("## Usage"):text.index("\n## ", text.index("## Usage") + 1)]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", usage, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0].strip() if not line.lstrip().startswith("#") else ""
            if line.startswith("mmselect ") and "..." not in line:
                commands.append(line)
    return commands


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("readme")
    records = json.loads((MINI / "data.json").read_text())[:40]
    (root / "data.json").write_text(json.dumps(records))
    rows = [{"id": r["id"], "image": {"bytes": (MINI / "images" / r["image"]).read_bytes(), "path": None},
             "conversations": r["conversations"]} for r in records if isinstance(r.get("image"), str)]
    pq.write_table(pa.Table.from_pylist(rows), root / "onevision.parquet")
    (root / "job.toml").write_text(f'method = "random"\nimage-root = "{MINI / "images"}"\nout = "{root / "out-config"}"\n')
    return root


def localise(command: str, root: Path) -> list[str]:
    args = shlex.split(command)[1:]
    out, i = [], 0
    while i < len(args):
        arg = args[i]
        value = args[i + 1] if i + 1 < len(args) else None
        if arg == "--image-root":
            out += [arg, str(MINI / "images")]
        elif arg in ("--model", "-m"):
            out += [arg, "tiny-llava"]
        elif arg in ("--data", "--config"):
            out += [arg, str(root / ("job.toml" if arg == "--config" else "data.json"))]
        elif arg in PATH_OPTIONS:
            out += [arg, str(root / value)]
        elif arg in ("--budget", "-b") and value.isdigit() and int(value) > 20:
            out += [arg, "20"]
        elif arg.endswith((".json", ".jsonl")) and not arg.startswith("-"):
            out.append(str(root / "data.json"))
        elif arg.endswith(".parquet"):
            out.append(str(root / "onevision.parquet"))
        elif arg.endswith("/") and not arg.startswith("-"):  # an output directory given positionally
            out.append(str(root / arg))
        else:
            out.append(arg)
            i += 1
            continue
        i += 2 if arg.startswith("-") else 1
    return out


def test_the_readme_shows_commands():
    commands = readme_commands()
    assert len(commands) >= 10
    assert {c.split()[1] for c in commands} >= {"run", "extract", "select", "compare", "methods", "features", "models"}


def test_every_readme_command_runs_on_the_bundled_example(workspace):
    runner = CliRunner()
    for command in readme_commands():
        args = localise(command, workspace)
        result = runner.invoke(app, args)
        assert result.exit_code == 0, f"{command}\n-> mmselect {' '.join(args)}\n{result.output}"
    # the promised outputs exist
    assert (workspace / "out-lf" / "dataset_info.json").exists()
    assert sorted(p.name for p in (workspace / "out-sweep").glob("budget-*")) == ["budget-0.1", "budget-0.15", "budget-0.2"]
    assert (workspace / "cmp" / "compare.html").exists()
    assert json.loads((workspace / "out-config" / "manifest.json").read_text())["method"] == "random"
