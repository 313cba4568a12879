"""The project's declared dependencies (pyproject.toml) and the set the set-up installs agree."""

from pathlib import Path

import tomllib
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _by_name(lines):
    return {Requirement(line).name.lower(): str(Requirement(line).specifier) for line in lines}


def test_requirements_txt_lists_exactly_the_declared_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = _by_name(project["dependencies"] + project["optional-dependencies"]["test"])
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    installed = _by_name([line for line in lines if line])
    assert installed == declared
