"""Print pip constraints that pin every dependency of pyproject.toml to its declared lower bound.

    python scripts/lower_bounds.py [--extra dev] [--skip torch] > constraints.txt
    pip install -c constraints.txt -e ".[dev]"

`make test-minimums` installs them into a fresh environment and runs the smoke tests, so the
bounds in pyproject.toml stay true. Markers are evaluated for this interpreter.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from packaging.requirements import Requirement

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def lower_bounds(extras: list[str], skip: set[str]) -> list[str]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    declared = list(project["dependencies"])
    for extra in extras:
        declared += project["optional-dependencies"][extra]
    pins: dict[str, str] = {}
    for text in declared:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        floors = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        if not floors or requirement.name in skip:
            continue
        pins[requirement.name] = max(floors, key=lambda v: tuple(int(p) for p in v.split(".") if p.isdigit()))
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extra", action="append", default=[], help="also the lower bounds of this extra")
    parser.add_argument("--skip", action="append", default=[], help="leave this package unpinned")
    args = parser.parse_args()
    print("\n".join(lower_bounds(args.extra, set(args.skip))))


if __name__ == "__main__":
    main()
